"""Tests of the latent diffusion generator with tiny components on the CPU."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from diffusers import AutoencoderKL, AutoencoderTiny

from augment.config import AutoencoderConfig, DenoiserConfig, GeneratorConfig, SamplerConfig, ScheduleConfig
from augment.generator import (
    SAMPLERS,
    LatentDiffusionGenerator,
    train_generator,
    validate_generator_config,
)
from augment.generator import denoiser as dn
from augment.generator import training
from augment.precision import resolve_precision
from augment.generator.validation import CLASS_BALANCE

CLASS_NAMES = ["zero", "one", "two"]
RESOLUTION = 8


def tiny_config(**denoiser_overrides) -> GeneratorConfig:
    denoiser = dict(block_out_channels=[16, 32], attention_levels=[False, True], layers_per_block=1,
                    norm_num_groups=8, attention_head_dim=8, steps=4, batch_size=8, warmup_steps=1,
                    checkpoint_every=2, log_every=2)
    denoiser.update(denoiser_overrides)
    return GeneratorConfig(
        autoencoder=AutoencoderConfig(block_out_channels=[8, 16], norm_num_groups=4, latent_channels=2,
                                      steps=3, batch_size=8),
        denoiser=DenoiserConfig(**denoiser),
        sampler=SamplerConfig(num_inference_steps=3),
    )


def tiny_data(n: int = 24):
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(n) % len(CLASS_NAMES)
    # class-dependent mean so the classes differ
    images = (torch.rand((n, 1, RESOLUTION, RESOLUTION), generator=g) - 0.5 + 0.3 * (labels.view(-1, 1, 1, 1) - 1))
    return images.clamp(-1, 1), labels


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work_dir = tmp_path_factory.mktemp("gen")
    images, labels = tiny_data()
    generator = train_generator(images, labels, CLASS_NAMES, tiny_config(), work_dir=work_dir, seed=0, mode="L")
    return generator, work_dir


def sampler(**kw) -> SamplerConfig:
    # fp32: exact per-seed comparisons; bf16 sampling has its own test
    return dataclasses.replace(SamplerConfig(num_inference_steps=3, precision="fp32"), **kw)


def tiny_classifier(channels: int = 1, num_classes: int = len(CLASS_NAMES)) -> torch.nn.Module:
    torch.manual_seed(0)  # test-side weights only
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(channels * RESOLUTION**2, num_classes))


# ------------------------------------------------------------------------------------ shapes
def test_shapes_and_null_class_read_from_configs(trained):
    generator, _ = trained
    assert generator.latent_shape == (2, 4, 4)
    assert generator.image_shape == (1, RESOLUTION, RESOLUTION)
    assert generator.null_class_id == len(CLASS_NAMES) == generator.denoiser.config.num_class_embeds - 1
    assert generator.class_names == CLASS_NAMES


def test_scaling_factor_computed_from_data_normalises_latents(trained):
    generator, _ = trained
    z = generator.encode(tiny_data()[0])
    assert z.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert z.std().item() == pytest.approx(1.0, abs=1e-4)


def test_training_is_a_function_of_the_seed_not_of_the_global_rng(trained, tmp_path):
    generator, _ = trained
    images, labels = tiny_data()
    torch.manual_seed(12345)  # the library must neither depend on nor reseed the global RNG
    state = torch.get_rng_state()
    again = train_generator(images, labels, CLASS_NAMES, tiny_config(), work_dir=tmp_path, seed=0, mode="L")
    assert torch.equal(torch.get_rng_state(), state)
    for part in ("vae", "denoiser"):
        ours, theirs = getattr(generator, part).state_dict(), getattr(again, part).state_dict()
        assert all(torch.equal(ours[k], theirs[k]) for k in ours)
    other_seed = train_generator(images, labels, CLASS_NAMES, tiny_config(), work_dir=tmp_path, seed=1, mode="L")
    assert not torch.equal(other_seed.denoiser.conv_in.weight, generator.denoiser.conv_in.weight)


def test_given_scaling_factor_is_used_and_reuses_the_autoencoder(trained, monkeypatch, tmp_path):
    import shutil

    generator, trained_dir = trained
    work_dir = tmp_path / "work"
    shutil.copytree(trained_dir, work_dir)  # the fixture's folder stays as it is

    def no_training(*args, **kwargs):
        raise AssertionError("autoencoder trained again")

    monkeypatch.setattr(training, "train_autoencoder", no_training)
    cfg = tiny_config(steps=1)
    cfg.autoencoder.scaling_factor = 0.5
    images, labels = tiny_data()
    other = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=work_dir, seed=0, mode="L")
    assert (other.scaling_factor, other.shift_factor) == (0.5, 0.0)
    assert other.metadata["fingerprint"] != generator.metadata["fingerprint"]


@pytest.mark.slow
def test_training_lowers_the_loss(tmp_path):
    images, labels = tiny_data()
    cfg = tiny_config(steps=40, log_every=10, checkpoint_every=100, lr=3e-3)
    cfg.autoencoder.steps, cfg.autoencoder.lr = 40, 3e-3
    generator = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path, seed=0, mode="L")
    denoiser = generator.metadata["metrics"]["denoiser"]
    assert denoiser["final_loss"] < 0.8 * denoiser["initial_loss"]
    auto = generator.metadata["metrics"]["autoencoder"]
    assert auto["final_loss"] < auto["initial_loss"]
    assert auto["psnr_holdout_db"] > 0


def _class_spread(generator: LatentDiffusionGenerator) -> float:
    """Mean squared difference between the denoiser's predictions for two classes on the same input."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn((16, *generator.latent_shape), generator=g)
    t = torch.full((16,), 500)
    with torch.no_grad():
        zero = dn.predict(generator.denoiser, x, t, torch.zeros(16, dtype=torch.long))
        two = dn.predict(generator.denoiser, x, t, torch.full((16,), 2))
    return float(((zero - two) ** 2).mean())


