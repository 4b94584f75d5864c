"""Figures beside the maps and Table 1: the paper's Figs 5/6 (latent maps beside IQ,
GROD, KAM and sharpness), 8 (reconstructions vs d), 9 (the cell map per d), 10 (best /
worst / random reconstructions vs beta) and 11 (orientation and IQ maps of decoded
patterns); one rule each (``latent_panels``, ``fig_dimensionality``, ``fig_cells``,
``fig_beta``, ``decoded_maps``).
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from latentebsd import config
from latentebsd.config import child_seed
from latentebsd.conventional import conventional_panels
from latentebsd.geometry import ScanGeometry
from latentebsd.grid import gradient_magnitude
from latentebsd.io.atomic import atomic_path
from latentebsd.io.conventional import read_conventional
from latentebsd.io.cube import (budget_bytes, cube_attrs, iter_latent_blocks, read_features,
                                read_latents_at, read_valid)
from latentebsd.io.index import is_indexed, read_index
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.maps import sample_valid_indices
from latentebsd.orientations import ipf_colors
from latentebsd.phases import laue_groups, phases_of
from latentebsd.plotting import (add_ipf_key, colormap,
                                 panel_grid, panel_size, pyplot, robust_limits, save_figure,
                                 show_map)
from latentebsd.variants import loss_label

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------
# Figs 5/6: latent maps beside the conventional ones
# --------------------------------------------------------------------------------------
def latent_variance(latent_path: str | os.PathLike, valid: np.ndarray | None = None,
                    chunk_size: int = 4096) -> np.ndarray:
    """Variance over the map of every latent feature, ``(d,)``, streamed by row blocks.

    ``valid`` (``(n_rows, n_cols)`` bool) restricts it to valid points.
    """
    attrs = cube_attrs(latent_path)
    d, n_rows, n_cols = attrs["latent_dim"], attrs["n_rows"], attrs["n_cols"]
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
    d = int(cube_attrs(latent_path)["latent_dim"])
    n = min(int(n), d)
    if ranking_csv is not None and Path(ranking_csv).is_file():
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
    plt = pyplot()
    region = _region(settings, geometry.map_shape)
    origin = (region[0].start, region[1].start)
    latents = [np.asarray(z[region], dtype=np.float64) for z in read_features(latent_path, features)]
    valid = maps["valid"][region]
    panels = [(np.where(valid, z, np.nan), f"latent feature {f}", "gray", None, "latent mean")
              for f, z in zip(features, latents)]
    panels += conventional_panels(maps, settings, region)
    sub_shape = (region[0].stop - region[0].start, region[1].stop - region[1].start)
    w, h = panel_size(sub_shape)
    fig, axes = plt.subplots(1, len(panels), figsize=((w + 0.6) * len(panels), h + 0.8))
    for ax, (data, name, cmap, limits, label) in zip(np.atleast_1d(axes), panels):
        show_map(ax, data, geometry.step_um, name, cmap, limits, label, origin)
    fig.suptitle(f"{title}\nlatent features: {rule}", fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, int(settings["dpi"]), tight=True)


def run_latent_panel_rule(latent_path: str, conventional_path: str, out_png: str,
                          settings: Mapping[str, Any] | None, scan: str, variant: str,
                          ranking_csv: str | None = None) -> list[int]:
    """What rule ``latent_panels`` runs: one scan's Fig 5/6-style panel."""
    cfg = config.section("evaluation") if settings is None else settings
    maps, geometry = read_conventional(conventional_path)
    features, rule = choose_latent_features(latent_path, cfg["panel_features"], ranking_csv,
                                            maps["valid"])
    log.info("%s / %s: showing latent features %s (%s)", scan, variant, features, rule)
    plot_latent_comparison(latent_path, maps, geometry, features, rule, out_png,
                           f"{scan}: {variant} latent maps vs conventional EBSD", cfg)
    return features


