"""The augmentation job, top to bottom: data -> targets -> plan -> generator -> synthesis -> export."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path

import datasets

from . import distributed
from .config import Config, to_yaml
from .data import SourceData, from_dataset, load_source
from .plan import format_plan, make_plan, write_plan
from .targets import resolve_targets

log = logging.getLogger(__name__)


def load_data(cfg: Config, dataset=None) -> SourceData:
    """The source dataset: an in-memory one (Python API) or the config's."""
    if dataset is not None:
        return from_dataset(dataset, cfg.dataset, cfg.seed)
    return load_source(cfg.dataset, cfg.seed)


def plan_for(cfg: Config, source: SourceData):
    """Resolve the targets of ``cfg.targets`` on the source's class counts into the plan table."""
    targets = resolve_targets(source.counts, source.class_names, **asdict(cfg.targets))
    return make_plan(source.counts, source.class_names, targets)


def _validate_early(cfg: Config) -> None:
    """Config errors that need no data: fail before anything is loaded or trained."""
    from .generator import validate_generator_config
    from .filter import validate_filter_config

    validate_generator_config(cfg.generator)
    validate_filter_config(cfg.filter)
    scale = cfg.generator.sampler.classifier_guidance_scale
    if scale > 0 and cfg.filter.name == "none":
        raise ValueError(
            f"generator.sampler.classifier_guidance_scale={scale} needs the filter's classifier, but filter.name="
            "'none'; allowed: classifier_guidance_scale=0 with filter=none, or filter=classifier")


def run(cfg: Config, dataset=None, config_yaml: str | None = None) -> datasets.DatasetDict | None:
    """Run the job described by ``cfg``.

    Args:
        cfg: the composed, validated config.
        dataset: an in-memory ``datasets`` dataset to balance instead of ``cfg.dataset``'s source.
        config_yaml: the resolved config as YAML (saved with the run); derived from ``cfg`` if None.

    Returns:
        The exported DatasetDict on the main process; None on other ranks and for dry runs.
    """
    t0 = time.perf_counter()
    proc = distributed.init()
    config_yaml = config_yaml or to_yaml(cfg)
    out_dir = Path(cfg.output.dir)
    if not cfg.dry_run:
        _validate_early(cfg)

    source = load_data(cfg, dataset)
    plan = plan_for(cfg, source)
    log.info("plan (%s):\n%s", source.describe(), format_plan(plan))

    from .export import check_output_dir

    if proc.is_main:
        check_output_dir(out_dir, cfg.output.overwrite)
        write_plan(plan, out_dir / "plan.csv")
        (out_dir / "config.yaml").write_text(config_yaml)
    if cfg.dry_run:
        log.info("dry run: wrote %s", out_dir / "plan.csv")
        return None
    distributed.barrier()

    result = augment_and_export(cfg, source, plan, proc, out_dir, config_yaml)
    log.info("done in %.0f s", time.perf_counter() - t0)
    return result


def obtain_generator(cfg: Config, source: SourceData, images, labels, out_dir: Path, proc):
    """Load ``generator.path``, or train on the real images (reusing a finished generator of the
    same data and config in ``out_dir``)."""
    from .generator import LatentDiffusionGenerator, train_generator, validate_generator_config

    if cfg.generator.path:
        validate_generator_config(cfg.generator, source.class_names)  # class names match, components exist
        return LatentDiffusionGenerator.from_pretrained(cfg.generator.path, device=proc.device)
    return train_generator(images, labels, source.class_names, cfg.generator, work_dir=out_dir / "work",
                           save_dir=out_dir / "generator", seed=cfg.seed, mode=source.mode)


def obtain_classifier(cfg: Config, source: SourceData, images, labels, out_dir: Path, proc):
    """The filter classifier (None for filter=none): the user's, or trained on the real data by rank 0
    and loaded from its cache by the other ranks."""
    from .filter import load_user_classifier, train_classifier

    fc = cfg.filter
    if fc.name == "none":
        return None
    if fc.path:
        classifier = load_user_classifier(fc.path, source.class_names, arch=fc.arch, mode=source.mode,
                                          resolution=source.resolution)
        classifier.fit_feature_mean((images + 1) / 2)  # centred features, as for a trained one
        return classifier.to(proc.device)
    def train():
        return train_classifier(images, labels, source.class_names, fc, seed=cfg.seed, mode=source.mode,
                                work_dir=out_dir / "work", device=proc.device)
    if proc.is_main:
        classifier = train()
    distributed.barrier()
    if not proc.is_main:
        classifier = train()  # finds rank 0's classifier in the cache
    return classifier


