"""Typed configuration schema.

The dataclasses below *are* the schema of the Hydra configs in ``conf/``: they are registered in
Hydra's ConfigStore as the base of every group, so an override with a typo in a key or a value of
the wrong type fails while the config is composed, before any work starts. The library itself takes
plain typed values (these dataclasses, converted with :func:`to_object`), never a ``DictConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf


@dataclass
class DatasetConfig:
    """Where the source images come from and how they are prepared for the generator."""

    # hf: a Hub id, a save_to_disk folder, parquet/arrow files (folder or glob) or an image folder.
    # mnist_lt / cifar10_lt: built-in long-tailed benchmarks (see augment.data).
    kind: str = "hf"
    path: Optional[str] = None
    name: Optional[str] = None  # Hub config name
    split: str = "train"
    test_split: Optional[str] = None  # carried through untouched when set
    revision: Optional[str] = None
    image_column: str = "image"
    label_column: str = "label"
    # Long-tailed protocol of the built-in datasets: n_c = floor(n_max * IR^(-c / (C - 1))).
    imbalance_ratio: float = 50.0
    # Generator input: one mode ("L" or "RGB"; null = the most common mode in the data) and one
    # square resolution (null = the source size, which must then be square).
    mode: Optional[str] = None
    resolution: Optional[int] = None
    # How images of another size reach `resolution`: resize, center_crop (resize the short side,
    # then crop), pad (centred on a black canvas, pixels untouched; synthetic images are cropped back
    # on export) or forbid (mixed sizes are an error).
    resize: str = "resize"
    skip_corrupt: bool = False


@dataclass
class TargetsConfig:
    """Class-balance target, in imbalanced-learn's ``sampling_strategy`` vocabulary."""

    # "auto" / "not majority", "not minority", "minority", "all", a float (two classes only),
    # or a dict {class name or id: desired total}.
    sampling_strategy: Any = "not majority"
    ratio: Optional[float] = None  # every class >= ratio * majority count, ratio in (0, 1]
    min_count: Optional[int] = None  # every class >= min_count
    max_synthetic_per_real: Optional[float] = None  # cap: synthetic <= this * real count
    exclude: List[Any] = field(default_factory=list)  # class names or ids never topped up


@dataclass
class AutoencoderConfig:
    """Either a path to a saved diffusers autoencoder, or the recipe to train an AutoencoderKL."""

    path: Optional[str] = None  # local folder or Hub id of AutoencoderKL / AutoencoderTiny
    subfolder: Optional[str] = None
    # Each extra entry halves the resolution: 3 entries = downsampling factor 4.
    block_out_channels: List[int] = field(default_factory=lambda: [32, 64, 64])
    layers_per_block: int = 1
    latent_channels: int = 4
    norm_num_groups: int = 16
    kl_weight: float = 1.0e-6
    steps: int = 1500
    batch_size: int = 64
    lr: float = 1.0e-3
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 by the last step)
    # null: computed from the data (1 / std of the encoded training latents) and saved.
    scaling_factor: Optional[float] = None


@dataclass
class DenoiserConfig:
    """Class-conditional denoiser and its training recipe."""

    arch: str = "unet"  # unet (UNet2DModel + class embedding) or dit (DiT-style transformer)
    block_out_channels: List[int] = field(default_factory=lambda: [64, 128, 192])
    layers_per_block: int = 2
    attention_levels: List[bool] = field(default_factory=lambda: [False, True, True])
    norm_num_groups: int = 32
    # DiT options
    patch_size: int = 2
    num_layers: int = 6
    num_attention_heads: int = 4
    attention_head_dim: int = 32
    # training
    steps: int = 3000
    batch_size: int = 128
    lr: float = 3.0e-4
    lr_schedule: str = "constant"  # constant | cosine (decays to 0 by the last step), after warm-up
    weight_decay: float = 0.0
    warmup_steps: int = 100
    grad_accum: int = 1
    mixed_precision: str = "auto"  # auto (bf16 on a GPU that supports it), no, bf16, fp16
    ema_decay: float = 0.999
    label_dropout: float = 0.1  # share of labels replaced by the null class (classifier-free guidance)
    class_balance: str = "sqrt"  # none | sqrt | balanced: how training examples are drawn
    # Class-balancing regulariser (CBDM, Qin et al. 2023): pulls each prediction towards the one for a
    # uniformly drawn other class, so the tail classes borrow the head classes' variety. weight = tau
    # (0 = off; costs a second forward pass per step), gamma = weight of its commitment term.
    cbdm_weight: float = 0.0
    cbdm_gamma: float = 0.25
    checkpoint_every: int = 500
    log_every: int = 50


