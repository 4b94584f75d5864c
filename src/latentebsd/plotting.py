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
from latentebsd.phases import NICKEL, PhaseSpec, orix_phase


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


def ipf_key(direction: str = "x", size: int = 160, phase: PhaseSpec | None = None,
            ) -> tuple[np.ndarray, list[tuple[str, float, float]]]:
    """The IPF colour key of ``phase``'s Laue group (default FCC Ni, m-3m) as an RGBA
    image of its fundamental sector, and the sector's corners as ``(label, x, y)``
    (fractions of the image width and height from the bottom left; Miller indices of
    the direction, four-index for hexagonal phases).

    Stereographic projection (from -z) of the sector, coloured by orix's
    ``IPFColorKeyTSL``; transparent outside it. (orix's own key plot costs ~20 s of
    compilation in every fresh process.)
    """
    from orix.plot import IPFColorKeyTSL
    from orix.vector import Miller, Vector3d

    spec = NICKEL if phase is None else phase
    sym = spec.laue_group()
    vec = {"x": Vector3d.xvector(), "y": Vector3d.yvector(), "z": Vector3d.zvector()}[direction]
    key = IPFColorKeyTSL(sym, direction=vec).direction_color_key
    sector = sym.fundamental_sector

    def project(xyz: np.ndarray) -> np.ndarray:
        xyz = np.asarray(xyz, dtype=np.float64).reshape(-1, 3)
        return xyz[:, :2] / (1 + xyz[:, 2:3])

    outline = np.concatenate([project(sector.edges.data), project(sector.vertices.data)]) \
        if sector.edges.size else np.array([[-1.0, -1.0], [1.0, 1.0]])
    (x0, y0), (x1, y1) = outline.min(axis=0), outline.max(axis=0)
    h = max(8, int(round(size * (y1 - y0) / max(x1 - x0, 1e-9))))
    X, Y = np.meshgrid(np.linspace(x0, x1, size), np.linspace(y1, y0, h))
    r2 = X ** 2 + Y ** 2
    xyz = np.stack([2 * X / (1 + r2), 2 * Y / (1 + r2), (1 - r2) / (1 + r2)], -1).reshape(-1, 3)
    v = Vector3d(xyz)
    inside = np.asarray(v <= sector).reshape(-1) & (r2.reshape(-1) <= 1 + 1e-9)
    rgba = np.zeros((len(xyz), 4))
    rgba[inside, :3] = key.direction2color(v[inside])
    rgba[inside, 3] = 1.0
    labels = []
    if sector.vertices.size:
        phase_obj = orix_phase(spec)
        miller = Miller(xyz=sector.vertices.data, phase=phase_obj)
        miller.coordinate_format = "UVTW" if phase_obj.is_hexagonal else "uvw"
        uvw = miller.round(6).coordinates
        for xy, idx in zip(project(sector.vertices.data), np.atleast_2d(uvw)):
            text = "".join(f"{int(round(c))}" if c >= 0 else f"-{int(round(-c))}" for c in idx)
            labels.append((text, (xy[0] - x0) / max(x1 - x0, 1e-9),
                           (xy[1] - y0) / max(y1 - y0, 1e-9)))
    return rgba.reshape(h, size, 4), labels


def ipf_key_image(direction: str = "x", size: int = 160, phase: PhaseSpec | None = None) -> np.ndarray:
    """The IPF colour key image of :func:`ipf_key` (default FCC Ni: the m-3m standard
    triangle [001]-[101]-[111])."""
    return ipf_key(direction, size, phase)[0]


def add_ipf_key(fig: Any, ax: Any, direction: str,
                phases: Sequence[PhaseSpec] | None = None) -> None:
    """Put the IPF colour key (fundamental sector, corners labelled) beside ``ax``: one
    per Laue group of ``phases`` (default FCC Ni), titled with the phases it colours."""
    specs = list(phases or [NICKEL])
    groups: dict[str, list[PhaseSpec]] = {}
    for spec in specs:
        groups.setdefault(spec.laue_group().name, []).append(spec)
    box = ax.get_position()
    width = min(0.12, box.width * 0.45)
    n = len(groups)
    height = box.height * (0.5 if n == 1 else 0.8 / n)
    for k, members in enumerate(groups.values()):
        y = box.y0 + 0.05 * box.height + (n - 1 - k) * box.height * 0.9 / max(n, 1)
        inset = fig.add_axes([box.x1 + 0.01, y, width, height])
        image, labels = ipf_key(direction, phase=members[0])
        h, w = image.shape[:2]
        inset.imshow(image, extent=(0, w, 0, h))
        for text, fx, fy in labels:
            inset.text(fx * w, fy * h + (0.02 * h if fy > 0.5 else -0.12 * h), text, fontsize=6,
                       ha="center", va="bottom" if fy > 0.5 else "top")
        inset.set_axis_off()
        names = "" if len(specs) == 1 else " " + ", ".join(m.name for m in members)
        inset.set_title(f"IPF-{direction.upper()}{names}", fontsize=7, pad=8)


