"""Stage ``conventional_maps``: the EBSD maps the paper sets its latent maps against.

Computed from the Hough indexing of the preprocessed patterns
(:func:`latentebsd.index.index_scan`), written to :mod:`latentebsd.io.conventional`,
drawn as Fig 2 (IPF map) and a panel of IQ, GROD, KAM and sharpness (and, for a scan
of several phases, the phase map). Every orientation map follows the scan's phases
(the ``phases`` its index file records, :mod:`latentebsd.phases`): each point's
misorientations use its own phase's Laue group, and two points of different phases
are never compared.

- Phase map: the phase of each indexed point (-1: not indexed).
- IPF map: orix ``IPFColorKeyTSL`` of each phase's Laue group along a sample direction
  (x by default), one colour key per Laue group; points not indexed are black.
- IQ: PyEBSDIndex ``pq`` (mean Radon peak height, the analogue of EDAX IQ); the
  kikuchipy Krieger Lassen IQ is stored too.
- KAM (:func:`kernel_average_misorientation`): mean misorientation to the 4 edge
  (or 8) neighbours of the same phase, leaving out neighbours above a threshold
  (boundaries) and points not indexed.
- Grains (:func:`segment_grains`): connected components of the indexed points, two
  edge neighbours joined when they are of one phase and their misorientation is below
  a tolerance (as MTEX's ``calcGrains`` does); GROD
  (:func:`grain_reference_orientation_deviation`): the misorientation of each point to
  its grain's mean orientation (symmetry-aware mean, in the grain's phase).
- Orientation boundaries: the largest misorientation to the 4 edge neighbours; a
  neighbour of another phase counts :data:`PHASE_BOUNDARY_DEG` (a phase boundary, more
  than any misorientation).
- Sigma3 boundaries (:func:`sigma3_boundary`): the share of the 4 edge neighbours across
  which the misorientation is a Sigma3 twin (60 deg about <111>, within Brandon's
  criterion), in cubic phases - the twin map an EBSD user would draw.
- Orientation itself: the Rodrigues-Frank vector in each phase's fundamental zone
  (three maps, :func:`latentebsd.orientations.rodrigues_components`).
- Sharpness: the FFT sharpness of the preprocessed pattern (the definition of Wang et
  al. 2023, Mater. Charact. 197, 112673, that Calvat et al. 2025 use; ours:
  docs/metrics.md).

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
from latentebsd.orientations import (align_to, brandon_tolerance, ipf_colors, is_cubic,
                                     phase_pair_angles, quaternions, rodrigues_components,
                                     sigma3_deviation)
from latentebsd.phases import PhaseSpec, laue_groups, phases_of, summary
from latentebsd.plotting import (add_ipf_key, panel_size, pyplot, robust_limits, save_figure,
                                 show_map)

log = logging.getLogger(__name__)

#: Orientation-boundary value (deg) of a neighbour of another phase: no misorientation
#: exists between two phases, and this is more than any (at most 180 deg).
PHASE_BOUNDARY_DEG = 180.0


# --------------------------------------------------------------------------------------
# Orientation maps
# --------------------------------------------------------------------------------------
def _phase_map(phase_map: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    if phase_map is None:
        return np.zeros(shape, int)
    out = np.asarray(phase_map).astype(int)
    if out.shape != tuple(shape):
        raise ValueError(f"phase map {out.shape} does not match the map {tuple(shape)}")
    return out


def _neighbour_angles(q: np.ndarray, phase: np.ndarray, a: tuple, b: tuple,
                      symmetries: Any) -> np.ndarray:
    """Misorientation (deg) of each neighbour pair ``(a, b)`` (slices) in its phase's
    symmetry; NaN across phases."""
    shape = q[a].shape[:2]
    return phase_pair_angles(q[a].reshape(-1, 4), q[b].reshape(-1, 4), phase[a].ravel(),
                             phase[b].ravel(), symmetries).reshape(shape)


def kernel_average_misorientation(orientations_map: Any, threshold_deg: float = 5.0,
                                  neighbours: int = 4, mask: np.ndarray | None = None,
                                  phase_map: np.ndarray | None = None,
                                  symmetries: Any = None) -> np.ndarray:
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
    phase_map
        ``(n_rows, n_cols)`` phase of each point (index into ``symmetries``); ``None``:
        one phase. Neighbours of another phase are left out.
    symmetries
        orix ``Symmetry`` of each phase (``None``: m-3m).

    Returns
    -------
    numpy.ndarray
        ``(n_rows, n_cols)`` KAM in degrees; NaN where the point is masked or has no
        neighbour of its phase within the threshold.
    """
    q = quaternions(orientations_map)
    if q.ndim != 3 or q.shape[-1] != 4:
        raise ValueError(f"expected an (n_rows, n_cols) orientation map, got {q.shape[:-1]}")
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    if ok.shape != shape:
        raise ValueError(f"mask {ok.shape} does not match the map {shape}")
    phase = _phase_map(phase_map, shape)
    total = np.zeros(shape)
    count = np.zeros(shape, np.int32)
    for a, b in neighbour_pairs(neighbours):
        angle = _neighbour_angles(q, phase, a, b, symmetries)
        use = (angle <= threshold_deg) & ok[a] & ok[b]
        for s in (a, b):  # the pair counts for both points
            total[s] += np.where(use, angle, 0.0)
            count[s] += use
    kam = np.full(shape, np.nan)
    has = (count > 0) & ok
    kam[has] = total[has] / count[has]
    return kam


