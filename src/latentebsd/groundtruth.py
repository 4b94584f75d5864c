"""Ground truth of simulated scans against latent maps: which map shows which class.

For each microstructure class (:data:`TRUTH_CLASSES`) the best latent feature and how
well it matches: the per-pixel ROC-AUC of the feature (``max(AUC, 1 - AUC)``: a latent
axis has no preferred sign) or of its Sobel gradient magnitude (``AUC``: boundaries
are edges in a map, so only *high* gradient on the truth counts) against the binary
truth mask; for the continuous ``dislocation_density``, ``|Spearman|`` of the value or
Spearman of the gradient magnitude. The better representation is reported, with
``median_score`` (the median over all features) as the baseline to read it against:
a class that changes every pattern (blurred bands at cell walls) lifts every feature.
``rotation_domains`` are boundaries between domains of one grain that touch no twin.

The best of d maps scored on the pixels it was chosen on is an optimistic number;
the detection benchmark scores held-out pixels.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from latentebsd import config
from latentebsd.grid import gradient_magnitude, neighbour_pairs
from latentebsd.io.atomic import atomic_path
from latentebsd.io.cube import budget_bytes, cube_attrs, iter_feature_groups, read_features, read_valid
from latentebsd.io.truth import read_truth
from latentebsd.plotting import add_scale_bar, colormap, map_extent, masked, placeholder, pyplot, save_figure


#: class -> (truth field, kind). ``domain_boundaries`` is derived (see :func:`truth_targets`).
TRUTH_CLASSES: dict[str, tuple[str, str]] = {
    "grain_boundaries": ("grain_boundary_mask", "mask"),
    "twins": ("twin_mask", "mask"),
    "dislocation_cells": ("cell_wall_mask", "mask"),
    "dislocation_density": ("dislocation_density", "continuous"),
    "particles": ("particle_mask", "mask"),
    "scratch": ("scratch_mask", "mask"),
    "rotation_domains": ("domain_boundaries", "mask"),
}


def domain_boundaries(domain_id: np.ndarray, grain_id: np.ndarray,
                      twin_mask: np.ndarray | None = None) -> np.ndarray:
    """Points with a 4-neighbour in another rotation domain of the *same* grain.

    Boundaries that touch a twin lamella (twin / parent and twin / twin) are left out:
    they belong to the ``twins`` class, and in a wrought map lamellae are the only
    domains.
    """
    out = np.zeros(domain_id.shape, bool)
    tw = np.zeros(domain_id.shape, bool) if twin_mask is None else np.asarray(twin_mask, bool)
    for a, b in neighbour_pairs(4):
        edge = (domain_id[a] != domain_id[b]) & (grain_id[a] == grain_id[b]) & ~tw[a] & ~tw[b]
        out[a] |= edge
        out[b] |= edge
    return out


def truth_targets(truth: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str, np.ndarray]]:
    """``class -> (truth field, kind, (n_rows, n_cols) array)`` for the classes the truth has."""
    out = {}
    for name, (field, kind) in TRUTH_CLASSES.items():
        if field == "domain_boundaries":
            if "domain_id" not in truth or "grain_id" not in truth:
                continue
            array = domain_boundaries(truth["domain_id"], truth["grain_id"], truth.get("twin_mask"))
        elif field in truth:
            array = np.asarray(truth[field])
        else:
            continue
        out[name] = (field, kind, array.astype(bool) if kind == "mask" else array.astype(np.float64))
    return out


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their average rank (like
    ``scipy.stats.rankdata``, whose import alone costs ~1.5 s per rule job)."""
    x = np.asarray(x)
    flat = x.reshape(-1, x.shape[-1])
    g, n = flat.shape
    order = np.argsort(flat, axis=1, kind="stable")
    sorted_x = np.take_along_axis(flat, order, axis=1)
    starts = np.ones((g, n), bool)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    ends = np.ones((g, n), bool)
    ends[:, :-1] = starts[:, 1:]
    pos = np.broadcast_to(np.arange(n), (g, n))
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((g, n), np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.reshape(x.shape)


def auc_from_ranks(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row's scores (as ranks) for the boolean ``positive`` labels."""
    n1 = int(positive.sum())
    n0 = positive.size - n1
    u = ranks[:, positive].sum(axis=1) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)


def spearman_from_ranks(ranks: np.ndarray, target_ranks: np.ndarray) -> np.ndarray:
    a = ranks - ranks.mean(axis=1, keepdims=True)
    b = target_ranks - target_ranks.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a @ b) / (np.sqrt((a * a).sum(axis=1)) * np.sqrt((b * b).sum()))
    return np.nan_to_num(r)


