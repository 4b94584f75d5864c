"""Orientation arithmetic on quaternion arrays, through orix (m-3m, FCC Ni).

Quaternions are orix's (an :class:`orix.quaternion.Orientation` maps sample-frame
vectors into the crystal frame), the convention kikuchipy simulates and PyEBSDIndex
(vendor EDAX) returns. Every function works in chunks of :data:`PAIR_CHUNK` points:
orix needs about 1 kB of scratch per pair, a gigabyte for a million pairs at once.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Points per orix call: bounds memory on million-point maps.
PAIR_CHUNK = 65_536


def quaternions(orientations: Any) -> np.ndarray:
    """The float64 quaternion array of an orix object or of an array."""
    return np.asarray(orientations.data if hasattr(orientations, "data") else orientations,
                      dtype=np.float64)


def pair_angles(q1: np.ndarray, q2: np.ndarray, chunk_size: int | None = None) -> np.ndarray:
    """m-3m misorientation angles (deg) between ``(n, 4)`` quaternion pairs, in chunks
    of ``chunk_size`` pairs (default :data:`PAIR_CHUNK`)."""
    from orix.quaternion import Orientation, symmetry

    q1 = np.asarray(q1, dtype=np.float64).reshape(-1, 4)
    q2 = np.asarray(q2, dtype=np.float64).reshape(-1, 4)
    chunk = int(chunk_size or PAIR_CHUNK)
    out = np.empty(len(q1))
    for a in range(0, len(q1), chunk):
        b = min(a + chunk, len(q1))
        o1 = Orientation(q1[a:b], symmetry=symmetry.Oh)
        o2 = Orientation(q2[a:b], symmetry=symmetry.Oh)
        out[a:b] = o1.angle_with(o2, degrees=True)
    return out


def align_to(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The m-3m equivalent of each quaternion closest to its reference, same hemisphere."""
    from orix.quaternion import Rotation, symmetry

    ops = Rotation(symmetry.O.data)  # proper rotations of m-3m act from the left (crystal side)
    out = np.empty_like(q)
    for a in range(0, len(q), PAIR_CHUNK):
        b = min(a + PAIR_CHUNK, len(q))
        eq = ops.outer(Rotation(q[a:b])).data  # (24, m, 4)
        dots = np.einsum("kmi,mi->km", eq, reference[a:b])
        best = np.abs(dots).argmax(axis=0)
        pick = eq[best, np.arange(b - a)]
        sign = np.sign(dots[best, np.arange(b - a)])
        out[a:b] = pick * np.where(sign == 0, 1.0, sign)[:, None]
    return out


def ipf_colors(quats: np.ndarray, indexed: np.ndarray | None = None,
               direction: str = "x") -> np.ndarray:
    """IPF colours (m-3m, orix ``IPFColorKeyTSL``) along sample ``direction``, ``(n, 3)``
    in [0, 1]; black where not ``indexed``."""
    from orix.plot import IPFColorKeyTSL
    from orix.quaternion import Orientation, symmetry
    from orix.vector import Vector3d

    q = np.asarray(quats, dtype=np.float64).reshape(-1, 4)
    vec = {"x": Vector3d.xvector(), "y": Vector3d.yvector(), "z": Vector3d.zvector()}
    if direction not in vec:
        raise ValueError(f"direction must be x, y or z, got {direction!r}")
    key = IPFColorKeyTSL(symmetry.Oh, direction=vec[direction])
    rgb = np.zeros((len(q), 3))
    ok = np.ones(len(q), bool) if indexed is None else np.asarray(indexed, bool).ravel()
    for a in range(0, len(q), PAIR_CHUNK):
        b = min(a + PAIR_CHUNK, len(q))
        sel = np.flatnonzero(ok[a:b]) + a
        if sel.size:
            rgb[sel] = key.orientation2color(Orientation(q[sel], symmetry=symmetry.Oh))
    return rgb


def indexed_orientations(result: Any):
    """m-3m orix ``Orientation`` of an indexing result (fields ``quat``, ``phase``);
    patterns not indexed (``phase == -1``) get the identity."""
    from orix.quaternion import Orientation, symmetry

    q = np.array(result["quat"], dtype=np.float64).reshape(-1, 4)
    q[np.asarray(result["phase"]).ravel() < 0] = [1.0, 0.0, 0.0, 0.0]
    # PyEBSDIndex returns the sample->crystal rotation orix uses: no inverse needed
    return Orientation(q, symmetry=symmetry.Oh)
