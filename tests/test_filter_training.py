"""train_classifier on a tiny, easy, imbalanced problem (CPU, a few seconds)."""

import pytest
import torch

import augment.filter.training as training
from augment.config import FilterConfig
from augment.filter.classifier import SMALL_CNN_WIDTH
from augment.filter.training import augment_batch, stratified_split, train_classifier

NAMES = ["top", "bottom", "left"]
SIDE = 12
CFG = FilterConfig(arch="small_cnn", steps=30, batch_size=32, lr=3e-3, val_fraction=0.2)


def easy_data(counts=(120, 40, 15), seed=0):
    """Noise plus one bright half per class (top, bottom, left), in [-1, 1], imbalanced."""
    g = torch.Generator().manual_seed(seed)
    xs, ys = [], []
    for c, n in enumerate(counts):
        x = 0.3 * torch.rand(n, 1, SIDE, SIDE, generator=g)
        half = [(slice(None), slice(None), slice(0, SIDE // 2)),
                (slice(None), slice(None), slice(SIDE // 2, None)),
                (slice(None), slice(None), slice(None), slice(0, SIDE // 2))][c]
        x[half] += 0.7
        xs.append(x * 2 - 1)
        ys.append(torch.full((n,), c))
    return torch.cat(xs), torch.cat(ys)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("work")
    x, y = easy_data()
    return train_classifier(x, y, NAMES, CFG, seed=0, mode="L", work_dir=work_dir, device="cpu"), work_dir


def test_learns_the_easy_problem_and_reports_metrics(trained):
    clf, _ = trained
    m = clf.metrics
    assert set(m) == {"val_balanced_accuracy", "val_ece_before", "val_ece_after", "temperature", "n_train", "n_val", "arch"}
    assert m["val_balanced_accuracy"] >= 0.95
    assert (m["n_train"], m["n_val"], m["arch"]) == (140, 35, "small_cnn")  # 24 + 8 + 3 held out
    assert m["temperature"] == clf.temperature > 0
    assert 0 <= m["val_ece_after"] <= 1 and 0 <= m["val_ece_before"] <= 1
    assert clf.feature_mean.shape == (4 * SMALL_CNN_WIDTH,)  # small_cnn's penultimate width, centred on the real images
    x, y = easy_data(counts=(20, 20, 20), seed=1)  # fresh images, balanced
    _, top, _ = clf.predict((x + 1) / 2)
    assert (top == y).float().mean() >= 0.95


def test_cached_classifier_is_loaded_not_retrained(trained, monkeypatch):
    clf, work_dir = trained
    assert (work_dir / "classifier" / "classifier.safetensors").is_file()
    monkeypatch.setattr(training, "_fit", lambda *a, **k: pytest.fail("retrained instead of loading the cache"))
    x, y = easy_data()
    again = train_classifier(x, y, NAMES, CFG, seed=0, mode="L", work_dir=work_dir, device="cpu")
    probe = (easy_data(seed=3)[0][:8] + 1) / 2
    with torch.no_grad():
        assert torch.equal(again.logits(probe), clf.logits(probe))
    assert again.metrics == clf.metrics


@pytest.mark.parametrize("change", ["seed", "data"])
def test_other_seed_or_data_misses_the_cache(trained, monkeypatch, change):
    _, work_dir = trained
    calls = []
    monkeypatch.setattr(training, "_fit", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(training.FilterClassifier, "save", lambda self, path: None)  # keep the cache
    x, y = easy_data()
    seed = 1 if change == "seed" else 0
    if change == "data":
        x = x.clone()
        x[0, 0, 0, 0] += 0.01
    train_classifier(x, y, NAMES, CFG, seed=seed, mode="L", work_dir=work_dir, device="cpu")
    assert calls == [1]


def test_training_is_deterministic_and_seeded():
    x, y = easy_data(counts=(10, 6, 4))
    cfg = FilterConfig(arch="small_cnn", steps=2, batch_size=8, val_fraction=0.25)
    a, b, c = (train_classifier(x, y, NAMES, cfg, seed=s, mode="L", device="cpu") for s in (5, 5, 6))
    probe = (x[:4] + 1) / 2
    with torch.no_grad():
        assert torch.equal(a.logits(probe), b.logits(probe))
        assert not torch.equal(a.logits(probe), c.logits(probe))


def test_stratified_split():
    labels = torch.tensor([0] * 10 + [1] * 3 + [2] * 2 + [3])
    train, val = stratified_split(labels, 0.2, torch.Generator().manual_seed(0))
    assert torch.bincount(labels[val], minlength=4).tolist() == [2, 1, 1, 0]
    assert sorted(train.tolist() + val.tolist()) == list(range(16))
    assert train.tolist() == sorted(train.tolist())
    _, none = stratified_split(labels, 0.0, torch.Generator().manual_seed(0))
    assert none.numel() == 0


def test_augment_batch_crops_without_flipping_digits():
    side = 8
    x = torch.arange(1.0, side + 1).repeat(6, 1, side, 1)  # each row 1..8, left to right
    out = augment_batch(x, torch.Generator().manual_seed(0), flip=False)
    assert out.shape == x.shape
    row = out[:, 0, side // 2]  # (6, 8): a shifted 1..8 with zeros from the padding
    for r in row:
        values = r[r > 0]
        assert torch.equal(values, torch.arange(values[0].item(), values[0].item() + len(values)))
        assert len(values) >= side - 1  # pad = 8 / 8 = 1 px
    assert any(not torch.equal(o, x[0]) for o in out)
    flipped = augment_batch(x, torch.Generator().manual_seed(0), flip=True)[:, 0, side // 2]
    assert any((r[r > 0].diff() < 0).all() for r in flipped)


@pytest.mark.parametrize(
    "cfg, mode, shape, message",
    [
        (FilterConfig(arch="resnet50"), "L", (4, 1, 8, 8),
         "filter.arch: cannot train 'resnet50' here; allowed: ['resnet18', 'small_cnn']"),
        (FilterConfig(arch="small_cnn"), "RGB", (4, 1, 8, 8),
         "images must be (N, 3, R, R) for mode 'RGB', got (4, 1, 8, 8)"),
        (FilterConfig(arch="small_cnn"), "P", (4, 1, 8, 8), "mode: unknown image mode 'P'; allowed: ['L', 'RGB']"),
        (FilterConfig(arch="small_cnn", val_fraction=1.0), "L", (4, 1, 8, 8),
         "filter.val_fraction must be in [0, 1), got 1.0"),
    ],
)
def test_train_classifier_errors(cfg, mode, shape, message):
    with pytest.raises(ValueError) as err:
        train_classifier(torch.zeros(shape), torch.zeros(shape[0], dtype=torch.long), NAMES, cfg, seed=0, mode=mode)
    assert str(err.value) == message


def test_labels_out_of_range():
    with pytest.raises(ValueError) as err:
        train_classifier(torch.zeros(2, 1, 8, 8), torch.tensor([0, 3]), NAMES, CFG, seed=0, mode="L")
    assert str(err.value) == "labels must be in [0, 3), got [0, 3]"


def test_unreadable_cache_is_retrained(tmp_path, monkeypatch):
    (tmp_path / "classifier").mkdir()
    (tmp_path / "classifier" / "classifier.json").write_text("{not json")
    calls = []
    monkeypatch.setattr(training, "_fit", lambda *a, **k: calls.append(1))
    x, y = easy_data(counts=(4, 4, 4))
    clf = train_classifier(x, y, NAMES, CFG, seed=0, mode="L", work_dir=tmp_path, device="cpu")
    assert calls == [1]
    assert training.FilterClassifier.load(tmp_path / "classifier").fingerprint == clf.fingerprint