def test_cbdm_regulariser_pulls_the_class_predictions_together(tmp_path):
    images, labels = tiny_data()
    spread = {}
    for weight in (0.0, 5.0):
        cfg = tiny_config(steps=60, checkpoint_every=100, lr=3e-3, ema_decay=0.0, cbdm_weight=weight)
        generator = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path / str(weight), seed=0,
                                    mode="L")
        spread[weight] = _class_spread(generator)
    assert spread[5.0] < 0.2 * spread[0.0]  # measured: ~20x smaller at 60 steps, seeds 0 and 1


# ---------------------------------------------------------------------------------- sampling
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_each_sampler_gives_finite_images_in_range(trained, name):
    generator, _ = trained
    out = generator.sample([0, 1, 2], [5, 6, 7], sampler(name=name))
    assert out.shape == (3, 1, RESOLUTION, RESOLUTION)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


@pytest.mark.parametrize(
    "guidance",
    [
        dict(guidance_scale=3.0),
        dict(guidance_scale=1.0),
        dict(guidance_scale=0.0),
        dict(guidance_scale=2.0, guidance_per_class={"one": 5.0}),
        dict(guidance_scale=1.0, classifier_guidance_scale=2.0),
        dict(guidance_scale=3.0, classifier_guidance_scale=2.0),
    ],
)
@pytest.mark.parametrize("name", ["dpmsolver++", "euler"])
def test_each_guidance_mode_gives_finite_images(trained, guidance, name):
    generator, _ = trained
    out = generator.sample([0, 1, 2, 1], [1, 2, 3, 4], sampler(name=name, **guidance),
                           classifier=tiny_classifier())
    assert out.shape == (4, 1, RESOLUTION, RESOLUTION)
    assert torch.isfinite(out).all() and out.min() >= 0 and out.max() <= 1


