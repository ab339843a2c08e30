"""The Hydra entry point: ``python -m augment [overrides]`` and the ``augment`` console script.

Hydra stays at this edge: it composes and validates the config against the typed schema
(augment/config.py), and :func:`augment.pipeline.run` receives a plain :class:`~augment.config.Config`.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from .config import register_configs, to_object

CONFIG_NAME = "config"


def config_dir() -> str:
    """The folder holding ``config.yaml``: shipped inside the package when installed (augment/conf),
    the repository's top-level ``conf/`` in a source checkout or an editable install."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / f"{CONFIG_NAME}.yaml").is_file():
            return str(candidate)
    raise FileNotFoundError(f"no {CONFIG_NAME}.yaml under {here / 'conf'} or {here.parent / 'conf'}; reinstall augment")


def _task(cfg: DictConfig) -> None:
    from . import distributed
    from .pipeline import run  # heavy imports after Hydra has validated the command line

    try:
        run(to_object(cfg), config_yaml=OmegaConf.to_yaml(cfg, resolve=True))
    finally:
        distributed.shutdown()  # leave the process group cleanly (torchrun / accelerate launch)


def main() -> None:
    register_configs()
    hydra.main(config_path=config_dir(), config_name=CONFIG_NAME, version_base="1.3")(_task)()


if __name__ == "__main__":
    main()
