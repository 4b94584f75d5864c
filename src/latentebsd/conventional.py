"""Conventional EBSD maps (IPF, IQ, KAM, GROD, sharpness) and the comparison figures.

What the paper sets its latent maps against (Figs 2, 5-7, 11), computed from the Hough
indexing of the preprocessed patterns (:func:`latentebsd.evaluate.index_scan`):

- IPF map: orix ``IPFColorKeyTSL`` (m-3m) along a sample direction (x by default);
  points not indexed are black.
- IQ: PyEBSDIndex ``pq`` (mean Radon peak height, the analogue of EDAX IQ); the
  kikuchipy Krieger Lassen IQ is stored too.
- KAM (:func:`kernel_average_misorientation`): mean m-3m misorientation to the 4 edge
  (or 8) neighbours, leaving out neighbours above a threshold (boundaries) and points
  not indexed.
- Grains (:func:`segment_grains`): connected components of the indexed points, two
  edge neighbours joined when their misorientation is below a tolerance (as MTEX's
  ``calcGrains`` does); GROD (:func:`grain_reference_orientation_deviation`): the
  misorientation of each point to its grain's mean orientation (symmetry-aware mean).
- Sharpness: the FFT sharpness of the preprocessed pattern (PAPER.md definition).

Figures carry colour bars (IPF maps: the colour key) and a micrometre scale bar.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import latentebsd  # noqa: F401  (import order: PyEBSDIndex before kikuchipy/orix)
from latentebsd.geometry import ScanGeometry
from latentebsd.io import atomic_path

log = logging.getLogger(__name__)

#: Pairs per orix call: bounds memory on million-point maps.
_PAIR_CHUNK = 65_536


# --------------------------------------------------------------------------------------
# Orientations
# --------------------------------------------------------------------------------------
def orientation_map(quaternions: np.ndarray, map_shape: Sequence[int]):
    """An m-3m orix ``Orientation`` of shape ``map_shape`` from ``(n, 4)`` quaternions."""
    from orix.quaternion import Orientation, symmetry

    q = np.asarray(quaternions, dtype=np.float64).reshape(*map_shape, 4)
    return Orientation(q, symmetry=symmetry.Oh)


def _quats(orientations: Any) -> np.ndarray:
    return np.asarray(orientations.data if hasattr(orientations, "data") else orientations,
                      dtype=np.float64)


def pair_angles(q1: np.ndarray, q2: np.ndarray, chunk_size: int | None = None) -> np.ndarray:
    """m-3m misorientation angles (deg) between ``(n, 4)`` quaternion pairs, in chunks
    of ``chunk_size`` pairs (default ``_PAIR_CHUNK``) to bound orix's scratch memory."""
    from orix.quaternion import Orientation, symmetry

    q1 = np.asarray(q1, dtype=np.float64).reshape(-1, 4)
    q2 = np.asarray(q2, dtype=np.float64).reshape(-1, 4)
    chunk = int(chunk_size or _PAIR_CHUNK)
    out = np.empty(len(q1))
    for a in range(0, len(q1), chunk):
        b = min(a + chunk, len(q1))
        o1 = Orientation(q1[a:b], symmetry=symmetry.Oh)
        o2 = Orientation(q2[a:b], symmetry=symmetry.Oh)
        out[a:b] = o1.angle_with(o2, degrees=True)
    return out


def _neighbour_offsets(neighbours: int) -> list[tuple[int, int]]:
    if neighbours == 4:
        return [(0, 1), (1, 0)]
    if neighbours == 8:
        return [(0, 1), (1, 0), (1, 1), (1, -1)]
    raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")


def _pair_slices(shape: tuple[int, int], dr: int, dc: int) -> tuple[tuple[slice, slice], tuple[slice, slice]]:
    """Slices (a, b) such that ``x[b]`` is the (dr, dc) neighbour of ``x[a]``."""
    r, c = shape
    ra, rb = slice(0, r - dr), slice(dr, r)
    if dc >= 0:
        ca, cb = slice(0, c - dc), slice(dc, c)
    else:
        ca, cb = slice(-dc, c), slice(0, c + dc)
    return (ra, ca), (rb, cb)