def test_guidance_changes_the_image_and_per_class_scale_applies_only_to_its_class(trained):
    generator, _ = trained
    base = generator.sample([0, 1], [3, 4], sampler(guidance_scale=2.0))
    per_class = generator.sample([0, 1], [3, 4], sampler(guidance_scale=2.0, guidance_per_class={"one": 6.0}))
    assert torch.allclose(base[0], per_class[0], atol=1e-6)
    assert not torch.allclose(base[1], per_class[1], atol=1e-4)
    scales = generator.guidance_scales([0, 1, 2], sampler(guidance_scale=2.0, guidance_per_class={"one": 6.0}))
    assert scales.tolist() == [2.0, 6.0, 2.0]


def test_guidance_interval_guides_only_the_steps_inside_it(trained, monkeypatch):
    generator, _ = trained
    ids, seeds = [0, 1, 2], [5, 6, 7]
    always = generator.sample(ids, seeds, sampler(guidance_scale=3.0))
    unguided = generator.sample(ids, seeds, sampler(guidance_scale=1.0))
    whole = generator.sample(ids, seeds, sampler(guidance_scale=3.0, guidance_interval=[0.0, 1.0]))
    torch.testing.assert_close(whole, always, atol=1e-6, rtol=0)
    # no timestep lies at or below 1e-6 of the schedule: nothing is guided
    nowhere = generator.sample(ids, seeds, sampler(guidance_scale=3.0, guidance_interval=[0.0, 1e-6]))
    torch.testing.assert_close(nowhere, unguided, atol=1e-6, rtol=0)
    # a middle interval: only its steps run the null pass (batch 2N), the others the conditional alone
    calls = []
    predict = dn.predict
    monkeypatch.setattr(dn, "predict", lambda model, x, t, y: calls.append((len(x), int(t[0]))) or predict(model, x, t, y))
    middle = generator.sample(ids, seeds, sampler(guidance_scale=3.0, guidance_interval=[0.3, 0.7]))
    assert {n for n, _ in calls} == {3, 6}
    assert all((n == 6) == (0.3 < t / 1000 <= 0.7) for n, t in calls)
    assert not torch.allclose(middle, always, atol=1e-4) and not torch.allclose(middle, unguided, atol=1e-4)


def test_bf16_sampling_stays_close_to_fp32(trained):
    generator, _ = trained
    ids, seeds = [0, 1, 2, 1], [1, 2, 3, 4]
    full = generator.sample(ids, seeds, sampler())
    half = generator.sample(ids, seeds, sampler(precision="bf16"))
    assert half.dtype == torch.float32
    assert 0 < (half - full).abs().max() < 0.05


def test_sample_precision_auto_picks_bf16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) is None
    assert resolve_precision("fp16", cpu) is torch.float16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert resolve_precision("auto", cpu) is torch.bfloat16
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert resolve_precision("auto", cpu) is None


