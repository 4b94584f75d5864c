"""A trained model: ``results/models/{variant}/weights.pt``.

``torch.save`` of ``{"format": "latentebsd.vae/1", "state_dict": ..., "meta": ...}``
with a CPU state dict and ``meta`` = the variant, pattern shape, effective width
factor, projection size, resolved training settings, seed, epochs, device, torch
version and final train / validation losses. :func:`load_model` rebuilds the encoder
and decoder from the file alone.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from latentebsd.io.atomic import atomic_path
from latentebsd.models import Decoder, Encoder, build_from_training

WEIGHTS_FORMAT = "latentebsd.vae/1"


def save_weights(path: str | os.PathLike, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write a weights file: CPU state dict and ``meta`` (at least ``variant``,
    ``pattern_shape``, ``width_factor``, ``projection_dim``)."""
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": WEIGHTS_FORMAT, "state_dict": state_dict, "meta": meta}, tmp)
    return Path(path)


def load_model(
    weights_path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Encoder, Decoder, dict[str, Any]]:
    """Rebuild a trained encoder and decoder (eval mode) from a weights file alone.

    Returns
    -------
    encoder, decoder, meta
        ``meta`` as written by the training stage (module docstring).
    """
    blob = torch.load(weights_path, map_location="cpu", weights_only=True)
    if blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{weights_path}: not a {WEIGHTS_FORMAT} weights file")
    meta = blob["meta"]
    with torch.random.fork_rng(devices=[]):  # the init is overwritten; keep the caller's RNG
        # Weights files without the resolved training settings still carry the
        # effective width and projection size, which is all the architecture needs.
        build_cfg = meta.get("training") or {
            "width_factor": meta["width_factor"],
            "contrastive": {"projection_dim": meta.get("projection_dim", 64)},
        }
        model = build_from_training(meta["variant"], tuple(meta["pattern_shape"]), build_cfg)
    model.load_state_dict(blob["state_dict"])
    model = model.to(device).eval()
    return model.encoder, model.decoder, meta
