"""Generate until filled: sampling rounds, classifier scoring, keep rules, rows for export.

Round 1 makes the plan (times ``filter.overgenerate`` when a classifier filters); each later round
makes only the per-class deficit, scaled by the acceptance rate observed so far, with new indices and
so new seeds. Every round is sharded across processes (augment.sampling); images are scored on the
generation device right after sampling, before any PNG encoding, and the scores travel in the same
shard files. After each round the keep rules run over every candidate so far, so the result depends
on the candidates only, never on the order in which rounds finished.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .config import FilterConfig, SamplerConfig
from .distributed import ProcessInfo
from .precision import resolve_precision
from .sampling import WorkItem, make_items, read_sharded, run_sharded

log = logging.getLogger(__name__)


@dataclass
class SynthesisResult:
    """What was kept, and why the rest was not.

    Attributes:
        kept: one row per kept image, sorted by (class_id, index): class_id, index, seed, round,
            batch, row (where its pixels are), confidence (NaN when nothing scored it).
        reasons: per class: generated, wrong_class, low_confidence, near_real, near_synthetic,
            accepted, kept, short.
        rounds: sampling rounds run.
    """

    kept: pd.DataFrame
    reasons: pd.DataFrame
    rounds: int
    candidates: pd.DataFrame  # every image made, same columns as kept (+ near_real, near_synthetic)
    shard_dirs: dict[int, Path] = field(default_factory=dict)

    @property
    def shortfall(self) -> dict[int, int]:
        return {int(r.class_id): int(r.short) for r in self.reasons.itertuples() if r.short > 0}

    def gather(self, rows: pd.DataFrame, key: str) -> torch.Tensor:
        """Stack the shard tensor ``key`` ("images", "features", ...) of the given candidate rows."""
        out, cache = [], {}
        for row in rows.itertuples():
            loc = (int(row.round), int(row.batch))
            if loc not in cache:
                cache = {loc: torch.load(self.shard_dirs[loc[0]] / f"batch-{loc[1]:06d}.pt", map_location="cpu",
                                         weights_only=True)}
            out.append(cache[loc][key][int(row.row)])
        return torch.stack(out) if out else torch.empty(0)


def _to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(N,C,H,W) floats in [0,1] -> uint8, the exact pixels that get exported."""
    return images.clamp(0, 1).mul(255).round().to(torch.uint8)


