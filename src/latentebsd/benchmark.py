"""Stage ``detection``: do latent maps find what conventional EBSD misses? A fair test.

For every scan with ground truth (the simulated ones) and every microstructure class of
:data:`latentebsd.groundtruth.TRUTH_CLASSES` - boundary masks scored by ROC-AUC, the
continuous dislocation density by Spearman's rho - each *method* (a set of maps) is
scored on pixels it was not tuned on:

- **spatial folds**: the map is cut into a grid of contiguous blocks
  (``benchmark.fold_grid``, 2 x 2 by default); pixels within ``benchmark.guard``
  points of a block edge belong to no fold, so that neither a 3 x 3 gradient nor a
  latent KAM kernel reaches across;
- **single map**: among the method's maps - each as its value or its Sobel gradient
  magnitude, with either sign - the one that scores best on the other folds, scored on
  the held-out fold with the sign chosen on the others;
- **probe**: an L2-regularised logistic regression (ridge regression for the density)
  on all of the method's maps and their gradient magnitudes, standardised on the
  training folds (more than ``benchmark.probe_inputs`` of them are reduced to that many
  principal components of the training folds), fitted there, scored on the held-out
  fold.

The mean and the spread over folds are reported. Methods: every latent cube (model
variants and the PCA / NMF baselines, :mod:`latentebsd.baselines`), the latent KAM /
GROD analogues (:mod:`latentebsd.analogues`), the conventional descriptors
(:func:`latentebsd.io.conventional.conventional_stack`: pq, Krieger Lassen IQ, CI, fit,
KAM, GROD, sharpness, orientation boundary, Sigma3 twin boundary, and orientation itself
as Rodrigues-vector and IPF-colour channels - what an EBSD user would use for twins) and conventional + latent together (does the
latent map *add* to what conventional EBSD already gives?).

Verdicts (:func:`verdict`) compare two methods fold by fold: *beats* when it scores
higher on every fold and by more than 0.01 on average, *loses* the other way round,
*matches* otherwise (4 folds: a sign test). Pixels are sampled (seeded) to at most
``benchmark.max_pixels`` per scan, so a 1M-point scan costs what a small one does.
"""

from __future__ import annotations

import html
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from latentebsd.groundtruth import auc_from_ranks, average_ranks, spearman_from_ranks, truth_targets
from latentebsd.grid import gradient_magnitude
from latentebsd.io.analogues import ANALOGUES, read_analogues
from latentebsd.io.atomic import atomic_path, write_text
from latentebsd.io.conventional import conventional_stack, read_conventional
from latentebsd.io.cube import budget_bytes, check_map_shape, iter_feature_groups
from latentebsd.io.truth import read_truth
from latentebsd.maps import sample_valid_indices
from latentebsd.plotting import method_style, panel_grid, pyplot, save_figure, study_variants

log = logging.getLogger(__name__)

MODES = ("probe", "single")
#: Margin (in score units) a method must win by on average for a "beats" verdict.
VERDICT_MARGIN = 0.01


# --------------------------------------------------------------------------------------
# Folds and pixels
# --------------------------------------------------------------------------------------
def spatial_folds(shape: Sequence[int], grid: Sequence[int] = (2, 2), guard: int = 1) -> np.ndarray:
    """``(R, C)`` fold of every point, 0..k-1 in a grid of contiguous blocks, -1 within
    ``guard`` points of a block edge (those points are never trained or scored on)."""
    rows, cols = int(shape[0]), int(shape[1])
    gr, gc = int(grid[0]), int(grid[1])
    r_edges = np.linspace(0, rows, gr + 1).round().astype(int)
    c_edges = np.linspace(0, cols, gc + 1).round().astype(int)
    r_block = np.searchsorted(r_edges, np.arange(rows), side="right") - 1
    c_block = np.searchsorted(c_edges, np.arange(cols), side="right") - 1
    folds = r_block[:, None] * gc + c_block[None, :]
    if guard > 0:
        rr, cc = np.indices((rows, cols))
        near = np.zeros((rows, cols), bool)
        for e in r_edges[1:-1]:
            near |= np.abs(rr - e + 0.5) < guard
        for e in c_edges[1:-1]:
            near |= np.abs(cc - e + 0.5) < guard
        folds = np.where(near, -1, folds)
    return folds.astype(np.int16)