def orientation_boundary(orientations_map: Any, mask: np.ndarray | None = None,
                         phase_map: np.ndarray | None = None, symmetries: Any = None) -> np.ndarray:
    """Largest misorientation (deg, in each phase's symmetry; ``phase_map`` and
    ``symmetries`` as :func:`kernel_average_misorientation`) of each point to its 4 edge
    neighbours: an orientation-boundary map that shows grain and twin boundaries (and
    sub-grain boundaries, by their angle); a neighbour of another phase counts
    :data:`PHASE_BOUNDARY_DEG`. NaN where the point is masked or has no indexed
    neighbour."""
    q = quaternions(orientations_map)
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    phase = _phase_map(phase_map, shape)
    out = np.full(shape, -np.inf)
    for a, b in neighbour_pairs(4):
        angle = _neighbour_angles(q, phase, a, b, symmetries)
        angle = np.where(phase[a] != phase[b], PHASE_BOUNDARY_DEG, angle)
        angle = np.where(ok[a] & ok[b], angle, -np.inf)
        for s in (a, b):
            out[s] = np.maximum(out[s], angle)
    return np.where(ok & np.isfinite(out), out, np.nan)


def sigma3_boundary(orientations_map: Any, mask: np.ndarray | None = None,
                    phase_map: np.ndarray | None = None, symmetries: Any = None,
                    tolerance_deg: float | None = None) -> np.ndarray:
    """Sigma3 (annealing twin) boundary map: the fraction of each point's 4 edge
    neighbours (indexed, of its phase) across which the misorientation is within
    ``tolerance_deg`` (default Brandon's 15 / sqrt(3) = 8.66 deg) of 60 deg about <111>,
    in the phase's symmetry (``phase_map``, ``symmetries`` as
    :func:`kernel_average_misorientation`). What an EBSD user draws for twins. 0 in a
    non-cubic phase (no Sigma3 <111> twin); NaN where the point is masked or has no
    indexed neighbour of its phase."""
    q = quaternions(orientations_map)
    shape = q.shape[:2]
    ok = np.ones(shape, bool) if mask is None else np.asarray(mask, bool)
    phase = _phase_map(phase_map, shape)
    tol = brandon_tolerance(3) if tolerance_deg is None else float(tolerance_deg)
    syms = list(symmetries) if symmetries is not None else [None]
    hits = np.zeros(shape)
    count = np.zeros(shape, np.int32)
    for a, b in neighbour_pairs(4):
        pa, pb = phase[a], phase[b]
        pair = ok[a] & ok[b] & (pa == pb)
        twin = np.zeros(pair.shape, bool)
        for k, sym in enumerate(syms):
            sel = pair & (pa == k)
            if sel.any() and is_cubic(sym):
                dev = sigma3_deviation(q[a][sel], q[b][sel], sym)
                twin[sel] = dev <= tol
        for s in (a, b):
            hits[s] += twin
            count[s] += pair
    return np.where(ok & (count > 0), hits / np.maximum(count, 1), np.nan)