def kernel_average_misorientation(orientations_map: Any, threshold_deg: float = 5.0,
                                  neighbours: int = 4, mask: np.ndarray | None = None) -> np.ndarray:
    """Kernel average misorientation: mean misorientation to the nearest neighbours.

    Parameters
    ----------
    orientations_map
        orix ``Orientation`` (or quaternions) of shape ``(n_rows, n_cols)`` (``(..., 4)``).
    threshold_deg
        Neighbours misoriented by more than this (grain boundaries) are left out.
    neighbours
        4 (edge neighbours, all one step away) or 8 (edges and corners).
    mask
        ``(n_rows, n_cols)`` bool, True where the orientation is valid (indexed).

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_cols)`` KAM in degrees; NaN where the point is masked or has no
        neighbour within the threshold.
    """
    q = _quats(orientations_map)
    if q.ndim != 3 or q.shape[-1] != 4:
        raise ValueError(f"expected an (n_rows, n_cols) orientation map, got {q.shape[:-1]}")
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if ok.shape != shape:
        raise ValueError(f"mask {ok.shape} does not match the map {shape}")
    total = np.zeros(shape)
    count = np.zeros(shape, np.int32)
    for dr, dc in _neighbour_offsets(neighbours):
        a, b = _pair_slices(shape, dr, dc)
        angle = pair_angles(q[a].reshape(-1, 4), q[b].reshape(-1, 4)).reshape(q[a].shape[:2])
        use = (angle <= threshold_deg) & ok[a] & ok[b]
        for s in (a, b):  # the pair counts for both points
            total[s] += np.where(use, angle, 0.0)
            count[s] += use
    kam = np.full(shape, np.nan)
    has = (count > 0) & ok
    kam[has] = total[has] / count[has]
    return kam


