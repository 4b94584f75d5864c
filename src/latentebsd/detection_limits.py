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
import os
from collections.abc import Sequence

import numpy as np
import pandas as pd

from latentebsd.io.atomic import atomic_path, write_text
from latentebsd.plotting import panel_grid, save_figure

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


def plot_limits(frame: pd.DataFrame, path: str | os.PathLike, threshold: float,
                dpi: int = 120) -> None:
    """Score against strength (log axis), one line per method, one panel per scan and
    class (probe)."""
    curves = limit_curves(frame)
    curves = curves[curves["mode"] == "probe"]
    keys = list(dict.fromkeys(zip(curves["scan"], curves["class"])))
    styles = {"conventional": ("k", "-", 2.0), "latent": (None, "-", 1.0),
              "baseline": (None, "--", 1.0), "analogue": (None, ":", 1.2),
              "combined": ("C3", "-.", 1.6)}
    fig, axes = panel_grid(len(keys), 3, 4.0, 3.0, 0.8)
    for ax, (scan, cls) in zip(axes, keys):
        g = curves[(curves["scan"] == scan) & (curves["class"] == cls)]
        for method, m in g.groupby("method", sort=False):
            colour, ls, lw = styles.get(m["family"].iloc[0], (None, "-", 1.0))
            ax.plot(m["value"], m["mean"], ls=ls, lw=lw, color=colour, marker="o", ms=2.5,
                    label=method)
        ax.axhline(threshold, color="0.5", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_title(f"{scan}: {cls}", fontsize=8)
        ax.set_xlabel(g["parameter"].iloc[0], fontsize=7)
        ax.set_ylabel(g["metric"].iloc[0], fontsize=7)
        ax.tick_params(labelsize=6)
    if keys:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper center", ncol=min(6, len(labels)), fontsize=6,
                   frameon=False)
    else:
        axes[0].text(0.5, 0.5, "no graded scan", ha="center", va="center")
    fig.tight_layout(rect=(0, 0, 1, 0.9))
    save_figure(fig, path, dpi)


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
