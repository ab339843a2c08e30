"""The long-tail benchmark: its loss, sampler, metrics, gap closed, config checks and a tiny run."""

from __future__ import annotations

import io
import math
from dataclasses import replace

import datasets
import numpy as np
import pandas as pd
import PIL.Image
import pytest
import torch
import torch.nn.functional as F

from augment.api import compose_config
from augment.config import AutoencoderConfig, DatasetConfig, DenoiserConfig, GeneratorConfig
from augment.export import features as export_features
from augment.generator import LatentDiffusionGenerator
from pipelines import long_tail_benchmark as lt
from pipelines.bench_generator import untrained_generator

CLASS_NAMES = ["cat", "dog", "eel"]
TRAIN_COUNTS = [12, 4, 2]
TEST_PER_CLASS = 4
N_SYNTHETIC = [0, 3, 5]
SIDE = 8


# ----------------------------------------------------------------------------- loss


@pytest.mark.parametrize("target, expected", [(0, -math.log(0.75)), (1, -math.log(0.25))])
def test_logit_adjusted_loss_hand_computed(target, expected):
    logits = torch.zeros(1, 2, dtype=torch.float64)
    log_prior = torch.log(torch.tensor([0.75, 0.25], dtype=torch.float64))
    loss = lt.logit_adjusted_loss(logits, torch.tensor([target]), log_prior, tau=1.0)
    assert loss.item() == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_loss_is_ce_on_shifted_logits(tau):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(6, 4, generator=g, dtype=torch.float64)
    targets = torch.tensor([0, 1, 2, 3, 3, 1])
    prior = np.array([0.5, 0.25, 0.15, 0.1])
    shifted = logits.numpy() + tau * np.log(prior)  # Menon et al. 2021: z_y + tau * log(pi_y)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    expected = -log_softmax[np.arange(6), targets.numpy()].mean()
    loss = lt.logit_adjusted_loss(logits, targets, torch.from_numpy(np.log(prior)), tau)
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    if tau == 0.0:
        assert loss.item() == pytest.approx(F.cross_entropy(logits, targets).item(), abs=1e-12)


def test_log_prior_from_counts_and_missing_class():
    prior = lt.log_prior_of(torch.tensor([0, 0, 0, 1]), 2, ["a", "b"])
    torch.testing.assert_close(prior, torch.log(torch.tensor([0.75, 0.25])))
    with pytest.raises(ValueError) as err:
        lt.log_prior_of(torch.tensor([0, 0, 2]), 3, ["a", "b", "c"])
    assert str(err.value) == "loss 'logit_adjust' needs images of every class; classes without any: ['b']"


# ----------------------------------------------------------------------------- samplers


def test_class_balanced_sampler_draws_classes_uniformly():
    labels = torch.tensor([0] * 200 + [1] * 20 + [2] * 2)
    batches = lt.batch_indices(labels, "class_balanced", 64, torch.Generator().manual_seed(0))
    drawn = torch.cat([next(batches) for _ in range(300)])  # 19,200 draws
    share = torch.bincount(labels[drawn], minlength=3).double() / len(drawn)
    torch.testing.assert_close(share, torch.full((3,), 1 / 3, dtype=torch.float64), atol=0.015, rtol=0)


def test_uniform_sampler_sees_every_image_once_per_epoch():
    labels = torch.tensor([0] * 7 + [1] * 3)
    batches = lt.batch_indices(labels, "uniform", 4, torch.Generator().manual_seed(0))
    drawn = torch.cat([next(batches) for _ in range(5)])  # two epochs of 10
    assert sorted(drawn[:10].tolist()) == list(range(10))
    assert sorted(drawn[10:].tolist()) == list(range(10))


def test_unknown_sampler():
    with pytest.raises(ValueError) as err:
        lt.batch_indices(torch.tensor([0]), "oversample", 4, torch.Generator())
    assert str(err.value) == "sampler='oversample' is not supported; allowed: class_balanced, uniform"


