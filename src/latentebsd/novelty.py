"""Stage ``novelty``: which latent maps show something the conventional maps do not?

For scans without ground truth - every real scan - a user needs to know which of the d
maps carry new information. For each map of each latent cube:

- **R^2 explained by conventional EBSD**: cross-validated (many small spatial blocks,
  :func:`novelty_folds`) R^2 of a linear regression of the map on the conventional maps
  (:func:`latentebsd.io.conventional.conventional_stack`: descriptors, Sigma3
  boundaries, Rodrigues vector, IPF colours) and the map's own grain means (taken from
  the training blocks only: whatever a map does per grain, an orientation map shows
  too). Pooled over the held-out folds,
  against the training mean: 1 = the conventional maps predict it, <= 0 = they do not;
- **novelty** = spatial structure (the ranking score of :mod:`latentebsd.maps`,
  Moran's I x reliability) x (1 - R^2 clipped to [0, 1]): structured *and* new.

Output per scan: a CSV of every map of every cube, and a figure of the most novel maps
of one variant beside IQ, KAM, GROD, sharpness and the orientation boundaries.

A map too small for spatial cross-validation (fewer than :data:`MIN_FOLD_POINTS` scored
points in each of two folds, e.g. a 3 x 3 map with the default 2 x 2 folds and guard)
gets no R^2 and no novelty (NaN in the CSV, maps ordered by structure alone); the log
and the figure's title say so and why (:func:`cross_validation_skipped`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from latentebsd.benchmark import sample_pixels, spatial_folds
from latentebsd.io.atomic import atomic_path
from latentebsd.io.conventional import conventional_stack, read_conventional
from latentebsd.io.cube import budget_bytes, iter_feature_groups, read_features
from latentebsd.plotting import panel_grid, panel_size, robust_limits, save_figure, show_map

log = logging.getLogger(__name__)

#: Ridge penalty on the standardised regressors (keeps collinear descriptors stable).
RIDGE_ALPHA = 1e-3
#: Fewest points per side of a novelty block, inside its guard (:func:`novelty_folds`).
MIN_BLOCK_SIDE = 4
#: Fewest scored points in each of at least two spatial folds for a cross-validated R^2.
MIN_FOLD_POINTS = 10


def novelty_folds(shape: tuple[int, int], settings: Mapping[str, Any]) -> np.ndarray:
    """The novelty's spatial folds: ``benchmark.novelty_fold_grid`` blocks (default 6 x 8,
    :func:`latentebsd.benchmark.spatial_folds`) with ``benchmark.guard``, fewer on a small
    map (each block at least :data:`MIN_BLOCK_SIDE` points per side inside its guard;
    ``benchmark.fold_grid`` where not even two such blocks fit). Many small blocks: each grain of a
    held-out block has training points in other blocks, so its grain mean - fitted on
    the training blocks only - explains grain contrast (with 2 x 2 folds on a 12-grain
    map a held-out quarter's grains were mostly unseen, and grain contrast ranked as
    novel)."""
    grid = settings.get("novelty_fold_grid") or settings["fold_grid"]
    guard = int(settings["guard"])
    side = 2 * guard + MIN_BLOCK_SIDE  # a block keeps >= MIN_BLOCK_SIDE points per side
    grid = tuple(max(1, min(int(g), int(n) // side)) for g, n in zip(grid, shape))
    if grid[0] * grid[1] < 2:  # too small for blocks: the benchmark's folds (and its skip)
        grid = tuple(settings["fold_grid"])
    return spatial_folds(shape, grid, guard)


def cross_validation_skipped(fold: np.ndarray, map_shape: tuple[int, int],
                             settings: Mapping[str, Any]) -> str | None:
    """Why a cross-validated R^2 cannot be computed on these scored points (their
    ``fold``), or ``None`` when it can: at least two folds of
    :data:`MIN_FOLD_POINTS` points or more."""
    counts = np.bincount(np.asarray(fold)[np.asarray(fold) >= 0].astype(int))
    if np.count_nonzero(counts >= MIN_FOLD_POINTS) >= 2:
        return None
    return (f"R² not computed: {len(fold)} scored points in {np.count_nonzero(counts)} spatial "
            f"folds of the {map_shape[0]} x {map_shape[1]} map (benchmark.novelty_fold_grid "
            f"{list(settings.get('novelty_fold_grid') or settings['fold_grid'])}, guard "
            f"{settings['guard']}); cross-validation "
            f"needs {MIN_FOLD_POINTS} in each of two folds")


def conventional_regressors(conventional: Mapping[str, np.ndarray], idx: np.ndarray) -> np.ndarray:
    """``(n, p)`` conventional maps at pixels ``idx``: the descriptors, the Sigma3
    boundaries, Rodrigues vector and IPF colours
    (:func:`latentebsd.io.conventional.conventional_stack`; NaN -> the median)."""
    stack = conventional_stack(conventional)[1]
    x = stack.reshape(len(stack), -1)[:, idx].T
    med = np.nanmedian(x, axis=0)
    return np.where(np.isfinite(x), x, np.where(np.isfinite(med), med, 0.0))


def grain_means(y: np.ndarray, grain: np.ndarray, train: np.ndarray) -> np.ndarray:
    """Per point, the mean of ``y`` over the training points of its grain. Points outside
    any grain (``grain`` -1) count in no grain's mean; they, and grains without training
    points, get the mean of all training points."""
    inside = train & (grain >= 0)
    n_lab = int(grain.max()) + 1 if len(grain) and grain.max() >= 0 else 1
    labels = np.where(grain >= 0, grain, 0)
    cnt = np.bincount(labels[inside], minlength=n_lab)
    sums = np.bincount(labels[inside], y[inside], minlength=n_lab)
    overall = y[train].mean()
    gmean = np.where(cnt > 0, sums / np.maximum(cnt, 1), overall)
    return np.where(grain >= 0, gmean[labels], overall)


def grain_means_all(y: np.ndarray, grain: np.ndarray, train: np.ndarray) -> np.ndarray:
    """:func:`grain_means` of every column of ``y`` ``(n, g)`` at once: ``(n, g)``."""
    from scipy.sparse import csr_matrix

    inside = train & (grain >= 0)
    n_lab = int(grain.max()) + 1 if len(grain) and grain.max() >= 0 else 1
    labels = np.where(grain >= 0, grain, 0)
    rows = np.flatnonzero(inside)
    onehot = csr_matrix((np.ones(len(rows)), (labels[rows], rows)), shape=(n_lab, len(y)))
    cnt = np.bincount(labels[inside], minlength=n_lab).astype(np.float64)
    sums = np.asarray(onehot @ y)
    overall = y[train].mean(axis=0)
    gmean = np.where(cnt[:, None] > 0, sums / np.maximum(cnt, 1)[:, None], overall[None])
    return np.where((grain >= 0)[:, None], gmean[labels], overall[None])


def explained_r2(y: np.ndarray, x: np.ndarray, grain: np.ndarray, fold: np.ndarray) -> np.ndarray:
    """Cross-validated R^2 of every column of ``y`` ``(n, g)`` regressed on ``x`` ``(n, p)``
    and its own per-grain training mean (:func:`grain_means`: fitted on the training
    folds only, so a held-out fold's grain means come from the grain's points in other
    folds; pooled over held-out folds, the training mean as the reference). A ridge
    regression per column, solved for all columns at once."""
    y = np.asarray(y, dtype=np.float64)
    ss_res = np.zeros(y.shape[1])
    ss_tot = np.zeros(y.shape[1])
    for f in np.unique(fold):
        train, test = fold != f, fold == f
        mu, sd = x[train].mean(axis=0), x[train].std(axis=0)
        sd[sd == 0] = 1.0
        base = np.column_stack([np.ones(len(y)), (x - mu) / sd])  # (n, q)
        ymean = y[train].mean(axis=0)
        gm = grain_means_all(y, grain, train) - ymean[None]  # (n, g)
        bt, gt, yt = base[train], gm[train], y[train]
        q = base.shape[1]
        g = y.shape[1]
        # normal equations of [base, gm_j] for every column j, (g, q + 1, q + 1)
        a = np.zeros((g, q + 1, q + 1))
        a[:, :q, :q] = bt.T @ bt
        cross = bt.T @ gt  # (q, g)
        a[:, :q, q] = cross.T
        a[:, q, :q] = cross.T
        a[:, q, q] = (gt * gt).sum(axis=0)
        a += RIDGE_ALPHA * np.eye(q + 1)[None]
        rhs = np.concatenate([(bt.T @ yt).T, (gt * yt).sum(axis=0)[:, None]], axis=1)  # (g, q+1)
        beta = np.linalg.solve(a, rhs[..., None])[..., 0]  # (g, q + 1)
        pred = base[test] @ beta[:, :q].T + gm[test] * beta[:, q][None]
        ss_res += ((y[test] - pred) ** 2).sum(axis=0)
        ss_tot += ((y[test] - ymean[None]) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, 1.0)


def novelty_score(structure: np.ndarray, r2: np.ndarray) -> np.ndarray:
    """Novelty of maps with spatial ``structure`` of which conventional EBSD explains
    ``r2``: ``structure x (1 - R^2 clipped to [0, 1])`` - structured *and* unexplained
    scores high; a map the conventional maps explain fully scores 0, whatever its
    structure (NaN R^2: NaN)."""
    return np.asarray(structure, np.float64) * (1.0 - np.clip(np.asarray(r2, np.float64), 0.0, 1.0))


def novelty_scan(cubes: Mapping[str, str | os.PathLike], rankings: Mapping[str, str | os.PathLike],
                 conventional_path: str | os.PathLike, settings: Mapping[str, Any], scan: str,
                 memory_mb: float = 512, seed: int = 0) -> pd.DataFrame:
    """Every map of every cube: structure, R^2 explained by conventional EBSD, novelty.

    The table's ``attrs["skipped"]`` holds :func:`cross_validation_skipped`'s reason
    when the map is too small for R^2 (then NaN, and the maps ordered by structure)."""
    conventional, geometry = read_conventional(conventional_path)
    folds = novelty_folds(geometry.map_shape, settings)
    idx = sample_pixels(folds, conventional["valid"], settings["max_pixels"], seed)
    x = conventional_regressors(conventional, idx)
    grain = conventional["grain_id"].ravel()[idx]
    fold = folds.ravel()[idx]
    skipped = cross_validation_skipped(fold, geometry.map_shape, settings)
    if skipped:
        log.warning("%s: %s; novelty left empty (NaN), maps ordered by spatial structure",
                    scan, skipped)
    frames = []
    for variant, cube in cubes.items():
        ranking = pd.read_csv(rankings[variant]).set_index("feature")
        r2 = []
        for ids, (group,) in iter_feature_groups(cube, budget_bytes(memory_mb, 4.0)):
            if skipped:
                r2.append(np.full(len(group), np.nan))
                continue
            r2.append(explained_r2(group.reshape(len(group), -1)[:, idx].T.astype(np.float64), x,
                                   grain, fold))
        r2 = np.concatenate(r2)
        rank = ranking.sort_index()
        frame = pd.DataFrame({"scan": scan, "variant": variant, "feature": rank.index,
                              "moran_i": rank["moran_i"].to_numpy(),
                              "reliability": rank["reliability"].to_numpy(),
                              "structure": rank["score"].to_numpy(), "r2_conventional": r2})
        frame["novelty"] = novelty_score(frame["structure"].to_numpy(),
                                         frame["r2_conventional"].to_numpy())
        frame = frame.sort_values(["novelty", "structure", "feature"], ascending=[False, False, True],
                                  kind="stable", na_position="last")
        frame.insert(3, "novelty_rank", np.arange(1, len(frame) + 1))
        frames.append(frame)
        if not skipped:
            log.info("%s / %s: top novel features %s (R^2 %s)", scan, variant,
                     frame["feature"].head(3).tolist(),
                     np.round(frame["r2_conventional"].head(3), 2).tolist())
    table = pd.concat(frames, ignore_index=True)
    table.attrs["skipped"] = skipped
    return table


def plot_novel_maps(table: pd.DataFrame, cube: str | os.PathLike, conventional_path: str | os.PathLike,
                    variant: str, n: int, path: str | os.PathLike, title: str, dpi: int = 150) -> None:
    """The ``n`` most novel maps of ``variant`` beside IQ, KAM, GROD, sharpness and the
    orientation-boundary map."""
    maps, geometry = read_conventional(conventional_path)
    top = table[table["variant"] == variant].head(n)
    latent = read_features(cube, top["feature"].astype(int).tolist())
    valid = maps["valid"]
    panels = [(np.where(valid, z, np.nan), f"f{int(r.feature)}: R² {r.r2_conventional:.2f}\n"
               f"Moran {r.moran_i:.2f}, novelty {r.novelty:.2f}", "gray", None, "latent mean")
              for z, r in zip(latent, top.itertuples())]
    for key, name, cmap, unit in (("iq_pq", "IQ (pq)", "gray", "pq"), ("kam_deg", "KAM", "viridis", "deg"),
                                  ("grod_deg", "GROD", "viridis", "deg"),
                                  ("sharpness", "Sharpness", "magma", "fraction"),
                                  ("boundary_deg", "Orientation boundary", "viridis", "deg")):
        lim = (0.0, max(robust_limits(maps[key], 0, 99)[1], 1e-6)) if unit == "deg" else None
        panels.append((maps[key], name, cmap, lim, unit))
    w, h = panel_size(geometry.map_shape, 2.6)
    fig, axes = panel_grid(len(panels), 5, w + 0.6, h + 0.7, extra_height=0.5)
    for ax, (data, name, cmap, limits, label) in zip(axes, panels):
        show_map(ax, data, geometry.step_um, name, cmap, limits, label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi, tight=True)


def run_novelty_rule(cubes: Mapping[str, str], rankings: Mapping[str, str], conventional: str,
                     out_csv: str, out_png: str, settings: Mapping[str, Any], scan: str,
                     panel_variant: str, memory_mb: float, seed: int) -> pd.DataFrame:
    """What rule ``novelty`` runs for one scan."""
    table = novelty_scan(cubes, rankings, conventional, settings, scan, memory_mb, seed)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    skipped = table.attrs.get("skipped")
    title = (f"{scan}: the {int(settings['novelty_top'])} latent maps of {panel_variant} that the "
             "conventional maps explain least (structure x (1 - R²)), beside them"
             if not skipped else
             f"{scan}: the {int(settings['novelty_top'])} most structured latent maps of "
             f"{panel_variant}, beside the conventional maps\n{skipped}")
    plot_novel_maps(table, cubes[panel_variant], conventional, panel_variant,
                    int(settings["novelty_top"]), out_png, title)
    return table