def segment_grains(orientations_map: Any, tolerance_deg: float = 5.0,
                   mask: np.ndarray | None = None, min_size: int = 1) -> np.ndarray:
    """Grain labels: edge-connected regions without a boundary above ``tolerance_deg``.

    Parameters
    ----------
    orientations_map
        ``(n_rows, n_cols)`` orientations (orix ``Orientation`` or quaternions).
    tolerance_deg
        Two edge neighbours belong to the same grain when their m-3m misorientation
        is below this.
    mask
        Points to segment (indexed); the others get label -1.
    min_size
        Grains with fewer points are dropped (label -1).

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_cols)`` int32 labels 0..G-1 in order of first appearance
        (row-major), -1 outside grains.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    q = _quats(orientations_map)
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    n = shape[0] * shape[1]
    index = np.arange(n).reshape(shape)
    src, dst = [], []
    for dr, dc in _neighbour_offsets(4):
        a, b = _pair_slices(shape, dr, dc)
        angle = pair_angles(q[a].reshape(-1, 4), q[b].reshape(-1, 4)).reshape(q[a].shape[:2])
        join = (angle < tolerance_deg) & ok[a] & ok[b]
        src.append(index[a][join])
        dst.append(index[b][join])
    src_all, dst_all = np.concatenate(src), np.concatenate(dst)
    graph = coo_matrix((np.ones(len(src_all), np.int8), (src_all, dst_all)), shape=(n, n))
    _, comp = connected_components(graph, directed=False)
    comp = np.where(ok.ravel(), comp, -1)
    if not (comp >= 0).any():
        return np.full(shape, -1, np.int32)
    sizes = np.bincount(comp[comp >= 0], minlength=comp.max() + 1 if comp.size else 0)
    comp = np.where((comp >= 0) & (sizes[np.maximum(comp, 0)] >= min_size), comp, -1)
    # Relabel 0..G-1 by first appearance so labels do not depend on scipy's numbering
    labels = np.full(n, -1, np.int32)
    inside = comp >= 0
    _, first, inverse = np.unique(comp[inside], return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first))
    labels[inside] = order[inverse]
    return labels.reshape(shape)


def _align_to(q: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """The m-3m equivalent of each quaternion closest to its reference, same hemisphere."""
    from orix.quaternion import Rotation, symmetry

    ops = Rotation(symmetry.O.data)  # proper rotations of m-3m act from the left (crystal side)
    out = np.empty_like(q)
    for a in range(0, len(q), _PAIR_CHUNK):
        b = min(a + _PAIR_CHUNK, len(q))
        eq = ops.outer(Rotation(q[a:b])).data  # (24, m, 4)
        dots = np.einsum("kmi,mi->km", eq, reference[a:b])
        best = np.abs(dots).argmax(axis=0)
        pick = eq[best, np.arange(b - a)]
        sign = np.sign(dots[best, np.arange(b - a)])
        out[a:b] = pick * np.where(sign == 0, 1.0, sign)[:, None]
    return out


def grain_mean_orientations(orientations_map: Any, labels: np.ndarray,
                            iterations: int = 2) -> np.ndarray:
    """Symmetry-aware mean quaternion of every grain, ``(G, 4)``.

    Each point is replaced by its m-3m equivalent closest to the grain's reference (its
    first point, then the previous mean) before the quaternions are averaged.
    """
    q = _quats(orientations_map).reshape(-1, 4)
    lab = np.asarray(labels).ravel()
    if lab.shape[0] != q.shape[0]:
        raise ValueError(f"labels {np.shape(labels)} do not match the map")
    inside = lab >= 0
    n_grains = int(lab.max()) + 1 if inside.any() else 0
    if n_grains == 0:
        return np.zeros((0, 4))
    qi, li = q[inside], lab[inside]
    _, first = np.unique(li, return_index=True)
    mean = qi[first].copy()
    for _ in range(max(1, iterations)):
        aligned = _align_to(qi, mean[li])
        total = np.zeros((n_grains, 4))
        np.add.at(total, li, aligned)
        mean = total / np.linalg.norm(total, axis=1, keepdims=True)
    return mean


def grain_reference_orientation_deviation(orientations_map: Any, labels: np.ndarray) -> np.ndarray:
    """GROD: misorientation (deg) of each point to its grain's mean orientation.

    Returns an ``(n_rows, n_cols)`` map, NaN outside grains (label -1).
    """
    q = _quats(orientations_map)
    shape = q.shape[:-1]
    lab = np.asarray(labels).ravel()
    mean = grain_mean_orientations(q, labels)
    grod = np.full(lab.shape, np.nan)
    inside = lab >= 0
    if inside.any():
        grod[inside] = pair_angles(q.reshape(-1, 4)[inside], mean[lab[inside]])
    return grod.reshape(shape)


def ipf_colors(quaternions: np.ndarray, indexed: np.ndarray | None = None,
               direction: str = "x") -> np.ndarray:
    """IPF colours (m-3m, orix ``IPFColorKeyTSL``) along sample ``direction``, ``(n, 3)``
    in [0, 1]; black where not ``indexed``."""
    from orix.plot import IPFColorKeyTSL
    from orix.quaternion import Orientation, symmetry
    from orix.vector import Vector3d

    q = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    vec = {"x": Vector3d.xvector(), "y": Vector3d.yvector(), "z": Vector3d.zvector()}
    if direction not in vec:
        raise ValueError(f"direction must be x, y or z, got {direction!r}")
    key = IPFColorKeyTSL(symmetry.Oh, direction=vec[direction])
    rgb = np.zeros((len(q), 3))
    ok = np.ones(len(q), bool) if indexed is None else np.asarray(indexed, bool).ravel()
    for a in range(0, len(q), _PAIR_CHUNK):
        b = min(a + _PAIR_CHUNK, len(q))
        sel = np.flatnonzero(ok[a:b]) + a
        if sel.size:
            rgb[sel] = key.orientation2color(Orientation(q[sel], symmetry=symmetry.Oh))
    return rgb


# --------------------------------------------------------------------------------------
# All maps of one scan
# --------------------------------------------------------------------------------------
MAP_KEYS = ("ipf_rgb", "iq_pq", "iq_kp", "kam_deg", "grain_id", "grod_deg", "sharpness",
            "indexed", "valid")


def conventional_maps(arrays: Mapping[str, np.ndarray], geometry: ScanGeometry,
                      settings: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """IPF colours, IQ, KAM, grains, GROD and sharpness maps of one indexed scan.

    Parameters
    ----------
    arrays
        Index arrays of the preprocessed scan (:func:`latentebsd.evaluate.read_index`).
    geometry
        Its geometry (map shape).
    settings
        ``evaluation:`` section (``kam``, ``grains``, ``ipf_direction``, ``min_nmatch``).

    Returns
    -------
    dict
        ``(n_rows, n_cols)`` maps (``ipf_rgb``: ``(n_rows, n_cols, 3)``), keys
        :data:`MAP_KEYS`.
    """
    from latentebsd.evaluate import resolve_evaluation_settings
    from latentebsd.index import is_indexed

    cfg = resolve_evaluation_settings(settings)
    shape = geometry.map_shape
    indexed = is_indexed(arrays, cfg["min_nmatch"]) & np.asarray(arrays["valid"], bool)
    q = np.array(arrays["quat"], dtype=np.float64).reshape(-1, 4)
    q[~indexed] = [1.0, 0.0, 0.0, 0.0]
    omap = q.reshape(*shape, 4)
    ok = indexed.reshape(shape)
    labels = segment_grains(omap, cfg["grains"]["tolerance_deg"], ok, cfg["grains"]["min_size"])

    def masked(key: str) -> np.ndarray:
        return np.where(np.asarray(arrays["valid"], bool), np.asarray(arrays[key], float),
                        np.nan).reshape(shape)

    return {
        "ipf_rgb": ipf_colors(q, indexed, cfg["ipf_direction"]).reshape(*shape, 3),
        "iq_pq": masked("pq"),
        "iq_kp": masked("iq_kp"),
        "kam_deg": kernel_average_misorientation(omap, cfg["kam"]["threshold_deg"],
                                                 cfg["kam"]["neighbours"], ok),
        "grain_id": labels,
        "grod_deg": grain_reference_orientation_deviation(omap, labels),
        "sharpness": masked("sharpness"),
        "indexed": ok,
        "valid": np.asarray(arrays["valid"], bool).reshape(shape),
    }


def write_conventional(path: str | os.PathLike, maps: Mapping[str, np.ndarray],
                       geometry: ScanGeometry, attrs: Mapping[str, Any]) -> None:
    """Write the maps of :func:`conventional_maps` to HDF5 (plus group ``geometry``)."""
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


# --------------------------------------------------------------------------------------
# Plot helpers
# --------------------------------------------------------------------------------------
def _nice_length(span_um: float) -> float:
    """A round scale-bar length of about a fifth of ``span_um``."""
    target = max(span_um / 5.0, 1e-9)
    exp = np.floor(np.log10(target))
    for m in (5, 2, 1):
        if m * 10 ** exp <= target:
            return float(m * 10 ** exp)
    return float(10 ** exp)


def add_scale_bar(ax: Any, span_um: float, color: str = "white") -> None:
    """A micrometre scale bar (lower left) on an axis whose data units are micrometres."""
    from mpl_toolkits.axes_grid1.anchored_artists import AnchoredSizeBar

    length = _nice_length(span_um)
    label = f"{length:g} µm"
    bar = AnchoredSizeBar(ax.transData, length, label, "lower left", pad=0.3, color=color,
                          frameon=False, size_vertical=span_um / 150, borderpad=0.3,
                          fontproperties={"size": 7})
    ax.add_artist(bar)


def _robust_limits(data: np.ndarray, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    v = np.asarray(data, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    a, b = np.percentile(v, [lo, hi])
    return (float(a), float(b)) if b > a else (float(a) - 0.5, float(a) + 0.5)


def show_map(ax: Any, data: np.ndarray, step_um: float, title: str = "", cmap: str = "gray",
             limits: tuple[float, float] | None = None, label: str = "",
             origin: tuple[int, int] = (0, 0), colorbar: bool = True) -> Any:
    """Draw one map in micrometres with a scale bar and (for scalar maps) a colour bar.

    ``data`` is ``(rows, cols)`` (scalar, NaN shown grey) or ``(rows, cols, 3)`` (RGB);
    ``origin`` is the ``(row, col)`` of its top-left point in the full map.
    """
    import matplotlib.pyplot as plt

    rows, cols = data.shape[:2]
    r0, c0 = origin
    extent = (c0 * step_um, (c0 + cols) * step_um, (r0 + rows) * step_um, r0 * step_um)
    if data.ndim == 3:
        im = ax.imshow(data, extent=extent, interpolation="nearest")
    else:
        vmin, vmax = limits if limits is not None else _robust_limits(data)
        cm = plt.get_cmap(cmap).with_extremes(bad="0.6")
        im = ax.imshow(np.ma.masked_invalid(data), extent=extent, cmap=cm, vmin=vmin,
                       vmax=vmax, interpolation="nearest")
        if colorbar:
            cb = plt.colorbar(im, ax=ax, fraction=0.046, pad=0.02)
            cb.set_label(label, fontsize=7)
            cb.ax.tick_params(labelsize=6)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=8)
    add_scale_bar(ax, cols * step_um)
    return im


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


def _save(fig: Any, path: str | os.PathLike, dpi: int) -> None:
    import matplotlib.pyplot as plt

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
    plt.close(fig)


def _panel_size(shape: tuple[int, int], width: float = 3.0) -> tuple[float, float]:
    rows, cols = shape
    return width, max(1.2, width * rows / cols * 0.85)


def plot_ipf(maps: Mapping[str, np.ndarray], geometry: ScanGeometry, path: str | os.PathLike,
             title: str, direction: str = "x", dpi: int = 150) -> None:
    """Fig 2: the IPF map of one scan, with its colour key and a scale bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    w, h = _panel_size(geometry.map_shape, 5.0)
    fig, ax = plt.subplots(figsize=(w * 1.3, h + 0.5))
    fig.subplots_adjust(left=0.02, right=0.75, top=0.9, bottom=0.03)
    show_map(ax, maps["ipf_rgb"], geometry.step_um, title)
    add_ipf_key(fig, ax, direction)
    _save(fig, path, dpi)


