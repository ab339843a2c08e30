"""augment: balance imbalanced image datasets with filtered synthetic images from latent diffusion."""

__version__ = "0.1.0"


def balance(dataset=None, overrides=()):
    """Top up the rare classes of ``dataset``; see :func:`augment.api.balance`."""
    from .api import balance as _balance

    return _balance(dataset, overrides)


__all__ = ["balance", "__version__"]
