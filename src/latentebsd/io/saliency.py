"""Occlusion saliency of latent features: ``results/benchmark/saliency/{scan}.h5``.

Datasets ``occlusion`` ``(k, P, Q)`` (the change of each feature when a patch of the
detector is masked, on the patch grid), ``mean_pattern`` ``(k, H, W)`` (the mean of the
patterns each map was averaged over), ``features`` ``(k,)`` and the detector ``mask``
``(H, W)``; attrs ``scan``, ``variant``, ``patch``, ``stride``, ``points`` and ``why``
(per feature: why it was chosen).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latentebsd.io.atomic import atomic_path

DATASETS = ("occlusion", "mean_pattern", "features", "mask")


def write_saliency(path: str | os.PathLike, data: Mapping[str, np.ndarray],
                   attrs: Mapping[str, Any]) -> None:
    """Write the :data:`DATASETS` of :func:`latentebsd.saliency.run_saliency_rule`."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key in DATASETS:
            f.create_dataset(key, data=np.asarray(data[key]))
        f.attrs.update(dict(attrs))


def read_saliency(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The datasets and attrs :func:`write_saliency` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: saliency file not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in DATASETS if k not in f]
        if missing:
            raise ValueError(f"{path}: not a saliency file (missing {missing})")
        return {k: f[k][()] for k in DATASETS}, dict(f.attrs)
