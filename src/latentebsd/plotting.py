"""Plotting helpers every figure of the workflow shares: the (Agg) pyplot, saving, map
extents in micrometres, scale bars, robust colour ranges, colour maps with a grey for
missing values, a map panel with colour bar, the IPF colour key, placeholders.

matplotlib is imported inside the functions: it costs about a second per process and
many rule jobs never draw.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from latentebsd.io.atomic import atomic_path


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig: Any, path: str | os.PathLike, dpi: int = 110, tight: bool = False) -> None:
    """Save ``fig`` as PNG atomically and close it."""
    plt = pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png", bbox_inches="tight" if tight else None)
    plt.close(fig)


def panel_grid(n: int, max_cols: int, width: float, height: float,
               extra_height: float = 0.6) -> tuple[Any, list[Any]]:
    """A figure of ``n`` panels in rows of at most ``max_cols`` (each ``width`` x
    ``height`` inches, plus ``extra_height`` for a legend), the unused ones hidden: the
    figure and its first ``n`` axes (one when ``n`` is 0)."""
    plt = pyplot()
    ncols = min(max_cols, n) or 1
    nrows = -(-n // ncols) or 1
    fig, axes = plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows + extra_height),
                             squeeze=False)
    for ax in axes.flat[max(n, 1):]:
        ax.set_axis_off()
    return fig, list(axes.flat[:max(n, 1)])


def placeholder(path: str | os.PathLike, text: str) -> None:
    """A small PNG that only says ``text`` (an output with nothing to show)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 1.5))
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    save_figure(fig, path, dpi=80)


def nice_length(span: float) -> float:
    """A 1/2/5 x 10^k length of about a fifth of ``span`` (for scale bars)."""
    target = max(span / 5.0, 1e-12)
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**exp <= target * 1.5:
            return float(m * 10**exp)
    return float(10**exp)


def map_extent(shape: Sequence[int], step_um: float, origin: Sequence[int] = (0, 0)) -> tuple:
    """``imshow`` extent of a ``(rows, cols)`` map whose top-left point is map point
    ``origin``; pixel edges at multiples of the step, in micrometres."""
    rows, cols = shape[:2]
    r0, c0 = origin
    return (c0 * step_um, (c0 + cols) * step_um, (r0 + rows) * step_um, r0 * step_um)


def add_scale_bar(ax: Any, width_um: float, color: str = "white") -> float:
    """A micrometre scale bar (lower left) on axes whose data units are micrometres
    and which show ``width_um`` across; returns its length."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = nice_length(width_um)
    bar = AnchoredSizeBar(ax.transData, length, f"{length:g} µm", "lower left", pad=0.3,
                          color=color, frameon=False, size_vertical=width_um / 150,
                          borderpad=0.3, fontproperties={"size": 7})
    ax.add_artist(bar)
    return length


def robust_limits(data: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    """The ``lo``-``hi`` percentile range of the finite values (a non-empty range)."""
    v = np.asarray(data, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (float(a), float(b)) if b > a else (float(a) - 0.5, float(a) + 0.5)


def colormap(name: str) -> Any:
    """A matplotlib colour map that draws missing (masked / NaN) values grey."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="0.6")


def masked(image: np.ndarray, valid: np.ndarray | None = None) -> np.ma.MaskedArray:
    """``image`` with non-finite and (if given) invalid pixels masked."""
    bad = ~np.isfinite(image)
    if valid is not None:
        bad |= ~np.asarray(valid, bool)
    return np.ma.array(image, mask=bad)


def show_map(ax: Any, data: np.ndarray, step_um: float, title: str = "", cmap: str = "gray",
             limits: tuple[float, float] | None = None, label: str = "",
             origin: tuple[int, int] = (0, 0), colorbar: bool = True) -> Any:
    """Draw one map in micrometres with a scale bar and (for scalar maps) a colour bar.

    ``data`` is ``(rows, cols)`` (scalar, NaN shown grey) or ``(rows, cols, 3)`` (RGB);
    ``origin`` is the ``(row, col)`` of its top-left point in the full map.
    """
    plt = pyplot()
    extent = map_extent(data.shape, step_um, origin)
    if data.ndim == 3:
        im = ax.imshow(data, extent=extent, interpolation="nearest")
    else:
        vmin, vmax = limits if limits is not None else robust_limits(data)
        im = ax.imshow(np.ma.masked_invalid(data), extent=extent, cmap=colormap(cmap),
                       vmin=vmin, vmax=vmax, interpolation="nearest")
        if colorbar:
            cb = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.set_label(label, fontsize=7)
            cb.ax.tick_params(labelsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    add_scale_bar(ax, data.shape[1] * step_um)
    return im


def panel_size(shape: tuple[int, int], width: float = 3.0) -> tuple[float, float]:
    """Width and height (inches) of one map panel of ``shape`` (rows, cols)."""
    rows, cols = shape
    return width, max(1.2, width * rows / cols * 0.85)


def ipf_key_image(direction: str = "x", size: int = 160) -> np.ndarray:
    """The m-3m IPF colour key as an RGBA image of the standard triangle.

    Stereographic projection (from -z) of the sector [001]-[101]-[111], coloured by
    orix's ``IPFColorKeyTSL``; transparent outside the sector. (orix's own key plot
    costs ~20 s of compilation in every fresh process.)
    """
    from orix.plot import IPFColorKeyTSL
    from orix.quaternion import symmetry
    from orix.vector import Vector3d

    vec = {"x": Vector3d.xvector(), "y": Vector3d.yvector(), "z": Vector3d.zvector()}[direction]
    key = IPFColorKeyTSL(symmetry.Oh, direction=vec).direction_color_key
    x_max = np.sqrt(0.5) / (1 + np.sqrt(0.5))  # [101]
    y_max = np.sqrt(1 / 3) / (1 + np.sqrt(1 / 3))  # [111]
    h = int(round(size * y_max / x_max))
    X, Y = np.meshgrid(np.linspace(0, x_max, size), np.linspace(y_max, 0, h))
    r2 = X ** 2 + Y ** 2
    xyz = np.stack([2 * X / (1 + r2), 2 * Y / (1 + r2), (1 - r2) / (1 + r2)], -1).reshape(-1, 3)
    v = Vector3d(xyz)
    inside = np.asarray(v <= symmetry.Oh.fundamental_sector).reshape(-1)
    rgba = np.zeros((len(xyz), 4))
    rgba[inside, :3] = key.direction2color(v[inside])
    rgba[inside, 3] = 1.0
    return rgba.reshape(h, size, 4)


def add_ipf_key(fig: Any, ax: Any, direction: str) -> None:
    """Put the IPF colour key (standard triangle, labelled) beside ``ax``."""
    box = ax.get_position()
    width = min(0.12, box.width * 0.45)
    inset = fig.add_axes([box.x1 + 0.01, box.y0 + 0.05 * box.height, width, box.height * 0.5])
    image = ipf_key_image(direction)
    h, w = image.shape[:2]
    inset.imshow(image, extent=(0, w, 0, h))
    for text, (x, y, ha) in {"001": (0, -0.12 * h, "center"), "101": (w, -0.12 * h, "center"),
                             "111": (0.87 * w, 1.02 * h, "center")}.items():
        inset.text(x, y, text, fontsize=6, ha=ha, va="bottom" if y > 0 else "top")
    inset.set_axis_off()
    inset.set_title(f"IPF-{direction.upper()}", fontsize=7, pad=8)
