"""Python API: the same job as the CLI, from training code.

``balance`` composes the very config the CLI composes (same files, same schema, same overrides), so
the two never drift.
"""

from __future__ import annotations

from typing import Sequence

import datasets
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from .cli import CONFIG_NAME, config_dir
from .config import Config, register_configs, to_object


def compose_config(overrides: Sequence[str] = ()) -> tuple[Config, str]:
    """Compose ``conf/config.yaml`` with Hydra overrides, as ``python -m augment`` does.

    Returns:
        The typed config and its resolved YAML (saved with every run).

    Raises:
        hydra.errors.ConfigCompositionException / omegaconf errors: on an unknown key, option or a
        value of the wrong type, before any work starts.
    """
    register_configs()
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3", job_name="augment"):
        cfg = compose(config_name=CONFIG_NAME, overrides=list(overrides))
    cfg_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    return to_object(cfg), cfg_yaml


def balance(
    dataset: datasets.Dataset | datasets.DatasetDict | str | None = None,
    overrides: Sequence[str] = (),
) -> datasets.DatasetDict | None:
    """Top up the rare classes of ``dataset`` with filtered synthetic images.

    Args:
        dataset: an in-memory ``datasets.Dataset`` / ``DatasetDict`` (columns named by
            ``dataset.image_column`` / ``dataset.label_column``), a path or Hub id (same as the
            override ``dataset=hf dataset.path=...``), or None to use the config's dataset.
        overrides: Hydra overrides, exactly as on the command line (e.g. ``["output.dir=out",
            "targets=minority"]``).

    Returns:
        The exported ``DatasetDict`` (``train`` and, when carried, ``test``), also written to
        ``output.dir``; None for ``dry_run=true``.
    """
    from .pipeline import run

    overrides = list(overrides)
    if isinstance(dataset, str):
        overrides = ["dataset=hf", f"dataset.path={dataset}", *overrides]
        dataset = None
    elif dataset is not None:  # an in-memory dataset: the generic source options apply
        overrides = ["dataset=hf", *overrides]
    cfg, cfg_yaml = compose_config(overrides)
    return run(cfg, dataset=dataset, config_yaml=cfg_yaml)