def test_classifier_guidance_raises_the_classifier_probability(trained):
    generator, _ = trained
    classifier = tiny_classifier()
    ids = [0, 1, 2] * 2
    seeds = list(range(6))
    plain = generator.sample(ids, seeds, sampler(guidance_scale=1.0))
    guided = generator.sample(ids, seeds, sampler(guidance_scale=1.0, classifier_guidance_scale=50.0),
                              classifier=classifier)
    target = torch.tensor(ids)

    def mean_log_prob(x):
        return torch.log_softmax(classifier(x), -1).gather(1, target.view(-1, 1)).mean().item()

    assert mean_log_prob(guided) > mean_log_prob(plain)


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_one_seed_per_image_whatever_the_batch(trained, name):
    generator, _ = trained
    cfg = sampler(name=name, guidance_per_class={"two": 4.0})
    together = generator.sample([0, 1, 2, 0], [10, 11, 12, 13], cfg)
    alone = torch.cat([generator.sample([c], [s], cfg) for c, s in [(0, 10), (1, 11), (2, 12), (0, 13)]])
    others = generator.sample([2, 1, 1], [99, 11, 98], cfg)
    torch.testing.assert_close(together, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(together[1], others[1], atol=1e-5, rtol=0)
    assert not torch.allclose(together[0], together[3], atol=1e-3)  # other seed, other image


def test_variation_mode_stays_near_the_init_image_and_mixes_with_noise_items(trained):
    generator, _ = trained
    images, labels = tiny_data()
    init = images[:4]
    ids = labels[:4].tolist()
    flags = [True, False, True, False]
    weak = sampler(num_inference_steps=10, variation_strength=0.1)
    mixed = generator.sample(ids, [1, 2, 3, 4], weak, init_images=init, variation=flags)
    alone = generator.sample(ids[:1], [1], weak, init_images=init[:1], variation=[True])
    noise_only = generator.sample(ids[1:2], [2], weak)
    torch.testing.assert_close(mixed[0], alone[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(mixed[1], noise_only[0], atol=1e-5, rtol=0)
    recon = generator.decode(generator.encode(init))
    strong = generator.sample(ids, [1, 2, 3, 4], sampler(num_inference_steps=10, variation_strength=1.0),
                              init_images=init, variation=[True] * 4)
    near = (mixed[0] - recon[0]).abs().mean()
    assert near < 0.05
    assert near < (strong[0] - recon[0]).abs().mean()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(class_ids=[0, 1], seeds=[1]), "sample() got 2 class_ids, 1 seeds and 2 variation flags; they must have the same length"),
        (dict(class_ids=[0, 3], seeds=[1, 2]), "class_ids [3] are not in range(0, 3) (classes ['zero', 'one', 'two'])"),
        (dict(class_ids=[0], seeds=[1], variation=[True]), "variation items need init_images with one image per item (1); got None"),
    ],
)
def test_bad_sample_arguments(trained, kwargs, message):
    generator, _ = trained
    with pytest.raises(ValueError) as err:
        generator.sample(sampler=sampler(), **kwargs)
    assert str(err.value) == message


def test_classifier_guidance_without_classifier_fails(trained):
    generator, _ = trained
    with pytest.raises(ValueError) as err:
        generator.sample([0], [1], sampler(classifier_guidance_scale=1.0))
    assert str(err.value) == (
        "sampler.classifier_guidance_scale=1.0 needs a classifier (images in [0, 1] -> logits)"
    )


# ---------------------------------------------------------------------------------- save/load
def test_save_then_load_gives_identical_samples(trained, tmp_path):
    generator, _ = trained
    generator.save_pretrained(tmp_path / "g")
    loaded = LatentDiffusionGenerator.from_pretrained(tmp_path / "g")
    cfg = sampler(name="ddpm")
    torch.testing.assert_close(generator.sample([0, 2], [4, 5], cfg), loaded.sample([0, 2], [4, 5], cfg), atol=0, rtol=0)
    meta = json.loads((tmp_path / "g" / "generator.json").read_text())
    assert meta["class_names"] == CLASS_NAMES
    assert meta["mode"] == "L"
    assert meta["scaling_factor"] == generator.scaling_factor
    assert meta["config"]["denoiser"]["block_out_channels"] == [16, 32]
    assert "psnr_holdout_db" in meta["metrics"]["autoencoder"]
    assert sorted(p.name for p in (tmp_path / "g").iterdir()) == ["denoiser", "generator.json", "scheduler", "vae"]


@pytest.mark.parametrize("component", ["vae", "denoiser", "scheduler", "generator.json"])
def test_loading_a_folder_without_a_component_names_it(trained, tmp_path, component):
    import shutil

    generator, _ = trained
    folder = tmp_path / "g"
    generator.save_pretrained(folder)
    target = folder / component
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    name = component if component.endswith(".json") else component + "/"
    with pytest.raises(ValueError) as err:
        LatentDiffusionGenerator.from_pretrained(folder)
    assert str(err.value) == (
        f"generator.path={str(folder)!r} is missing [{name!r}]; a saved generator has "
        "['vae/', 'denoiser/', 'scheduler/', 'generator.json']"
    )