# --------------------------------------------------------------------------------------
# One style per method, the same in every figure
# --------------------------------------------------------------------------------------
#: 20 distinguishable colours: matplotlib's tab20 with the dark shades first, so the
#: first ten methods get the ten strong colours and the next ten their light shades.
_PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
)
#: Markers cycled with a period (7) prime to the palette's (20): colour and marker
#: together tell 140 methods apart, and two neighbours in the list never share either.
_MARKERS = ("o", "s", "^", "D", "v", "P", "*")
#: Line style and width per method family (benchmark ``family`` column).
FAMILY_LINES = {"conventional": ("-", 2.2), "latent": ("-", 1.1), "baseline": ("--", 1.1),
                "analogue": (":", 1.4), "combined": ("-.", 1.6)}
#: Prefixes by which :mod:`latentebsd.benchmark` names methods derived from a variant.
COMBINED_PREFIX = "conventional+"
ANALOGUE_PREFIX = "latentKAM/GROD "


def method_family(method: str) -> str:
    """The family of a benchmark method from its name alone (``latent`` for a plain
    variant name; baselines need the ``family`` column)."""
    if method == "conventional":
        return "conventional"
    if method.startswith(COMBINED_PREFIX):
        return "combined"
    if method.startswith(ANALOGUE_PREFIX):
        return "analogue"
    return "latent"


def method_style(method: str, variants: Sequence[str] = (), family: str | None = None
                 ) -> dict[str, Any]:
    """The colour, marker, line style and width of ``method`` in every figure.

    A variant (latent model or baseline) is coloured by its position in ``variants`` -
    the study's variants in their configured order, which every figure of a run passes
    alike - so one model keeps one colour and marker across the detection, detection
    limit and training figures, and up to 20 variants never share a colour. Methods
    derived from a variant (``conventional+<v>``, ``latentKAM/GROD <v>``) keep the
    variant's colour and differ by line style and marker; the conventional descriptors
    are always black.

    Parameters
    ----------
    method
        Method (or variant) name as in the benchmark tables.
    variants
        The study's variant names, in order. A name not in it gets a colour from a hash
        of its name (stable from run to run, but it may coincide with another's).
    family
        ``conventional``, ``latent``, ``baseline``, ``analogue`` or ``combined``;
        ``None``: from the name (:func:`method_family`).

    Returns
    -------
    dict
        ``color``, ``marker``, ``linestyle``, ``linewidth`` (keyword arguments of
        ``Axes.plot``).
    """
    import zlib

    family = family or method_family(method)
    linestyle, linewidth = FAMILY_LINES.get(family, ("-", 1.1))
    if family == "conventional":
        return {"color": "black", "marker": "o", "linestyle": linestyle, "linewidth": linewidth}
    base = method
    for prefix in (COMBINED_PREFIX, ANALOGUE_PREFIX):
        if method.startswith(prefix):
            base = method[len(prefix):]
    names = list(variants)
    index = names.index(base) if base in names else zlib.crc32(base.encode()) % 140
    marker = _MARKERS[index % len(_MARKERS)]
    if family == "combined":
        marker = "X"
    elif family == "analogue":
        marker = "x"
    return {"color": _PALETTE[index % len(_PALETTE)], "marker": marker, "linestyle": linestyle,
            "linewidth": linewidth}


def study_variants(methods: Sequence[str], families: Sequence[str] | None = None) -> list[str]:
    """The variant names behind a list of benchmark methods, in first-seen order (what
    :func:`method_style` takes as ``variants`` when the config is not at hand)."""
    out: list[str] = []
    fams = list(families) if families is not None else [method_family(m) for m in methods]
    for method, family in zip(methods, fams):
        if family in ("latent", "baseline") or method_family(method) in ("combined", "analogue"):
            base = method
            for prefix in (COMBINED_PREFIX, ANALOGUE_PREFIX):
                if method.startswith(prefix):
                    base = method[len(prefix):]
            if base != "conventional" and base not in out:
                out.append(base)
    return out


def log_axis_ticks(ax: Any, values: Sequence[float], axis: str = "x") -> None:
    """Label a log axis at ``values`` only (3 significant digits, slanted), without
    matplotlib's minor-tick labels: on a span of less than a decade those are drawn at
    every 2, 3, ... x 10^k and run into each other."""
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    v = sorted({float(x) for x in values if np.isfinite(x) and x > 0})
    target = ax.xaxis if axis == "x" else ax.yaxis
    target.set_major_locator(FixedLocator(v))
    target.set_minor_locator(NullLocator())
    target.set_minor_formatter(NullFormatter())
    labels = [f"{x:.3g}" for x in v]
    if axis == "x":
        ax.set_xticks(v, labels, rotation=35, ha="right", fontsize=6)
    else:
        ax.set_yticks(v, labels, fontsize=6)
