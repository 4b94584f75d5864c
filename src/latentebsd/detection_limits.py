"""Stage ``detection_limits``: from which strength does each method detect each class?

The simulated scans may carry their heterogeneity at graded strengths, in bands across
the map (:func:`latentebsd.simulate.grading_levels`); the detection benchmark
(:mod:`latentebsd.benchmark`) scores every method on each band's held-out pixels as well
as on whole folds. Here those band scores become curves - score against the class's
physical strength parameter, one line per method - and a detection limit per class and
method: the lowest strength from which every stronger band scores at least
``benchmark.detection_threshold`` (0.8 by default; ROC-AUC, Spearman's rho for the
dislocation density).
"""

from __future__ import annotations

import logging
import textwrap
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from latentebsd.io.atomic import atomic_path, write_text
from latentebsd.plotting import (log_axis_ticks, method_style, panel_grid, save_figure,
                                 study_variants)

log = logging.getLogger(__name__)

def limit_curves(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean / sd / count over folds of every graded-strength band's scores: one curve per
    scan, class, method and mode."""
    banded = frame[frame["level"] >= 0] if "level" in frame else frame.iloc[:0]
    keys = ["scan", "class", "metric", "parameter", "method", "family", "mode", "level",
            "strength", "value"]
    g = banded.groupby(keys, sort=False)["score"]
    return g.agg(mean="mean", sd="std", folds="count").reset_index().sort_values(
        ["scan", "class", "mode", "method", "level"], kind="stable")


def detection_limit(levels: Sequence[int], values: Sequence[float], scores: Sequence[float],
                    threshold: float) -> float:
    """The lowest strength from which every stronger band scores ``>= threshold``
    (``inf``: never reached, not even at the strongest band)."""
    order = np.argsort(np.asarray(levels))
    v, sc = np.asarray(values, float)[order], np.asarray(scores, float)[order]
    limit = np.inf
    for i in range(len(v) - 1, -1, -1):
        if not sc[i] >= threshold:
            break
        limit = v[i]
    return float(limit)


#: The columns of the detection-limit table (:func:`detection_limits`).
LIMIT_COLUMNS = ("scan", "class", "metric", "parameter", "method", "family", "mode", "limit",
                 "weakest", "strongest", "values", "scores")


def detection_limits(frame: pd.DataFrame, threshold: float) -> pd.DataFrame:
    """Per scan, class, method and mode: the detection limit (:func:`detection_limit`)
    and the curve it is read from (``scores``: mean per band, weakest first)."""
    curves = limit_curves(frame)
    out = []
    for (scan, cls, mode, method), g in curves.groupby(["scan", "class", "mode", "method"], sort=False):
        g = g.sort_values("level")
        out.append({"scan": scan, "class": cls, "metric": g["metric"].iloc[0],
                    "parameter": g["parameter"].iloc[0], "method": method,
                    "family": g["family"].iloc[0], "mode": mode,
                    "limit": detection_limit(g["level"], g["value"], g["mean"], threshold),
                    "weakest": g["value"].min(), "strongest": g["value"].max(),
                    "values": " ".join(f"{x:.3g}" for x in g["value"]),
                    "scores": " ".join(f"{x:.2f}" for x in g["mean"])})
    return pd.DataFrame(out, columns=LIMIT_COLUMNS)


def _limit_text(limit: float) -> str:
    return "not reached" if not np.isfinite(limit) else f"{limit:.3g}"


def limits_markdown(limits: pd.DataFrame, threshold: float) -> str:
    """The probe's detection limits, rows (scan, class), columns methods, and the curves."""
    lines = ["# Detection limits: from which strength does each method find each class?", "",
             f"Each graded class is simulated at strengths from invisible to obvious, in bands "
             f"across the map. Per band: the probe's held-out score (ROC-AUC; Spearman's rho "
             f"for the dislocation density), mean over folds. Detection limit = the lowest "
             f"strength from which every stronger band scores >= {threshold} (lower is "
             f"better; 'not reached' = not even the strongest band). Values are in the "
             f"class's physical parameter.", ""]
    probe_rows = limits[limits["mode"] == "probe"]
    if probe_rows.empty:
        return "\n".join(lines + ["No graded band was scored in this study (a graded scan: "
                                   "scans.<name>.simulate.grading; a band is scored where its "
                                   "class is present on both sides of a fold)."]) + "\n"
    methods = list(dict.fromkeys(probe_rows["method"]))
    lines += ["| scan | class | parameter | " + " | ".join(methods) + " |",
              "|---|---|---|" + "---|" * len(methods)]
    for (scan, cls), g in probe_rows.groupby(["scan", "class"], sort=False):
        g = g.set_index("method")
        cells = [_limit_text(g.loc[m, "limit"]) if m in g.index else "" for m in methods]
        lines.append(f"| {scan} | {cls} | {g['parameter'].iloc[0]} | " + " | ".join(cells) + " |")
    lines += ["", "## Curves (probe score per band, weakest first)", ""]
    for (scan, cls), g in probe_rows.groupby(["scan", "class"], sort=False):
        lines += [f"**{scan} / {cls}** - {g['parameter'].iloc[0]}: {g['values'].iloc[0]}", ""]
        lines += [f"- {r['method']}: {r['scores']}" for _, r in g.iterrows()]
        lines.append("")
    return "\n".join(lines) + "\n"


#: Axis labels of the benchmark's score metrics.
METRIC_LABELS = {"roc_auc": "ROC-AUC", "r2": "R²", "spearman": "Spearman ρ"}


def plot_limits(frame: pd.DataFrame, path: str | os.PathLike, threshold: float,
                dpi: int = 120) -> None:
    """Score against strength (log axis), one line per method, one panel per scan and
    class (probe).

    Every method keeps its style of all figures (:func:`latentebsd.plotting.method_style`);
    the strength axis is labelled at the graded values only, and long parameter names
    are wrapped, so labels never run into each other.
    """
    curves = limit_curves(frame)
    curves = curves[curves["mode"] == "probe"]
    keys = list(dict.fromkeys(zip(curves["scan"], curves["class"])))
    order = frame.drop_duplicates("method")  # the study's order, not the sorted curves'
    variants = study_variants(list(order["method"]), list(order["family"]))
    fig, axes = panel_grid(len(keys), 3, 4.2, 3.3, 0.0)
    for ax, (scan, cls) in zip(axes, keys):
        g = curves[(curves["scan"] == scan) & (curves["class"] == cls)]
        for method, m in g.groupby("method", sort=False):
            style = method_style(method, variants, m["family"].iloc[0])
            ax.plot(m["value"], m["mean"], ms=3.5, label=method, **style)
        ax.axhline(threshold, color="0.5", lw=0.6, ls=":")
        ax.set_xscale("log")
        log_axis_ticks(ax, g["value"].unique())
        ax.set_title(f"{scan}: {cls.replace('_', ' ')}", fontsize=8)
        ax.set_xlabel(textwrap.fill(str(g["parameter"].iloc[0]), 36), fontsize=7)
        ax.set_ylabel(METRIC_LABELS.get(g["metric"].iloc[0], g["metric"].iloc[0]), fontsize=7)
        ax.tick_params(axis="y", labelsize=6)
    if keys:
        handles, labels = axes[0].get_legend_handles_labels()
        ncol = min(4, len(labels))
        # the legend below the panels, in rows of at most 4: 13 methods stay legible
        legend_in = 0.2 + 0.16 * -(-len(labels) // max(ncol, 1))
        height = fig.get_size_inches()[1] + legend_in
        fig.set_size_inches(fig.get_size_inches()[0], height)
        fig.tight_layout(rect=(0, legend_in / height, 1, 1))
        fig.legend(handles, labels, loc="lower center", ncol=ncol, fontsize=6.5, frameon=False,
                   bbox_to_anchor=(0.5, 0.0))
    else:
        axes[0].text(0.5, 0.5, "no graded scan", ha="center", va="center")
    save_figure(fig, path, dpi, tight=True)


def run_limits_rule(csvs: Sequence[str], out_csv: str, out_md: str, out_png: str,
                    threshold: float) -> pd.DataFrame:
    """What rule ``detection_limits`` runs: every scan's detection table -> the limits
    (CSV: one row per scan, class, method, mode), Markdown, figure."""
    frame = pd.concat([pd.read_csv(p) for p in csvs], ignore_index=True)
    limits = detection_limits(frame, threshold)
    with atomic_path(out_csv) as tmp:
        limits.to_csv(tmp, index=False, float_format="%.6g")
    md = limits_markdown(limits, threshold)
    write_text(out_md, md)
    plot_limits(frame, out_png, threshold)
    log.info("\n%s", md)
    return limits
