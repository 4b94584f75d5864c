"""Per-pattern decoded-vs-original metrics: ``results/evaluation/metrics/{variant}/{scan}.h5``.

One gzip-compressed dataset per metric (``valid``, ``indexed_original``, ``indexed``,
``wrong_phase`` and :data:`METRICS`, NaN where undefined) plus the map ``row`` / ``col``
of every pattern; attrs ``variant``, ``scan``, ``min_nmatch``, ``sharpness`` (and
``first_row`` / ``shard_n_rows`` in a shard's file).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latentebsd.geometry import ScanGeometry
from latentebsd.io.atomic import atomic_path

#: Per-pattern metric columns, in Table 1 order.
METRICS = ("ci_ratio", "iq_pq_ratio", "iq_kp_ratio", "misorientation_deg", "sharpness_ratio")


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, np.ndarray],
                  geometry: ScanGeometry, attrs: Mapping[str, Any], first_row: int = 0) -> None:
    """Write per-pattern metrics and the map ``row`` / ``col`` of each pattern;
    ``geometry`` covers the map from row ``first_row`` (a shard) or all of it."""
    n = geometry.n_patterns
    rows, cols = np.divmod(np.arange(n) + first_row * geometry.n_cols, geometry.n_cols)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("row", data=rows.astype(np.int32), compression="gzip")
        f.create_dataset("col", data=cols.astype(np.int32), compression="gzip")
        for key, value in metrics.items():
            f.create_dataset(key, data=value, compression="gzip")
        f.attrs.update(dict(attrs))


def read_metrics(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read what :func:`write_metrics` wrote: ``(arrays, attrs)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("valid", "indexed", *METRICS) if k not in f]
        if missing:
            raise ValueError(f"{path}: not a metrics file (missing {missing})")
        return {k: f[k][()] for k in f}, dict(f.attrs)