def match_scores(maps: np.ndarray, targets: Mapping[str, tuple[str, str, np.ndarray]],
                 valid: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Match score of every map against every present target, for value and gradient.

    Returns
    -------
    dict
        ``class -> {"value": (g,), "gradient": (g,)}``; scores in [0, 1] (module docstring).
    """
    v = np.asarray(valid, bool)
    value_ranks = average_ranks(maps[:, v])
    grad_ranks = average_ranks(gradient_magnitude(maps)[:, v])
    out = {}
    for name, (_, kind, array) in targets.items():
        t = array[v]
        if kind == "mask":
            if t.all() or not t.any():
                continue
            auc = auc_from_ranks(value_ranks, t)
            out[name] = {"value": np.maximum(auc, 1.0 - auc), "gradient": auc_from_ranks(grad_ranks, t)}
        else:
            if np.ptp(t) == 0:
                continue
            tr = average_ranks(t)
            out[name] = {"value": np.abs(spearman_from_ranks(value_ranks, tr)),
                         "gradient": spearman_from_ranks(grad_ranks, tr)}
    return out


def match_truth(cube_path: str | os.PathLike, truth: Mapping[str, np.ndarray],
                settings: Mapping[str, Any] | None = None, ranking: pd.DataFrame | None = None,
                ) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    """For each ground-truth class, the latent feature that matches it best.

    Parameters
    ----------
    cube_path
        Latent cube of one scan x variant.
    truth
        ``name -> (n_rows, n_cols)`` arrays (:func:`latentebsd.io.truth.read_truth`).
    settings
        The validated ``maps`` config section (its memory budget; ``None``: defaults).
    ranking
        The feature ranking, to report the best feature's spatial-structure rank.

    Returns
    -------
    table, best_maps
        One row per class in :data:`TRUTH_CLASSES` (``present`` False where the scan has
        no such feature); ``best_maps``: class -> the matched representation's map.
    """
    cfg = config.section("maps") if settings is None else settings
    attrs = cube_attrs(cube_path)
    valid = read_valid(cube_path)
    targets = truth_targets(truth)
    for name, (field, _, array) in targets.items():
        if array.shape != valid.shape:
            raise ValueError(f"ground truth {field} has shape {array.shape}, the cube "
                             f"{cube_path} maps {valid.shape}")
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    ids = [np.zeros(0, np.int64)]
    # value, gradient and two float64 rank arrays per map
    for fids, (mean,) in iter_feature_groups(cube_path, budget_bytes(cfg["memory_mb"], 7.0)) if targets else ():
        ids.append(fids)
        for cls, reps in match_scores(mean, targets, valid).items():
            for rep, s in reps.items():
                scores.setdefault(cls, {}).setdefault(rep, []).append(s)
    ids = np.concatenate(ids)
    rank_of = {} if ranking is None else dict(zip(ranking["feature"].astype(int), ranking["rank"].astype(int)))
    rows, best = [], {}
    for cls, (field, kind) in TRUTH_CLASSES.items():
        row = {"scan": attrs.get("scan", ""), "variant": attrs.get("variant", ""),
               "latent_dim": attrs["latent_dim"], "class": cls, "truth_field": field, "kind": kind,
               "metric": "roc_auc" if kind == "mask" else "abs_spearman"}
        present = cls in scores
        target = targets.get(cls)
        row["present"] = present
        row["n_positive"] = int(target[2][valid].sum()) if target is not None and kind == "mask" else np.nan
        if present:
            value = np.concatenate(scores[cls]["value"])
            grad = np.concatenate(scores[cls]["gradient"])
            per_feature = np.maximum(value, grad)
            order = np.argsort(-per_feature, kind="stable")
            i, j = order[0], order[1] if len(order) > 1 else order[0]
            rep = "value" if value[i] >= grad[i] else "gradient"
            row.update({
                "best_feature": int(ids[i]), "representation": rep, "score": float(per_feature[i]),
                "value_score": float(value[i]), "gradient_score": float(grad[i]),
                "spatial_rank": rank_of.get(int(ids[i]), np.nan),
                "runner_up_feature": int(ids[j]), "runner_up_score": float(per_feature[j]),
                "median_score": float(np.median(per_feature)),
            })
            fmap = read_features(cube_path, [int(ids[i])])
            best[cls] = fmap[0] if rep == "value" else gradient_magnitude(fmap)[0]
        rows.append(row)
    return pd.DataFrame(rows), best


def plot_truth_match(table: pd.DataFrame, best_maps: Mapping[str, np.ndarray],
                     truth: Mapping[str, np.ndarray], valid: np.ndarray, step_um: float,
                     out_path: str | os.PathLike, title: str) -> None:
    """Truth (top) and the best-matching latent map (bottom) for each present class."""
    plt = pyplot()
    targets = truth_targets(truth)
    present = table[table["present"].astype(bool)]
    if present.empty:
        placeholder(out_path, f"{title}: no ground-truth class present")
        return
    n = len(present)
    r, c = valid.shape
    w = 2.6
    fig, axes = plt.subplots(2, n, figsize=(n * w, 2 * w * r / c + 1.2), squeeze=False,
                             constrained_layout=True)
    extent = map_extent(valid.shape, step_um)
    for k, (_, row) in enumerate(present.iterrows()):
        cls = row["class"]
        truth_map = targets[cls][2]
        ax = axes[0, k]
        im = ax.imshow(masked(truth_map.astype(float), valid),
                       cmap=colormap("gray" if row["kind"] == "mask" else "magma"),
                       extent=extent, interpolation="nearest")
        ax.set_title(f"truth: {cls}", fontsize=8)
        if row["kind"] != "mask":  # a mask is black / white; a continuous truth needs its scale
            _colorbar(fig, im, ax, "truth value")
        ax = axes[1, k]
        image = best_maps[cls]
        lo, hi = np.percentile(image[valid], [1, 99])
        im = ax.imshow(masked(image, valid), cmap=colormap("viridis"), vmin=lo,
                       vmax=max(hi, lo + 1e-12), extent=extent, interpolation="nearest")
        what = "" if row["representation"] == "value" else " |grad|"
        _colorbar(fig, im, ax, "latent value" + what)
        rank = row["spatial_rank"]
        ax.set_title(f"f{int(row['best_feature'])}{what}: {row['metric']} {row['score']:.3f}\n"
                     f"(spatial rank {int(rank) if rank == rank else '-'})", fontsize=7)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
            add_scale_bar(ax, c * step_um)
    fig.suptitle(title, fontsize=10)
    save_figure(fig, out_path)


def _colorbar(fig: Any, image: Any, ax: Any, label: str) -> None:
    """A small labelled colour bar beside ``ax``."""
    cb = fig.colorbar(image, ax=ax, shrink=0.8)
    cb.set_label(label, fontsize=7)
    cb.ax.tick_params(labelsize=6)


def write_truth_match(cube_path: str | os.PathLike, truth_path: str | os.PathLike | None,
                      ranking: pd.DataFrame | str | os.PathLike | None, out_csv: str | os.PathLike,
                      out_png: str | os.PathLike, settings: Mapping[str, Any] | None = None
                      ) -> pd.DataFrame:
    """:func:`match_truth` against a ground-truth file, written as CSV and figure.

    Without ``truth_path`` (a scan with no simulated truth) every class is written as
    ``present = False`` and the figure says so.
    """
    truth = read_truth(truth_path)[0] if truth_path else {}
    if ranking is not None and not isinstance(ranking, pd.DataFrame):
        ranking = pd.read_csv(ranking)
    table, best = match_truth(cube_path, truth, settings, ranking)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    attrs = cube_attrs(cube_path)
    label = f"{attrs.get('variant', '')} · {attrs.get('scan', '')}"
    if not truth:
        placeholder(out_png, f"{label}: no ground truth for this scan")
    else:
        plot_truth_match(table, best, truth, read_valid(cube_path), attrs["step_um"], out_png,
                         f"{label}: best latent map per ground-truth class")
    return table


def summarize_truth_matches(csvs: Sequence[str | os.PathLike], out_long: str | os.PathLike,
                            out_wide: str | os.PathLike) -> pd.DataFrame:
    """One table over variants: long (every row) and wide (scan x class rows, variant columns
    of ``score (feature)``)."""
    frames = [pd.read_csv(p) for p in csvs]
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    with atomic_path(out_long) as tmp:
        long.to_csv(tmp, index=False, float_format="%.6g")
    wide = pd.DataFrame()
    if not long.empty:
        present = long[long["present"].astype(bool)].copy()
        present["cell"] = [f"{s:.3f} (f{int(f)})" for s, f in zip(present["score"], present["best_feature"])]
        wide = present.pivot_table(index=["scan", "class", "metric"], columns="variant", values="cell",
                                   aggfunc="first")
        order = list(dict.fromkeys(long["variant"]))
        wide = wide[[v for v in order if v in wide.columns]].reset_index()
    with atomic_path(out_wide) as tmp:
        wide.to_csv(tmp, index=False)
    return long