@dataclass
class ScheduleConfig:
    num_train_timesteps: int = 1000
    beta_schedule: str = "squaredcos_cap_v2"  # linear | scaled_linear | squaredcos_cap_v2
    prediction_type: str = "v_prediction"  # epsilon | v_prediction
    min_snr_gamma: Optional[float] = 5.0  # Min-SNR-gamma loss weighting (Hang et al. 2023); null = off
    zero_terminal_snr: bool = False


@dataclass
class SamplerConfig:
    name: str = "dpmsolver++"  # dpmsolver++ | ddim | ddpm | unipc | euler
    num_inference_steps: int = 20
    guidance_scale: float = 3.0  # classifier-free guidance; 1.0 = conditional only, 0 = unconditional
    guidance_per_class: Dict[str, float] = field(default_factory=dict)  # class name -> scale
    # Guidance only where lo < t / num_train_timesteps <= hi (Kynkaanniemi et al. 2024: guidance at
    # high noise cuts diversity, at low noise it does little); the other steps run the conditional
    # pass alone, at half the cost. null = every step.
    guidance_interval: Optional[List[float]] = None
    classifier_guidance_scale: float = 0.0  # Dhariwal & Nichol 2021; 0 = off
    mode: str = "noise"  # noise | variation | mix
    variation_strength: float = 0.6  # SDEdit strength in (0, 1]
    mix_fraction: float = 0.5  # share of variation samples in mode=mix
    # Where a variation starts: "class" (a real image of its own class), "other" (a real image of
    # another class, translated to this one: carries the head classes' variety of style to the
    # rare classes) or "any" (any real image).
    variation_source: str = "class"
    batch_size: int = 256
    # Autocast of the denoiser and decoder while sampling: auto = bf16 where the device runs it
    # natively (a bf16 CUDA GPU, a CPU with AVX-512 BF16/AMX), else fp32 | fp32 | bf16 | fp16.
    precision: str = "auto"


@dataclass
class GeneratorConfig:
    # A saved generator folder (or Hub id) to load instead of training.
    path: Optional[str] = None
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    denoiser: DenoiserConfig = field(default_factory=DenoiserConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)


@dataclass
class FilterConfig:
    """Classifier filter between sampling and export."""

    name: str = "classifier"  # classifier | none
    arch: str = "resnet18"  # resnet18 (adapted to small inputs) | small_cnn
    width: int = 16  # small_cnn only: base width (stages of width, 2x, 4x channels)
    path: Optional[str] = None  # user classifier: safetensors state dict or transformers folder
    steps: int = 1500
    batch_size: int = 128
    lr: float = 1.0e-3
    val_fraction: float = 0.15
    min_confidence: float = 0.9
    min_confidence_per_class: Dict[str, float] = field(default_factory=dict)
    max_real_similarity: float = 0.995  # reject near-copies of real images (cosine, feature space)
    max_synthetic_similarity: float = 0.995  # reject near-duplicates among synthetic images
    max_rounds: int = 10
    overgenerate: float = 1.2  # first round: plan * this; later rounds from the acceptance rate
    on_shortfall: str = "warn"  # warn | fail
    # Autocast while scoring synthetic and real images (augment/precision.py): fp32 | bf16 | fp16 |
    # auto (bf16 where native). bf16 moves feature cosines by up to 0.065: too coarse for 0.995.
    precision: str = "fp32"


@dataclass
class PushToHubConfig:
    repo_id: Optional[str] = None  # null = do not push
    private: bool = True
    revision: Optional[str] = None


@dataclass
class OutputConfig:
    dir: str = "outputs/run"
    overwrite: bool = False
    include_real: bool = True  # false = synthetic rows only
    include_test: bool = True  # carry the untouched test split
    max_shard_size: str = "100MB"  # parquet shards in hub/
    push_to_hub: PushToHubConfig = field(default_factory=PushToHubConfig)


@dataclass
class Config:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    targets: TargetsConfig = field(default_factory=TargetsConfig)
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    filter: FilterConfig = field(default_factory=FilterConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    seed: int = 0
    dry_run: bool = False


def register_configs() -> None:
    """Register the schema; ``conf/config.yaml`` lists it first in its defaults, so every group
    file is merged into (and checked against) its typed node."""
    ConfigStore.instance().store(name="config_schema", node=Config)


def to_object(cfg: DictConfig | Config) -> Config:
    """Turn a composed (and validated) DictConfig into a plain :class:`Config`."""
    if isinstance(cfg, Config):
        return cfg
    obj = OmegaConf.to_object(cfg)
    if not isinstance(obj, Config):  # composed without the schema (should not happen)
        obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(Config), cfg))
    return obj


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))