def augment_and_export(cfg: Config, source: SourceData, plan, proc, out_dir: Path, config_yaml: str):
    """Train (or load) the generator and the filter, fill the plan, export, report."""
    from .export import CardInfo, class_counts, export
    from .images import dataset_to_tensors, encode_png, tensor_to_pil
    from .synthesis import Synthesizer, iter_rows, sampling_key

    timings: dict[str, float] = {}
    clock = time.perf_counter()
    images, labels = dataset_to_tensors(source.train, source.mode, source.resolution, cfg.dataset.resize)
    generator = obtain_generator(cfg, source, images, labels, out_dir, proc)
    timings["generator"] = time.perf_counter() - clock
    clock = time.perf_counter()
    classifier = obtain_classifier(cfg, source, images, labels, out_dir, proc)
    timings["filter classifier"] = time.perf_counter() - clock

    clock = time.perf_counter()
    generator_id = _generator_id(generator)
    key = sampling_key(generator_id, cfg.generator.sampler, cfg.seed, _filter_key(cfg))
    synth = Synthesizer(generator, cfg.generator.sampler, proc, out_dir / "work", cfg.seed, images, labels,
                        classifier, cfg.filter, key)
    to_generate = dict(zip(plan["class_id"], plan["to_generate"]))
    result = synth.run(to_generate)
    timings.update({f"synthesis: {stage}": seconds for stage, seconds in synth.seconds.items()})
    timings["synthesis: other (shard files, merging)"] = (
        time.perf_counter() - clock - sum(synth.seconds.values()))
    if not proc.is_main:
        return None

    short = {source.class_names[c]: n for c, n in result.shortfall.items()}
    if short:
        message = "classes still short after %d rounds (name: missing images): %s" % (
            result.rounds, ", ".join(f"{name}: {n}" for name, n in short.items()))
        if cfg.filter.on_shortfall == "fail":
            _write_report(cfg, source, plan, result, classifier, generator, synth, timings, out_dir)
            raise RuntimeError(message + " (filter.on_shortfall=fail; set it to warn to export what was kept)")
        log.warning(message)

    clock = time.perf_counter()
    to_pil = lambda pixels: tensor_to_pil(  # noqa: E731
        pixels.float().div(255), source.mode, source.source_size, cfg.dataset.resize)
    rows = iter_rows(result, to_pil, generator_id, encode_png)
    splits = _build_splits(cfg, source, rows, out_dir)
    timings["export: build splits (PNG)"] = time.perf_counter() - clock
    real, synthetic = class_counts(splits["train"])  # what the exported train split holds
    counts_after = {c: real.get(c, 0) + synthetic.get(c, 0) for c in range(len(source.class_names))}
    clock = time.perf_counter()
    report_path = _write_report(cfg, source, plan, result, classifier, generator, synth, timings, out_dir,
                                counts_after=counts_after)
    timings["report"] = time.perf_counter() - clock

    card = CardInfo(
        class_names=source.class_names, counts_before=source.counts, counts_after=counts_after,
        config_yaml=config_yaml, filter_name=cfg.filter.name, generator_id=generator_id,
        report_path=str(report_path.relative_to(out_dir)) if report_path else None,
        source=source.describe(),
    )
    clock = time.perf_counter()
    paths = export(splits, out_dir, cfg.output, card)
    timings["export: write"] = time.perf_counter() - clock
    log.info("timings (s): %s", ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))
    filter_and_write = (timings.get("synthesis: scoring", 0.0) + timings.get("synthesis: keep rules", 0.0)
                        + timings["export: build splits (PNG)"] + timings["export: write"])
    if timings["synthesis: sampling"] > 0:
        log.info("filter + write: %.1f s = %.1f%% of the generation time (%.1f s)", filter_and_write,
                 100 * filter_and_write / timings["synthesis: sampling"], timings["synthesis: sampling"])
    log.info("dataset: %s", paths["dataset"])
    log.info("hub-ready parquet and card: %s", paths["hub"])
    if report_path:
        log.info("report: %s", report_path)
    return datasets.load_from_disk(str(paths["dataset"]))


