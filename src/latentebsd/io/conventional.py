"""Conventional EBSD maps of a scan: ``results/evaluation/conventional/{scan}.h5``.

One gzip-compressed ``(n_rows, n_cols)`` dataset per map of :data:`MAP_KEYS`
(``ipf_rgb``, ``rodrigues``: ``(n_rows, n_cols, 3)``; ``ci`` = PyEBSDIndex ``cm``, ``fit`` in deg,
``boundary_deg`` = largest misorientation to the 4 neighbours, ``sigma3`` = share of
the 4 neighbours across a Sigma3 twin boundary, ``rodrigues`` = Rodrigues vector in the
fundamental zone, ``phase_id`` = index
into the scan's phases, -1 not indexed), group ``geometry`` and attrs ``scan``,
``n_grains``, ``kam``, ``grains``, ``ipf_direction``, ``iq``, ``phases`` (JSON,
:func:`latentebsd.phases.to_json`).
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

MAP_KEYS = ("ipf_rgb", "iq_pq", "iq_kp", "kam_deg", "grain_id", "grod_deg", "sharpness",
            "ci", "fit", "boundary_deg", "sigma3", "rodrigues", "indexed", "valid", "phase_id")
#: The scalar per-point descriptors of conventional EBSD (what the detection benchmark
#: and the novelty analysis set the latent maps against).
DESCRIPTORS = ("iq_pq", "iq_kp", "ci", "fit", "kam_deg", "grod_deg", "sharpness", "boundary_deg",
               "sigma3")
#: Orientation itself, as maps: (key, channel names) of the multi-channel maps.
ORIENTATION_MAPS = (("rodrigues", ("rodrigues_1", "rodrigues_2", "rodrigues_3")),
                    ("ipf_rgb", ("ipf_r", "ipf_g", "ipf_b")))


def conventional_stack(maps: Mapping[str, np.ndarray]) -> tuple[list[str], np.ndarray]:
    """Every conventional map a user has: the :data:`DESCRIPTORS` and the channels of
    :data:`ORIENTATION_MAPS`, as ``(names, (g, n_rows, n_cols) float64)``."""
    names = list(DESCRIPTORS)
    layers = [np.asarray(maps[k], np.float64) for k in DESCRIPTORS]
    for key, channels in ORIENTATION_MAPS:
        arr = np.asarray(maps[key], np.float64)
        names += list(channels)
        layers += [arr[..., c] for c in range(len(channels))]
    return names, np.stack(layers)


def write_conventional(path: str | os.PathLike, maps: Mapping[str, np.ndarray],
                       geometry: ScanGeometry, attrs: Mapping[str, Any]) -> None:
    """Write the maps of :func:`latentebsd.conventional.conventional_maps`."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in maps.items():
            f.create_dataset(key, data=value, compression="gzip")
        geometry.to_h5(f.create_group("geometry"))
        f.attrs.update(dict(attrs))


def read_conventional(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], ScanGeometry]:
    """Read what :func:`write_conventional` wrote."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: conventional maps not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in MAP_KEYS if k not in f]
        if missing:
            raise ValueError(f"{path}: not a conventional-maps file (missing {missing})")
        return {k: f[k][()] for k in MAP_KEYS}, ScanGeometry.from_h5(f["geometry"])
