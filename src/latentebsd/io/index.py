"""Hough-indexing results: ``results/index/{source}/{scan}.h5`` and its ``.ang``.

``.h5``: one gzip-compressed dataset per pattern field - those of
:data:`INDEX_DTYPE` (``quat`` in orix's convention, ``pq``, ``iq``, ``cm``, ``fit``,
``nmatch``, ``phase``: -1 = no solution), :data:`QUALITY_FIELDS` (``iq_kp``:
kikuchipy's Krieger Lassen image quality; ``sharpness``), ``valid`` and ``indexed``
(:func:`is_indexed`) - plus group ``geometry`` and attrs ``source``, ``pattern_file``,
``hough`` (JSON), ``min_nmatch``, ``sharpness`` (JSON), ``n_indexed``; a shard's file
(``index_shard``) also ``first_row`` and ``shard_n_rows``.

``.ang``: EDAX's text format (orix writes it) that OIM and MTEX open: a header with
the pattern centre (``x-star`` / ``y-star`` / ``z-star``, EDAX / TSL convention, the
scan's mean), every phase of the scan (name, symmetry, lattice constants; :mod:`latentebsd.phases`),
then Euler angles, x, y, IQ (PyEBSDIndex ``pq``), CI (``cm``), phase, detector signal
(0), fit; points not indexed as orix writes them (Euler 4 pi, CI -1, fit 180). The
file's phase ids are orix's: 1..n in the reverse order of the list (what OIM 7.2
expects), which orix reads back to the same phases.
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
from latentebsd.phases import NICKEL, PhaseSpec, orix_phase, orix_phase_list

#: Per-pattern fields PyEBSDIndex returns (``latentebsd.index.index_patterns``).
INDEX_DTYPE = np.dtype([
    ("quat", np.float64, (4,)),
    ("pq", np.float32),
    ("iq", np.float32),
    ("cm", np.float32),
    ("fit", np.float32),
    ("nmatch", np.int32),
    ("phase", np.int32),
])
#: Per-pattern quality fields besides :data:`INDEX_DTYPE`.
QUALITY_FIELDS = ("iq_kp", "sharpness")
_REQUIRED = (*INDEX_DTYPE.names, *QUALITY_FIELDS, "valid", "indexed")
#: Lattice parameter of Ni (Angstrom), written to .ang headers.
NICKEL_LATTICE_A = NICKEL.lattice[0]


def is_indexed(result: Mapping[str, np.ndarray] | np.ndarray, min_nmatch: int = 3) -> np.ndarray:
    """Patterns with a solution that at least ``min_nmatch`` bands agree on.

    Parameters
    ----------
    result
        Fields ``phase`` and ``nmatch`` (:data:`INDEX_DTYPE`).
    min_nmatch
        Minimum number of matched bands; 0 accepts any solution (``phase >= 0``), which
        is how OIM counts a point as indexed.
    """
    if min_nmatch < 0:
        raise ValueError(f"min_nmatch must be >= 0, got {min_nmatch}")
    return (np.asarray(result["phase"]) >= 0) & (np.asarray(result["nmatch"]) >= min_nmatch)


def write_index(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                geometry: ScanGeometry, attrs: Mapping[str, Any]) -> None:
    """Write per-pattern index arrays (one dataset each) and the geometry."""
    missing = [k for k in _REQUIRED if k not in arrays]
    if missing:
        raise ValueError(f"{path}: index arrays lack {missing}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            value = np.asarray(value)
            if len(value) != geometry.n_patterns:
                raise ValueError(f"{path}: {key} has {len(value)} entries, the map "
                                 f"{geometry.n_patterns}")
            f.create_dataset(key, data=value, compression="gzip", compression_opts=4)
        geometry.to_h5(f.create_group("geometry"))
        f.attrs.update(dict(attrs))


def read_index(path: str | os.PathLike, rows: tuple[int, int] | None = None,
               ) -> tuple[dict[str, np.ndarray], ScanGeometry, dict[str, Any]]:
    """Read what :func:`write_index` wrote: ``(arrays, geometry, attrs)``; with ``rows`` =
    ``(first_row, stop_row)``, only those map rows (and their geometry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: index file not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in _REQUIRED if k not in f]
        if missing or "geometry" not in f:
            raise ValueError(f"{path}: not an index file (missing {missing or 'geometry'})")
        geometry = ScanGeometry.from_h5(f["geometry"])
        if rows is None:
            arrays = {key: f[key][()] for key in f if isinstance(f[key], h5py.Dataset)}
        else:
            part = slice(rows[0] * geometry.n_cols, rows[1] * geometry.n_cols)
            geometry = geometry.row_block(*rows)
            arrays = {key: f[key][part] for key in f if isinstance(f[key], h5py.Dataset)}
        attrs = dict(f.attrs)
    return arrays, geometry, attrs


