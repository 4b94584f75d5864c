"""Shared fixtures: tiny scans made here (no downloads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from latentebsd.geometry import ScanGeometry
from latentebsd.io.patterns import write_up2

REPO = Path(__file__).resolve().parents[1]


def save_untrained_model(path: Path, latent_dim: int, shape: tuple[int, int], loss: str = "vae",
                         beta: float | None = None, seed: int = 0) -> Path:
    """A small (width 1/4) untrained model in a weights file, saved by the training
    stage's own writer, for the stages downstream of training."""
    import torch

    from latentebsd.io.weights import save_weights
    from latentebsd.models import build_model

    variant = {"loss": loss, "latent_dim": latent_dim, **({"beta": beta} if beta else {})}
    torch.manual_seed(seed)
    model = build_model(variant, shape, width_factor=0.25)
    meta = {"variant": variant, "latent_dim": latent_dim, "beta": beta or 1.0,
            "pattern_shape": list(shape), "width_factor": 0.25, "projection_dim": 64}
    return save_weights(path, model, meta)


def disc(shape: tuple[int, int], radius_fraction: float = 0.9) -> np.ndarray:
    h, w = shape
    yy, xx = np.mgrid[:h, :w]
    return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= (radius_fraction * min(h, w) / 2) ** 2


def band_patterns(n: int, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    """``n`` uint16 patterns: a strong smooth background plus random bright bands on a
    circular screen, dark (near zero) outside it - the look of a raw EDAX pattern."""
    rng = np.random.default_rng(seed)
    h, w = shape
    yy, xx = np.mgrid[:h, :w] / max(h, w)
    background = 20000 * np.exp(-((yy - 0.45) ** 2 + (xx - 0.55) ** 2) / 0.3) + 5000 * yy
    out = np.empty((n, h, w), dtype=np.uint16)
    screen = disc(shape)
    for i in range(n):
        signal = np.zeros((h, w))
        for _ in range(3):
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3)
            dist = np.cos(angle) * (xx - 0.5) + np.sin(angle) * (yy - 0.5) - offset
            signal += 4000 * np.exp(-(dist / 0.04) ** 2)
        counts = rng.poisson((background + signal) * 0.05) / 0.05
        out[i] = np.where(screen, np.clip(counts, 0, 65535), rng.integers(0, 30, (h, w)))
    return out


@pytest.fixture
def tiny_scan(tmp_path: Path) -> dict:
    """A 5 x 7 map of 24 x 24 patterns written as UP2, with its geometry."""
    map_shape, shape = (5, 7), (24, 24)
    patterns = band_patterns(map_shape[0] * map_shape[1], shape)
    path = write_up2(tmp_path / "tiny.up2", [patterns[:10], patterns[10:]], map_shape, shape, 0.5)
    geometry = ScanGeometry(*map_shape, step_um=0.5, pattern_shape=shape, pc=[0.5, 0.45, 0.6])
    return {"path": path, "patterns": patterns, "geometry": geometry, "screen": disc(shape)}