def plot_conventional(maps: Mapping[str, np.ndarray], geometry: ScanGeometry,
                      path: str | os.PathLike, title: str, settings: Mapping[str, Any],
                      dpi: int = 150) -> None:
    """All conventional maps of one scan side by side: IPF, IQ, GROD, KAM, sharpness."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = _conventional_panels(maps, settings)
    w, h = _panel_size(geometry.map_shape)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=((w + 0.6) * (len(panels) + 1), h + 0.6))
    show_map(axes[0], maps["ipf_rgb"], geometry.step_um, f"IPF-{settings['ipf_direction'].upper()}")
    for ax, (data, name, cmap, limits, label) in zip(axes[1:], panels):
        show_map(ax, data, geometry.step_um, name, cmap, limits, label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    add_ipf_key(fig, axes[0], settings["ipf_direction"])
    _save(fig, path, dpi)


def _conventional_panels(maps: Mapping[str, np.ndarray], settings: Mapping[str, Any],
                         region: tuple[slice, slice] = (slice(None), slice(None))) -> list[tuple]:
    kam_max = float(settings["kam"]["threshold_deg"])
    grod = maps["grod_deg"][region]
    return [
        (maps["iq_pq"][region], "IQ (PyEBSDIndex pq)", "gray", None, "pq"),
        (grod, "GROD", "viridis", (0.0, max(_robust_limits(grod, 0, 99)[1], 1e-3)), "deg"),
        (maps["kam_deg"][region], f"KAM ({settings['kam']['neighbours']} nb, "
         f"<= {kam_max:g} deg)", "viridis", (0.0, _robust_limits(maps["kam_deg"][region], 0, 99)[1]
                                             or kam_max), "deg"),
        (maps["sharpness"][region], "Sharpness", "magma", None, "fraction"),
    ]


def run_conventional_rule(index_path: str, out_h5: str, out_ipf: str, out_panel: str,
                          settings: Mapping[str, Any] | None, scan: str) -> dict[str, np.ndarray]:
    """What rule ``conventional_maps`` runs for one scan."""
    from latentebsd.evaluate import read_index, resolve_evaluation_settings

    cfg = resolve_evaluation_settings(settings)
    arrays, geometry, _ = read_index(index_path)
    maps = conventional_maps(arrays, geometry, cfg)
    n_grains = int(maps["grain_id"].max()) + 1
    write_conventional(out_h5, maps, geometry, {
        "scan": scan, "n_grains": n_grains, "kam": str(cfg["kam"]), "grains": str(cfg["grains"]),
        "ipf_direction": cfg["ipf_direction"], "iq": "PyEBSDIndex pq",
    })
    plot_ipf(maps, geometry, out_ipf, f"{scan}: IPF-{cfg['ipf_direction'].upper()} "
             f"(preprocessed patterns, {100 * maps['indexed'].mean():.1f} % indexed)",
             cfg["ipf_direction"], cfg["dpi"])
    plot_conventional(maps, geometry, out_panel, f"{scan}: conventional EBSD maps "
                      f"({n_grains} grains at {cfg['grains']['tolerance_deg']:g} deg)", cfg,
                      cfg["dpi"])
    log.info("%s: %d grains, median KAM %.3f deg, median GROD %.3f deg", scan, n_grains,
             np.nanmedian(maps["kam_deg"]) if np.isfinite(maps["kam_deg"]).any() else np.nan,
             np.nanmedian(maps["grod_deg"]) if np.isfinite(maps["grod_deg"]).any() else np.nan)
    return maps


# --------------------------------------------------------------------------------------
# Latent maps beside the conventional ones (Figs 5/6)
# --------------------------------------------------------------------------------------
def latent_variance(latent_path: str | os.PathLike, valid: np.ndarray | None = None,
                    chunk_size: int = 4096) -> np.ndarray:
    """Variance over the map of every latent feature, ``(d,)``, streamed by row blocks.

    ``valid`` (``(n_rows, n_cols)`` bool) restricts it to valid points.
    """
    from latentebsd.evaluate import iter_latent_blocks, open_latent

    ds = open_latent(latent_path)
    d, n_rows, n_cols = ds["latent_mean"].shape
    ds.close()
    ok = np.ones(n_rows * n_cols, bool) if valid is None else np.asarray(valid, bool).ravel()
    total, total_sq, count = np.zeros(d), np.zeros(d), 0
    for start, z in iter_latent_blocks(latent_path, chunk_size):
        z = z[ok[start:start + len(z)]].astype(np.float64)
        total += z.sum(axis=0)
        total_sq += (z ** 2).sum(axis=0)
        count += len(z)
    if count == 0:
        raise ValueError(f"{latent_path}: no valid points")
    mean = total / count
    return np.maximum(total_sq / count - mean ** 2, 0.0)


def choose_latent_features(latent_path: str | os.PathLike, n: int,
                           ranking_csv: str | os.PathLike | None = None,
                           valid: np.ndarray | None = None) -> tuple[list[int], str]:
    """The latent features a Fig 5/6 panel shows, and the rule that chose them.

    Rule: the first ``n`` rows of the maps stage's ranking (``ranking_csv``, column
    ``feature``, best first) when that file is given and exists; otherwise the ``n``
    features with the highest variance over the (valid) map points.
    """
    from latentebsd.evaluate import open_latent

    ds = open_latent(latent_path)
    d = int(ds["latent_mean"].shape[0])
    ds.close()
    n = min(int(n), d)
    if ranking_csv is not None and Path(ranking_csv).is_file():
        import pandas as pd

        ranking = pd.read_csv(ranking_csv)
        if "feature" not in ranking.columns:
            raise ValueError(f"{ranking_csv}: no 'feature' column")
        features = [int(f) for f in ranking["feature"].to_numpy()[:n]]
        bad = [f for f in features if not 0 <= f < d]
        if bad:
            raise ValueError(f"{ranking_csv}: features {bad} outside 0..{d - 1}")
        return features, f"top {n} of the feature ranking ({Path(ranking_csv).name})"
    variance = latent_variance(latent_path, valid)
    features = [int(f) for f in np.argsort(-variance, kind="stable")[:n]]
    return features, f"{n} highest-variance latent features"


def _region(settings: Mapping[str, Any], shape: tuple[int, int]) -> tuple[slice, slice]:
    region = settings.get("panel_region")
    if region is None:
        return slice(0, shape[0]), slice(0, shape[1])
    r0, r1, c0, c1 = region
    if r1 > shape[0] or c1 > shape[1]:
        raise ValueError(f"config key evaluation.panel_region: {region} lies outside the "
                         f"{shape[0]} x {shape[1]} map")
    return slice(r0, r1), slice(c0, c1)


def plot_latent_comparison(latent_path: str | os.PathLike, maps: Mapping[str, np.ndarray],
                           geometry: ScanGeometry, features: Sequence[int], rule: str,
                           path: str | os.PathLike, title: str, settings: Mapping[str, Any]) -> None:
    """Figs 5/6: latent feature maps beside IQ, GROD, KAM and sharpness, same region."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentebsd.evaluate import open_latent

    region = _region(settings, geometry.map_shape)
    origin = (region[0].start, region[1].start)
    ds = open_latent(latent_path)
    try:
        latents = [np.asarray(ds["latent_mean"].isel(feature=f, y=region[0], x=region[1]).values,
                              dtype=np.float64) for f in features]
    finally:
        ds.close()
    valid = maps["valid"][region]
    panels = [(np.where(valid, z, np.nan), f"latent feature {f}", "gray", None, "latent mean")
              for f, z in zip(features, latents)]
    panels += _conventional_panels(maps, settings, region)
    sub_shape = (region[0].stop - region[0].start, region[1].stop - region[1].start)
    w, h = _panel_size(sub_shape)
    fig, axes = plt.subplots(1, len(panels), figsize=((w + 0.6) * len(panels), h + 0.8))
    for ax, (data, name, cmap, limits, label) in zip(np.atleast_1d(axes), panels):
        show_map(ax, data, geometry.step_um, name, cmap, limits, label, origin)
    fig.suptitle(f"{title}\nlatent features: {rule}", fontsize=9)
    fig.tight_layout()
    _save(fig, path, int(settings["dpi"]))