def sample_pixels(folds: np.ndarray, valid: np.ndarray, max_pixels: int, seed: int) -> np.ndarray:
    """Sorted row-major indices of the scored pixels: valid, in a fold, at most
    ``max_pixels`` (a seeded subset)."""
    return sample_valid_indices(np.asarray(valid, bool) & (folds >= 0), max_pixels, seed)


def fill_invalid(maps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``maps`` ``(g, R, C)`` as float64, each map's missing points (invalid or NaN in
    *that* map: KAM is NaN in a one-point twin, every map at an unindexed point) set to
    the map's own median, so that a gap in one map never blanks the others."""
    x = np.asarray(maps, dtype=np.float64)
    v = np.asarray(valid, bool)[None] & np.isfinite(x)
    med = np.array([np.median(m[mv]) if mv.any() else 0.0 for m, mv in zip(x, v)])
    return np.where(v, x, med[:, None, None])


def _features(maps: np.ndarray, idx: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Value and gradient magnitude of every map at pixels ``idx``: ``(2 g, n)``; missing
    points are filled first (:func:`fill_invalid`, so no NaN spreads into a gradient)."""
    filled = fill_invalid(maps, valid)
    grad = gradient_magnitude(filled)
    return np.concatenate([filled.reshape(len(filled), -1)[:, idx],
                           grad.reshape(len(filled), -1)[:, idx]])


# --------------------------------------------------------------------------------------
# Scores
# --------------------------------------------------------------------------------------
def _scores_from_ranks(ranks: np.ndarray, target: np.ndarray, kind: str) -> np.ndarray:
    """Signed score of every row of ``ranks`` (each row's values as ranks): AUC - 0.5
    (masks) or Spearman's rho (continuous)."""
    if kind == "mask":
        return auc_from_ranks(ranks, target) - 0.5
    return spearman_from_ranks(ranks, average_ranks(target.astype(np.float64)))


def score_of(prediction: np.ndarray, target: np.ndarray, kind: str) -> float:
    """ROC-AUC (masks) or Spearman's rho (continuous) of one prediction."""
    s = _scores_from_ranks(average_ranks(np.asarray(prediction, np.float64)[None]), target, kind)[0]
    return float(s + 0.5) if kind == "mask" else float(s)


def single_map_prediction(train_ranks: np.ndarray, features: np.ndarray, target: np.ndarray,
                          kind: str, train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, int, int]:
    """The best feature row on ``train`` (either sign; ``train_ranks`` = the rows' ranks
    over the training pixels) as the prediction on ``test``: ``(prediction, row, sign)``."""
    s = _scores_from_ranks(train_ranks, target[train], kind)
    row = int(np.argmax(np.abs(s)))
    sign = 1 if s[row] >= 0 else -1
    return sign * features[row, test], row, sign


def single_map(train_ranks: np.ndarray, features: np.ndarray, target: np.ndarray, kind: str,
               train: np.ndarray, test: np.ndarray) -> tuple[float, int, int]:
    """:func:`single_map_prediction` scored on ``test``: ``(score, row, sign)``."""
    prediction, row, sign = single_map_prediction(train_ranks, features, target, kind, train, test)
    return score_of(prediction, target[test], kind), row, sign


def probe_inputs(features: np.ndarray, train: np.ndarray, test: np.ndarray,
                 max_inputs: int) -> tuple[np.ndarray, np.ndarray]:
    """The probe's ``(train, test)`` design matrices: every feature row standardised on
    the training pixels; more than ``max_inputs`` rows are reduced to their
    ``max_inputs`` leading principal components on the training pixels (regularises a
    512-input model fitted on a few thousand pixels, and bounds the cost)."""
    x_train, x_test = features[:, train].T, features[:, test].T
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std[std == 0] = 1.0
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    if x_train.shape[1] > max_inputs:
        _, _, vt = np.linalg.svd(x_train, full_matrices=False)
        basis = vt[:max_inputs].T
        x_train, x_test = x_train @ basis, x_test @ basis
    return x_train, x_test


def probe_prediction(x_train: np.ndarray, x_test: np.ndarray, target: np.ndarray, kind: str,
                     train: np.ndarray, c: float, seed: int) -> np.ndarray:
    """L2 logistic (masks) or ridge (continuous) regression on the design matrices of
    :func:`probe_inputs`, fitted on ``train``: its prediction for ``x_test``."""
    from sklearn.linear_model import LogisticRegression, Ridge  # ~1 s to import: here only

    if kind == "mask":
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=300, tol=1e-4,
                                   random_state=seed)
        model.fit(x_train, target[train])
        return model.decision_function(x_test)
    model = Ridge(alpha=1.0 / c)
    model.fit(x_train, target[train])
    return model.predict(x_test)


def probe(x_train: np.ndarray, x_test: np.ndarray, target: np.ndarray, kind: str,
          train: np.ndarray, test: np.ndarray, c: float, seed: int) -> float:
    """:func:`probe_prediction` scored on ``test``."""
    return score_of(probe_prediction(x_train, x_test, target, kind, train, c, seed),
                    target[test], kind)


def _scoreable(t: np.ndarray, kind: str) -> bool:
    """Whether a target subset can be scored: both classes (masks), some spread."""
    if kind == "mask":
        return 0 < int(t.sum()) < t.size
    return t.size > 2 and np.ptp(t) > 0


# --------------------------------------------------------------------------------------
# Methods
# --------------------------------------------------------------------------------------
def cube_features(cube_path: str | os.PathLike, idx: np.ndarray, valid: np.ndarray,
                  memory_mb: float) -> np.ndarray:
    """``(2 d, n)`` value and gradient rows of every feature of a cube at pixels ``idx``,
    read feature group by feature group."""
    values, grads = [], []
    for _, (group,) in iter_feature_groups(cube_path, budget_bytes(memory_mb, 6.0)):
        f = _features(group, idx, valid)
        values.append(f[:len(group)])
        grads.append(f[len(group):])
    return np.concatenate([*values, *grads])


def method_features(cubes: Mapping[str, str | os.PathLike], analogues: Mapping[str, str | os.PathLike],
                    conventional: Mapping[str, np.ndarray], idx: np.ndarray, valid: np.ndarray,
                    combined: str | None, memory_mb: float) -> Iterator[tuple[str, str, np.ndarray]]:
    """``(method, family, features (2 m, n))`` of every method (module docstring)."""
    conv = _features(conventional_stack(conventional)[1], idx, valid)
    yield "conventional", "conventional", conv
    for name, path in cubes.items():
        a = check_map_shape(path, valid.shape, "the scan")
        f = cube_features(path, idx, valid, memory_mb)
        yield name, "baseline" if "baseline" in a else "latent", f
        if name == combined:  # values, then gradients (what `m = len // 2` reads)
            mc, mf = len(conv) // 2, len(f) // 2
            yield (f"conventional+{name}", "combined",
                   np.concatenate([conv[:mc], f[:mf], conv[mc:], f[mf:]]))
    for name, path in analogues.items():
        a = read_analogues(path)
        yield f"latentKAM/GROD {name}", "analogue", _features(np.stack([a[k] for k in ANALOGUES]), idx, valid)


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------
#: The columns of a scan's detection table (:func:`detection_scan`).
COLUMNS = ("scan", "class", "kind", "metric", "method", "family", "fold", "n_train", "level",
           "n_test", "n_test_positive", "n_train_positive", "strength", "parameter", "value",
           "mode", "chosen", "score")


def detection_scan(truth_path: str | os.PathLike, conventional_path: str | os.PathLike,
                   cubes: Mapping[str, str | os.PathLike], analogues: Mapping[str, str | os.PathLike],
                   settings: Mapping[str, Any], scan: str, combined: str | None = None,
                   memory_mb: float = 512, seed: int = 0) -> pd.DataFrame:
    """Every class x method x mode x fold of one scan (module docstring).

    Returns
    -------
    pandas.DataFrame
        Columns ``scan, class, kind, metric, method, family, fold, n_train, level,
        n_test, n_test_positive, n_train_positive, strength, parameter, value, mode,
        chosen, score``. ``level`` -1: the whole held-out fold; 0, 1, ...: the pixels
        of one graded-strength band of it (graded classes of a graded scan), whose
        ``strength`` factor and physical ``value`` of ``parameter`` are given.
    """
    truth, _, truth_attrs = read_truth(truth_path)
    grading = truth_attrs["grading"]
    graded = grading["classes"] if len(grading["levels"]) > 1 else {}
    conventional, geometry = read_conventional(conventional_path)
    valid = conventional["valid"]
    folds = spatial_folds(geometry.map_shape, settings["fold_grid"], settings["guard"])
    idx = sample_pixels(folds, valid, settings["max_pixels"], seed)
    fold_of = folds.ravel()[idx]
    level_of = truth["strength_level"].ravel()[idx] if graded and "strength_level" in truth \
        else np.full(len(idx), -1)
    targets = {cls: (kind, array.ravel()[idx]) for cls, (_, kind, array) in truth_targets(truth).items()}
    n_folds = int(folds.max()) + 1
    rows = []
    for method, family, features in method_features(cubes, analogues, conventional, idx, valid,
                                                      combined, memory_mb):
        m = len(features) // 2
        for fold in range(n_folds):
            test, train = fold_of == fold, fold_of != fold
            # once per fold, for every class: the ranks and the probe's inputs
            train_ranks = average_ranks(features[:, train])
            x_train, x_test = probe_inputs(features, train, test, settings["probe_inputs"])
            for cls, (kind, target) in targets.items():
                t = target.astype(bool) if kind == "mask" else target.astype(np.float64)
                if not (_scoreable(t[train], kind) and _scoreable(t[test], kind)):
                    continue  # the class is not on both sides of this fold: no score
                common = {"scan": scan, "class": cls, "kind": kind,
                          "metric": "roc_auc" if kind == "mask" else "spearman",
                          "method": method, "family": family, "fold": fold,
                          "n_train": int(train.sum())}
                single, row, sign = single_map_prediction(train_ranks, features, t, kind, train, test)
                rep = f"{'-' if sign < 0 else '+'}{'grad ' if row >= m else ''}map {row % m}"
                predictions = {
                    "single": (single, rep),
                    "probe": (probe_prediction(x_train, x_test, t, kind, train,
                                               settings["probe_c"], seed),
                              f"{x_train.shape[1]} inputs")}
                # the whole held-out fold, then each graded-strength band of it (the
                # model is the one fitted on all bands of the training folds)
                subsets = [(-1, np.ones(int(test.sum()), bool))]
                if cls in graded:
                    subsets += [(lv, level_of[test] == lv) for lv in range(len(grading["levels"]))]
                for level, sub in subsets:
                    ts = t[test][sub]
                    if not _scoreable(ts, kind):
                        continue
                    extra = {"level": level, "n_test": int(sub.sum()),
                             "n_test_positive": int(ts.sum()) if kind == "mask" else np.nan,
                             "n_train_positive": int(t[train].sum()) if kind == "mask" else np.nan,
                             "strength": grading["levels"][level] if level >= 0 else np.nan,
                             "parameter": graded[cls]["parameter"] if level >= 0 else "",
                             "value": graded[cls]["values"][level] if level >= 0 else np.nan}
                    for mode, (prediction, chosen) in predictions.items():
                        rows.append({**common, **extra, "mode": mode, "chosen": chosen,
                                     "score": score_of(prediction[sub], ts, kind)})
        log.info("%s: %s scored (%d inputs)", scan, method, len(features))
    if not rows:
        log.warning("%s: no class is present on both sides of any fold (%d scored pixels): "
                    "nothing to score", scan, len(idx))
    return pd.DataFrame(rows, columns=COLUMNS)


def run_detection_rule(truth: str, conventional: str, cubes: Mapping[str, str],
                       analogues: Mapping[str, str], out_csv: str, settings: Mapping[str, Any],
                       scan: str, combined: str | None, memory_mb: float, seed: int) -> pd.DataFrame:
    """What rule ``detection`` runs for one scan."""
    frame = detection_scan(truth, conventional, cubes, analogues, settings, scan, combined,
                           memory_mb, seed)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False, float_format="%.6g")
    return frame


