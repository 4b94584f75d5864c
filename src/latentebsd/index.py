"""Hough indexing with PyEBSDIndex (CPU numba path), in the workflow's conventions.

Conventions (checked in ``tests/test_simulate.py``):

- PCs are kept in Bruker convention (:class:`~latentebsd.geometry.ScanGeometry`) and
  converted to EDAX TSL with kikuchipy's :meth:`EBSDDetector.pc_tsl`, which matches
  what PyEBSDIndex's ``vendor="EDAX"`` expects (``x*`` of the width, ``y*`` from the
  bottom, ``z*`` times ``min(h, w)`` in pixels), also for non-square patterns.
- ``camElev`` is kikuchipy's detector ``tilt``; ``sampleTilt`` the sample tilt.
- PyEBSDIndex's ``index_pats`` accepts one PC per pattern (``PC`` of shape
  ``(n, 3)``; its ``radon2pole`` converts bands to plane normals pattern by pattern),
  so a drifting PC is handled exactly, with no grouping error.
- The quaternions it returns (vendor ``EDAX`` or ``KIKUCHIPY``: the same sample
  frame) are orix orientations as they are, no inverse: the rotations that kikuchipy's
  ``get_patterns`` simulated are recovered to ~0.05 deg.

The first indexing call in a fresh machine compiles numba code (~90 s, then cached in
``~/.pyebsdindex/numbacache``); import :mod:`latentebsd` (which imports PyEBSDIndex
first) before kikuchipy/orix in every process.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

import latentebsd  # noqa: F401  (import order: PyEBSDIndex before kikuchipy/orix)
from latentebsd.geometry import ScanGeometry

#: Hough/Radon defaults (LIBRARIES.md: nTheta=180 is the paper's 1 deg theta step,
#: rhoMaskFrac=0.075 keeps ~85 % of rho; sigmas of 2 gave 0.08 deg vs 0.33 deg median
#: error on noisy simulated Ni).
DEFAULT_HOUGH: dict[str, Any] = {
    "nTheta": 180,
    "nRho": 90,
    "rhoMaskFrac": 0.075,
    "tSigma": 2.0,
    "rSigma": 2.0,
    "nBands": 9,
}

#: Per-pattern fields returned by :func:`index_patterns`.
INDEX_DTYPE = np.dtype([
    ("quat", np.float64, (4,)),
    ("pq", np.float32),
    ("iq", np.float32),
    ("cm", np.float32),
    ("fit", np.float32),
    ("nmatch", np.int32),
    ("phase", np.int32),
])


def _check_shape(pattern_shape: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in pattern_shape)
    if h < 1 or w < 1:
        raise ValueError(f"pattern_shape must be two positive integers, got {pattern_shape}")
    return h, w


def pc_tsl(pc_bruker: np.ndarray, pattern_shape: Sequence[int]) -> np.ndarray:
    """Bruker PC(s) ``(3,)`` or ``(n, 3)`` -> EDAX TSL PC(s) of the same shape."""
    from kikuchipy.detectors import EBSDDetector

    pc = np.asarray(pc_bruker, dtype=np.float64)
    det = EBSDDetector(shape=_check_shape(pattern_shape), pc=np.atleast_2d(pc))
    out = det.pc_tsl().reshape(-1, 3)
    return out[0] if pc.ndim == 1 else out


def build_indexer(geometry: ScanGeometry, pattern_shape: Sequence[int] | None = None,
                  phase_list: Sequence[str] = ("FCC",), **hough: Any):
    """A PyEBSDIndex ``EBSDIndexer`` for this scan's geometry.

    Parameters
    ----------
    geometry
        Scan geometry; its mean PC becomes the indexer's default PC (per-pattern PCs
        are passed at indexing time by :func:`index_patterns`).
    pattern_shape
        ``(h, w)`` of the patterns to index, if not ``geometry.pattern_shape`` (e.g.
        after binning; PC fractions do not change).
    phase_list
        PyEBSDIndex phase names (``"FCC"``, ``"BCC"``).
    **hough
        Overrides of :data:`DEFAULT_HOUGH` and any other ``EBSDIndexer`` argument
        (e.g. ``patternmask``).

    Returns
    -------
    pyebsdindex.ebsd_index.EBSDIndexer
    """
    from pyebsdindex.ebsd_index import EBSDIndexer

    shape = _check_shape(pattern_shape if pattern_shape is not None else geometry.pattern_shape)
    for key in ("vendor", "PC", "sampleTilt", "camElev", "patDim", "phaselist"):
        if key in hough:
            raise ValueError(f"build_indexer: {key!r} comes from the geometry; do not pass it")
    params = {**DEFAULT_HOUGH, **hough}
    return EBSDIndexer(
        phaselist=list(phase_list), vendor="EDAX", PC=pc_tsl(geometry.mean_pc(), shape),
        sampleTilt=geometry.sample_tilt, camElev=geometry.camera_tilt, patDim=shape,
        **params,
    )


def index_patterns(patterns: np.ndarray, geometry: ScanGeometry, start: int = 0,
                   indexer: Any = None, mask: np.ndarray | None = None,
                   chunk_size: int = 512) -> np.ndarray:
    """Hough-index in-memory patterns, each with its own (drifting) PC.

    Parameters
    ----------
    patterns
        ``(n, h, w)`` (or one ``(h, w)``) patterns: scan patterns ``start:start + n``
        in row-major order (any real dtype; converted to float32 chunk by chunk).
    geometry
        Scan geometry; ``geometry.pc_of(start, start + n)`` gives the PCs.
    start
        Index of the first pattern in the scan.
    indexer
        From :func:`build_indexer`; built for ``patterns``' shape when ``None``.
    mask
        ``(h, w)`` bool, True on pixels to use (the phosphor screen), passed to
        PyEBSDIndex as ``patternmask``. Only when ``indexer`` is ``None`` (an indexer's
        Radon plan is set up with its mask).
    chunk_size
        Patterns per PyEBSDIndex call.

    Returns
    -------
    numpy.ndarray
        Structured array ``(n,)`` of :data:`INDEX_DTYPE`: ``quat`` (orix convention),
        ``pq`` (mean Radon peak height, EDAX-IQ-like), ``iq``, ``cm`` (confidence
        metric 0-1), ``fit`` (deg), ``nmatch``, ``phase`` (-1: not indexed).
    """
    pats = np.asarray(patterns)
    if pats.ndim == 2:
        pats = pats[None]
    if pats.ndim != 3:
        raise ValueError(f"patterns must be (n, h, w), got shape {pats.shape}")
    n = len(pats)
    if start < 0 or start + n > geometry.n_patterns:
        raise ValueError(f"patterns {start}:{start + n} outside the scan's "
                         f"{geometry.n_patterns} patterns")
    shape = pats.shape[1:]
    if indexer is None:
        kwargs = {} if mask is None else {"patternmask": _check_mask(mask, shape)}
        indexer = build_indexer(geometry, shape, **kwargs)
    elif mask is not None:
        raise ValueError("index_patterns: pass mask to build_indexer(patternmask=...) when "
                         "giving an indexer")
    if tuple(indexer.bandDetectPlan.patDim) != tuple(shape):
        raise ValueError(f"indexer was built for {tuple(indexer.bandDetectPlan.patDim)} "
                         f"patterns, got {tuple(shape)}")
    pcs = pc_tsl(geometry.pc_of(start, start + n), shape)
    out = np.zeros(n, INDEX_DTYPE)
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        data, *_ = indexer.index_pats(patsin=pats[a:b].astype(np.float32), PC=pcs[a:b],
                                      chunksize=chunk_size)
        best = data[-1]
        for name in INDEX_DTYPE.names:
            out[name][a:b] = best[name]
    return out


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask must have the pattern shape {tuple(shape)}, got {mask.shape}")
    return mask.astype(bool)


def indexed_orientations(result: np.ndarray):
    """m-3m orix ``Orientation`` of indexed patterns, in the simulation's convention.

    ``truth.angle_with(indexed_orientations(result), degrees=True)`` is then the
    misorientation. Patterns not indexed (``phase == -1``) get the identity: mask them
    with ``result["phase"] >= 0``.
    """
    from orix.quaternion import Orientation, symmetry

    q = np.array(result["quat"], dtype=np.float64).reshape(-1, 4)
    q[np.asarray(result["phase"]).ravel() < 0] = [1.0, 0.0, 0.0, 0.0]
    # PyEBSDIndex returns the sample->crystal rotation orix uses: no inverse needed
    return Orientation(q, symmetry=symmetry.Oh)


# --------------------------------------------------------------------------------------
# Indexed or not, crystal maps and .ang files
# --------------------------------------------------------------------------------------
#: The paper's OIM Hough settings and how :data:`DEFAULT_HOUGH` translates them:
#:
#: - theta step 1 deg -> ``nTheta=180`` (180 deg / 180 bins).
#: - rho fraction 85 % -> ``rhoMaskFrac=0.075`` with ``nRho=90``: PyEBSDIndex blanks
#:   ``int(nRho * rhoMaskFrac)`` rho bins at each end, keeping ``1 - 2 * 6 / 90`` = 87 %
#:   of rho (0.085 would keep 84 %; 87 % is the closer of the two).
#: - min peak distance 10 -> ``tSigma = rSigma = 2``: the Radon peak search takes a
#:   peak only where it is the maximum of a ``2 * ksz + 1`` window, ``ksz = max(int(4 *
#:   sigma), 5)`` made odd = 9, i.e. 19 bins: peaks at least ~9-10 bins (deg) apart.
#: - min peak magnitude 5 -> no PyEBSDIndex argument (it keeps the ``nBands`` strongest
#:   local maxima); ``nBands=9`` is the number of bands OIM typically keeps.
PAPER_HOUGH_MAPPING: dict[str, str] = {
    "theta step 1 deg": "nTheta=180",
    "rho fraction 85 %": "nRho=90, rhoMaskFrac=0.075 (87 % of rho kept)",
    "min peak distance 10": "tSigma=rSigma=2 (19-bin local-maximum window)",
    "min peak magnitude 5": "no equivalent; nBands=9 strongest peaks",
}

#: Lattice parameter of Ni (Angstrom), written to .ang headers.
NICKEL_LATTICE_A = 3.524


def is_indexed(result: np.ndarray, min_nmatch: int = 3) -> np.ndarray:
    """Patterns with a solution that at least ``min_nmatch`` bands agree on.

    Parameters
    ----------
    result
        Structured array with fields ``phase`` and ``nmatch`` (:data:`INDEX_DTYPE`).
    min_nmatch
        Minimum number of matched bands; 0 accepts any solution (``phase >= 0``), which
        is how OIM counts a point as indexed.

    Returns
    -------
    numpy.ndarray
        Boolean array of ``result``'s shape.
    """
    if min_nmatch < 0:
        raise ValueError(f"min_nmatch must be >= 0, got {min_nmatch}")
    return (np.asarray(result["phase"]) >= 0) & (np.asarray(result["nmatch"]) >= min_nmatch)


def nickel_phase(name: str = "Ni"):
    """orix ``Phase`` of FCC nickel (space group Fm-3m, point group m-3m)."""
    from diffpy.structure import Lattice, Structure
    from orix.crystal_map import Phase

    a = NICKEL_LATTICE_A
    return Phase(name=name, space_group=225,
                 structure=Structure(lattice=Lattice(a, a, a, 90, 90, 90)))


def crystal_map(result: np.ndarray, geometry: ScanGeometry, indexed: np.ndarray | None = None,
                extra_props: dict[str, np.ndarray] | None = None):
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

    Returns
    -------
    orix.crystal_map.CrystalMap
        Properties ``iq`` (PyEBSDIndex ``pq``), ``ci`` (``cm``), ``fit``, ``nmatch``
        plus ``extra_props``.
    """
    from orix.crystal_map import CrystalMap, PhaseList
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
    q = np.array(result["quat"], dtype=np.float64)
    q[~ok] = [1.0, 0.0, 0.0, 0.0]
    return CrystalMap(
        rotations=Rotation(q), phase_id=np.where(ok, 0, -1), x=cols * geometry.step_um,
        y=rows * geometry.step_um, phase_list=PhaseList({0: nickel_phase()}),
        prop=props, scan_unit="um",
    )


def write_ang(path, result: np.ndarray, geometry: ScanGeometry,
              indexed: np.ndarray | None = None) -> None:
    """Write an indexing result as an EDAX ``.ang`` file (orix) that OIM and MTEX open.

    Columns: Euler angles, x, y, IQ (PyEBSDIndex ``pq``), CI (``cm``), phase, detector
    signal (0), fit. Points not ``indexed`` are written as orix writes non-indexed
    points (Euler 4 pi, CI -1, fit 180). Written to a temporary name, then renamed.
    """
    import orix.io

    from latentebsd.io import atomic_path

    xmap = crystal_map(result, geometry, indexed)
    with atomic_path(path) as tmp:
        # overwrite=True: without it orix asks on stdin when the file exists
        orix.io.save(str(tmp), xmap, overwrite=True, image_quality_prop="iq",
                     confidence_index_prop="ci", pattern_fit_prop="fit")