def run_latent_panel_rule(latent_path: str, conventional_path: str, out_png: str,
                          settings: Mapping[str, Any] | None, scan: str, variant: str,
                          ranking_csv: str | None = None) -> list[int]:
    """What rule ``latent_panels`` runs: one scan's Fig 5/6-style panel."""
    from latentebsd.evaluate import resolve_evaluation_settings

    cfg = resolve_evaluation_settings(settings)
    maps, geometry = read_conventional(conventional_path)
    features, rule = choose_latent_features(latent_path, cfg["panel_features"], ranking_csv,
                                            maps["valid"])
    log.info("%s / %s: showing latent features %s (%s)", scan, variant, features, rule)
    plot_latent_comparison(latent_path, maps, geometry, features, rule, out_png,
                           f"{scan}: {variant} latent maps vs conventional EBSD", cfg)
    return features


# --------------------------------------------------------------------------------------
# Fig 11: orientation and IQ maps from decoded patterns
# --------------------------------------------------------------------------------------
def plot_decoded_maps(index_paths: Mapping[str, str], labels: Mapping[str, str],
                      path: str | os.PathLike, title: str, settings: Mapping[str, Any]) -> None:
    """Fig 11: IPF (top) and IQ (bottom) maps of every source, the original first.

    The IQ maps share the original's colour scale (1-99 % of its ``pq``), so a
    variant that loses band contrast looks darker.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from latentebsd.evaluate import read_index
    from latentebsd.index import is_indexed

    names = list(index_paths)
    data = {}
    geometry = None
    for name in names:
        arrays, geometry, _ = read_index(index_paths[name])
        ok = is_indexed(arrays, settings["min_nmatch"]) & arrays["valid"].astype(bool)
        data[name] = (ipf_colors(arrays["quat"], ok, settings["ipf_direction"]),
                      np.where(arrays["valid"], arrays["pq"], np.nan), ok)
    assert geometry is not None
    shape = geometry.map_shape
    limits = _robust_limits(data[names[0]][1])
    w, h = _panel_size(shape, 2.6)
    fig, axes = plt.subplots(2, len(names), figsize=((w + 0.5) * len(names), 2 * h + 1.0),
                             squeeze=False)
    for j, name in enumerate(names):
        rgb, iq, ok = data[name]
        show_map(axes[0, j], rgb.reshape(*shape, 3), geometry.step_um,
                 f"{labels.get(name, name)}\n{100 * ok.mean():.1f} % indexed")
        show_map(axes[1, j], iq.reshape(shape), geometry.step_um, "IQ (pq)", "gray", limits,
                 "pq", colorbar=j == len(names) - 1)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    add_ipf_key(fig, axes[0, -1], settings["ipf_direction"])
    _save(fig, path, int(settings["dpi"]))


def run_fig11_rule(index_paths: Mapping[str, str], variants: Mapping[str, Mapping[str, Any]],
                   out_png: str, settings: Mapping[str, Any] | None, scan: str) -> None:
    """What rule ``decoded_maps`` runs: Fig 11 for one scan (``index_paths``: source name ->
    index file, ``original`` first)."""
    from latentebsd.evaluate import loss_label, resolve_evaluation_settings

    cfg = resolve_evaluation_settings(settings)
    labels = {"original": "Preprocessed"}
    for name, var in variants.items():
        labels[name] = f"{loss_label(var)} d={int(var['latent_dim'])}"
    plot_decoded_maps(index_paths, labels, out_png,
                      f"{scan}: orientation (IPF-{cfg['ipf_direction'].upper()}) and IQ maps "
                      "from decoded patterns", cfg)