# --------------------------------------------------------------------------------------
# Figs 8-10: reconstructions and the cell maps
# --------------------------------------------------------------------------------------
def _masked_l2(recon: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-pattern sum of squared differences on the screen (as the training loss)."""
    diff = np.where(mask, recon.astype(np.float64) - target.astype(np.float64), 0.0)
    return (diff**2).sum(axis=(1, 2))


def _read_patterns(preprocessed: str | os.PathLike, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patterns at sorted ``indices``, the screen mask and the ``(n_rows, n_cols)`` valid map."""
    with PreprocessedScan(preprocessed) as scan:
        return scan.read_at(indices), scan.mask, scan.valid.reshape(scan.geometry.map_shape)


def _reconstruct(weights: str | os.PathLike, cube: str | os.PathLike, indices: np.ndarray,
                 mask: np.ndarray, max_bytes: int) -> np.ndarray:
    """Decoded latent means of the patterns at ``indices`` (zero off the screen)."""
    # torch costs 1-2 s to import: only Figs 8 and 10 decode
    from latentebsd.io.weights import load_model
    from latentebsd.models import decode_latents

    _, decoder, _ = load_model(weights)
    z = read_latents_at(cube, indices, max_bytes)
    return np.where(mask, decode_latents(decoder, z, batch_size=256), 0.0).astype(np.float32)


def _show_pattern(ax: Any, image: np.ndarray, mask: np.ndarray, title: str, vmin: float, vmax: float,
                  cmap: str = "gray") -> Any:
    im = ax.imshow(np.ma.array(image, mask=~mask), cmap=colormap(cmap), vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def figure_dimensionality(preprocessed: str | os.PathLike, cubes: Mapping[str, str | os.PathLike],
                          weights: Mapping[str, str | os.PathLike], specs: Mapping[str, Mapping[str, Any]],
                          out_png: str | os.PathLike, out_csv: str | os.PathLike, scan: str = "",
                          settings: Mapping[str, Any] | None = None, seed: int = 0) -> pd.DataFrame:
    """Fig. 8: one pattern reconstructed by every VAE d, differences to the input and
    between successive d.

    The pattern is ``maps.figure_pattern`` if set, else the one with the median masked
    L2 under the largest-d VAE among a seeded subset of ``maps.figure_sample_size``
    valid patterns. Row A: reconstruction - input; row B: input and reconstructions;
    row C: reconstruction(d_i+1) - reconstruction(d_i). Rows A and C each share one
    symmetric colour scale.
    """
    cfg = config.section("maps") if settings is None else settings
    latent_dims = {v: int(specs[v]["latent_dim"]) for v in cubes}
    names = sorted(cubes, key=lambda v: latent_dims[v])
    if not names:
        raise ValueError("Fig. 8 needs at least one VAE variant")
    _, mask, valid = _read_patterns(preprocessed, np.zeros(0, np.int64))
    budget = budget_bytes(cfg["memory_mb"])
    if cfg["figure_pattern"] is not None:
        index = int(cfg["figure_pattern"])
        if not 0 <= index < valid.size:
            raise ValueError(f"config key maps.figure_pattern: {index} outside 0..{valid.size - 1} "
                             f"for scan {scan}")
        how = "maps.figure_pattern"
    else:
        sample = sample_valid_indices(valid, cfg["figure_sample_size"], child_seed(seed, "fig8", scan))
        ref = names[-1]
        pats, _, _ = _read_patterns(preprocessed, sample)
        l2 = _masked_l2(_reconstruct(weights[ref], cubes[ref], sample, mask, budget), pats, mask)
        index = int(sample[np.argsort(l2, kind="stable")[len(l2) // 2]])
        how = f"median L2 of {ref} over {len(sample)} patterns"
    (pattern,), _, _ = _read_patterns(preprocessed, np.array([index]))
    recons = {v: _reconstruct(weights[v], cubes[v], np.array([index]), mask, budget)[0] for v in names}
    l2s = {v: float(_masked_l2(recons[v][None], pattern[None], mask)[0]) for v in names}
    row, col = divmod(index, valid.shape[1])

    plt = pyplot()
    n = len(names)
    fig, axes = plt.subplots(3, n + 1, figsize=(2.1 * (n + 1), 6.9), squeeze=False, constrained_layout=True)
    diffs = [recons[v] - pattern for v in names]
    succ = [recons[b] - recons[a] for a, b in zip(names[:-1], names[1:])]
    lim_a = max(float(np.abs(np.where(mask, x, 0)).max()) for x in diffs) or 1.0
    lim_c = max([float(np.abs(np.where(mask, x, 0)).max()) for x in succ] or [1.0]) or 1.0
    for ax in axes.flat:
        ax.set_axis_off()
    axes[1, 0].set_axis_on()
    _show_pattern(axes[1, 0], pattern, mask, f"input #{index}\n(row {row}, col {col})", -1, 1)
    for k, v in enumerate(names, start=1):
        for r in (0, 1):
            axes[r, k].set_axis_on()
        im_a = _show_pattern(axes[0, k], diffs[k - 1], mask, f"A.{k} d={latent_dims[v]}: recon - input",
                             -lim_a, lim_a, "RdBu_r")
        _show_pattern(axes[1, k], recons[v], mask, f"B.{k} d={latent_dims[v]}, L2 {l2s[v]:.1f}", -1, 1)
    for k, (a, b) in enumerate(zip(names[:-1], names[1:]), start=1):
        axes[2, k].set_axis_on()
        im_c = _show_pattern(axes[2, k], succ[k - 1], mask,
                             f"C.{k} d={latent_dims[b]} - d={latent_dims[a]}", -lim_c, lim_c, "RdBu_r")
    fig.colorbar(im_a, ax=axes[0, :].tolist(), shrink=0.8, label="difference")
    if succ:
        fig.colorbar(im_c, ax=axes[2, :].tolist(), shrink=0.8, label="difference")
    fig.suptitle(f"Fig. 8 · {scan}: reconstruction vs latent dimension\n(pattern chosen by {how})",
                 fontsize=9)
    save_figure(fig, out_png)
    table = pd.DataFrame({"scan": scan, "variant": names, "latent_dim": [latent_dims[v] for v in names],
                          "pattern_index": index, "row": row, "col": col,
                          "masked_l2": [l2s[v] for v in names], "selected_by": how})
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def figure_beta(preprocessed: str | os.PathLike, cubes: Mapping[str, str | os.PathLike],
                weights: Mapping[str, str | os.PathLike], variants: Mapping[str, Mapping[str, Any]],
                out_png: str | os.PathLike, out_csv: str | os.PathLike, scan: str = "",
                settings: Mapping[str, Any] | None = None, seed: int = 0) -> pd.DataFrame:
    """Fig. 10: best and worst reconstructions (masked L2) and patterns decoded from
    random N(0, I) latents, one row per variant (``maps.beta_variants`` order).

    Best / worst are taken over a seeded subset of ``maps.figure_sample_size`` valid
    patterns (all when null); the random latents are seeded per variant from
    ``seed`` and ``d``, so variants of equal d decode the same draws.
    """
    # torch costs 1-2 s to import: only Figs 8 and 10 decode
    from latentebsd.io.weights import load_model
    from latentebsd.models import decode_latents

    cfg = config.section("maps") if settings is None else settings
    names = [v for v in cfg["beta_variants"] if v in cubes]
    if not names:
        raise ValueError("Fig. 10 needs at least one of maps.beta_variants among the model variants")
    _, mask, valid = _read_patterns(preprocessed, np.zeros(0, np.int64))
    sample = sample_valid_indices(valid, cfg["figure_sample_size"], child_seed(seed, "fig10", scan))
    pats, _, _ = _read_patterns(preprocessed, sample)
    n_cols = valid.shape[1]
    budget = budget_bytes(cfg["memory_mb"])
    n_rand = cfg["n_random"]
    plt = pyplot()
    fig, axes = plt.subplots(len(names), 4 + n_rand, figsize=(1.9 * (4 + n_rand), 2.2 * len(names) + 0.6),
                             squeeze=False, constrained_layout=True)
    rows = []
    for r, v in enumerate(names):
        spec = variants.get(v, {})
        beta = float(spec.get("beta", 1.0))
        recon = _reconstruct(weights[v], cubes[v], sample, mask, budget)
        l2 = _masked_l2(recon, pats, mask)
        order = np.argsort(l2, kind="stable")
        best, worst = int(order[0]), int(order[-1])
        _, decoder, meta = load_model(weights[v])
        d = int(meta.get("latent_dim", decoder.latent_dim))
        z = np.random.default_rng(child_seed(seed, "fig10-random", str(d))).standard_normal((n_rand, d))
        rand = np.where(mask, decode_latents(decoder, z.astype(np.float32)), 0.0) if n_rand else []
        label = f"{v} (β={beta:g}, d={d})"
        panels = [(pats[best], f"best: input #{int(sample[best])}"),
                  (recon[best], f"best: recon, L2 {l2[best]:.1f}"),
                  (pats[worst], f"worst: input #{int(sample[worst])}"),
                  (recon[worst], f"worst: recon, L2 {l2[worst]:.1f}")]
        panels += [(rand[i], f"z ~ N(0, I) #{i + 1}") for i in range(n_rand)]
        for k, (image, title) in enumerate(panels):
            _show_pattern(axes[r, k], image, mask, title, -1, 1)
        axes[r, 0].set_ylabel(label, fontsize=8)
        for kind, i in (("best", best), ("worst", worst)):
            row_i, col_i = divmod(int(sample[i]), n_cols)
            rows.append({"scan": scan, "variant": v, "beta": beta, "latent_dim": d, "kind": kind,
                         "pattern_index": int(sample[i]), "row": row_i, "col": col_i,
                         "masked_l2": float(l2[i]), "median_l2": float(np.median(l2)),
                         "n_sample": len(sample)})
    fig.suptitle(f"Fig. 10 · {scan}: best / worst reconstructions (masked L2 over {len(sample)} "
                 f"patterns)\nand patterns decoded from random N(0, I) latents", fontsize=9)
    save_figure(fig, out_png)
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def select_cell_features(rankings: Mapping[str, str | os.PathLike],
                         truth_matches: Mapping[str, str | os.PathLike] | None = None
                         ) -> pd.DataFrame:
    """Fig. 9's choice per variant: the best ground-truth match to the dislocation-cell
    walls when the truth has cells, else the top spatial-structure rank.

    Returns
    -------
    DataFrame
        ``variant, feature, representation, selected_by, score``.
    """
    rows = []
    for v, ranking_csv in rankings.items():
        row = None
        if truth_matches and v in truth_matches:
            table = pd.read_csv(truth_matches[v])
            hit = table[(table["class"] == "dislocation_cells") & table["present"].astype(bool)]
            if len(hit):
                h = hit.iloc[0]
                row = {"variant": v, "feature": int(h["best_feature"]), "representation": h["representation"],
                       "selected_by": "ground truth: ROC-AUC vs cell_wall_mask", "score": float(h["score"])}
        if row is None:
            top = pd.read_csv(ranking_csv).iloc[0]
            row = {"variant": v, "feature": int(top["feature"]), "representation": "value",
                   "selected_by": "top spatial-structure rank", "score": float(top["score"])}
        rows.append(row)
    return pd.DataFrame(rows)


#: Cell-wall ROC-AUC from which a map counts as showing the dislocation cells in Fig. 9's
#: title: the detection benchmark's default threshold (``benchmark.detection_threshold``);
#: 0.5 is chance, and 0.53 - 0.56 is a map that happens to lean the walls' way.
CELLS_DETECTED_AUC = 0.8
#: Conventional descriptors Fig. 9 compares with (map key -> label).
CELL_DESCRIPTORS = {"kam_deg": "KAM", "sharpness": "sharpness", "grod_deg": "GROD", "iq_pq": "IQ (pq)"}


def conventional_cell_scores(conventional_path: str | os.PathLike,
                             truth_path: str | os.PathLike) -> dict[str, float]:
    """Cell-wall ROC-AUC of each conventional descriptor (:data:`CELL_DESCRIPTORS`),
    scored exactly as the latent maps are (:func:`latentebsd.groundtruth.match_scores`:
    the better of value and gradient magnitude); empty when the truth has no cells."""
    from latentebsd.groundtruth import match_scores, truth_targets
    from latentebsd.io.truth import read_truth

    maps, _ = read_conventional(conventional_path)
    truth = read_truth(truth_path)[0]
    targets = {k: v for k, v in truth_targets(truth).items() if k == "dislocation_cells"}
    out: dict[str, float] = {}
    for key, label in CELL_DESCRIPTORS.items() if targets else ():
        image = np.asarray(maps[key], np.float64)
        valid = np.isfinite(image) & np.asarray(maps["valid"], bool).reshape(image.shape) \
            if "valid" in maps and np.asarray(maps["valid"]).any() else np.isfinite(image)
        if valid.sum() < 2:  # a map without values (e.g. no grains) says nothing
            continue
        # each map on its own points: one map's gaps must not drop the others' points
        scores = match_scores(np.where(valid, image, 0.0)[None], targets, valid)
        if "dislocation_cells" in scores:
            s = scores["dislocation_cells"]
            out[label] = float(max(s["value"][0], s["gradient"][0]))
    return out


def cells_title(choice: pd.DataFrame, conventional: Mapping[str, float] | None = None,
                detected_auc: float = CELLS_DETECTED_AUC) -> str:
    """Fig. 9's verdict, stated from the numbers.

    With ground truth (``selected_by`` starts ``ground truth``): whether any latent
    map reaches ``detected_auc`` against the cell walls, its best AUC and the best
    conventional descriptor's beside it. Without (a real scan): the maps are the
    highest-ranked by spatial structure, and whether they show cells is not known.
    """
    truth = choice["selected_by"].str.startswith("ground truth")
    if not truth.any():
        return ("highest-ranked latent map (spatial structure) per d - no ground truth: "
                "whether it shows the dislocation cells is not measured")
    best = choice[truth].sort_values("score", ascending=False).iloc[0]
    conv = ""
    if conventional:
        name, value = max(conventional.items(), key=lambda kv: kv[1])
        conv = f", conventional {name} {value:.2f}"
    numbers = f"best cell-wall ROC-AUC {best['score']:.2f} (chance 0.50{conv})"
    if best["score"] >= detected_auc:
        return f"latent maps that detect the dislocation cells, per d: {numbers}"
    return (f"no latent map detects the dislocation cells ({numbers}, detected from "
            f"{detected_auc:.2f}); shown: each d's closest map")


def figure_cells(cubes: Mapping[str, str | os.PathLike], rankings: Mapping[str, str | os.PathLike],
                 specs: Mapping[str, Mapping[str, Any]], out_png: str | os.PathLike, out_csv: str | os.PathLike,
                 truth_matches: Mapping[str, str | os.PathLike] | None = None, scan: str = "",
                 settings: Mapping[str, Any] | None = None,
                 conventional: Mapping[str, float] | None = None,
                 detected_auc: float = CELLS_DETECTED_AUC) -> pd.DataFrame:
    """Fig. 9: for each VAE d, the latent map closest to the dislocation cells (see
    :func:`select_cell_features`), in a grid, each with its colour bar and a scale bar;
    the title states the verdict from the numbers (:func:`cells_title`).

    ``conventional``: descriptor -> cell-wall ROC-AUC (:func:`conventional_cell_scores`)
    for the comparison in the title; ``detected_auc``: the AUC from which a map counts
    as detecting the cells.
    """
    cfg = config.section("maps") if settings is None else settings
    latent_dims = {v: int(specs[v]["latent_dim"]) for v in cubes}
    names = sorted(cubes, key=lambda v: latent_dims[v])
    choice = select_cell_features({v: rankings[v] for v in names}, truth_matches).set_index("variant")
    n = len(names)
    valid = read_valid(cubes[names[0]])
    r, c = valid.shape
    pw, ph = panel_size((r, c), 3.0)
    fig, axes = panel_grid(n, 3, pw + 0.6, ph + 0.6, 0.7)
    lo_p, hi_p = cfg["percentiles"]
    for k, v in enumerate(names):
        ch = choice.loc[v]
        image = read_features(cubes[v], [int(ch["feature"])])
        if ch["representation"] == "gradient":
            image = gradient_magnitude(image)
        image = image[0]
        step = cube_attrs(cubes[v])["step_um"]
        lo, hi = np.percentile(image[valid], [lo_p, hi_p])
        what = " |grad|" if ch["representation"] == "gradient" else ""
        if ch["selected_by"].startswith("ground truth"):
            how = f"cell-wall ROC-AUC {ch['score']:.2f}"
        else:
            how = f"spatial-structure rank 1 (score {ch['score']:.3f})"
        show_map(axes[k], np.where(valid, image, np.nan), step,
                 f"{chr(65 + k)}: d={latent_dims[v]}, feature {int(ch['feature'])}{what}\n{how}",
                 "viridis", (lo, max(hi, lo + 1e-12)), "latent value" + what)
    title = cells_title(choice, conventional, detected_auc)
    # wrapped to the figure's width (~11 characters per inch at 9 pt): never clipped
    width = int(fig.get_size_inches()[0] * 11)
    fig.suptitle(textwrap.fill(f"Fig. 9 · {scan}: {title}", width), fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, tight=True)
    table = choice.reset_index()
    table.insert(0, "scan", scan)
    table.insert(2, "latent_dim", [latent_dims[v] for v in table["variant"]])
    table["title"] = title
    for name, value in (conventional or {}).items():
        table[f"conventional {name} roc_auc"] = value
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


# --------------------------------------------------------------------------------------
# Fig 11: orientation and IQ maps from decoded patterns
# --------------------------------------------------------------------------------------
def plot_decoded_maps(index_paths: Mapping[str, str], labels: Mapping[str, str],
                      path: str | os.PathLike, title: str, settings: Mapping[str, Any],
                      max_cols: int = 3) -> None:
    """Fig 11: the IPF map of every source above its IQ map, the original first, in a
    grid of at most ``max_cols`` sources per row (one row of 9 sources made a strip
    4,000 px wide with titles running into each other).

    The IQ maps share one colour scale, 0 to the original's 99th percentile of ``pq``
    (one colour bar on the right), so a variant that loses band contrast looks darker
    without saturating to black; the IPF colour
    key sits top right. Each map has a micrometre scale bar.
    """
    plt = pyplot()
    names = list(index_paths)
    data = {}
    geometry = None
    phases = None
    for name in names:
        arrays, geometry, attrs = read_index(index_paths[name])
        phases = phases if phases is not None else phases_of(attrs)  # the original's
        ok = is_indexed(arrays, settings["min_nmatch"]) & arrays["valid"].astype(bool)
        data[name] = (ipf_colors(arrays["quat"], ok, settings["ipf_direction"], arrays["phase"],
                                 laue_groups(phases)),
                      np.where(arrays["valid"], arrays["pq"], np.nan), ok)
    assert geometry is not None
    shape = geometry.map_shape
    # from 0 to the original's 99th percentile: on the original's own 1-99 % range every
    # decoded map (pq 0.7 - 0.9 of the original's) was black, and their differences lost
    limits = (0.0, max(robust_limits(data[names[0]][1])[1], 1e-6))
    ncols = min(max_cols, len(names))
    nrows = -(-len(names) // ncols)
    w, h = panel_size(shape, 2.6)
    fig_w = w * ncols + 1.6  # + the IPF key and the IQ colour bar on the right
    fig, axes = plt.subplots(2 * nrows, ncols, figsize=(fig_w, 2 * nrows * (h + 0.45) + 0.6),
                             squeeze=False)
    iq_image = None
    for k, name in enumerate(names):
        i, j = divmod(k, ncols)
        rgb, iq, ok = data[name]
        show_map(axes[2 * i, j], rgb.reshape(*shape, 3), geometry.step_um,
                 f"{labels.get(name, name)}: {100 * ok.mean():.1f} % indexed")
        iq_image = show_map(axes[2 * i + 1, j], iq.reshape(shape), geometry.step_um, "IQ (pq)",
                            "gray", limits, colorbar=False)
    for k in range(len(names), nrows * ncols):
        i, j = divmod(k, ncols)
        axes[2 * i, j].set_axis_off()
        axes[2 * i + 1, j].set_axis_off()
    right = 1 - 1.5 / fig_w
    fig.suptitle(textwrap.fill(title, int(fig_w * 11)), fontsize=9)
    fig.tight_layout(rect=(0, 0, right, 1))
    bottom = axes[1, 0].get_position()  # the first IQ map: the colour bar beside its row
    cax = fig.add_axes([right + 0.25 / fig_w, bottom.y0, 0.12 / fig_w, bottom.height])
    cb = fig.colorbar(iq_image, cax=cax)
    cb.set_label("IQ (PyEBSDIndex pq)", fontsize=7)
    cb.ax.tick_params(labelsize=6)
    add_ipf_key(fig, axes[0, ncols - 1], settings["ipf_direction"], phases)
    save_figure(fig, path, int(settings["dpi"]), tight=True)


def run_fig11_rule(index_paths: Mapping[str, str], variants: Mapping[str, Mapping[str, Any]],
                   out_png: str, settings: Mapping[str, Any] | None, scan: str) -> None:
    """What rule ``decoded_maps`` runs: Fig 11 for one scan (``index_paths``: source name ->
    index file, ``original`` first)."""
    cfg = config.section("evaluation") if settings is None else settings
    labels = {"original": "Preprocessed"}
    for name, var in variants.items():
        labels[name] = f"{loss_label(var)} d={int(var['latent_dim'])}"
    plot_decoded_maps(index_paths, labels, out_png,
                      f"{scan}: orientation (IPF-{cfg['ipf_direction'].upper()}) and IQ maps "
                      "from decoded patterns", cfg)