def _generator_id(generator) -> str:
    """Provenance of every synthetic row: the generator's fingerprint (data + config + seed)."""
    import hashlib
    import json

    fingerprint = generator.metadata.get("fingerprint") or hashlib.sha256(
        json.dumps(generator.metadata, sort_keys=True, default=str).encode()).hexdigest()
    return f"augment-ldm-{str(fingerprint)[:12]}"


def _generator_info(generator, generator_id: str) -> dict:
    """The generator's scalar facts (reconstruction PSNR, training time, sizes) for the report."""
    info = {"id": generator_id}

    def flatten(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, item in sorted(value.items()):
                flatten(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, (int, float, str, bool)):
            info[prefix] = value

    flatten("", {k: v for k, v in generator.metadata.items() if k not in ("fingerprint", "config")})
    return info


def _filter_key(cfg: Config) -> str:
    """What of the filter config changes what a shard holds (scores), not which rows are kept."""
    fc = cfg.filter
    return f"{fc.name}:{fc.arch}:{fc.width}:{fc.path}:{fc.steps}:{fc.batch_size}:{fc.lr}:{fc.val_fraction}:{fc.precision}"


def _build_splits(cfg: Config, source: SourceData, rows, out_dir: Path) -> dict[str, datasets.Dataset]:
    from .export import build_split

    real = source.train if cfg.output.include_real else None
    work = out_dir / "work" / "export"
    splits = {"train": build_split(real, rows, source.class_names, work_dir=work)}
    if cfg.output.include_test and source.test is not None:
        splits["test"] = build_split(source.test, None, source.class_names, work_dir=work)
    return splits


_GRID_PER_CLASS = 16  # images per class in the report's sample grids


def _write_report(cfg, source, plan, result, classifier, generator, synth, timings, out_dir, counts_after=None):
    """Gather what the report shows from the run's shards and write ``out_dir/report``."""
    import numpy as np

    from .metrics import per_class_frechet
    from .report import ReportInputs, write_report

    cands = result.candidates
    rejected = cands[~cands["accepted"]] if "accepted" in cands else cands.iloc[:0]  # failed a keep rule

    def grids(rows):
        out = {}
        for c, grp in rows.groupby("class_id"):
            pixels = result.gather(grp.head(_GRID_PER_CLASS), "images")  # (N,C,H,W) uint8
            out[int(c)] = pixels.permute(0, 2, 3, 1).squeeze(-1).numpy() if len(pixels) else np.empty((0,))
        return out

    frechet = confidences = None
    if classifier is not None and len(result.kept):
        synth_feats = result.gather(result.kept, "features").float().numpy()
        frechet = per_class_frechet(synth.real_features(), synth.real_labels.numpy(), synth_feats,
                                    result.kept["class_id"].to_numpy(), source.class_names)
        confidences = cands[["class_id", "confidence"]].assign(
            kept=cands.set_index(["class_id", "index"]).index.isin(result.kept.set_index(["class_id", "index"]).index))
    if counts_after is None:
        counts_after = dict(source.counts)
        for c, n in result.kept.groupby("class_id").size().items():
            counts_after[int(c)] += int(n)
    inputs = ReportInputs(
        class_names=source.class_names, plan=plan, counts_after=counts_after, reasons=result.reasons,
        filter_name=cfg.filter.name, classifier_metrics=getattr(classifier, "metrics", None),
        accepted_images=grids(result.kept), rejected_images=grids(rejected) if classifier is not None else {},
        confidences=confidences, frechet=frechet, generator_info=_generator_info(generator, _generator_id(generator)), timings=timings,
        min_confidence=cfg.filter.min_confidence if classifier is not None else None,
    )
    return write_report(inputs, out_dir / "report")
