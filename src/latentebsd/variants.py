"""Model variants as the config names them (``models.variants``): loss, d, beta, labels.

No torch here: the evaluation and figure jobs label variants without loading PyTorch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

LOSSES = ("vae", "beta_vae", "contrastive")
_LOSS_LABELS = {"vae": "VAE", "contrastive": "Contrastive", "beta_vae": "beta-VAE"}


def variant_beta(variant: Mapping[str, Any]) -> float:
    """KL weight of a variant: 1 for ``vae`` and ``contrastive`` unless given, required
    for ``beta_vae``."""
    loss = variant.get("loss")
    if loss not in LOSSES:
        raise ValueError(f"variant loss must be one of {LOSSES}, got {loss!r}")
    if loss == "beta_vae" and "beta" not in variant:
        raise ValueError("a beta_vae variant needs 'beta'")
    beta = float(variant.get("beta", 1.0))
    if loss == "vae" and beta != 1.0:
        raise ValueError(f"a plain vae has beta = 1 (got {beta}); use loss: beta_vae")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    return beta


def variant_key(variant: Mapping[str, Any]) -> tuple[str, int, float]:
    """``(loss, latent_dim, beta)`` of a variant (the key of the paper's Table 1 rows)."""
    return variant["loss"], int(variant["latent_dim"]), float(variant.get("beta", 1.0))


def loss_label(variant: Mapping[str, Any]) -> str:
    """Table 1's "Loss" text of a variant, e.g. ``VAE`` or ``beta-VAE (15)``."""
    loss, _, beta = variant_key(variant)
    label = _LOSS_LABELS.get(loss, loss)
    return f"{label} ({beta:g})" if loss == "beta_vae" else label


def variant_label(variant: Mapping[str, Any]) -> str:
    """A figure title for a variant, e.g. ``beta-VAE (beta=15), d=128``."""
    d = variant["latent_dim"]
    if variant["loss"] == "beta_vae":
        return f"beta-VAE (beta={variant['beta']:g}), d={d}"
    return f"{'contrastive VAE' if variant['loss'] == 'contrastive' else 'VAE'}, d={d}"