def sampling_key(generator_id: str, sampler: SamplerConfig, run_seed: int, filter_key: str) -> str:
    """A folder name that changes whenever anything that shapes a shard's content changes."""
    blob = json.dumps([generator_id, asdict(sampler), run_seed, filter_key], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class Synthesizer:
    """Runs the rounds of one job.

    Args:
        generator: a LatentDiffusionGenerator (``sample(class_ids, seeds, sampler, ...)``).
        sampler: sampler settings (batch size, guidance, mode, ...).
        proc: this process's rank and the world size.
        work_dir: where shard folders go (shared by all ranks).
        run_seed: the job's seed.
        real_images: (N,C,R,R) in [-1,1], the real training images (variation starts).
        real_labels: (N,) class ids.
        classifier: a FilterClassifier, or None for filter=none.
        filter_cfg: keep rules and round limits.
        key: sampling_key(...) of this job.
    """

    def __init__(self, generator, sampler: SamplerConfig, proc: ProcessInfo, work_dir: Path, run_seed: int,
                 real_images: torch.Tensor, real_labels: torch.Tensor, classifier, filter_cfg: FilterConfig, key: str):
        self.generator, self.sampler, self.proc = generator, sampler, proc
        self.work_dir, self.run_seed = work_dir / "samples" / key, run_seed
        self.real_images, self.real_labels = real_images, real_labels
        self.classifier, self.filter_cfg = classifier, filter_cfg
        self._real_by_class = {int(c): torch.nonzero(real_labels == c).flatten() for c in real_labels.unique()}
        self._guided = sampler.classifier_guidance_scale > 0  # checked against filter=none before any work
        self._real_feats: np.ndarray | None = None
        # Scoring precision; real and synthetic images are scored alike, so their features compare.
        self._score_dtype = resolve_precision(filter_cfg.precision, classifier.device) if classifier else None
        # Seconds this process spent per stage: "sampling" (the generator), "scoring" (the filter
        # classifier on each batch) and "keep rules" (thresholds, duplicates, quotas).
        self.seconds: dict[str, float] = {"sampling": 0.0, "scoring": 0.0, "keep rules": 0.0}

    # -- one batch -----------------------------------------------------------------------------
    def _init_images(self, batch: Sequence[WorkItem]) -> torch.Tensor | None:
        if not any(it.variation for it in batch):
            return None
        picks = []
        for it in batch:  # the real image a variation starts from is chosen by the item's seed
            pool = self._variation_pool(it.class_id)
            picks.append(int(pool[it.seed % len(pool)]))
        return self.real_images[picks]

    def _variation_pool(self, class_id: int) -> torch.Tensor:
        """Indices of the real images a variation of ``class_id`` may start from."""
        source = self.sampler.variation_source
        if source == "class":
            return self._real_by_class[class_id]
        if source == "other" and len(self._real_by_class) > 1:
            return torch.nonzero(self.real_labels != class_id).flatten()
        return torch.arange(len(self.real_labels))  # "any", or "other" with a single class

    def make_batch(self, batch: list[WorkItem]) -> dict[str, torch.Tensor]:
        clock = time.perf_counter()
        images = self.generator.sample(
            [it.class_id for it in batch],
            [it.seed for it in batch],
            self.sampler,
            init_images=self._init_images(batch),
            variation=[it.variation for it in batch],
            # Classifier guidance (Dhariwal & Nichol 2021) uses the filter's calibrated classifier.
            classifier=self.classifier.logits if self._guided else None,
        )  # (B,C,R,R) in [0,1]
        pixels = _to_uint8(images)
        out = {"images": pixels.cpu()}
        self.seconds["sampling"] += time.perf_counter() - clock
        if self.classifier is not None:
            clock = time.perf_counter()
            # Score exactly the exported pixels, on the generation device, before any PNG encoding.
            probs, top, feats = self.classifier.predict(pixels.float().div(255), dtype=self._score_dtype)
            target = torch.tensor([it.class_id for it in batch], device=probs.device)
            out["confidence"] = probs.gather(1, target[:, None]).squeeze(1).float().cpu()
            out["pred"] = top.cpu()
            out["features"] = feats.half().cpu()
            self.seconds["scoring"] += time.perf_counter() - clock
        return out

    # -- rounds --------------------------------------------------------------------------------
    def _shard_dir(self, r: int) -> Path:
        return self.work_dir / f"round-{r:02d}"

    def _round(self, r: int, counts: Mapping[int, int], next_index: dict[int, int]) -> list[WorkItem]:
        ranges = {c: range(next_index[c], next_index[c] + n) for c, n in counts.items() if n > 0}
        for c, rng in ranges.items():
            next_index[c] = rng.stop
        items = make_items(ranges, self.run_seed, mode=self.sampler.mode, mix_fraction=self.sampler.mix_fraction)
        shard_dir = self._shard_dir(r)
        log.info("round %d: sampling %d images (%s)", r, len(items),
                 ", ".join(f"{c}: {n}" for c, n in sorted(counts.items()) if n > 0))
        run_sharded(items, self.sampler.batch_size, shard_dir, self.proc, self.make_batch, desc=f"round {r}")
        return items

    def _scores(self, r: int, items: list[WorkItem]) -> tuple[pd.DataFrame, np.ndarray | None]:
        rows, feats = [], []
        for k, (batch, shard) in enumerate(read_sharded(items, self.sampler.batch_size, self._shard_dir(r))):
            conf = shard["confidence"].numpy() if "confidence" in shard else np.full(len(batch), np.nan)
            pred = shard["pred"].numpy() if "pred" in shard else np.array([it.class_id for it in batch])
            for j, it in enumerate(batch):
                rows.append((it.class_id, it.index, it.seed, r, k, j, int(pred[j]), float(conf[j])))
            if "features" in shard:
                feats.append(shard["features"].float().numpy())
        df = pd.DataFrame(rows, columns=["class_id", "index", "seed", "round", "batch", "row", "pred", "confidence"])
        return df, (np.concatenate(feats) if feats else None)

    def run(self, plan: Mapping[int, int]) -> SynthesisResult:
        """Make, score and keep until every class has ``plan[c]`` images or the rounds run out."""
        plan = {int(c): int(n) for c, n in plan.items() if n > 0}
        next_index = {c: 0 for c in plan}
        if self.classifier is None:
            items = self._round(1, plan, next_index)
            cands, _ = self._scores(1, items)
            result = self._result(cands, cands, plan, rounds=1)
            result.shard_dirs = {1: self._shard_dir(1)}
            return result
        return self._run_filtered(plan, next_index)

    def _run_filtered(self, plan: dict[int, int], next_index: dict[int, int]) -> SynthesisResult:
        from .filter import keep

        real_feats = self.real_features()
        cands, feats = [], []
        counts = {c: math.ceil(n * self.filter_cfg.overgenerate) for c, n in plan.items()}
        result = None
        for r in range(1, self.filter_cfg.max_rounds + 1):
            df, f = self._scores(r, self._round(r, counts, next_index))
            cands.append(df)
            feats.append(f)
            clock = time.perf_counter()
            result = self._select(pd.concat(cands, ignore_index=True), np.concatenate(feats), real_feats, plan, keep)
            self.seconds["keep rules"] += time.perf_counter() - clock
            result.rounds = r
            result.shard_dirs = {q: self._shard_dir(q) for q in range(1, r + 1)}
            deficit = {c: int(n) for c, n in result.shortfall.items()}
            if not deficit:
                break
            generated = result.reasons.set_index("class_id")["generated"].to_dict()
            accepted = result.reasons.set_index("class_id")["accepted"].to_dict()
            counts = keep.next_round_counts(deficit, accepted, generated, overgenerate=self.filter_cfg.overgenerate)
        return result

    def real_features(self) -> np.ndarray:
        """The classifier's features of the real training images (computed once, reused by the report)."""
        if self._real_feats is None:
            feats = []
            for i in range(0, len(self.real_images), 256):
                x = (self.real_images[i : i + 256] + 1) / 2
                feats.append(self.classifier.predict(x, dtype=self._score_dtype)[2].float().cpu().numpy())
            self._real_feats = np.concatenate(feats)
        return self._real_feats

    def _select(self, cands: pd.DataFrame, feats: np.ndarray, real_feats: np.ndarray, plan, keep) -> SynthesisResult:
        fc = self.filter_cfg
        thresholds = keep.resolve_thresholds(self.generator.class_names, fc.min_confidence,
                                             fc.min_confidence_per_class)
        cands = cands.copy()
        cands["near_real"] = False
        cands["near_synthetic"] = False
        for c, grp in cands.groupby("class_id"):
            # Duplicates are judged in the order the keep rule ranks them (most confident first), and
            # only among samples that pass the class and confidence rules.
            conf, idx = grp["confidence"].to_numpy(), grp["index"].to_numpy()
            near_real, near_syn = keep.near_duplicates(
                feats[grp.index.to_numpy()], real_feats[(self.real_labels == c).numpy()],
                max_real_similarity=fc.max_real_similarity, max_synthetic_similarity=fc.max_synthetic_similarity,
                order=np.lexsort((idx, -conf)),
                eligible=(grp["pred"].to_numpy() == c) & (conf >= thresholds[int(c)]),
            )
            cands.loc[grp.index, "near_real"] = near_real
            cands.loc[grp.index, "near_synthetic"] = near_syn
        kept = keep.select(cands, plan, min_confidence=thresholds)
        cands["accepted"] = kept.rejection == ""  # passed every keep rule (kept or surplus)
        return self._result(cands, kept.kept, plan, rounds=0, reasons=kept.reasons)

    def _result(self, cands, kept, plan, *, rounds, reasons=None) -> SynthesisResult:
        kept = kept.sort_values(["class_id", "index"]).reset_index(drop=True)
        if reasons is None:  # filter=none: everything generated is kept
            gen = cands.groupby("class_id").size()
            reasons = pd.DataFrame({"class_id": list(plan), "generated": [int(gen.get(c, 0)) for c in plan]})
            for col in ("wrong_class", "low_confidence", "near_real", "near_synthetic"):
                reasons[col] = 0
            reasons["accepted"] = reasons["generated"]
            reasons["kept"] = [min(int(gen.get(c, 0)), plan[c]) for c in plan]
            reasons["short"] = [plan[c] - k for c, k in zip(plan, reasons["kept"])]
        return SynthesisResult(kept, reasons, rounds, cands)


def iter_rows(result: SynthesisResult, to_pil: Callable[[torch.Tensor], list], generator_id: str,
              encode: Callable) -> Iterator[dict]:
    """Export rows of the kept images, in (class_id, index) order, reading one shard at a time.

    Args:
        result: the synthesis result.
        to_pil: uint8 (N,C,R,R) -> PIL images at the source size and mode.
        generator_id: the provenance string of every row.
        encode: PIL image -> PNG bytes.
    """
    for start in range(0, len(result.kept), 256):  # rows come in shard order: one chunk in memory at a time
        chunk = result.kept.iloc[start : start + 256]
        yield from _rows(chunk, to_pil(result.gather(chunk, "images")), generator_id, encode)


def _rows(chunk: pd.DataFrame, images: list, generator_id: str, encode: Callable) -> Iterator[dict]:
    for row, image in zip(chunk.itertuples(), images):
        conf = float(row.confidence)
        yield {
            "image": encode(image),
            "label": int(row.class_id),
            "seed": int(row.seed),
            "confidence": None if math.isnan(conf) else conf,
            "generator": generator_id,
        }
