"""Table 1's quality controls of one scan: ``results/evaluation/controls/{scan}.h5``.

One group per control (``blank_disc``, ``mean_pattern``), holding the per-pattern
metrics of :func:`latentebsd.metrics.pattern_metrics` (the control against the original,
at the sampled points) and ``points``, the row-major scan index of each sampled point;
group attrs hold the control's own quality (``pq``, ``cm``, ``sharpness``, ``iq_kp`` of
the one control pattern at the first point). File attrs: ``scan``, ``min_nmatch``,
``sharpness`` (JSON), ``quality_window`` (JSON), ``seed``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latentebsd.io.atomic import atomic_path


def write_controls(path: str | os.PathLike, metrics: Mapping[str, Mapping[str, np.ndarray]],
                   points: np.ndarray, quality: Mapping[str, Mapping[str, float]],
                   attrs: Mapping[str, Any]) -> None:
    """Write the controls' metrics (control name -> metric arrays at ``points``)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for name, arrays in metrics.items():
            g = f.create_group(name)
            g.create_dataset("points", data=np.asarray(points, np.int64), compression="gzip")
            for key, value in arrays.items():
                g.create_dataset(key, data=value, compression="gzip")
            g.attrs.update({k: float(v) for k, v in quality.get(name, {}).items()})
        f.attrs.update(dict(attrs))


def read_controls(path: str | os.PathLike) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, Any]]:
    """Read what :func:`write_controls` wrote: ``({control: arrays}, file attrs)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: quality-controls file not found")
    with h5py.File(path, "r") as f:
        groups = {name: {k: g[k][()] for k in g} for name, g in f.items()}
        if not groups or any("points" not in g or "indexed" not in g for g in groups.values()):
            raise ValueError(f"{path}: not a quality-controls file")
        return groups, dict(f.attrs)