def test_shift_moves_whole_images_by_at_most_two_pixels():
    x = torch.zeros(16, 1, 9, 9)
    x[:, :, 4, 4] = 1.0  # one bright pixel in the middle
    shifted = lt.AUGMENTATIONS["shift"](x, torch.Generator().manual_seed(0))
    assert shifted.shape == x.shape
    positions = [divmod(int(img.flatten().argmax()), 9) for img in shifted]
    assert all(2 <= r <= 6 and 2 <= c <= 6 for r, c in positions)
    assert shifted.sum().item() == 16.0
    assert len(set(positions)) > 1


# ----------------------------------------------------------------------------- metrics


def test_metrics_equal_hand_computed_values():
    y_true = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    y_pred = np.array([0, 0, 1, 0, 2, 3, 3, 3])
    # per-class recall 1, 1/2, 1/2, 1; F1 4/5, 2/3, 2/3, 4/5; rarest by train count: 3, 1, 2
    metrics = lt.evaluate(y_true, y_pred, train_counts=[50, 5, 10, 2])
    assert metrics == pytest.approx({"balanced_accuracy": 0.75, "macro_f1": 11 / 15, "rare3_recall": 2 / 3})


@pytest.mark.parametrize("counts, expected", [([50, 5, 10, 2], [3, 1, 2]), ([5, 5, 1, 5], [2, 0, 1])])
def test_rarest_classes(counts, expected):
    assert lt.rarest_classes(counts) == expected


def test_gap_closed_arithmetic():
    gaps, note = lt.gap_closed({"ce": 0.6, "resample": 0.7, "oracle": 0.8})
    assert gaps == pytest.approx({"ce": 0.0, "resample": 0.5, "oracle": 1.0})
    assert note is None


@pytest.mark.parametrize(
    "means, note",
    [
        ({"ce": 0.9, "resample": 0.95, "oracle": 0.9},
         "oracle and ce have the same mean balanced accuracy (0.9000): there is no gap to close, "
         "so gap closed is undefined"),
        ({"ce": 0.9, "resample": 0.95}, "gap closed needs both the ce and the oracle arms"),
    ],
)
def test_gap_closed_undefined_is_nan_with_a_note(means, note):
    gaps, why = lt.gap_closed(means)
    assert set(gaps) == set(means) and all(math.isnan(v) for v in gaps.values())
    assert why == note


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["seeds=[0,1]"], "seeds=[0, 1] has 2 seed(s); allowed: at least 3 distinct seeds "
                          "(allow_few_seeds=true lets fewer through, for tests)"),
        (["seeds=[0,0,1]"], "seeds=[0, 0, 1] repeats a seed; allowed: distinct seeds"),
        (["arms_enabled=[ce,focal]"], "arms_enabled='focal' is not supported; allowed: ce, logit_adjust, "
                                      "oracle, oracle_autoencoded, resample, synthetic_filtered, "
                                      "synthetic_unfiltered"),
        (["arms_enabled=[ce,oracle_autoencoded]"],
         "arms_enabled includes 'oracle_autoencoded' but arms.oracle_autoencoded.generator is null; allowed: a "
         "saved generator folder, e.g. <output.dir>/generator of a toolkit run"),
        (["dataset.kind=hf", "dataset.path=x", "arms_enabled=[oracle_autoencoded]",
          "arms.oracle_autoencoded.generator=g"],
         "arms_enabled includes 'oracle_autoencoded' but dataset.kind='hf' has no balanced source; allowed kinds "
         "for the oracle_autoencoded arm: mnist_lt, cifar10_lt"),
        (["dataset.kind=hf", "dataset.path=x"], "arms_enabled includes 'oracle' but dataset.kind='hf' has no "
                                                "balanced source; allowed kinds for the oracle arm: mnist_lt, cifar10_lt"),
        (["device=tpu"], "device='tpu' is not supported; allowed: auto, cpu, cuda"),
        (["classifier.augment=mixup"],
         "classifier.augment='mixup' is not supported; allowed: none, shift, shift_flip"),
        (["classifier.steps=0"], "classifier.steps=0; allowed: an integer >= 1"),
    ],
)
def test_config_errors(overrides, message):
    cfg = lt.compose_benchmark(overrides)
    with pytest.raises(ValueError) as err:
        lt.validate(cfg)
    assert str(err.value) == message


