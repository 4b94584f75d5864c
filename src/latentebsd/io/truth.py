"""Ground truth of a simulated scan: ``results/simulated/{scan}_truth.h5``.

Group ``geometry`` (:meth:`ScanGeometry.to_h5`, one Bruker PC per pattern), group
``truth`` with one ``(n_rows, n_cols)`` (``quaternion``: ``(..., 4)``) dataset per
field of :class:`latentebsd.simulate.Truth`, file attrs ``microstructure``, ``seed``,
``settings`` (JSON of the simulation settings), ``grading`` (JSON: ``levels`` = the
strength factor of each level, ``axis``, ``classes`` = class -> ``{parameter, values}``,
the physical value of each graded class per level), ``phases`` (JSON of the scan's
phases, :func:`latentebsd.phases.to_json`; ``phase_id`` indexes them) and
``master_pattern``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any

import h5py
import numpy as np

from latentebsd.geometry import ScanGeometry
from latentebsd.io.atomic import atomic_path
from latentebsd.phases import NICKEL, PhaseSpec, phases_of, to_json

_UNITS = {"dislocation_density": "arbitrary", "pattern_blur_px": "pixels of the simulated pattern",
          "strength": "factor on the configured heterogeneity (1 = as configured)",
          "pc_used": "Bruker PC (fractions of the pattern width / height) each pattern was "
                     "rendered with",
          "pc_error": "pc_used - geometry/pc (Bruker), the simulator's PC error"}


def write_truth(path: str | os.PathLike, truth: Mapping[str, np.ndarray], geometry: ScanGeometry,
                microstructure: str, seed: int, settings: Mapping[str, Any],
                grading: Mapping[str, Any] | None = None,
                phases: list[PhaseSpec] | None = None,
                master_pattern: str = "kikuchipy nickel_ebsd_master_pattern_small, 20 kV",
                imperfections: Mapping[str, Any] | None = None) -> None:
    """Write the ground truth (field name -> array, in order) and geometry, atomically
    (``phases``: the scan's, default FCC nickel; ``imperfections``: the detector
    imperfections applied, default none)."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        geometry.to_h5(f.create_group("geometry"))
        g = f.create_group("truth")
        for name, array in truth.items():
            g.create_dataset(name, data=array)
        g["quaternion"].attrs["convention"] = (
            "orix: rotation from the (EDAX TSL) sample frame to the crystal frame; "
            "the rotation passed to kikuchipy get_patterns")
        for name, units in _UNITS.items():
            if name in g:
                g[name].attrs["units"] = units
        f.attrs["microstructure"] = microstructure
        f.attrs["seed"] = int(seed)
        f.attrs["settings"] = json.dumps(settings, sort_keys=True)
        f.attrs["grading"] = json.dumps(grading or {"levels": [1.0], "classes": {}})
        f.attrs["master_pattern"] = master_pattern
        f.attrs["phases"] = to_json(phases or [NICKEL])
        f.attrs["imperfections"] = json.dumps(dict(imperfections or {}), sort_keys=True)


def read_truth(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], ScanGeometry,
                                                 dict[str, Any]]:
    """Read what :func:`write_truth` wrote.

    Returns
    -------
    truth, geometry, attrs
        ``truth``: name -> array; ``attrs``: ``microstructure``, ``seed``, ``settings``,
        ``grading`` (dicts; a file written before grading existed: one level) and
        ``phases`` (:class:`~latentebsd.phases.PhaseSpec` list; FCC nickel for a file
        written before phases were recorded) and ``imperfections`` (dict; empty for a
        file written before they existed).
    """
    with h5py.File(path, "r") as f:
        truth = {name: f["truth"][name][()] for name in f["truth"]}
        geometry = ScanGeometry.from_h5(f["geometry"])
        attrs = {"microstructure": str(f.attrs["microstructure"]),
                 "seed": int(f.attrs["seed"]),
                 "settings": json.loads(f.attrs["settings"]),
                 "grading": json.loads(f.attrs.get("grading", '{"levels": [1.0], "classes": {}}')),
                 "phases": phases_of(f.attrs),
                 "imperfections": json.loads(f.attrs.get("imperfections", "{}"))}
    return truth, geometry, attrs


def read_truth_geometry(path: str | os.PathLike) -> ScanGeometry:
    """Only the geometry of a truth file (what preprocessing needs)."""
    with h5py.File(path, "r") as f:
        return ScanGeometry.from_h5(f["geometry"])
