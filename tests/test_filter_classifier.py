"""FilterClassifier: architectures, predict, save/load and user classifiers (tiny random nets, CPU)."""

import json
import sys

import pytest
import torch
from safetensors.torch import save_file

from augment.filter.classifier import (
    ARCHITECTURES,
    LUMA_WEIGHTS,
    SMALL_CNN_WIDTH,
    FilterClassifier,
    build_network,
    init_weights,
    load_user_classifier,
)

NAMES = ["zero", "one", "two"]


def make_classifier(arch="small_cnn", mode="L", resolution=16, temperature=1.5, seed=0):
    net, net_mode = build_network(arch, mode, len(NAMES))
    init_weights(net, torch.Generator().manual_seed(seed))
    return FilterClassifier(net, NAMES, arch=arch, mode=net_mode, resolution=resolution, temperature=temperature)


def images(n=5, channels=1, side=16, seed=0):
    return torch.rand(n, channels, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_architectures_take_the_mode_and_give_k_logits(arch, mode, channels):
    net, net_mode = build_network(arch, mode, 7)
    assert net_mode == mode
    assert net(torch.zeros(2, channels, 8, 8)).shape == (2, 7)


def test_resnet18_is_adapted_to_small_inputs():
    net, _ = build_network("resnet18", "L", 3)
    assert (net.conv1.in_channels, net.conv1.kernel_size, net.conv1.stride) == (1, (3, 3), (1, 1))
    assert isinstance(net.maxpool, torch.nn.Identity)


def test_torchvision_model_by_name_takes_rgb():
    net, mode = build_network("mobilenet_v3_small", "L", 4)
    assert mode == "RGB"
    assert net.classifier[-1].out_features == 4


@pytest.mark.parametrize(
    "arch, mode, message",
    [
        ("resnet_tiny", "L",
         "filter.arch: unknown architecture 'resnet_tiny'; allowed: ['resnet18', 'small_cnn'] or a name "
         "from torchvision.models.list_models(module=torchvision.models)"),
        ("small_cnn", "CMYK", "mode: unknown image mode 'CMYK'; allowed: ['L', 'RGB']"),
    ],
)
def test_build_network_errors(arch, mode, message):
    with pytest.raises(ValueError) as err:
        build_network(arch, mode, 3)
    assert str(err.value) == message


def test_init_weights_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = (make_classifier(seed=s) for s in (0, 0, 1))
    x = images()
    assert torch.equal(a.logits(x), b.logits(x))
    assert not torch.equal(a.logits(x), c.logits(x))
    net, _ = build_network("small_cnn", "L", 3)  # construction draws from the global RNG ...
    torch.random.set_rng_state(state)
    init_weights(net, torch.Generator().manual_seed(0))  # ... re-initialisation does not
    assert torch.equal(torch.random.get_rng_state(), state)


def test_predict_is_calibrated_softmax_with_unit_features():
    clf = make_classifier(temperature=2.0)
    x = images(n=7)
    probs, top, feats = clf.predict(x, batch_size=3)
    with torch.no_grad():
        logits = clf.logits(x)
        raw, _ = clf.module(x)
    torch.testing.assert_close(logits, raw / 2.0)
    torch.testing.assert_close(probs, torch.softmax(logits, dim=1))
    assert torch.equal(top, probs.argmax(1))
    assert feats.shape == (7, 4 * SMALL_CNN_WIDTH)  # small_cnn's penultimate width
    torch.testing.assert_close(feats.norm(dim=1), torch.ones(7))


def test_predict_in_bf16_is_close_to_fp32_and_returns_fp32():
    clf = make_classifier(temperature=2.0)
    x = images(n=16)
    probs, top, feats = clf.predict(x)
    probs16, top16, feats16 = clf.predict(x, dtype=torch.bfloat16)
    assert probs16.dtype == feats16.dtype == torch.float32
    assert 0 < (probs16 - probs).abs().max() < 0.02
    torch.testing.assert_close(feats16.norm(dim=1), torch.ones(16))
    assert (feats16 * feats).sum(1).min() > 0.99  # the same direction: similarities compare


def test_features_are_centred_by_the_real_feature_mean():
    clf = make_classifier()
    real = images(n=6, seed=1)
    clf.fit_feature_mean(real[:4])
    clf_batched = make_classifier()
    clf_batched.fit_feature_mean(real[:4], batch_size=3)
    with torch.no_grad():
        _, raw_real = clf.module(real[:4])
        _, raw = clf.module(real)
    torch.testing.assert_close(clf.feature_mean, raw_real.mean(0))
    torch.testing.assert_close(clf_batched.feature_mean, clf.feature_mean)
    _, _, feats = clf.predict(real)
    torch.testing.assert_close(feats, torch.nn.functional.normalize(raw - raw_real.mean(0), dim=1))


def test_logits_are_differentiable():
    clf = make_classifier()
    x = images(n=2).requires_grad_()
    clf.logits(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_inputs_of_other_mode_and_size_are_converted():
    clf = make_classifier(mode="L", resolution=16)
    grey = images(n=2, channels=1, side=16)
    rgb = grey.expand(-1, 3, -1, -1) / sum(LUMA_WEIGHTS)  # its luma is `grey`
    with torch.no_grad():
        torch.testing.assert_close(clf.logits(rgb), clf.logits(grey))
        assert clf.logits(images(n=2, channels=1, side=28)).shape == (2, 3)
    rgb_clf = make_classifier(mode="RGB")
    with torch.no_grad():
        torch.testing.assert_close(rgb_clf.logits(grey), rgb_clf.logits(grey.expand(-1, 3, -1, -1)))


def test_predict_empty():
    probs, top, feats = make_classifier().predict(torch.zeros(0, 1, 16, 16))
    assert probs.shape == (0, 3) and top.shape == (0,)


@pytest.mark.parametrize("arch", sorted(ARCHITECTURES))
def test_save_load_round_trip_gives_identical_logits(tmp_path, arch):
    clf = make_classifier(arch=arch, mode="RGB", resolution=8, temperature=0.7)
    clf.metrics = {"val_balanced_accuracy": 0.5, "arch": arch}
    clf.fingerprint = "abc"
    clf.fit_feature_mean(images(n=3, channels=3, side=8))
    clf.save(tmp_path / "clf")
    loaded = FilterClassifier.load(tmp_path / "clf")
    x = images(n=2, channels=3, side=8)
    with torch.no_grad():
        assert torch.equal(loaded.logits(x), clf.logits(x))
    assert loaded.meta() == clf.meta()
    assert torch.equal(loaded.predict(x)[2], clf.predict(x)[2])
    assert (loaded.class_names, loaded.mode, loaded.resolution, loaded.temperature) == (NAMES, "RGB", 8, 0.7)


@pytest.mark.parametrize("width", [8, 32])
def test_small_cnn_width_is_built_saved_and_read_back(tmp_path, width):
    net, _ = build_network("small_cnn", "L", 3, width=width)
    assert [m.out_channels for m in net.modules() if isinstance(m, torch.nn.Conv2d)] == [
        width, width, 2 * width, 2 * width, 4 * width]
    init_weights(net, torch.Generator().manual_seed(0))
    clf = FilterClassifier(net, NAMES, arch="small_cnn", mode="L", resolution=16)
    clf.save(tmp_path / "clf")  # the width is not in the json: load reads it from the weights
    loaded = FilterClassifier.load(tmp_path / "clf")
    x = images()
    with torch.no_grad():
        assert torch.equal(loaded.logits(x), clf.logits(x))
    # a user's state dict of that width
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, tmp_path / "user.safetensors")
    user = load_user_classifier(tmp_path / "user.safetensors", NAMES, arch="small_cnn", mode="L", resolution=16)
    with torch.no_grad():
        assert torch.equal(user.logits(x), clf.logits(x))


def test_load_unreadable_weights_names_the_file(tmp_path):
    clf = make_classifier()
    clf.save(tmp_path / "clf")
    (tmp_path / "clf" / "classifier.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match="cannot read classifier weights .*classifier.safetensors"):
        FilterClassifier.load(tmp_path / "clf")


def test_load_missing_folder(tmp_path):
    with pytest.raises(ValueError) as err:
        FilterClassifier.load(tmp_path)
    assert str(err.value) == f"no saved classifier in {tmp_path}: expected classifier.safetensors and classifier.json"


def write_state_dict(tmp_path, clf, meta=None, name="user.safetensors"):
    path = tmp_path / name
    save_file({k: v.contiguous() for k, v in clf.module.net.state_dict().items()}, path)
    if meta is not None:
        path.with_suffix(".json").write_text(json.dumps(meta))
    return path


def test_user_state_dict_with_arch(tmp_path):
    clf = make_classifier(temperature=1.0)
    path = write_state_dict(tmp_path, clf)
    user = load_user_classifier(str(path), NAMES, arch="small_cnn", mode="L", resolution=16)
    x = images()
    with torch.no_grad():
        assert torch.equal(user.logits(x), clf.logits(x))
    assert (user.mean, user.std, user.temperature, user.arch) == ([0.5], [0.5], 1.0, "small_cnn")


def test_user_state_dict_side_json_overrides(tmp_path):
    clf = make_classifier()
    meta = {"class_names": NAMES, "temperature": 3.0, "mean": [0.1], "std": [0.2], "resolution": 20}
    path = write_state_dict(tmp_path, clf, meta)
    user = load_user_classifier(str(path), NAMES, arch="small_cnn", mode="L", resolution=16)
    assert (user.temperature, user.mean, user.std, user.resolution) == (3.0, [0.1], [0.2], 20)


def test_user_saved_folder(tmp_path):
    clf = make_classifier()
    clf.save(tmp_path / "clf")
    user = load_user_classifier(str(tmp_path / "clf"), NAMES, arch="resnet18", mode="RGB", resolution=32)
    assert (user.arch, user.mode, user.resolution) == ("small_cnn", "L", 16)


def test_user_classifier_with_other_class_names_is_refused(tmp_path):
    path = write_state_dict(tmp_path, make_classifier(), {"class_names": ["a", "b", "c"]})
    with pytest.raises(ValueError) as err:
        load_user_classifier(str(path), NAMES, arch="small_cnn", mode="L", resolution=16)
    assert str(err.value) == (
        f"filter.path: classifier '{path}' has classes ['a', 'b', 'c'] but the dataset has "
        "['zero', 'one', 'two']; they must be the same, in the same order"
    )


def test_user_classifier_unknown_arch_is_refused(tmp_path):
    path = write_state_dict(tmp_path, make_classifier())
    with pytest.raises(ValueError) as err:
        load_user_classifier(str(path), NAMES, arch="lenet", mode="L", resolution=16)
    assert str(err.value) == (
        "filter.arch: unknown architecture 'lenet'; allowed: ['resnet18', 'small_cnn'] or a name "
        "from torchvision.models.list_models(module=torchvision.models)"
    )


def test_user_weights_that_do_not_fit_the_arch(tmp_path):
    path = write_state_dict(tmp_path, make_classifier())
    with pytest.raises(ValueError) as err:
        load_user_classifier(str(path), NAMES, arch="resnet18", mode="L", resolution=16)
    assert str(err.value).startswith(f"weights {path} do not fit filter.arch='resnet18': Error(s) in loading")


def test_user_path_of_unknown_form(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"")
    with pytest.raises(ValueError) as err:
        load_user_classifier(str(path), NAMES, arch="small_cnn", mode="L", resolution=16)
    assert str(err.value) == (
        f"filter.path: '{path}' is neither a .safetensors file, a saved classifier folder "
        "(classifier.json) nor a transformers folder (config.json)"
    )


def test_transformers_folder_without_transformers(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # `import transformers` raises ImportError
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(ImportError) as err:
        load_user_classifier(str(tmp_path), NAMES, arch="small_cnn", mode="L", resolution=16)
    assert str(err.value) == (
        f"filter.path '{tmp_path}' is a transformers folder; loading it needs the `transformers` "
        "package (pip install transformers)"
    )


def test_transformers_folder(tmp_path):
    import transformers  # in the `test` extra

    config = transformers.ViTConfig(
        image_size=16, patch_size=8, num_channels=3, hidden_size=16, num_hidden_layers=1,
        num_attention_heads=2, intermediate_size=32, num_labels=3,
        id2label=dict(enumerate(NAMES)), label2id={n: i for i, n in enumerate(NAMES)},
    )
    transformers.ViTForImageClassification(config).save_pretrained(tmp_path)
    transformers.ViTImageProcessor(size={"height": 16, "width": 16}).save_pretrained(tmp_path)
    clf = load_user_classifier(str(tmp_path), NAMES, arch="small_cnn", mode="L", resolution=32)
    probs, top, feats = clf.predict(images(n=2))
    assert (clf.mode, clf.resolution, probs.shape, feats.shape) == ("RGB", 16, (2, 3), (2, 16))
    with pytest.raises(ValueError):
        load_user_classifier(str(tmp_path), ["a", "b", "c"], arch="small_cnn", mode="L", resolution=32)