def segment_grains(orientations_map: Any, tolerance_deg: float = 5.0,
                   mask: np.ndarray | None = None, min_size: int = 1,
                   phase_map: np.ndarray | None = None, symmetries: Any = None) -> np.ndarray:
    """Grain labels: edge-connected regions without a boundary above ``tolerance_deg``.

    Parameters
    ----------
    orientations_map
        ``(n_rows, n_cols)`` orientations (orix ``Orientation`` or quaternions).
    tolerance_deg
        Two edge neighbours belong to the same grain when they are of one phase and
        their misorientation (in its symmetry) is below this.
    mask
        Points to segment (indexed); the others get label -1.
    min_size
        Grains with fewer points are dropped (label -1).
    phase_map, symmetries
        As :func:`kernel_average_misorientation` (``None``: one phase, m-3m).

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
    phase = _phase_map(phase_map, shape)
    src, dst = [], []
    for a, b in neighbour_pairs(4):
        angle = _neighbour_angles(q, phase, a, b, symmetries)
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
                            iterations: int = 2, phase_map: np.ndarray | None = None,
                            symmetries: Any = None) -> np.ndarray:
    """Symmetry-aware mean quaternion of every grain, ``(G, 4)``.

    Each point is replaced by its equivalent (in its phase's symmetry; ``phase_map``
    and ``symmetries`` as :func:`kernel_average_misorientation`) closest to the
    grain's reference (its first point, then the previous mean) before the quaternions
    are averaged. A grain is of one phase (:func:`segment_grains`).
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
    pi = _phase_map(phase_map, np.shape(labels)).ravel()[inside]
    syms = list(symmetries) if symmetries is not None else [None]
    _, first = np.unique(li, return_index=True)
    mean = qi[first].copy()
    for _ in range(max(1, iterations)):
        aligned = np.empty_like(qi)
        for k, sym in enumerate(syms):
            sel = pi == k
            aligned[sel] = align_to(qi[sel], mean[li[sel]], sym)
        total = np.zeros((n_grains, 4))
        np.add.at(total, li, aligned)
        mean = total / np.linalg.norm(total, axis=1, keepdims=True)
    return mean


def grain_reference_orientation_deviation(orientations_map: Any, labels: np.ndarray,
                                          phase_map: np.ndarray | None = None,
                                          symmetries: Any = None) -> np.ndarray:
    """GROD: misorientation (deg) of each point to its grain's mean orientation, in the
    grain's phase (``phase_map``, ``symmetries`` as :func:`kernel_average_misorientation`).

    Returns an ``(n_rows, n_cols)`` map, NaN outside grains (label -1).
    """
    q = quaternions(orientations_map)
    shape = q.shape[:-1]
    lab = np.asarray(labels).ravel()
    phase = _phase_map(phase_map, np.shape(labels)).ravel()
    mean = grain_mean_orientations(q, labels, phase_map=phase.reshape(np.shape(labels)),
                                   symmetries=symmetries)
    grod = np.full(lab.shape, np.nan)
    inside = lab >= 0
    if inside.any():
        grod[inside] = phase_pair_angles(q.reshape(-1, 4)[inside], mean[lab[inside]],
                                         phase[inside], phase[inside], symmetries)
    return grod.reshape(shape)


