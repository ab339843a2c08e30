"""The whole job: CLI dry run, the smoke run end to end, output rules, 1 vs 2 processes, installed package."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import numpy as np
import pandas as pd
import pytest

from augment import balance
from augment.data import long_tail_counts

REPO = Path(__file__).resolve().parents[1]
CIFAR = REPO.parent / "shared" / "data" / "cifar10"


def run_cli(*args: str, cwd: Path = REPO, env: dict | None = None, module: str = "augment") -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=600)


def test_dry_run_mnist_lt_plan(tmp_path: Path):
    out = tmp_path / "out"
    proc = run_cli("dry_run=true", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    plan = pd.read_csv(out / "plan.csv")
    n = long_tail_counts(300, 10, 50)
    assert plan["real_count"].tolist() == n
    assert plan["to_generate"].tolist() == [300 - k for k in n]
    assert plan["class_name"].astype(str).tolist() == [str(c) for c in range(10)]
    assert "to_generate" in proc.stdout and str(sum(300 - k for k in n)) in proc.stdout
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == ["config.yaml", "plan.csv"]


@pytest.mark.skipif(not (CIFAR / "train.parquet").is_file(), reason=f"CIFAR-10 parquet not found at {CIFAR}")
def test_dry_run_cifar10_lt_plan(tmp_path: Path):
    out = tmp_path / "out2"
    proc = run_cli("dry_run=true", "dataset=cifar10_lt", f"dataset.path={CIFAR}", f"output.dir={out}")
    assert proc.returncode == 0, proc.stderr
    plan = pd.read_csv(out / "plan.csv")
    n = long_tail_counts(5000, 10, 100)
    assert plan["real_count"].tolist() == n
    assert plan["to_generate"].tolist() == [5000 - k for k in n]


def test_typo_fails_before_any_work(tmp_path: Path):
    proc = run_cli("generator.sampler.nme=ddim", f"output.dir={tmp_path / 'x'}")
    assert proc.returncode != 0
    assert "nme" in proc.stderr
    assert not (tmp_path / "x").exists()


def test_bad_generator_config_fails_before_any_work(tmp_path: Path):
    proc = run_cli("experiment=smoke", "generator.sampler.name=magic", f"output.dir={tmp_path / 'x'}")
    assert proc.returncode != 0
    assert "generator.sampler.name" in proc.stderr and "magic" in proc.stderr
    assert not (tmp_path / "x").exists()


SMOKE = ["experiment=smoke"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke") / "out"
    ds = balance(overrides=[*SMOKE, f"output.dir={out}"])
    return out, ds


def test_smoke_run_fills_the_plan(smoke_run):
    out, ds = smoke_run
    plan = pd.read_csv(out / "plan.csv")
    train = ds["train"]
    labels = np.asarray(train["label"])
    synthetic = np.asarray(train["is_synthetic"])
    for row in plan.itertuples():
        assert (labels[~synthetic] == row.class_id).sum() == row.real_count
        assert (labels[synthetic] == row.class_id).sum() == row.to_generate
    assert not synthetic[: int(plan["real_count"].sum())].any()  # real rows first
    assert set(ds) == {"train", "test"}


def test_smoke_run_features_and_provenance(smoke_run):
    out, ds = smoke_run
    train = ds["train"]
    assert isinstance(train.features["image"], datasets.Image)
    assert train.features["label"].names == [str(c) for c in range(10)]
    assert train.features["seed"].dtype == "int64" and train.features["confidence"].dtype == "float32"
    synth = train.filter(lambda r: r["is_synthetic"])
    real = train.filter(lambda r: not r["is_synthetic"])
    assert all(s is not None for s in synth["seed"]) and len(set(synth["seed"])) == len(synth)
    assert all(g for g in synth["generator"])
    assert set(real["seed"]) == {None} and set(real["generator"]) == {None}
    img = synth[0]["image"]
    assert img.size == (28, 28) and img.mode == "L"  # exported at the source size and mode


def test_smoke_run_real_rows_are_byte_identical(smoke_run):
    from augment.api import compose_config
    from augment.data import load_source

    out, ds = smoke_run
    cfg, _ = compose_config(SMOKE)
    source = load_source(cfg.dataset, cfg.seed)
    exported = ds["train"].cast_column("image", datasets.Image(decode=False))
    n = len(source.train)
    assert [r["bytes"] for r in exported[:n]["image"]] == [r["bytes"] for r in
                                                           source.train.cast_column("image", datasets.Image(decode=False))["image"]]


def test_smoke_run_writes_everything(smoke_run):
    out, _ = smoke_run
    for path in ["plan.csv", "config.yaml", "dataset", "hub/README.md", "generator", "report/README.md"]:
        assert (out / path).exists(), path
    hub = datasets.load_dataset(str(out / "hub"))
    assert hub["train"].features == datasets.load_from_disk(str(out / "dataset"))["train"].features
    assert not list(out.glob(".tmp*"))


def test_finished_output_is_not_overwritten(smoke_run):
    out, _ = smoke_run
    before = (out / "dataset" / "dataset_dict.json").stat().st_mtime_ns
    with pytest.raises(Exception, match="output.overwrite=true"):
        balance(overrides=[*SMOKE, f"output.dir={out}"])
    assert (out / "dataset" / "dataset_dict.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_two_processes_give_the_same_dataset(smoke_run, tmp_path: Path):
    """torchrun --nproc_per_node=2 (gloo on the CPU) and 1 process export the very same rows."""
    out1, _ = smoke_run
    common = [*SMOKE, f"generator.path={out1 / 'generator'}", "generator.sampler.batch_size=8"]
    one = run_cli(*common, f"output.dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--master_port=29531",
                "-m", "augment", *common, f"output.dir={tmp_path / 'two'}"]
    two = subprocess.run(torchrun, cwd=REPO, capture_output=True, text=True, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    a = datasets.load_from_disk(str(tmp_path / "one" / "dataset"))["train"].cast_column("image", datasets.Image(decode=False))
    b = datasets.load_from_disk(str(tmp_path / "two" / "dataset"))["train"].cast_column("image", datasets.Image(decode=False))
    assert a.to_pandas().equals(b.to_pandas())
    assert a["is_synthetic"].count(True) > 0


@pytest.mark.slow
def test_installed_package_runs_from_another_directory(tmp_path: Path):
    """A non-editable install finds its configs (shipped as augment/conf)."""
    target = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                          "--target", str(target), str(REPO)], capture_output=True, text=True, timeout=600)
    assert pip.returncode == 0, pip.stderr
    assert (target / "augment" / "conf" / "config.yaml").is_file()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    proc = run_cli("dry_run=true", "output.dir=out", cwd=elsewhere, env={"PYTHONPATH": str(target)})
    assert proc.returncode == 0, proc.stderr
    assert (elsewhere / "out" / "plan.csv").is_file()


def test_classifier_guidance_without_a_classifier_fails_before_any_work(tmp_path: Path):
    proc = run_cli("experiment=smoke", "generator.sampler.classifier_guidance_scale=1.0", f"output.dir={tmp_path / 'x'}")
    assert proc.returncode != 0
    assert ("generator.sampler.classifier_guidance_scale=1.0 needs the filter's classifier, but filter.name='none'"
            in proc.stderr)
    assert not (tmp_path / "x").exists()


def test_filtered_smoke_run_with_classifier_guidance(tmp_path: Path, caplog):
    """filter=classifier end to end: every kept row is confident and of its class; the report says so."""
    from pipelines.bench_generator import FILTER_SHARE

    out = tmp_path / "out"
    caplog.set_level(logging.INFO, logger="augment")
    ds = balance(overrides=[*SMOKE, "filter.name=classifier", "filter.arch=small_cnn", "filter.steps=60",
                            "filter.min_confidence=0.3", "filter.max_rounds=2", "filter.on_shortfall=warn",
                            "generator.sampler.classifier_guidance_scale=0.5", f"output.dir={out}"])
    synth = ds["train"].filter(lambda r: r["is_synthetic"])
    assert len(synth) > 0
    assert min(synth["confidence"]) >= 0.3
    reasons = (out / "report" / "README.md").read_text()
    assert "acceptance" in reasons.lower()
    plan = pd.read_csv(out / "plan.csv")
    labels = np.asarray(synth["label"])
    for row in plan.itertuples():  # never more than planned
        assert (labels == row.class_id).sum() <= row.to_generate
    # The job's "filter + write" line, in the form pipelines/bench_generator.py reads it.
    shares = [FILTER_SHARE.search(r.getMessage()) for r in caplog.records]
    share = next(m for m in shares if m)
    assert float(share.group(1)) >= 0 and float(share.group(3)) > 0