def test_default_config_is_valid():
    cfg = lt.compose_benchmark()
    lt.validate(cfg)
    assert cfg.seeds == [0, 1, 2] and cfg.arms_enabled == list(lt.DEFAULT_ARMS)
    assert "oracle_autoencoded" not in cfg.arms_enabled and cfg.arms.oracle_autoencoded.generator is None
    assert cfg.arms.synthetic_unfiltered.overrides == ["filter=none"]


def test_toolkit_overrides_reproduce_the_benchmark_source(tmp_path):
    dataset = DatasetConfig(kind="hf", path=str(tmp_path / "it's here"), test_split="test", imbalance_ratio=7.5,
                            mode=None, resolution=16, skip_corrupt=True)
    out_dir = tmp_path / "toolkit" / "synthetic_filtered"
    cfg, _ = compose_config(lt.toolkit_overrides(dataset, 3, out_dir) + ["filter=none"])
    assert cfg.dataset == dataset
    assert (cfg.seed, cfg.output.dir, cfg.filter.name) == (3, str(out_dir), "none")


# ----------------------------------------------------------------------------- a tiny run


def _png(value: int) -> bytes:
    buffer = io.BytesIO()
    PIL.Image.fromarray(np.full((SIDE, SIDE), value, dtype=np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _source(counts: list[int]) -> datasets.Dataset:
    labels = [c for c, n in enumerate(counts) for _ in range(n)]
    feats = datasets.Features(
        {"image": datasets.Image(decode=False), "label": datasets.ClassLabel(names=CLASS_NAMES)}
    )
    images = [{"bytes": _png(40 + 80 * c + i), "path": None} for i, c in enumerate(labels)]
    return datasets.Dataset.from_dict({"image": images, "label": labels}, features=feats)


@pytest.fixture
def tiny(tmp_path):
    """A 3-class long-tailed source with a balanced test split, and a fake toolkit output."""
    source = tmp_path / "source"
    splits = {"train": _source(TRAIN_COUNTS), "test": _source([TEST_PER_CLASS] * 3)}
    datasets.DatasetDict(splits).save_to_disk(source)
    labels = [c for counts in (TRAIN_COUNTS, N_SYNTHETIC) for c, n in enumerate(counts) for _ in range(n)]
    n_real = sum(TRAIN_COUNTS)
    synthetic = {
        "image": [{"bytes": _png(30 + 70 * c), "path": None} for c in labels],
        "label": labels,
        "is_synthetic": [i >= n_real for i in range(len(labels))],
        "seed": [i if i >= n_real else None for i in range(len(labels))],
        "confidence": [0.95 if i >= n_real else None for i in range(len(labels))],
        "generator": ["fake" if i >= n_real else None for i in range(len(labels))],
    }
    toolkit = tmp_path / "toolkit" / "dataset"
    train = datasets.Dataset.from_dict(synthetic, features=export_features(CLASS_NAMES))
    datasets.DatasetDict({"train": train}).save_to_disk(toolkit)
    overrides = [
        "dataset.kind=hf", f"dataset.path={source}", "dataset.test_split=test", "dataset.mode=null",
        "dataset.resolution=null", "seeds=[0,1]", "allow_few_seeds=true", "arms_enabled=[ce,synthetic_filtered]",
        f"arms.synthetic_filtered.dataset={toolkit}", "classifier.steps=4", "classifier.batch_size=8",
        "classifier.warmup_steps=1", "classifier.widths=[4,4]", "device=cpu", f"output_dir={tmp_path / 'out'}",
    ]
    return lt.compose_benchmark(overrides), tmp_path


def test_fit_is_deterministic_per_seed():
    recipe = lt.ClassifierRecipe(widths=[4], steps=3, batch_size=4, warmup_steps=1)
    images, labels = torch.rand(10, 1, SIDE, SIDE) * 2 - 1, torch.tensor([0] * 6 + [1] * 3 + [2])

    def fit(seed):
        net = lt.fit_classifier(images, labels, CLASS_NAMES, recipe, mode="L", seed=seed, loss="logit_adjust")
        return net.state_dict()

    first, again, other = fit(0), fit(0), fit(1)
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


def test_tiny_benchmark_writes_results_and_summary(tiny):
    cfg, tmp_path = tiny
    summary = lt.run_benchmark(cfg, command="python pipelines/long_tail_benchmark.py seeds=[0,1]")
    out = tmp_path / "out"
    results = pd.read_csv(out / "results.csv")
    assert list(zip(results["arm"], results["seed"])) == [("ce", 0), ("ce", 1), ("synthetic_filtered", 0),
                                                           ("synthetic_filtered", 1)]
    assert results["n_train"].tolist() == [18, 18, 26, 26]
    assert results["n_synthetic"].tolist() == [0, 0, 8, 8]
    assert results["device"].tolist() == ["cpu"] * 4
    for arm in ("ce", "synthetic_filtered"):
        values = results.loc[results["arm"] == arm, "balanced_accuracy"]
        row = summary.set_index("arm").loc[arm]
        assert row["balanced_accuracy_mean"] == pytest.approx(values.mean())
        assert row["balanced_accuracy_std"] == pytest.approx(values.std(ddof=1))
    md = (out / "summary.md").read_text()
    assert "Command: `python pipelines/long_tail_benchmark.py seeds=[0,1]`" in md
    assert f"{torch.__version__}" in md and "device cpu" in md
    assert lt.markdown_table(summary) in md
    ce = results[results["arm"] == "ce"]
    expected = (f"| ce | 2 | {ce['balanced_accuracy'].mean():.4f} ± {ce['balanced_accuracy'].std():.4f} | "
                f"{ce['macro_f1'].mean():.4f} ± {ce['macro_f1'].std():.4f} | "
                f"{ce['rare3_recall'].mean():.4f} ± {ce['rare3_recall'].std():.4f} | n/a |")
    assert expected in md
    assert "- gap closed needs both the ce and the oracle arms" in md
    assert "cat (12 train images), dog (4 train images)" not in md  # rarest first
    assert "eel (2 train images), dog (4 train images), cat (12 train images)" in md
    assert pd.read_csv(out / "summary.csv")["arm"].tolist() == ["ce", "synthetic_filtered"]
    assert (out / "summary.png").stat().st_size > 0


def test_resume_skips_finished_rows(tiny, monkeypatch):
    cfg, tmp_path = tiny
    lt.run_benchmark(cfg)
    before = (tmp_path / "out" / "results.csv").read_text()
    calls = []
    real_fit = lt.fit_classifier

    def counting_fit(*args, seed, **kwargs):
        calls.append(seed)
        return real_fit(*args, seed=seed, **kwargs)

    monkeypatch.setattr(lt, "fit_classifier", counting_fit)
    lt.run_benchmark(cfg)
    assert calls == [] and (tmp_path / "out" / "results.csv").read_text() == before
    lt.run_benchmark(replace(cfg, seeds=[0, 1, 2]))  # only the new seed runs
    assert calls == [2, 2]
    results = pd.read_csv(tmp_path / "out" / "results.csv")
    assert len(results) == 6
    assert results.iloc[:4].to_csv() == pd.read_csv(io.StringIO(before)).to_csv()
    lt.run_benchmark(replace(cfg, classifier=replace(cfg.classifier, steps=5), arms_enabled=["ce"]))
    assert calls == [2, 2, 0, 1]  # a changed recipe makes the ce rows stale


def test_synthetic_dataset_with_other_classes(tiny):
    cfg, tmp_path = tiny
    with pytest.raises(ValueError) as err:
        lt.synthetic_rows(str(tmp_path / "toolkit" / "dataset"), ["a", "b", "c"], "arms.synthetic_filtered.dataset")
    assert str(err.value) == (
        f"arms.synthetic_filtered.dataset={str(tmp_path / 'toolkit' / 'dataset')!r} has classes "
        "['cat', 'dog', 'eel']; the benchmark's source has ['a', 'b', 'c']"
    )


# ----------------------------------------------------------------------------- the autoencoder ceiling


def _tiny_generator(resolution: int) -> LatentDiffusionGenerator:
    cfg = GeneratorConfig(
        autoencoder=AutoencoderConfig(block_out_channels=[8, 16], norm_num_groups=4, latent_channels=2),
        denoiser=DenoiserConfig(block_out_channels=[8, 16], attention_levels=[False, False], layers_per_block=1,
                                norm_num_groups=4, attention_head_dim=8),  # 8: the mid-block attention runs
    )
    torch.manual_seed(0)
    return untrained_generator(cfg, 1, resolution, 10)


def test_oracle_autoencoded_adds_the_oracle_surplus_through_the_autoencoder(tmp_path):
    cfg = lt.compose_benchmark([f"arms.oracle_autoencoded.generator={tmp_path / 'g'}"])
    generator = _tiny_generator(cfg.dataset.resolution)
    generator.save_pretrained(tmp_path / "g")
    data = lt.load_benchmark_data(cfg)
    oracle = lt.ARM_DATA["oracle"]("oracle", cfg, data)
    arm = lt.ARM_DATA["oracle_autoencoded"]("oracle_autoencoded", cfg, data)

    n_real = len(data.train.labels)
    counts = np.bincount(arm.labels.numpy(), minlength=10)
    assert counts.tolist() == np.bincount(oracle.labels.numpy(), minlength=10).tolist() == [300] * 10
    assert arm.n_synthetic == len(arm.labels) - n_real == 3000 - n_real
    assert torch.equal(arm.images[:n_real], data.train.images)  # the real part untouched
    extra = arm.images[n_real:]
    assert extra.shape[1:] == data.train.images.shape[1:] and extra.min() >= -1 and extra.max() <= 1
    # Every extra image is an oracle image that is not in the real split, sent through the autoencoder.
    real = {row.numpy().tobytes() for row in data.train.images}
    surplus = torch.stack([row for row in oracle.images if row.numpy().tobytes() not in real])
    with torch.inference_mode():
        padded = F.pad(surplus[:4], (2, 2, 2, 2), value=-1.0)  # resize: pad, 28 -> 32
        expected = (generator.decode(generator.encode(padded))[:, :, 2:30, 2:30] * 255).round() / 255 * 2 - 1
    torch.testing.assert_close(extra[:4], expected, atol=1 / 255 + 1e-6, rtol=0)
    assert not torch.equal(extra[:4], surplus[:4])


# ----------------------------------------------------------------------------- performance bench


def test_bench_sampling_times_interleaved_and_project_fp32_equals_the_stock_loop():
    from augment.config import SamplerConfig
    from pipelines.bench_generator import bench_sampling, timed

    calls = []
    seconds = timed({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, repeats=2)
    assert calls == ["a", "b", "a", "b", "a", "b"]  # warm-up, then interleaved repeats
    assert set(seconds) == {"a", "b"} and all(s >= 0 for s in seconds.values())

    figures = bench_sampling(_tiny_generator(16), SamplerConfig(num_inference_steps=3, guidance_scale=1.0),
                             n_images=4, repeats=1)
    assert figures["max |project fp32 - stock|"] == 0  # the same arithmetic, the same seeds
    assert figures["speed-up"] == pytest.approx(figures["project img/s"] / figures["stock img/s"])