# --------------------------------------------------------------------------------------
# All maps of one scan
# --------------------------------------------------------------------------------------
def conventional_maps(arrays: Mapping[str, np.ndarray], geometry: ScanGeometry,
                      settings: Mapping[str, Any] | None = None,
                      phases: list[PhaseSpec] | None = None) -> dict[str, np.ndarray]:
    """IPF colours, IQ (pq and Krieger Lassen), CI, fit, KAM, grains, GROD, sharpness,
    the orientation-boundary map and the phase map of one indexed scan (keys
    :data:`latentebsd.io.conventional.MAP_KEYS`), each orientation map in the
    symmetry of each point's phase.

    Parameters
    ----------
    arrays
        Index arrays of the preprocessed scan (:func:`latentebsd.io.index.read_index`).
    geometry
        Its geometry (map shape).
    settings
        The validated ``evaluation`` section (``kam``, ``grains``, ``ipf_direction``,
        ``min_nmatch``; ``None``: the schema's defaults).
    phases
        The scan's phases, which ``arrays["phase"]`` indexes (``None``: FCC nickel;
        :func:`latentebsd.phases.phases_of` of the index file's attributes).

    Returns
    -------
    dict
        ``(n_rows, n_cols)`` maps (``ipf_rgb``: ``(n_rows, n_cols, 3)``), keys
        :data:`latentebsd.io.conventional.MAP_KEYS`.
    """
    cfg = config.section("evaluation") if settings is None else settings
    shape = geometry.map_shape
    syms = laue_groups(phases) if phases else None
    n_phases = len(phases) if phases else 1
    phase = np.asarray(arrays["phase"]).astype(int)
    indexed = (is_indexed(arrays, cfg["min_nmatch"]) & np.asarray(arrays["valid"], bool)
               & (phase < n_phases))
    phase = np.where(indexed, phase, -1)
    q = np.array(arrays["quat"], dtype=np.float64).reshape(-1, 4)
    q[~indexed] = [1.0, 0.0, 0.0, 0.0]
    omap = q.reshape(*shape, 4)
    ok = indexed.reshape(shape)
    pmap = phase.reshape(shape)
    labels = segment_grains(omap, cfg["grains"]["tolerance_deg"], ok, cfg["grains"]["min_size"],
                            pmap, syms)

    def masked(key: str) -> np.ndarray:
        return np.where(np.asarray(arrays["valid"], bool), np.asarray(arrays[key], float),
                        np.nan).reshape(shape)

    return {
        "ipf_rgb": ipf_colors(q, indexed, cfg["ipf_direction"], phase, syms).reshape(*shape, 3),
        "iq_pq": masked("pq"),
        "iq_kp": masked("iq_kp"),
        "kam_deg": kernel_average_misorientation(omap, cfg["kam"]["threshold_deg"],
                                                 cfg["kam"]["neighbours"], ok, pmap, syms),
        "grain_id": labels,
        "grod_deg": grain_reference_orientation_deviation(omap, labels, pmap, syms),
        "sharpness": masked("sharpness"),
        "ci": masked("cm"),
        "fit": masked("fit"),
        "boundary_deg": orientation_boundary(omap, ok, pmap, syms),
        "sigma3": sigma3_boundary(omap, ok, pmap, syms),
        "rodrigues": rodrigues_components(q, indexed, phase, syms).reshape(*shape, 3),
        "indexed": ok,
        "valid": np.asarray(arrays["valid"], bool).reshape(shape),
        "phase_id": pmap.astype(np.int32),
    }


# --------------------------------------------------------------------------------------
# Figures
# --------------------------------------------------------------------------------------
#: Colours of phases 0, 1, ... in phase maps (not indexed: black).
PHASE_COLOURS = ((0.89, 0.10, 0.11), (0.22, 0.49, 0.72), (0.30, 0.69, 0.29),
                 (0.60, 0.31, 0.64), (1.00, 0.50, 0.00), (0.65, 0.34, 0.16))


def phase_rgb(phase_id: np.ndarray) -> np.ndarray:
    """``(..., 3)`` colours of a phase map (:data:`PHASE_COLOURS`; -1 black)."""
    p = np.asarray(phase_id).astype(int)
    colours = np.array(PHASE_COLOURS)
    rgb = colours[np.maximum(p, 0) % len(colours)]
    return np.where((p >= 0)[..., None], rgb, 0.0)


def _phase_legend(ax: Any, phases: list[PhaseSpec], phase_id: np.ndarray) -> None:
    from matplotlib.patches import Patch

    total = max(int(np.size(phase_id)), 1)
    handles = [Patch(color=PHASE_COLOURS[k % len(PHASE_COLOURS)],
                     label=f"{s.name} {100 * np.count_nonzero(phase_id == k) / total:.1f} %")
               for k, s in enumerate(phases)]
    handles.append(Patch(color="black", label=f"not indexed "
                         f"{100 * np.count_nonzero(phase_id < 0) / total:.1f} %"))
    ax.legend(handles=handles, fontsize=6, loc="upper left", bbox_to_anchor=(1.0, 1.0),
              frameon=False)