def as_result(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """The :data:`INDEX_DTYPE` structured array of index arrays (as read)."""
    result = np.zeros(len(arrays["phase"]), INDEX_DTYPE)
    for name in INDEX_DTYPE.names:
        result[name] = arrays[name]
    return result


def nickel_phase(name: str = "Ni"):
    """orix ``Phase`` of FCC nickel (space group Fm-3m, point group m-3m)."""
    return orix_phase(PhaseSpec(name, NICKEL.space_group, NICKEL.lattice))


def crystal_map(result: np.ndarray, geometry: ScanGeometry, indexed: np.ndarray | None = None,
                extra_props: dict[str, np.ndarray] | None = None,
                phases: list[PhaseSpec] | None = None):
    """An orix ``CrystalMap`` of a whole scan's indexing result.

    Parameters
    ----------
    result
        ``(n_rows * n_cols,)`` structured array of :data:`INDEX_DTYPE`, row-major.
    geometry
        Map shape and step (x = column * step, y = row * step, micrometres).
    indexed
        Which points count as indexed (default: :func:`is_indexed` with 3 bands); the
        others get phase ``-1`` (orix's ``not_indexed``; ``.ang``: CI -1, fit 180).
    extra_props
        More per-point properties (``(n,)`` arrays) to carry in the map.
    phases
        The scan's phases; ``result["phase"]`` indexes them (``None``: FCC nickel).

    Returns
    -------
    orix.crystal_map.CrystalMap
        Properties ``iq`` (PyEBSDIndex ``pq``), ``ci`` (``cm``), ``fit``, ``nmatch``
        plus ``extra_props``.
    """
    # orix's crystal-map module loads numba code at import (seconds): imported here
    from orix.crystal_map import CrystalMap
    from orix.quaternion import Rotation

    n = geometry.n_patterns
    if result.shape != (n,):
        raise ValueError(f"result holds {result.shape} points, the geometry {n}")
    ok = is_indexed(result) if indexed is None else np.asarray(indexed, dtype=bool)
    rows, cols = np.divmod(np.arange(n), geometry.n_cols)
    props = {"iq": result["pq"].astype(np.float64), "ci": result["cm"].astype(np.float64),
             "fit": result["fit"].astype(np.float64),
             "nmatch": result["nmatch"].astype(np.float64)}
    for key, value in (extra_props or {}).items():
        value = np.asarray(value, dtype=np.float64)
        if value.shape != (n,):
            raise ValueError(f"property {key!r} has shape {value.shape}, expected ({n},)")
        props[key] = value
    specs = phases or [NICKEL]
    phase = np.asarray(result["phase"])
    ok &= (phase >= 0) & (phase < len(specs))
    q = np.array(result["quat"], dtype=np.float64)
    q[~ok] = [1.0, 0.0, 0.0, 0.0]
    return CrystalMap(
        rotations=Rotation(q), phase_id=np.where(ok, phase, -1), x=cols * geometry.step_um,
        y=rows * geometry.step_um, phase_list=orix_phase_list(specs),
        prop=props, scan_unit="um",
    )


def ang_pattern_centre(geometry: ScanGeometry) -> np.ndarray:
    """The scan's mean pattern centre in EDAX / TSL convention ``(x*, y*, z*)``, as an
    ``.ang`` header states it (converted by kikuchipy from the Bruker PC the workflow
    keeps; one PC per file, so a per-pattern PC is averaged)."""
    from kikuchipy.detectors import EBSDDetector

    det = EBSDDetector(shape=tuple(geometry.pattern_shape), pc=geometry.mean_pc(),
                       convention="bruker")
    return np.asarray(det.pc_tsl(), dtype=np.float64).reshape(-1, 3)[0]


def write_ang(path: str | os.PathLike, result: np.ndarray, geometry: ScanGeometry,
              indexed: np.ndarray | None = None, phases: list[PhaseSpec] | None = None,
              working_distance_mm: float | None = None) -> None:
    """Write an indexing result as an EDAX ``.ang`` file (orix), atomically, with the
    scan's ``phases`` (``None``: FCC nickel) in its header and phase column.

    Parameters
    ----------
    path
        Output ``.ang``.
    result
        :data:`INDEX_DTYPE` records, one per map point (row-major).
    geometry
        The scan's geometry: map shape, step and the pattern centre, which goes into the
        header's ``x-star`` / ``y-star`` / ``z-star`` in EDAX / TSL convention
        (:func:`ang_pattern_centre`; orix writes 0 there, which OIM takes for a PC).
    indexed
        Points to write as indexed (others as orix's not-indexed).
    phases
        The scan's phases.
    working_distance_mm
        The header's ``WorkingDistance`` (mm); ``None``: the geometry's (what the
        pattern file states), and where that is unknown too, orix's 0.
    """
    import orix.io

    pc_tsl = ang_pattern_centre(geometry)
    if working_distance_mm is None:
        working_distance_mm = geometry.working_distance_mm

    # orix 0.15 writes a map of one row or column wrongly or not at all (it takes it
    # for 1-D, or 0-D for one point): write such a map padded to 2 x 2 or more with
    # copies of its edge points, then keep the original points only
    n_rows, n_cols = geometry.map_shape
    padded = (max(2, n_rows), max(2, n_cols))
    keep = None
    if padded != (n_rows, n_cols):
        r, c = np.divmod(np.arange(padded[0] * padded[1]), padded[1])
        source = np.minimum(r, n_rows - 1) * n_cols + np.minimum(c, n_cols - 1)
        keep = (r < n_rows) & (c < n_cols)
        result = result[source]
        indexed = None if indexed is None else np.asarray(indexed, bool)[source]
        geometry = ScanGeometry(*padded, geometry.step_um, geometry.pattern_shape,
                                geometry.mean_pc(), geometry.sample_tilt, geometry.camera_tilt,
                                geometry.working_distance_mm)
    xmap = crystal_map(result, geometry, indexed, phases=phases)
    with atomic_path(path) as tmp:
        # overwrite=True: without it orix asks on stdin when the file exists
        orix.io.save(str(tmp), xmap, overwrite=True, image_quality_prop="iq",
                     confidence_index_prop="ci", pattern_fit_prop="fit")
        if keep is not None:
            _unpad_ang(tmp, keep, padded, (n_rows, n_cols))
        _set_ang_geometry(tmp, pc_tsl, working_distance_mm)


#: ``.ang`` header keys of the detector geometry, in the order orix writes them.
ANG_PC_KEYS = ("x-star", "y-star", "z-star")


def _set_ang_geometry(path: Path, pc_tsl: np.ndarray, working_distance_mm: float | None) -> None:
    """Put the pattern centre (TSL) and, if known, the working distance into the header
    of the ``.ang`` at ``path`` (orix 0.15 writes zeros for all four)."""
    values = dict(zip(ANG_PC_KEYS, (float(v) for v in pc_tsl)))
    if working_distance_mm is not None:
        values["WorkingDistance"] = float(working_distance_mm)
    lines = Path(path).read_text().splitlines()
    found = set()
    for i, line in enumerate(lines):
        if not line.startswith("#"):
            break
        parts = line[1:].split()
        if len(parts) == 2 and parts[0] in values:
            lines[i] = f"# {parts[0]:<22} {values[parts[0]]:.6f}"
            found.add(parts[0])
    if found != set(values):  # an orix that no longer writes these lines: say so
        raise ValueError(f"{path}: .ang header lacks {sorted(set(values) - found)}")
    Path(path).write_text("\n".join(lines) + "\n")


def read_ang_geometry(path: str | os.PathLike) -> dict[str, float]:
    """``x-star``, ``y-star``, ``z-star`` (TSL) and ``WorkingDistance`` from an
    ``.ang`` header (what :func:`write_ang` wrote)."""
    out = {}
    for line in Path(path).read_text().splitlines():
        if not line.startswith("#"):
            break
        parts = line[1:].split()
        if len(parts) == 2 and parts[0] in (*ANG_PC_KEYS, "WorkingDistance"):
            out[parts[0]] = float(parts[1])
    return out


def _unpad_ang(path: Path, keep: np.ndarray, padded: tuple[int, int],
               map_shape: tuple[int, int]) -> None:
    """Keep only the ``keep`` data lines (row-major points) of an ``.ang`` that
    :func:`write_ang` padded to ``padded``, with the header's map shape ``map_shape``."""
    header, data = [], []
    for line in Path(path).read_text().splitlines():
        if line.startswith("#"):
            header.append(line)
        elif line.strip():
            data.append(line)
    if len(data) != len(keep):
        raise ValueError(f"{path}: {len(data)} points written, {len(keep)} expected")
    fixes = {f"NCOLS_ODD: {padded[1]}": f"NCOLS_ODD: {map_shape[1]}",
             f"NCOLS_EVEN: {padded[1]}": f"NCOLS_EVEN: {map_shape[1]}",
             f"NROWS: {padded[0]}": f"NROWS: {map_shape[0]}"}
    for i, line in enumerate(header):
        for old, new in fixes.items():
            if line.rstrip().endswith(old):
                header[i] = line.replace(old, new)
    lines = [*header, *(line for line, k in zip(data, keep) if k)]
    Path(path).write_text("\n".join(lines) + "\n")