# --------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------
def whole_folds(frame: pd.DataFrame) -> pd.DataFrame:
    """The rows that score whole held-out folds (not one graded-strength band)."""
    return frame[frame["level"] < 0] if "level" in frame else frame


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, standard deviation and count of the fold scores per scan, class, method, mode
    (whole folds)."""
    frame = whole_folds(frame)
    keys = ["scan", "class", "metric", "method", "family", "mode"]
    g = frame.groupby(keys, sort=False)["score"]
    return g.agg(mean="mean", sd="std", folds="count").reset_index()


def verdict(frame: pd.DataFrame, scan: str, cls: str, a: str, b: str, mode: str = "probe") -> str:
    """``beats`` / ``matches`` / ``loses``: method ``a`` against ``b``, fold by fold."""
    frame = whole_folds(frame)
    sel = frame[(frame["scan"] == scan) & (frame["class"] == cls) & (frame["mode"] == mode)]
    sa = sel[sel["method"] == a].set_index("fold")["score"]
    sb = sel[sel["method"] == b].set_index("fold")["score"]
    common = sa.index.intersection(sb.index)
    if len(common) == 0:
        return "n/a"
    diff = (sa[common] - sb[common]).to_numpy()
    if (diff > 0).all() and diff.mean() > VERDICT_MARGIN:
        return "beats"
    if (diff < 0).all() and diff.mean() < -VERDICT_MARGIN:
        return "loses"
    return "matches"


SELECTED = "latent (fold-selected)"


def fold_selected(frame: pd.DataFrame, candidates: Sequence[str], mode: str = "probe") -> pd.DataFrame:
    """The scores of a method chosen among ``candidates`` without its test pixels: for
    each scan, class and held-out fold ``f``, the candidate with the best mean score over
    the *other* folds, scored on ``f`` (method :data:`SELECTED`, ``chosen`` = its name).

    Picking the best of N methods by their held-out means would choose on the scored
    pixels (a best-of-N optimism); this choice never sees fold ``f``."""
    sel = whole_folds(frame)
    sel = sel[sel["method"].isin(candidates) & (sel["mode"] == mode)]
    out = []
    for (scan, cls), g in sel.groupby(["scan", "class"], sort=False):
        table = g.pivot_table(index="fold", columns="method", values="score", aggfunc="first")
        for fold in table.index:
            others = table.drop(index=fold).mean(axis=0).dropna()
            pick = others.idxmax() if len(others) else None
            if pick is None or not np.isfinite(table.loc[fold, pick]):
                continue
            out.append({"scan": scan, "class": cls, "mode": mode, "fold": fold, "level": -1,
                        "method": SELECTED, "family": "latent", "chosen": pick,
                        "metric": g.iloc[0]["metric"], "score": table.loc[fold, pick]})
    return pd.DataFrame(out, columns=["scan", "class", "mode", "fold", "level", "method",
                                      "family", "chosen", "metric", "score"])


def verdicts(frame: pd.DataFrame, latent: Sequence[str], combined: str | None,
             selected: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per scan and class: the winning method (highest mean probe score), the best latent
    cube (descriptive: chosen on the held-out means), and whether latent maps beat /
    match / lose to conventional EBSD - judged on :func:`fold_selected` latent scores, so
    that the verdict chooses nothing on the pixels it scores; and whether conventional +
    latent beats conventional alone. ``selected``: :func:`fold_selected` of ``frame``
    when the caller has it already."""
    frame = frame[frame["method"] != SELECTED]
    summary = summarize(frame)
    probe_rows = summary[summary["mode"] == "probe"]
    selected = fold_selected(frame, latent) if selected is None else selected
    judged = pd.concat([whole_folds(frame), selected], ignore_index=True)
    out = []
    for (scan, cls), g in probe_rows.groupby(["scan", "class"], sort=False):
        g = g.sort_values("mean", ascending=False)
        lat = g[g["method"].isin(latent)]
        mine = selected[(selected["scan"] == scan) & (selected["class"] == cls)]
        row = {"scan": scan, "class": cls, "metric": g.iloc[0]["metric"],
               "winner": g.iloc[0]["method"], "winner_score": g.iloc[0]["mean"],
               "best_latent": lat.iloc[0]["method"] if len(lat) else None,
               "best_latent_score": lat.iloc[0]["mean"] if len(lat) else np.nan,
               "selected_latent": ", ".join(sorted(set(mine["chosen"]))) or None,
               "selected_latent_score": mine["score"].mean() if len(mine) else np.nan,
               "conventional_score": g[g["method"] == "conventional"]["mean"].max(),
               "latent_vs_conventional": verdict(judged, scan, cls, SELECTED, "conventional")}
        if combined:
            row["combined_vs_conventional"] = verdict(frame, scan, cls,
                                                      f"conventional+{combined}", "conventional")
        out.append(row)
    return pd.DataFrame(out)


