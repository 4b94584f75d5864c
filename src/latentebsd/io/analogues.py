"""Latent analogues of KAM and GROD: ``results/benchmark/analogues/{variant}/{scan}.h5``.

One gzip-compressed ``(n_rows, n_cols)`` dataset per map of :data:`ANALOGUES`, group
``geometry`` and attrs ``scan``, ``variant``, ``neighbours``, ``latent_dim``, ``units``.
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

#: The maps of the file: kernel latent spread (KAM's analogue), grain-referenced latent
#: deviation (GROD's).
ANALOGUES = ("latent_kam", "latent_grod")


def write_analogues(path: str | os.PathLike, maps: Mapping[str, np.ndarray],
                    geometry: ScanGeometry, attrs: Mapping[str, Any]) -> None:
    """Write the maps of :func:`latentebsd.analogues.latent_analogue_maps`."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key in ANALOGUES:
            f.create_dataset(key, data=maps[key], compression="gzip")
        geometry.to_h5(f.create_group("geometry"))
        f.attrs.update(dict(attrs))


def read_analogues(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """The maps :func:`write_analogues` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: latent KAM / GROD maps not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in ANALOGUES if k not in f]
        if missing:
            raise ValueError(f"{path}: not a latent-analogues file (missing {missing})")
        return {k: f[k][()] for k in ANALOGUES}