def test_rerun_with_same_fingerprint_reuses_the_saved_generator(trained, monkeypatch):
    generator, work_dir = trained

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train_denoiser", no_training)
    monkeypatch.setattr(training, "train_autoencoder", no_training)
    images, labels = tiny_data()
    cfg = tiny_config()
    cfg.sampler.guidance_scale = 7.0  # the sampler is not part of the fingerprint
    again = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=work_dir, seed=0, mode="L")
    assert again.metadata["fingerprint"] == generator.metadata["fingerprint"]
    torch.testing.assert_close(again.sample([1], [3], sampler()), generator.sample([1], [3], sampler()), atol=0, rtol=0)


def test_generator_path_loads_instead_of_training(trained, tmp_path, monkeypatch):
    generator, _ = trained
    generator.save_pretrained(tmp_path / "saved")

    def no_training(*args, **kwargs):
        raise AssertionError("trained")

    monkeypatch.setattr(training, "train_autoencoder", no_training)
    monkeypatch.setattr(training, "train_denoiser", no_training)
    cfg = tiny_config()
    cfg.path = str(tmp_path / "saved")
    images, labels = tiny_data()
    loaded = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path / "work", seed=0, mode="L")
    torch.testing.assert_close(loaded.sample([2], [8], sampler()), generator.sample([2], [8], sampler()), atol=0, rtol=0)


def test_latent_cache_is_reused_when_only_the_denoiser_changes(trained, monkeypatch):
    _, work_dir = trained
    calls = []
    original = AutoencoderKL.encode

    def counting_encode(self, *args, **kwargs):
        calls.append(1)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(AutoencoderKL, "encode", counting_encode)
    images, labels = tiny_data()
    # Same work_dir, same autoencoder recipe, other denoiser: a new generator, no encoding.
    other = train_generator(images, labels, CLASS_NAMES, tiny_config(steps=2), work_dir=work_dir, seed=0, mode="L")
    assert calls == []
    assert other.metadata["config"]["denoiser"]["steps"] == 2


# 3 autoencoder steps (checkpointed every step), then denoiser steps checkpointed every 2:
# die in the 2nd autoencoder step, or in the 4th denoiser step (resumes from its step 2).
@pytest.mark.slow
@pytest.mark.parametrize("die_at_call", [2, 7])
def test_interrupted_training_resumes_to_the_same_weights(tmp_path, monkeypatch, die_at_call):
    images, labels = tiny_data()
    cfg = tiny_config(steps=6, checkpoint_every=2)
    clean = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path / "clean", seed=3, mode="L")

    original = training._training_step
    calls = []

    def dying_step(*args, **kwargs):
        calls.append(1)
        if len(calls) == die_at_call:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(training, "_training_step", dying_step)
    with pytest.raises(KeyboardInterrupt):
        train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path / "killed", seed=3, mode="L")
    monkeypatch.setattr(training, "_training_step", original)
    resumed = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path / "killed", seed=3, mode="L")
    assert len(calls) == die_at_call
    for part in ("vae", "denoiser"):
        clean_state, resumed_state = getattr(clean, part).state_dict(), getattr(resumed, part).state_dict()
        for name, value in clean_state.items():
            torch.testing.assert_close(resumed_state[name], value, atol=1e-6, rtol=0, msg=name)


# --------------------------------------------------------------------------- other components
def test_dit_denoiser_trains_and_samples(tmp_path):
    images, labels = tiny_data()
    cfg = tiny_config(arch="dit", patch_size=2, num_layers=1, num_attention_heads=2, attention_head_dim=8, steps=2)
    generator = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path, seed=0, mode="L")
    assert generator.null_class_id == len(CLASS_NAMES) == generator.denoiser.config.num_embeds_ada_norm - 1
    out = generator.sample([0, 1], [1, 2], sampler())
    assert out.shape == (2, 1, RESOLUTION, RESOLUTION) and torch.isfinite(out).all()
    generator.save_pretrained(tmp_path / "saved")
    loaded = LatentDiffusionGenerator.from_pretrained(tmp_path / "saved")
    torch.testing.assert_close(loaded.sample([0, 1], [1, 2], sampler()), out, atol=0, rtol=0)