TABLE_TITLES = {"probe": "Probe: a linear model of all of a method's maps and their gradients",
                "single": "The best single map (chosen on the training folds)"}
INTRO = ("Scores on held-out spatial folds: ROC-AUC for boundary / region masks (0.5 = chance), "
         "Spearman's rho for the dislocation density; mean ± sd over folds. Nothing is chosen on "
         "the pixels it is scored on.")


def detection_tables(frame: pd.DataFrame, methods: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Per mode: rows (scan, class), columns ``methods``, cells ``mean ± sd``."""
    summary = summarize(frame)
    cell = summary.assign(cell=[f"{m:.2f}" + (f" ± {s:.2f}" if np.isfinite(s) else "")
                                for m, s in zip(summary["mean"], summary["sd"])])
    out = {}
    for mode in MODES:
        table = cell[cell["mode"] == mode].pivot_table(index=["scan", "class"], columns="method",
                                                       values="cell", aggfunc="first", sort=False)
        out[mode] = table.reindex(columns=[m for m in methods if m in table.columns]).fillna("")
    return out


_AGAINST = {"beats": "beats", "matches": "matches", "loses": "loses to", "n/a": "cannot be compared with"}


def verdict_sentences(verdict_table: pd.DataFrame) -> list[str]:
    """One sentence per scan and class: what won, and latent against conventional."""
    lines = []
    for _, r in verdict_table.iterrows():
        text = (f"{r['scan']} / {r['class']}: best method {r['winner']} ({r['winner_score']:.2f}); "
                f"latent maps ({r['selected_latent']}, chosen on the other folds: "
                f"{r['selected_latent_score']:.2f}; the best latent variant in hindsight "
                f"{r['best_latent']}, {r['best_latent_score']:.2f}) "
                f"{_AGAINST[r['latent_vs_conventional']]} conventional EBSD "
                f"({r['conventional_score']:.2f})")
        if isinstance(r.get("combined_vs_conventional"), str):
            text += (f"; conventional + latent {_AGAINST[r['combined_vs_conventional']]} "
                     "conventional alone")
        lines.append(text + ".")
    return lines


def detection_markdown(tables: Mapping[str, pd.DataFrame], sentences: Sequence[str]) -> str:
    """The two tables and the verdicts as Markdown."""
    lines = ["# Detection benchmark: which maps find the simulated heterogeneity?", "", INTRO, ""]
    for mode in ("probe", "single"):
        t = tables[mode]
        if t.empty:
            lines += [f"## {TABLE_TITLES[mode]}", "", "No class was present on both sides of a "
                      "fold: nothing was scored (a larger map, or `benchmark.guard: 0`).", ""]
            continue
        lines += [f"## {TABLE_TITLES[mode]}", "", "| scan | class | " + " | ".join(t.columns) + " |",
                  "|---|---|" + "---|" * len(t.columns)]
        lines += [f"| {scan} | {cls} | " + " | ".join(row) + " |" for (scan, cls), row in t.iterrows()]
        lines.append("")
    lines += [f"## Verdicts (probe; beats / loses = higher / lower on every fold, by more than "
              f"{VERDICT_MARGIN} on average)", "", *[f"- {s}" for s in sentences]]
    return "\n".join(lines) + "\n"


def detection_html(tables: Mapping[str, pd.DataFrame], sentences: Sequence[str]) -> str:
    """The same as a self-contained HTML page (for the Snakemake report)."""
    body = [f"<h3>Detection benchmark</h3><p>{html.escape(INTRO)}</p>"]
    for mode in ("probe", "single"):
        body.append(f"<h4>{html.escape(TABLE_TITLES[mode])}</h4>" + tables[mode].to_html(escape=True))
    body.append("<h4>Verdicts</h4><ul>" + "".join(f"<li>{html.escape(s)}</li>" for s in sentences)
                + "</ul>")
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Detection benchmark</title>"
            "<style>body{font-family:sans-serif;font-size:12px}table{border-collapse:collapse}"
            "td,th{border:1px solid #bbb;padding:2px 6px;text-align:center}</style></head><body>"
            + "".join(body) + "</body></html>\n")


#: Bar hatch per method family in the detection figure (colours: per method).
FAMILY_HATCH = {"conventional": "", "latent": "", "baseline": "//", "analogue": "..",
                "combined": "xx"}


def plot_detection(frame: pd.DataFrame, path: str | os.PathLike, dpi: int = 120) -> None:
    """Probe scores (mean, fold spread as error bars) per scan and class, one bar per method."""
    summary = summarize(frame)
    probe_rows = summary[summary["mode"] == "probe"]
    keys = list(dict.fromkeys(zip(probe_rows["scan"], probe_rows["class"])))
    methods = list(dict.fromkeys(probe_rows["method"]))
    order = frame.drop_duplicates("method")
    variants = study_variants(list(order["method"]), list(order["family"]))
    plt = pyplot()
    fig, axes = panel_grid(len(keys), 4, 3.4, 2.6)
    for ax, (scan, cls) in zip(axes, keys):
        g = probe_rows[(probe_rows["scan"] == scan) & (probe_rows["class"] == cls)].set_index("method")
        g = g.reindex([m for m in methods if m in g.index])
        # each bar in its method's colour of every figure (method_style); the
        # family shows as the hatch: none latent, // baseline, .. analogue, xx combined
        styles = [method_style(m, variants, f) for m, f in zip(g.index, g["family"])]
        bars = ax.bar(range(len(g)), g["mean"], yerr=g["sd"].fillna(0),
                      color=[st["color"] for st in styles], capsize=2, edgecolor="0.2", lw=0.4)
        for bar, fam in zip(bars, g["family"]):
            bar.set_hatch(FAMILY_HATCH.get(fam, ""))
        chance = 0.5 if g["metric"].iloc[0] == "roc_auc" else 0.0
        ax.axhline(chance, color="k", lw=0.6, ls=":")
        ax.set_xticks(range(len(g)), g.index, rotation=75, fontsize=5)
        ax.set_title(f"{scan}: {cls}", fontsize=8)
        ax.set_ylabel(g["metric"].iloc[0], fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor="white", edgecolor="0.2", hatch=h)
               for h in FAMILY_HATCH.values()]
    fig.legend(handles, list(FAMILY_HATCH), loc="upper center", ncol=len(FAMILY_HATCH), fontsize=7,
               frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    save_figure(fig, path, dpi)


def run_summary_rule(csvs: Sequence[str], out_csv: str, out_md: str, out_html: str, out_png: str,
                     latent: Sequence[str], combined: str | None) -> pd.DataFrame:
    """What rule ``detection_summary`` runs: every scan's table -> CSV, Markdown, HTML,
    figure."""
    frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    selected = fold_selected(frame, latent)
    verdict_table = verdicts(frame, latent, combined, selected)
    frame = pd.concat([frame, selected], ignore_index=True)  # a column of the tables too
    methods = list(dict.fromkeys(frame["method"]))
    with atomic_path(out_csv) as tmp:
        summarize(frame).merge(whole_folds(frame), on=["scan", "class", "metric", "method", "family", "mode"]) \
            .to_csv(tmp, index=False, float_format="%.6g")
    tables = detection_tables(frame, methods)
    sentences = verdict_sentences(verdict_table)
    md = detection_markdown(tables, sentences)
    write_text(out_md, md)
    write_text(out_html, detection_html(tables, sentences))
    plot_detection(frame, out_png)
    log.info("\n%s", md)
    return verdict_table


# --------------------------------------------------------------------------------------
# Seed replicates
# --------------------------------------------------------------------------------------
def seed_detection_verdicts(frame: pd.DataFrame,
                            seed_groups: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """Latent against conventional EBSD per scan and class, once per seed (the seed's
    models of the replicated variants, fold-selected among themselves:
    :func:`fold_selected`), and combined (:func:`latentebsd.replicates.combine_verdicts`:
    ``beats`` only if every seed beats).

    Returns one row per scan and class: ``scan``, ``class``, ``metric``, ``verdict``,
    ``agreed``, ``n_seeds``, ``conventional_score``, and per seed ``seed<k>_verdict``,
    ``seed<k>_score`` (mean fold-selected latent score) and ``seed<k>_chosen``."""
    from latentebsd.replicates import agreed, combine_verdicts

    frame = whole_folds(frame[frame["method"] != SELECTED])
    conv = summarize(frame)
    conv = conv[(conv["method"] == "conventional") & (conv["mode"] == "probe")]
    per_seed: dict[int, pd.DataFrame] = {}
    for k, group in sorted(seed_groups.items(), key=lambda kv: int(kv[0])):
        models = [m for m in group.values() if m in set(frame["method"])]
        if models:
            per_seed[int(k)] = fold_selected(frame, models)
    out = []
    keys = frame[frame["mode"] == "probe"][["scan", "class", "metric"]].drop_duplicates()
    for scan, cls, metric in keys.itertuples(index=False):
        row: dict[str, Any] = {"scan": scan, "class": cls, "metric": metric}
        verdict_by_seed = {}
        for k, sel in per_seed.items():
            mine = sel[(sel["scan"] == scan) & (sel["class"] == cls)]
            judged = pd.concat([frame, mine], ignore_index=True)
            v = verdict(judged, scan, cls, SELECTED, "conventional") if len(mine) else "n/a"
            row[f"seed{k}_verdict"] = v
            row[f"seed{k}_score"] = mine["score"].mean() if len(mine) else np.nan
            row[f"seed{k}_chosen"] = ", ".join(sorted(set(mine["chosen"])))
            if v != "n/a":
                verdict_by_seed[k] = v
        c = conv[(conv["scan"] == scan) & (conv["class"] == cls)]["mean"]
        combined = combine_verdicts(verdict_by_seed)
        row.update(verdict=combined, agreed=agreed(combined), n_seeds=len(verdict_by_seed),
                   conventional_score=float(c.iloc[0]) if len(c) else np.nan)
        out.append(row)
    head = ["scan", "class", "metric", "verdict", "agreed", "n_seeds", "conventional_score"]
    table = pd.DataFrame(out)
    return table[[*head, *[c for c in table.columns if c not in head]]] if len(table) else \
        pd.DataFrame(columns=head)


def run_seeds_rule(csvs: Sequence[str], out_csv: str,
                   seed_groups: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """What rule ``detection_seeds`` runs: :func:`seed_detection_verdicts` of every
    scan's detection table."""
    frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    table = seed_detection_verdicts(frame, seed_groups)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    log.info("Latent vs conventional over seeds:\n%s",
             table[["scan", "class", "verdict"]].to_string(index=False) if len(table) else "(none)")
    return table
