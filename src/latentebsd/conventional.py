"""Stage ``conventional_maps``: the EBSD maps the paper sets its latent maps against.

Computed from the Hough indexing of the preprocessed patterns
(:func:`latentebsd.index.index_scan`), written to :mod:`latentebsd.io.conventional`,
drawn as Fig 2 (IPF map) and a panel of IQ, GROD, KAM and sharpness:

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
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from latentebsd import config
from latentebsd.geometry import ScanGeometry
from latentebsd.grid import neighbour_pairs
from latentebsd.io.conventional import write_conventional
from latentebsd.io.index import is_indexed, read_index
from latentebsd.orientations import align_to, ipf_colors, pair_angles, quaternions
from latentebsd.plotting import (add_ipf_key, panel_size, pyplot, robust_limits, save_figure,
                                 show_map)

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Orientation maps
# --------------------------------------------------------------------------------------
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
    q = quaternions(orientations_map)
    if q.ndim != 3 or q.shape[-1] != 4:
        raise ValueError(f"expected an (n_rows, n_cols) orientation map, got {q.shape[:-1]}")
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if ok.shape != shape:
        raise ValueError(f"mask {ok.shape} does not match the map {shape}")
    total = np.zeros(shape)
    count = np.zeros(shape, np.int32)
    for a, b in neighbour_pairs(neighbours):
        angle = pair_angles(q[a].reshape(-1, 4), q[b].reshape(-1, 4)).reshape(q[a].shape[:2])
        use = (angle <= threshold_deg) & ok[a] & ok[b]
        for s in (a, b):  # the pair counts for both points
            total[s] += np.where(use, angle, 0.0)
            count[s] += use
    kam = np.full(shape, np.nan)
    has = (count > 0) & ok
    kam[has] = total[has] / count[has]
    return kam


def orientation_boundary(orientations_map: Any, mask: np.ndarray | None = None) -> np.ndarray:
    """Largest m-3m misorientation (deg) of each point to its 4 edge neighbours: an
    orientation-boundary map that shows grain and twin boundaries (and sub-grain
    boundaries, by their angle). NaN where the point is masked or has no indexed
    neighbour."""
    q = quaternions(orientations_map)
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    out = np.full(shape, -np.inf)
    for a, b in neighbour_pairs(4):
        angle = pair_angles(q[a].reshape(-1, 4), q[b].reshape(-1, 4)).reshape(q[a].shape[:2])
        angle = np.where(ok[a] & ok[b], angle, -np.inf)
        for s in (a, b):
            out[s] = np.maximum(out[s], angle)
    return np.where(ok & np.isfinite(out), out, np.nan)


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
    q = quaternions(orientations_map)
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    n = shape[0] * shape[1]
    index = np.arange(n).reshape(shape)
    src, dst = [], []
    for a, b in neighbour_pairs(4):
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


def grain_mean_orientations(orientations_map: Any, labels: np.ndarray,
                            iterations: int = 2) -> np.ndarray:
    """Symmetry-aware mean quaternion of every grain, ``(G, 4)``.

    Each point is replaced by its m-3m equivalent closest to the grain's reference (its
    first point, then the previous mean) before the quaternions are averaged.
    """
    q = quaternions(orientations_map).reshape(-1, 4)
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
        aligned = align_to(qi, mean[li])
        total = np.zeros((n_grains, 4))
        np.add.at(total, li, aligned)
        mean = total / np.linalg.norm(total, axis=1, keepdims=True)
    return mean


def grain_reference_orientation_deviation(orientations_map: Any, labels: np.ndarray) -> np.ndarray:
    """GROD: misorientation (deg) of each point to its grain's mean orientation.

    Returns an ``(n_rows, n_cols)`` map, NaN outside grains (label -1).
    """
    q = quaternions(orientations_map)
    shape = q.shape[:-1]
    lab = np.asarray(labels).ravel()
    mean = grain_mean_orientations(q, labels)
    grod = np.full(lab.shape, np.nan)
    inside = lab >= 0
    if inside.any():
        grod[inside] = pair_angles(q.reshape(-1, 4)[inside], mean[lab[inside]])
    return grod.reshape(shape)


# --------------------------------------------------------------------------------------
# All maps of one scan
# --------------------------------------------------------------------------------------
def conventional_maps(arrays: Mapping[str, np.ndarray], geometry: ScanGeometry,
                      settings: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
    """IPF colours, IQ (pq and Krieger Lassen), CI, fit, KAM, grains, GROD, sharpness and
    the orientation-boundary map of one indexed scan (keys
    :data:`latentebsd.io.conventional.MAP_KEYS`).

    Parameters
    ----------
    arrays
        Index arrays of the preprocessed scan (:func:`latentebsd.io.index.read_index`).
    geometry
        Its geometry (map shape).
    settings
        The validated ``evaluation`` section (``kam``, ``grains``, ``ipf_direction``,
        ``min_nmatch``; ``None``: the schema's defaults).

    Returns
    -------
    dict
        ``(n_rows, n_cols)`` maps (``ipf_rgb``: ``(n_rows, n_cols, 3)``), keys
        :data:`latentebsd.io.conventional.MAP_KEYS`.
    """
    cfg = config.section("evaluation") if settings is None else settings
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
        "ci": masked("cm"),
        "fit": masked("fit"),
        "boundary_deg": orientation_boundary(omap, ok),
        "indexed": ok,
        "valid": np.asarray(arrays["valid"], bool).reshape(shape),
    }


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
def plot_ipf(maps: Mapping[str, np.ndarray], geometry: ScanGeometry, path: str | os.PathLike,
             title: str, direction: str = "x", dpi: int = 150) -> None:
    """Fig 2: the IPF map of one scan, with its colour key and a scale bar."""
    plt = pyplot()
    w, h = panel_size(geometry.map_shape, 5.0)
    fig, ax = plt.subplots(figsize=(w * 1.3, h + 0.5))
    fig.subplots_adjust(left=0.02, right=0.75, top=0.9, bottom=0.03)
    show_map(ax, maps["ipf_rgb"], geometry.step_um, title)
    add_ipf_key(fig, ax, direction)
    save_figure(fig, path, dpi, tight=True)


def plot_conventional(maps: Mapping[str, np.ndarray], geometry: ScanGeometry,
                      path: str | os.PathLike, title: str, settings: Mapping[str, Any],
                      dpi: int = 150) -> None:
    """All conventional maps of one scan side by side: IPF, IQ, GROD, KAM, sharpness."""
    plt = pyplot()
    panels = conventional_panels(maps, settings)
    w, h = panel_size(geometry.map_shape)
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=((w + 0.6) * (len(panels) + 1), h + 0.6))
    show_map(axes[0], maps["ipf_rgb"], geometry.step_um, f"IPF-{settings['ipf_direction'].upper()}")
    for ax, (data, name, cmap, limits, label) in zip(axes[1:], panels):
        show_map(ax, data, geometry.step_um, name, cmap, limits, label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    add_ipf_key(fig, axes[0], settings["ipf_direction"])
    save_figure(fig, path, dpi, tight=True)


def conventional_panels(maps: Mapping[str, np.ndarray], settings: Mapping[str, Any],
                         region: tuple[slice, slice] = (slice(None), slice(None))) -> list[tuple]:
    """``(map, title, colour map, limits, colour-bar label)`` of the IQ, GROD, KAM and
    sharpness panels, cut to ``region``."""
    kam_max = float(settings["kam"]["threshold_deg"])
    grod = maps["grod_deg"][region]
    return [
        (maps["iq_pq"][region], "IQ (PyEBSDIndex pq)", "gray", None, "pq"),
        (grod, "GROD", "viridis", (0.0, max(robust_limits(grod, 0, 99)[1], 1e-3)), "deg"),
        (maps["kam_deg"][region], f"KAM ({settings['kam']['neighbours']} nb, "
         f"<= {kam_max:g} deg)", "viridis", (0.0, robust_limits(maps["kam_deg"][region], 0, 99)[1]
                                             or kam_max), "deg"),
        (maps["sharpness"][region], "Sharpness", "magma", None, "fraction"),
    ]


def run_conventional_rule(index_path: str, out_h5: str, out_ipf: str, out_panel: str,
                          settings: Mapping[str, Any] | None, scan: str) -> dict[str, np.ndarray]:
    """What rule ``conventional_maps`` runs for one scan (``settings``: the validated
    ``evaluation`` section)."""
    cfg = config.section("evaluation") if settings is None else settings
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