def _tiny_autoencoder(kind: str):
    if kind == "AutoencoderKL":
        return AutoencoderKL(in_channels=1, out_channels=1, down_block_types=("DownEncoderBlock2D",) * 2,
                             up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 8),
                             latent_channels=2, norm_num_groups=4, sample_size=RESOLUTION)
    return AutoencoderTiny(in_channels=1, out_channels=1, encoder_block_out_channels=(8, 8),
                           decoder_block_out_channels=(8, 8), num_encoder_blocks=(1, 1),
                           num_decoder_blocks=(1, 1), latent_channels=2)


@pytest.mark.parametrize("kind", ["AutoencoderKL", "AutoencoderTiny"])
def test_autoencoder_loaded_from_a_local_folder(tmp_path, kind):
    _tiny_autoencoder(kind).save_pretrained(tmp_path / "vae")
    images, labels = tiny_data()
    cfg = tiny_config(steps=2)
    cfg.autoencoder.path = str(tmp_path / "vae")
    generator = train_generator(images, labels, CLASS_NAMES, cfg, work_dir=tmp_path / "work", seed=0, mode="L")
    assert type(generator.vae).__name__ == kind
    assert generator.latent_shape == (2, 4, 4)
    assert generator.image_shape == (1, RESOLUTION, RESOLUTION)
    out = generator.sample([0, 2], [1, 2], sampler())
    assert out.shape == (2, 1, RESOLUTION, RESOLUTION) and torch.isfinite(out).all()
    assert generator.metadata["metrics"]["autoencoder"]["path"] == str(tmp_path / "vae")


# -------------------------------------------------------------------------------- bad configs
def _with(path: str, value) -> GeneratorConfig:
    cfg = tiny_config()
    section, key = path.split(".")
    setattr(getattr(cfg, section), key, value)
    return cfg


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("sampler.name", "heun", "generator.sampler.name='heun' is not one of ['ddim', 'ddpm', 'dpmsolver++', 'euler', 'unipc']"),
        ("sampler.mode", "copy", "generator.sampler.mode='copy' is not one of ['mix', 'noise', 'variation']"),
        ("sampler.precision", "fp8", "generator.sampler.precision='fp8' is not one of ['auto', 'bf16', 'fp16', 'fp32']"),
        ("sampler.variation_source", "same", "generator.sampler.variation_source='same' is not one of ['any', 'class', 'other']"),
        ("denoiser.arch", "mlp", "generator.denoiser.arch='mlp' is not one of ['dit', 'unet']"),
        ("denoiser.class_balance", "log", f"generator.denoiser.class_balance='log' is not one of {sorted(CLASS_BALANCE)}"),
        ("denoiser.mixed_precision", "fp8", "generator.denoiser.mixed_precision='fp8' is not one of ['auto', 'bf16', 'fp16', 'no']"),
        ("schedule.beta_schedule", "cosine", "generator.schedule.beta_schedule='cosine' is not one of ['linear', 'scaled_linear', 'squaredcos_cap_v2']"),
        ("schedule.prediction_type", "sample", "generator.schedule.prediction_type='sample' is not one of ['epsilon', 'v_prediction']"),
        ("sampler.num_inference_steps", 0, "generator.sampler.num_inference_steps=0 must be >= 1"),
        ("sampler.guidance_scale", -1.0, "generator.sampler.guidance_scale=-1.0 must be >= 0"),
        ("sampler.classifier_guidance_scale", -0.5, "generator.sampler.classifier_guidance_scale=-0.5 must be >= 0"),
        ("sampler.variation_strength", 0.0, "generator.sampler.variation_strength=0.0 must be in (0, 1]"),
        ("sampler.guidance_interval", [0.8, 0.2], "generator.sampler.guidance_interval=[0.8, 0.2] must be [lo, hi] with 0 <= lo < hi <= 1 (fractions of the noise schedule, 1 = pure noise), or null for every step"),
        ("sampler.variation_strength", 1.5, "generator.sampler.variation_strength=1.5 must be in (0, 1]"),
        ("sampler.guidance_per_class", {"one": -2.0}, "generator.sampler.guidance_per_class['one']=-2.0 must be >= 0"),
        ("sampler.guidance_per_class", {"seven": 2.0}, "generator.sampler.guidance_per_class names unknown classes ['seven']; the classes are ['zero', 'one', 'two']"),
        ("denoiser.label_dropout", 1.0, "generator.denoiser.label_dropout=1.0 must be in [0, 1)"),
        ("denoiser.cbdm_weight", -1.0, "generator.denoiser.cbdm_weight=-1.0 must be >= 0"),
        ("denoiser.lr_schedule", "step", "generator.denoiser.lr_schedule='step' is not one of ['constant', 'cosine']"),
        ("schedule.min_snr_gamma", 0.0, "generator.schedule.min_snr_gamma=0.0 must be > 0 (or null = off)"),
        ("denoiser.steps", 0, "generator.denoiser.steps=0 must be >= 1"),
    ],
)
def test_bad_config_fails_before_any_work(path, value, message):
    with pytest.raises(ValueError) as err:
        validate_generator_config(_with(path, value), CLASS_NAMES)
    assert str(err.value) == message