def plot_ipf(maps: Mapping[str, np.ndarray], geometry: ScanGeometry, path: str | os.PathLike,
             title: str, direction: str = "x", dpi: int = 150,
             phases: list[PhaseSpec] | None = None) -> None:
    """Fig 2: the IPF map of one scan, with its colour key (one per Laue group of
    ``phases``) and a scale bar."""
    plt = pyplot()
    w, h = panel_size(geometry.map_shape, 5.0)
    fig, ax = plt.subplots(figsize=(w * 1.3, h + 0.5))
    fig.subplots_adjust(left=0.02, right=0.75, top=0.9, bottom=0.03)
    show_map(ax, maps["ipf_rgb"], geometry.step_um, title)
    add_ipf_key(fig, ax, direction, phases)
    save_figure(fig, path, dpi, tight=True)


def plot_conventional(maps: Mapping[str, np.ndarray], geometry: ScanGeometry,
                      path: str | os.PathLike, title: str, settings: Mapping[str, Any],
                      dpi: int = 150, phases: list[PhaseSpec] | None = None) -> None:
    """All conventional maps of one scan side by side: IPF, (for several ``phases``) the
    phase map, IQ, GROD, KAM, sharpness, Sigma3 twin boundaries."""
    plt = pyplot()
    panels = conventional_panels(maps, settings)
    if "sigma3" in maps:
        panels.append((maps["sigma3"], "Sigma3 boundaries (Brandon)", "magma", (0.0, 1.0),
                       "share of neighbours"))
    several = bool(phases) and len(phases) > 1
    n = len(panels) + 1 + several
    w, h = panel_size(geometry.map_shape)
    fig, axes = plt.subplots(1, n, figsize=((w + 0.6) * n, h + 0.6))
    show_map(axes[0], maps["ipf_rgb"], geometry.step_um, f"IPF-{settings['ipf_direction'].upper()}")
    if several:
        show_map(axes[1], phase_rgb(maps["phase_id"]), geometry.step_um, "Phase")
    for ax, (data, name, cmap, limits, label) in zip(axes[1 + several:], panels):
        show_map(ax, data, geometry.step_um, name, cmap, limits, label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    add_ipf_key(fig, axes[0], settings["ipf_direction"], phases)
    if several:
        _phase_legend(axes[1], phases, maps["phase_id"])
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
    arrays, geometry, attrs = read_index(index_path)
    phases = phases_of(attrs)
    maps = conventional_maps(arrays, geometry, cfg, phases)
    n_grains = int(maps["grain_id"].max()) + 1
    write_conventional(out_h5, maps, geometry, {
        "scan": scan, "n_grains": n_grains, "kam": str(cfg["kam"]), "grains": str(cfg["grains"]),
        "ipf_direction": cfg["ipf_direction"], "iq": "PyEBSDIndex pq",
        "phases": attrs.get("phases", ""),
    })
    names = summary(phases)
    plot_ipf(maps, geometry, out_ipf, f"{scan}: IPF-{cfg['ipf_direction'].upper()} "
             f"(preprocessed patterns, {100 * maps['indexed'].mean():.1f} % indexed; {names})",
             cfg["ipf_direction"], cfg["dpi"], phases)
    plot_conventional(maps, geometry, out_panel, f"{scan}: conventional EBSD maps "
                      f"({names}; {n_grains} grains at {cfg['grains']['tolerance_deg']:g} deg"
                      + ("; KAM and GROD within each phase" if len(phases) > 1 else "") + ")",
                      cfg, cfg["dpi"], phases)
    if len(phases) > 1:
        log.info("%s: phases %s", scan, "; ".join(
            f"{s.name} {np.count_nonzero(maps['phase_id'] == k)} points"
            for k, s in enumerate(phases)))
    log.info("%s: %d grains, median KAM %.3f deg, median GROD %.3f deg", scan, n_grains,
             np.nanmedian(maps["kam_deg"]) if np.isfinite(maps["kam_deg"]).any() else np.nan,
             np.nanmedian(maps["grod_deg"]) if np.isfinite(maps["grod_deg"]).any() else np.nan)
    return maps
