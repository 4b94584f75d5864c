"""Orientation arithmetic on quaternion arrays, through orix, in each phase's own symmetry.

Quaternions are orix's (an :class:`orix.quaternion.Orientation` maps sample-frame
vectors into the crystal frame), the convention kikuchipy simulates and PyEBSDIndex
(vendor EDAX) returns. Every function takes the symmetry to reduce by: an orix
``Symmetry`` (a phase's Laue group, :meth:`latentebsd.phases.PhaseSpec.laue_group`;
default m-3m, FCC Ni) or, for a scan of several phases, one per phase together with
each point's phase (:func:`phase_pair_angles`, :func:`ipf_colors`). Two points of
different phases have no misorientation (NaN). Every function works in chunks of
:data:`PAIR_CHUNK` points: orix needs about 1 kB of scratch per pair, a gigabyte for a
million pairs at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

#: Points per orix call: bounds memory on million-point maps.
PAIR_CHUNK = 65_536


def _default(symmetry: Any):
    from orix.quaternion import symmetry as sym

    return sym.Oh if symmetry is None else symmetry


def quaternions(orientations: Any) -> np.ndarray:
    """The float64 quaternion array of an orix object or of an array."""
    return np.asarray(orientations.data if hasattr(orientations, "data") else orientations,
                      dtype=np.float64)


def pair_angles(q1: np.ndarray, q2: np.ndarray, chunk_size: int | None = None,
                symmetry: Any = None) -> np.ndarray:
    """Misorientation angles (deg) between ``(n, 4)`` quaternion pairs of one phase, in
    its ``symmetry`` (orix ``Symmetry``; default m-3m), in chunks of ``chunk_size`` pairs
    (default :data:`PAIR_CHUNK`)."""
    from orix.quaternion import Orientation

    sym = _default(symmetry)
    q1 = np.asarray(q1, dtype=np.float64).reshape(-1, 4)
    q2 = np.asarray(q2, dtype=np.float64).reshape(-1, 4)
    chunk = int(chunk_size or PAIR_CHUNK)
    out = np.empty(len(q1))
    for a in range(0, len(q1), chunk):
        b = min(a + chunk, len(q1))
        o1 = Orientation(q1[a:b], symmetry=sym)
        o2 = Orientation(q2[a:b], symmetry=sym)
        out[a:b] = o1.angle_with(o2, degrees=True)
    return out


def phase_pair_angles(q1: np.ndarray, q2: np.ndarray, phase1: np.ndarray | None,
                      phase2: np.ndarray | None, symmetries: Sequence[Any] | None) -> np.ndarray:
    """Misorientation angles (deg) of ``(n, 4)`` quaternion pairs, each pair in the
    symmetry of its phase; NaN where the two phases differ or one is negative (not
    indexed).

    Parameters
    ----------
    q1, q2
        ``(n, 4)`` quaternions.
    phase1, phase2
        ``(n,)`` phase of each point (an index into ``symmetries``); ``None``: all 0.
    symmetries
        One orix ``Symmetry`` per phase; ``None``: one phase, m-3m.
    """
    q1 = np.asarray(q1, dtype=np.float64).reshape(-1, 4)
    q2 = np.asarray(q2, dtype=np.float64).reshape(-1, 4)
    n = len(q1)
    syms = list(symmetries) if symmetries is not None else [None]
    p1 = np.zeros(n, int) if phase1 is None else np.asarray(phase1).ravel().astype(int)
    p2 = np.zeros(n, int) if phase2 is None else np.asarray(phase2).ravel().astype(int)
    out = np.full(n, np.nan)
    for k, sym in enumerate(syms):
        sel = np.flatnonzero((p1 == k) & (p2 == k))
        if sel.size:
            out[sel] = pair_angles(q1[sel], q2[sel], symmetry=sym)
    return out


def align_to(q: np.ndarray, reference: np.ndarray, symmetry: Any = None) -> np.ndarray:
    """The ``symmetry``-equivalent (default m-3m) of each quaternion closest to its
    reference, same hemisphere."""
    from orix.quaternion import Rotation

    sym = _default(symmetry)
    # proper rotations of the Laue group act from the left (crystal side)
    ops = Rotation(sym.proper_subgroup.data)
    out = np.empty_like(q)
    for a in range(0, len(q), PAIR_CHUNK):
        b = min(a + PAIR_CHUNK, len(q))
        eq = ops.outer(Rotation(q[a:b])).data  # (n_ops, m, 4)
        dots = np.einsum("kmi,mi->km", eq, reference[a:b])
        best = np.abs(dots).argmax(axis=0)
        pick = eq[best, np.arange(b - a)]
        sign = np.sign(dots[best, np.arange(b - a)])
        out[a:b] = pick * np.where(sign == 0, 1.0, sign)[:, None]
    return out


def ipf_colors(quats: np.ndarray, indexed: np.ndarray | None = None,
               direction: str = "x", phase: np.ndarray | None = None,
               symmetries: Sequence[Any] | None = None) -> np.ndarray:
    """IPF colours (orix ``IPFColorKeyTSL`` of each point's phase symmetry; default one
    phase, m-3m) along sample ``direction``, ``(n, 3)`` in [0, 1]; black where not
    ``indexed`` (or of a phase outside ``symmetries``)."""
    from orix.plot import IPFColorKeyTSL
    from orix.quaternion import Orientation
    from orix.vector import Vector3d

    q = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    vec = {"x": Vector3d.xvector(), "y": Vector3d.yvector(), "z": Vector3d.zvector()}
    if direction not in vec:
        raise ValueError(f"direction must be x, y or z, got {direction!r}")
    syms = list(symmetries) if symmetries is not None else [None]
    ph = np.zeros(len(q), int) if phase is None else np.asarray(phase).ravel().astype(int)
    rgb = np.zeros((len(q), 3))
    ok = np.ones(len(q), bool) if indexed is None else np.asarray(indexed, bool).ravel()
    for k, sym in enumerate(syms):
        sym = _default(sym)
        key = IPFColorKeyTSL(sym, direction=vec[direction])
        mine = ok & (ph == k)
        for a in range(0, len(q), PAIR_CHUNK):
            b = min(a + PAIR_CHUNK, len(q))
            sel = np.flatnonzero(mine[a:b]) + a
            if sel.size:
                rgb[sel] = key.orientation2color(Orientation(q[sel], symmetry=sym))
    return rgb


def indexed_orientations(result: Any, symmetry: Any = None):
    """orix ``Orientation`` of an indexing result (fields ``quat``, ``phase``) in
    ``symmetry`` (default m-3m); patterns not indexed (``phase == -1``) get the identity."""
    from orix.quaternion import Orientation

    q = np.array(result["quat"], dtype=np.float64).reshape(-1, 4)
    q[np.asarray(result["phase"]).ravel() < 0] = [1.0, 0.0, 0.0, 0.0]
    # PyEBSDIndex returns the sample->crystal rotation orix uses: no inverse needed
    return Orientation(q, symmetry=_default(symmetry))


#: The Sigma3 (coherent twin) misorientation in cubic crystals: 60 deg about <111>.
SIGMA3_AXIS, SIGMA3_ANGLE_DEG = (1.0, 1.0, 1.0), 60.0


def brandon_tolerance(sigma: int, theta0_deg: float = 15.0) -> float:
    """Brandon's criterion: the largest deviation (deg) from a CSL misorientation of
    ``sigma`` that still counts as that boundary, ``theta0 / sqrt(sigma)`` (8.66 deg for
    Sigma3)."""
    return float(theta0_deg) / float(np.sqrt(sigma))


def is_cubic(symmetry: Any) -> bool:
    """Whether ``symmetry`` (orix; ``None``: m-3m) is a cubic Laue group (m-3m, m-3),
    where the Sigma3 <111> twin is defined."""
    return _default(symmetry).laue.name in ("m-3m", "m-3")


def _sigma3_variants(symmetry: Any) -> np.ndarray:
    """Distinct crystal-frame rotations ``r s`` (r: 60 deg about [111], s: a proper
    symmetry operation) that take an orientation to its Sigma3 twins, modulo the
    symmetry acting on the twin: ``(k, 4)``."""
    from orix.quaternion import Orientation, Rotation

    sym = _default(symmetry)
    r = Rotation.from_axes_angles(SIGMA3_AXIS, SIGMA3_ANGLE_DEG, degrees=True)
    ops = Rotation(sym.proper_subgroup.data)
    cands = (r * ops).data.reshape(-1, 4)
    keep: list[np.ndarray] = []
    for c in cands:
        if keep:
            ang = Orientation(np.array(keep), symmetry=sym).angle_with(
                Orientation(np.repeat(c[None], len(keep), 0), symmetry=sym), degrees=True)
            if np.min(ang) < 1e-3:
                continue
        keep.append(c)
    return np.array(keep)


def sigma3_deviation(q1: np.ndarray, q2: np.ndarray, symmetry: Any = None) -> np.ndarray:
    """Deviation (deg) of the misorientation of each ``(n, 4)`` quaternion pair from
    Sigma3 (60 deg about <111>), in a cubic ``symmetry`` (default m-3m): the smallest
    angle between ``q2`` and a Sigma3 twin of ``q1``. NaN for a non-cubic symmetry."""
    from orix.quaternion import Orientation, Rotation

    sym = _default(symmetry)
    q1 = np.asarray(q1, dtype=np.float64).reshape(-1, 4)
    q2 = np.asarray(q2, dtype=np.float64).reshape(-1, 4)
    out = np.full(len(q1), np.nan)
    if not is_cubic(sym) or not len(q1):
        return out
    variants = _sigma3_variants(sym)
    for a in range(0, len(q1), PAIR_CHUNK):
        b = min(a + PAIR_CHUNK, len(q1))
        o2 = Orientation(q2[a:b], symmetry=sym)
        best = np.full(b - a, np.inf)
        for v in variants:
            twin = Orientation((Rotation(v) * Rotation(q1[a:b])).data, symmetry=sym)
            best = np.minimum(best, twin.angle_with(o2, degrees=True))
        out[a:b] = best
    return out


def rodrigues_components(quats: np.ndarray, indexed: np.ndarray | None = None,
                         phase: np.ndarray | None = None,
                         symmetries: Sequence[Any] | None = None) -> np.ndarray:
    """Rodrigues-Frank vector of each orientation in its phase's fundamental zone (orix
    ``reduce`` then ``to_rodrigues``), ``(n, 3)``; NaN where not
    ``indexed`` (or of a phase outside ``symmetries``). Orientation itself as three maps:
    what an EBSD user reads off an IPF map, as numbers."""
    from orix.quaternion import Orientation

    q = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    syms = list(symmetries) if symmetries is not None else [None]
    ph = np.zeros(len(q), int) if phase is None else np.asarray(phase).ravel().astype(int)
    ok = np.ones(len(q), bool) if indexed is None else np.asarray(indexed, bool).ravel()
    out = np.full((len(q), 3), np.nan)
    for k, sym in enumerate(syms):
        sym = _default(sym)
        mine = ok & (ph == k)
        for a in range(0, len(q), PAIR_CHUNK):
            b = min(a + PAIR_CHUNK, len(q))
            sel = np.flatnonzero(mine[a:b]) + a
            if sel.size:
                o = Orientation(q[sel], symmetry=sym)
                o = o.reduce() if hasattr(o, "reduce") else o.map_into_symmetry_reduced_zone()
                out[sel] = np.asarray(o.to_rodrigues().data, dtype=np.float64)
    return out