def test_zero_terminal_snr_needs_v_prediction():
    cfg = tiny_config()
    cfg.schedule = ScheduleConfig(zero_terminal_snr=True, prediction_type="epsilon")
    with pytest.raises(ValueError) as err:
        validate_generator_config(cfg)
    assert str(err.value) == (
        "generator.schedule.zero_terminal_snr=True needs prediction_type='v_prediction', got 'epsilon'"
    )


def test_saved_generator_path_checked_for_components_and_class_names(trained, tmp_path):
    generator, _ = trained
    generator.save_pretrained(tmp_path / "g")
    cfg = tiny_config()
    cfg.path = str(tmp_path / "g")
    validate_generator_config(cfg, CLASS_NAMES)  # fine
    with pytest.raises(ValueError) as err:
        validate_generator_config(cfg, ["cat", "dog", "bird"])
    assert str(err.value) == (
        f"generator.path={cfg.path!r} was trained on class names ['zero', 'one', 'two'] but the "
        "dataset has ['cat', 'dog', 'bird']"
    )
    (tmp_path / "g" / "generator.json").unlink()
    with pytest.raises(ValueError) as err:
        validate_generator_config(cfg, CLASS_NAMES)
    assert str(err.value) == f"generator.path={cfg.path!r} is missing ['generator.json']"


@pytest.mark.parametrize(
    "mode, images, message",
    [
        ("CMYK", torch.zeros(3, 1, 8, 8), "mode='CMYK' is not one of ['L', 'RGB']"),
        ("RGB", torch.zeros(3, 1, 8, 8), "images of shape (3, 1, 8, 8) are not (N, 3, R, R) square images of mode 'RGB'"),
    ],
)
def test_bad_training_data(tmp_path, mode, images, message):
    with pytest.raises(ValueError) as err:
        train_generator(images, torch.zeros(3, dtype=torch.long), CLASS_NAMES, tiny_config(),
                        work_dir=tmp_path, seed=0, mode=mode)
    assert str(err.value) == message


@pytest.mark.parametrize("balance, expected", [("none", [1, 1, 1, 1]), ("sqrt", [3**-0.5] * 3 + [1]), ("balanced", [1 / 3] * 3 + [1])])
def test_class_balance_weights(balance, expected):
    weights = training.example_weights(torch.tensor([0, 0, 0, 1]), balance)
    torch.testing.assert_close(weights, torch.tensor(expected, dtype=torch.float64))
