"""The scan grid: neighbour pairs of map points and gradients of maps.

Maps are ``(..., n_rows, n_cols)`` arrays on the square scan grid; a point's 4
neighbours share an edge with it, its 8 neighbours also a corner.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def neighbour_pairs(neighbours: int) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """Index pairs ``(a, b)`` such that ``x[..., *a]`` and ``x[..., *b]`` are neighbours,
    each pair once: right, down (and for 8: down-right, down-left)."""
    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
    s, e, a = slice(None, -1), slice(1, None), slice(None)
    pairs = [((a, s), (a, e)), ((s, a), (e, a))]
    if neighbours == 8:
        pairs += [((s, s), (e, e)), ((s, e), (e, s))]
    return pairs


def gradient_magnitude(maps: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of each ``(g, R, C)`` map (per pixel step)."""
    x = np.asarray(maps, dtype=np.float32)
    gy = ndimage.sobel(x, axis=-2, mode="nearest")
    gx = ndimage.sobel(x, axis=-1, mode="nearest")
    return np.hypot(gx, gy) / 8.0
