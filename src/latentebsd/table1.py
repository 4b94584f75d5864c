"""Stage ``evaluate_table1``: the paper's Table 1 from every variant's per-pattern metrics.

10/50/90 % quantiles of the metrics (:mod:`latentebsd.metrics`) pooled over all scans
(valid patterns), the fraction indexed three ways, and the paper's numbers beside ours;
written as CSV, Markdown and HTML (the report's page). From the same table,
:func:`trend_verdicts` states whether each of the paper's trends holds in this run
(more d -> better; contrastive ~ VAE of the same d; larger beta -> fewer indexed),
written as ``trends.md`` (:func:`trends_markdown`).
"""

from __future__ import annotations

import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from latentebsd import config
from latentebsd.controls import CONTROLS
from latentebsd.io.controls import read_controls
from latentebsd.io.index import read_index
from latentebsd.index import PAPER_HOUGH_MAPPING
from latentebsd.io.atomic import atomic_path, write_text
from latentebsd.io.metrics import METRICS, read_metrics
from latentebsd.variants import loss_label, variant_key

log = logging.getLogger(__name__)


#: The paper's Table 1 (Calvat et al. 2025), keyed by (loss, latent_dim, beta).
PAPER_TABLE1: dict[tuple[str, int, float], dict[str, str]] = {
    ("vae", 16, 1.0): {"indexed": "95.3 %", "ci_ratio": "0.00/0.06/0.42",
                       "iq_ratio": "0.27/0.64/0.87", "misorientation_deg": "0.01/0.02/0.88",
                       "sharpness_ratio": "0.13/0.16/0.18"},
    ("vae", 32, 1.0): {"indexed": "98.8 %", "ci_ratio": "0.03/0.53/1.10",
                       "iq_ratio": "0.54/0.87/0.99", "misorientation_deg": "0.00/0.01/0.07",
                       "sharpness_ratio": "0.16/0.23/0.27"},
    ("vae", 64, 1.0): {"indexed": "99.9 %", "ci_ratio": "0.50/1.00/1.78",
                       "iq_ratio": "0.80/0.95/1.03", "misorientation_deg": "0.00/0.01/0.02",
                       "sharpness_ratio": "0.23/0.27/0.32"},
    ("vae", 128, 1.0): {"indexed": "100 %", "ci_ratio": "0.55/1.00/1.79",
                        "iq_ratio": "0.88/0.97/1.04", "misorientation_deg": "0.00/0.01/0.01",
                        "sharpness_ratio": "0.28/0.34/0.39"},
    ("vae", 256, 1.0): {"indexed": "100 %", "ci_ratio": "0.56/1.00/1.78",
                        "iq_ratio": "0.88/0.96/1.02", "misorientation_deg": "0.00/0.01/0.01",
                        "sharpness_ratio": "0.32/0.38/0.44"},
    ("contrastive", 128, 1.0): {"indexed": "100 %", "ci_ratio": "0.56/1.00/1.79",
                                "iq_ratio": "0.84/0.95/1.05",
                                "misorientation_deg": "0.00/0.01/0.01",
                                "sharpness_ratio": "0.27/0.33/0.38"},
    ("beta_vae", 128, 15.0): {"indexed": "76.2 %", "ci_ratio": "0.12/0.94/1.61",
                              "iq_ratio": "0.35/0.88/1.04",
                              "misorientation_deg": "0.00/0.01/0.41",
                              "sharpness_ratio": "0.11/0.26/0.38"},
    ("beta_vae", 128, 50.0): {"indexed": "39.2 %", "ci_ratio": "0.00/0.35/1.20",
                              "iq_ratio": "0.08/0.20/0.92",
                              "misorientation_deg": "0.00/0.28/0.89",
                              "sharpness_ratio": "0.05/0.09/0.29"},
}

#: Table 1 columns: (our metric, header, paper key). The ratios are decoded / original
#: per pattern; CI is PyEBSDIndex's ``cm`` and IQ its ``pq`` (the open analogues of OIM's).
TABLE_COLUMNS = (
    ("ci_ratio", "CI ratio (PyEBSDIndex cm)", "ci_ratio"),
    ("iq_pq_ratio", "IQ ratio (PyEBSDIndex pq)", "iq_ratio"),
    ("misorientation_deg", "Misorientation (deg)", "misorientation_deg"),
    ("sharpness_ratio", "Sharpness ratio", "sharpness_ratio"),
)
#: Pooled into ``table1.csv`` but not shown: kikuchipy's Krieger-Lassen IQ scores a flat
#: disc 0.997 and a blurred pattern above a sharp one (``benchmarks/quality_controls.py``),
#: so it measures smoothness, not bands.
CSV_ONLY_COLUMNS = (("iq_kp_ratio", "Krieger-Lassen IQ ratio (smoothness)", None),)
#: The originals' absolute values under the table (what the ratios divide by):
#: (index field, label, digits).
ORIGINAL_FIELDS = (("cm", "CI (PyEBSDIndex cm)", 2), ("pq", "IQ (PyEBSDIndex pq)", 2),
                   ("sharpness", "Sharpness", 3), ("iq_kp", "Krieger-Lassen IQ", 3), ("nmatch", "Matched bands", 0),
                   ("fit", "Fit (deg)", 2))


def format_quantiles(values: np.ndarray, quantiles: Sequence[float], digits: int = 2) -> str:
    """``"q10/q50/q90"`` of the finite values, ``"n/a"`` when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    return "/".join(f"{x:.{digits}f}" for x in np.quantile(v, list(quantiles)))


def _pooled_row(per_scan: Sequence[Mapping[str, np.ndarray]], qs: Sequence[float],
                agree_deg: float) -> dict[str, Any]:
    """Indexed fractions and quantiles of every metric, pooled over the scans' valid patterns."""
    columns = (*TABLE_COLUMNS, *CSV_ONLY_COLUMNS)
    pooled = {k: np.concatenate([np.asarray(m[k])[np.asarray(m["valid"], bool)] for m in per_scan])
              for k in ("indexed", *(c[0] for c in columns))}
    agree = pooled["indexed"] & (np.nan_to_num(pooled["misorientation_deg"], nan=np.inf) < agree_deg)
    row: dict[str, Any] = {"n_patterns": len(pooled["indexed"]), "Indexed": _percent(pooled["indexed"]),
                           "Indexed and agreeing": _percent(agree)}
    for metric, header, _ in columns:
        row[header] = format_quantiles(pooled[metric], qs)
        finite = pooled[metric][np.isfinite(pooled[metric])]
        for q in qs:
            row[f"{metric}_q{round(100 * q)}"] = float(np.quantile(finite, q)) if finite.size else np.nan
        row[f"{metric}_n"] = int(finite.size)
    return row


def table1(metrics_by_variant: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
           variants: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any] | None = None,
           original_indexed: Sequence[np.ndarray] | None = None,
           controls: Mapping[str, Sequence[Mapping[str, np.ndarray]]] | None = None,
           originals: Sequence[Mapping[str, np.ndarray]] | None = None) -> pd.DataFrame:
    """Table 1: one row per variant, metrics pooled over all scans, paper beside ours.

    Parameters
    ----------
    metrics_by_variant
        Variant name -> per-scan metric dicts (:func:`pattern_metrics`).
    variants
        ``models.variants`` of the config (loss, latent_dim, beta).
    settings
        The validated ``evaluation`` section (quantiles, sharpness variant, indexed
        criterion; ``None``: the schema's defaults).
    original_indexed
        Per-scan ``indexed`` flags of the originals (valid patterns only), for a
        reference row; taken from the metrics when omitted.
    controls
        Control name (:data:`latentebsd.controls.CONTROLS`) -> per-scan metric dicts of
        that control (:mod:`latentebsd.io.controls`): rows that a model must beat.
    originals
        Per-scan index arrays of the originals (:func:`latentebsd.io.index.read_index`):
        their absolute quality (:data:`ORIGINAL_FIELDS`) in the original row.

    Returns
    -------
    pandas.DataFrame
        Columns ``variant``, ``Loss`` (label), ``d``, ``loss`` and ``beta`` (the variant's
        loss name and KL weight), ``n_patterns``, ``Indexed`` (``%``), ``Indexed and
        agreeing`` (indexed within ``agree_deg`` of the original's orientation), one
        ``"q10/q50/q90"`` column per metric of :data:`TABLE_COLUMNS` and
        :data:`CSV_ONLY_COLUMNS`, the numeric quantiles (``<metric>_q10`` ...), the
        paper's values (``Paper ...`` columns, empty where the paper has no such model),
        and in the original row ``Original <field>`` quantiles. Rows: the original, the
        controls, the models.
    """
    cfg = config.section("evaluation") if settings is None else settings
    qs = cfg["quantiles"]
    rows = []
    for name, per_scan in metrics_by_variant.items():
        if name not in variants:
            raise ValueError(f"variant {name!r} is not in models.variants")
        if not per_scan:
            raise ValueError(f"no metrics for variant {name!r}")
        var = variants[name]
        key = variant_key(var)
        row: dict[str, Any] = {"variant": name, "Loss": loss_label(var), "d": key[1],
                               "loss": key[0], "beta": key[2],
                               **_pooled_row(per_scan, qs, cfg["agree_deg"]),
                               "wrong_phase_n": _wrong_phase(per_scan)}
        paper = PAPER_TABLE1.get(key, {})
        row["Paper indexed"] = paper.get("indexed", "")
        for _, header, paper_key in TABLE_COLUMNS:
            row[f"Paper {header}"] = paper.get(paper_key, "") if paper_key else ""
        rows.append(row)
    control_rows = [{"variant": f"control_{name}", "Loss": CONTROLS.get(name, name), "d": "",
                     "loss": "control", "beta": np.nan, **_pooled_row(per_scan, qs, cfg["agree_deg"])}
                    for name, per_scan in (controls or {}).items() if per_scan]
    if original_indexed is None:
        first = next(iter(metrics_by_variant.values()), [])
        original_indexed = [np.asarray(m["indexed_original"])[np.asarray(m["valid"], bool)]
                            for m in first]
    head = []
    if original_indexed:
        ref = np.concatenate([np.asarray(v, bool) for v in original_indexed])
        reference = {"variant": "original", "Loss": "Original (preprocessed)", "d": "",
                     "loss": "", "beta": np.nan, "n_patterns": len(ref), "Indexed": _percent(ref),
                     "Indexed and agreeing": ""}
        for field, label, digits in ORIGINAL_FIELDS if originals else ():
            values = np.concatenate([np.asarray(o[field], np.float64)[np.asarray(o["valid"], bool)]
                                     for o in originals])
            reference[f"Original {label}"] = format_quantiles(values, qs, digits)
        head.append(reference)
    return pd.DataFrame(head + control_rows + rows)


def _wrong_phase(per_scan: Sequence[Mapping[str, np.ndarray]]) -> int:
    """Valid decoded patterns indexed as another phase than their original (metrics
    files written before phases were recorded: 0)."""
    return int(sum(np.count_nonzero(np.asarray(m["wrong_phase"], bool)
                                    & np.asarray(m["valid"], bool))
                   for m in per_scan if "wrong_phase" in m))


def _percent(flags: np.ndarray) -> float:
    flags = np.asarray(flags, bool)
    return round(100.0 * flags.mean(), 1) if flags.size else float("nan")


def table1_notes(settings: Mapping[str, Any] | None = None,
                 frame: pd.DataFrame | None = None) -> list[str]:
    """The definitions a Table 1 rendering states under the table (with ``frame``, also
    how many decoded patterns each variant indexed as the wrong phase)."""
    cfg = config.section("evaluation") if settings is None else settings
    s = cfg["sharpness"]
    part = "Re(FFT2(p))" if s["part"] == "real" else "|FFT2(p)|"
    qs = "/".join(f"{round(100 * q)} %" for q in cfg["quantiles"])
    return [
        f"Quantiles {qs} of the per-pattern values, pooled over all scans (valid patterns).",
        f"Indexed: a PyEBSDIndex solution with >= {cfg['min_nmatch']} of the "
        f"{cfg['hough']['nBands']} detected bands matched - what OIM users mean by an indexed "
        "point, a solution that is not noise (white-noise discs get solutions from 3 - 4 "
        "matched bands, never 5). Indexed and agreeing: also within "
        f"{cfg['agree_deg']:g} deg of the original's orientation.",
        "CI ratio (PyEBSDIndex cm): PyEBSDIndex's confidence metric cm (the fraction of agreeing "
        "triplet votes, the open analogue of EDAX OIM's CI), decoded / original. IQ ratio "
        "(pq): PyEBSDIndex's pattern quality pq, the mean Radon (Hough) peak height, the "
        "open analogue of EDAX's IQ. Ratios with an original value of 0 are left out.",
        "Misorientation: angle between decoded and original orientation in the symmetry "
        "(Laue group) of the scan's phase (orix), patterns indexed in both as the same "
        "phase; a decoded pattern indexed as another phase than its original has none and "
        "counts as not agreeing (table1.csv: wrong_phase_n)." + _wrong_phase_note(frame),
        f"Sharpness: F = fftshift({part}), M = max|F|, count(F > M / {s['divisor']:g}) / (H W), "
        + ("on the 16-bit UP2 intensity scale (p + 1)" if s["intensity"] == "up2"
           else "on the zero-mean [-1, 1] pattern")
        + ", inside the largest square on the detector screen (no edge of the screen in it: "
        "on the full frame a featureless disc scored 0.82). It counts noise as sharpness "
        "(a white-noise disc scores ~1.1 x a real pattern), so a denoising decoder scores "
        "below 1 whatever its bands.",
        "Controls: a blank disc (every screen pixel the scan's mean) and the scan's mean "
        "pattern, measured like decoded patterns at "
        f"{cfg['controls']['patterns']} random points per scan; a model's numbers say "
        "something about bands only where they are far above these.",
        "Krieger-Lassen IQ (kikuchipy) ratios are in table1.csv only: a flat disc scores "
        "0.997 and blurring raises it, so it measures smoothness, not bands.",
        "Hough: " + "; ".join(f"{k} -> {v}" for k, v in PAPER_HOUGH_MAPPING.items())
        + f" (used: {json.dumps(cfg['hough'])}).",
        "Paper rows: Calvat et al. 2025 (npj Comput. Mater., doi:10.1038/s41524-025-01770-8), "
        "Table 1 (480 x 480 patterns binned to 120 x 120, EDAX OIM 8 indexing); ours: this "
        "workflow's scans and indexer. Definitions, paper's vs ours: docs/metrics.md.",
    ]


def _wrong_phase_note(frame: pd.DataFrame | None) -> str:
    if frame is None or "wrong_phase_n" not in frame:
        return ""
    counts = [(r["variant"], int(r["wrong_phase_n"])) for _, r in frame.iterrows()
              if r["variant"] != "original" and pd.notna(r["wrong_phase_n"])]
    wrong = [f"{v} {n}" for v, n in counts if n]
    return " Decoded patterns indexed as the wrong phase: " + ", ".join(wrong) + "." if wrong else ""


_HEADERS = ["Loss", "d", "Source (ours / paper)", "Indexed", "Indexed and agreeing",
            *[h for _, h, _ in TABLE_COLUMNS]]


def _table_lines(frame: pd.DataFrame) -> list[list[str]]:
    """The rendered rows of Table 1: per model an "ours" and a "paper" line."""
    out = []
    for _, row in frame.iterrows():
        variant = str(row["variant"])
        source = ("reference" if variant == "original" else "control"
                  if variant.startswith("control_") else "ours")
        cells = [str(row["Loss"]), str(row["d"]), source, _fmt_pct(row["Indexed"]),
                 _fmt_pct(row.get("Indexed and agreeing", "")),
                 *[str(row.get(h, "")) if isinstance(row.get(h, ""), str) else ""
                   for _, h, _ in TABLE_COLUMNS]]
        out.append(cells)
        if source == "ours":
            out.append(["", "", "paper", str(row.get("Paper indexed", "")), "",
                        *[str(row.get(f"Paper {h}", "")) if p else "" for _, h, p in TABLE_COLUMNS]])
    return out


def _original_lines(frame: pd.DataFrame) -> tuple[list[str], list[str]] | None:
    """Header and cells of the originals' absolute-values line, if the frame has them."""
    labels = [label for _, label, _ in ORIGINAL_FIELDS if f"Original {label}" in frame.columns]
    ref = frame[frame["variant"] == "original"]
    if not labels or ref.empty:
        return None
    row = ref.iloc[0]
    return labels, [str(row[f"Original {label}"]) for label in labels]


def table1_markdown(frame: pd.DataFrame, settings: Mapping[str, Any] | None = None) -> str:
    """Table 1 as Markdown: the original, the controls, an "ours" and a "paper" line per
    model; the originals' absolute values and the notes below."""
    lines = ["| " + " | ".join(_HEADERS) + " |", "|" + "---|" * len(_HEADERS)]
    lines += ["| " + " | ".join(cells) + " |" for cells in _table_lines(frame)]
    original = _original_lines(frame)
    if original:
        labels, cells = original
        lines += ["", "Originals (preprocessed patterns), absolute values - what the ratios divide by:",
                  "", "| " + " | ".join(labels) + " |", "|" + "---|" * len(labels),
                  "| " + " | ".join(cells) + " |"]
    notes = "\n".join(f"- {n}" for n in table1_notes(settings, frame))
    return "# Table 1: reconstruction quality seen by Hough indexing\n\n" + "\n".join(lines) \
        + "\n\n" + notes + "\n"


def _fmt_pct(value: Any) -> str:
    if isinstance(value, str) or value is None:
        return value or ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.1f} %"


def table1_html(frame: pd.DataFrame, settings: Mapping[str, Any] | None = None) -> str:
    """Table 1 as a self-contained HTML page (for the Snakemake report)."""
    body = []
    for cells in _table_lines(frame):
        kind = {"paper": "paper", "control": "control", "reference": "reference"}.get(cells[2], "ours")
        body.append(f"<tr class='{kind}'>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    original = _original_lines(frame)
    extra = ""
    if original:
        labels, cells = original
        extra = ("<p>Originals (preprocessed patterns), absolute values - what the ratios divide by:</p>"
                 "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in labels) + "</tr><tr>"
                 + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr></table>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table1_notes(settings, frame))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Table 1</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:center}"
        "tr.paper td{color:#666;font-style:italic;border-bottom:2px solid #888}"
        "tr.control td{background:#fbf3e6}tr.reference td{background:#eef4fb}"
        "th{background:#eee}</style></head><body>"
        "<h3>Table 1: reconstruction quality seen by Hough indexing (ours vs the paper)</h3>"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in _HEADERS) + "</tr>"
        + "".join(body) + f"</table>{extra}<ul>{notes}</ul></body></html>\n"
    )


# --------------------------------------------------------------------------- trends

#: The metrics the paper's trends are stated on: (id, Table 1 column, name, +1 if higher
#: is better else -1, number format). Ratios and misorientation are medians of the
#: pooled per-pattern values (``<metric>_q50``); the IQ ratio is PyEBSDIndex ``pq``, the
#: one Table 1 sets beside the paper's IQ.
TREND_METRICS: tuple[tuple[str, str, str, int, str], ...] = (
    ("indexed", "Indexed", "indexed (%)", +1, "{:.1f}"),
    ("ci_ratio", "ci_ratio_q50", "median CI ratio", +1, "{:.3f}"),
    ("iq_ratio", "iq_pq_ratio_q50", "median IQ ratio (PyEBSDIndex pq)", +1, "{:.3f}"),
    ("sharpness_ratio", "sharpness_ratio_q50", "median sharpness ratio", +1, "{:.3f}"),
    ("misorientation", "misorientation_deg_q50", "median misorientation (deg)", -1, "{:.3f}"),
)

#: Ordered trends (more d, larger beta): two values closer than this are a tie, and the
#: end of the series must beat its start by more than this (percentage points for
#: ``indexed``, deg for ``misorientation``, absolute ratio otherwise).
TREND_TOLERANCES: dict[str, float] = {"indexed": 0.5, "ci_ratio": 0.02, "iq_ratio": 0.02,
                                      "sharpness_ratio": 0.02, "misorientation": 0.005}

#: "Contrastive ~ VAE": every metric within this of the same-d VAE's (same units).
SIMILAR_TOLERANCES: dict[str, float] = {"indexed": 1.0, "ci_ratio": 0.05, "iq_ratio": 0.05,
                                        "sharpness_ratio": 0.05, "misorientation": 0.02}

#: The beta trend's metrics (the paper: larger beta -> fewer indexed, lower CI).
BETA_TREND_METRICS = ("indexed", "ci_ratio")

HOLDS, PARTLY, FAILS, UNTESTABLE = "holds", "partly", "does not hold", "not testable"
_EPS = 1e-9
_LABEL_LOSSES = {"VAE": "vae", "Contrastive": "contrastive"}
_NEEDS_MEDIAN = "0.5 among evaluation.quantiles (the trends use medians)"


def _models(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The model rows of Table 1 (no "original" row) as ``{variant, loss, d, beta, row}``.
    ``loss`` / ``beta`` come from their columns, or from the ``Loss`` label of a table
    written before those columns existed."""
    out = []
    for _, row in table.iterrows():
        if row.get("variant") == "original" or str(row.get("d", "")) in ("", "nan"):
            continue
        loss = row.get("loss")
        beta = row.get("beta")
        if not isinstance(loss, str) or not loss:
            label = str(row["Loss"])
            if label.startswith("beta-VAE"):
                loss, beta = "beta_vae", float(label.split("(")[1].rstrip(")"))
            else:
                loss = _LABEL_LOSSES.get(label, label.lower())
        beta = 1.0 if beta is None or (isinstance(beta, float) and math.isnan(beta)) else float(beta)
        out.append({"variant": str(row["variant"]), "loss": loss, "d": int(float(row["d"])),
                    "beta": beta, "row": row})
    return out


def _value(model: Mapping[str, Any], column: str) -> float:
    v = model["row"].get(column, np.nan)
    try:
        return float(v)
    except (TypeError, ValueError):
        return float("nan")


def _metric(metric: str) -> tuple[str, str, str, int, str]:
    return next(m for m in TREND_METRICS if m[0] == metric)


def _untestable(trend: str, metric: str | None, needs: str) -> dict[str, Any]:
    return {"trend": trend, "metric": metric, "verdict": UNTESTABLE, "needs": needs,
            "values": [], "tolerance": None,
            "detail": f"not testable in this config (needs {needs})"}


def _ordered_verdict(trend: str, metric: str, series: Sequence[tuple[str, float]],
                     direction: int, tolerance: float, fmt: str) -> dict[str, Any]:
    """Verdict on a series ordered by d (or beta) that should move in ``direction``
    (+1 up, -1 down): monotone within ``tolerance`` and end beating start by more than it."""
    labels = [lab for lab, _ in series]
    values = [v for _, v in series]
    nums = ", ".join(f"{lab}: {fmt.format(v)}" for lab, v in series)
    if any(not math.isfinite(v) for v in values):
        missing = [lab for lab, v in series if not math.isfinite(v)]
        return {"trend": trend, "metric": metric, "verdict": UNTESTABLE,
                "needs": f"a finite value for {', '.join(missing)}", "values": list(series),
                "tolerance": tolerance,
                "detail": f"not testable in this config (needs a finite value for "
                          f"{', '.join(missing)}); {nums}"}
    steps = [direction * (b - a) for a, b in zip(values, values[1:])]
    monotone = all(s >= -tolerance - _EPS for s in steps)
    gain = direction * (values[-1] - values[0])
    beats = gain > tolerance + _EPS
    verdict = HOLDS if beats and monotone else PARTLY if beats else FAILS
    word = "rises" if direction > 0 else "falls"
    breaks = [f"{labels[i]} -> {labels[i + 1]}" for i, s in enumerate(steps) if s < -tolerance - _EPS]
    detail = (f"{nums}; {labels[-1]} vs {labels[0]}: {values[-1] - values[0]:+.3g} "
              f"({'beats' if beats else 'does not beat'} the tolerance {tolerance:g}); "
              + (f"{word} monotonically within {tolerance:g}" if monotone
                 else f"not monotone within {tolerance:g} ({', '.join(breaks)})"))
    return {"trend": trend, "metric": metric, "verdict": verdict, "needs": None,
            "values": list(series), "tolerance": tolerance, "monotone": monotone,
            "beats": beats, "difference": values[-1] - values[0], "detail": detail}


def trend_verdicts(table: pd.DataFrame, tolerances: Mapping[str, float] | None = None,
                   similar_tolerances: Mapping[str, float] | None = None) -> list[dict[str, Any]]:
    """Whether each of the paper's Table 1 trends holds in ``table`` (:func:`table1`'s
    frame, or its CSV read back: one row per variant, pooled over all scans).

    - More latent dimensions -> more indexed, higher median CI / IQ / sharpness ratio,
      smaller median misorientation: the plain VAEs sorted by d. ``holds``: monotone
      (ties within the tolerance allowed) and the largest d beats the smallest by more
      than the tolerance; ``partly``: it beats it but is not monotone; else ``does not hold``.
    - Contrastive ~ VAE of the same d (the paper: d = 128): every metric within
      :data:`SIMILAR_TOLERANCES` of the VAE's; ``holds`` / ``does not hold``.
    - Larger beta -> fewer indexed, lower median CI ratio: the VAE (beta 1) and the
      beta-VAEs of one d sorted by beta, decided like the d trend (one verdict per d).

    A trend whose variants are not configured is ``not testable`` with what it needs.
    No metric is recomputed: the values are Table 1's ``Indexed`` and ``<metric>_q50``.

    Returns
    -------
    list of dict
        ``trend``, ``metric``, ``verdict`` (``holds``, ``partly``, ``does not hold``,
        ``not testable``), ``values`` (label, value) pairs, ``tolerance``, ``needs`` (for
        ``not testable``) and ``detail`` (the numbers the verdict was decided on).
    """
    tol = {**TREND_TOLERANCES, **(tolerances or {})}
    sim = {**SIMILAR_TOLERANCES, **(similar_tolerances or {})}
    models = _models(table)
    verdicts: list[dict[str, Any]] = []

    # more latent dimensions -> better
    vaes = sorted((m for m in models if m["loss"] == "vae"), key=lambda m: (m["d"], m["variant"]))
    for metric, column, name, direction, fmt in TREND_METRICS:
        better = "more" if metric == "indexed" else "higher" if direction > 0 else "smaller"
        what = "patterns indexed" if metric == "indexed" else name
        trend = f"more latent dimensions -> {better} {what}"
        if len({m["d"] for m in vaes}) < 2:
            verdicts.append(_untestable(trend, metric, "at least two plain VAE variants with different d"))
            continue
        if column not in table.columns:
            verdicts.append(_untestable(trend, metric, _NEEDS_MEDIAN))
            continue
        series = [(f"VAE-{m['d']}", _value(m, column)) for m in vaes]
        verdicts.append(_ordered_verdict(trend, metric, series, direction, tol[metric], fmt))

    # contrastive ~ VAE of the same d
    contrastive = sorted((m for m in models if m["loss"] == "contrastive"), key=lambda m: m["d"])
    if not contrastive:
        verdicts.append(_untestable("contrastive ~ VAE of the same d (paper: d = 128)", None,
                                    "a contrastive variant and a plain VAE of the same d"))
    for c in contrastive:
        trend = f"contrastive ~ VAE-{c['d']}"
        vae = next((m for m in vaes if m["d"] == c["d"]), None)
        if vae is None:
            verdicts.append(_untestable(trend, None, f"a plain VAE with d = {c['d']} beside the contrastive one"))
            continue
        if any(column not in table.columns for _, column, _, _, _ in TREND_METRICS):
            verdicts.append(_untestable(trend, None, _NEEDS_MEDIAN))
            continue
        parts, values, close = [], [], True
        for metric, column, name, _, fmt in TREND_METRICS:
            a, b = _value(c, column), _value(vae, column)
            ok = math.isfinite(a) and math.isfinite(b) and abs(a - b) <= sim[metric] + _EPS
            close &= ok
            values.append((metric, a, b))
            parts.append(f"{name} {fmt.format(a)} vs {fmt.format(b)} ({a - b:+.3g}, "
                         f"{'within' if ok else 'outside'} {sim[metric]:g})")
        verdicts.append({"trend": trend, "metric": None, "verdict": HOLDS if close else FAILS,
                         "needs": None, "values": values, "tolerance": dict(sim),
                         "detail": f"{c['variant']} vs {vae['variant']}: " + "; ".join(parts)})

    # larger beta -> fewer indexed, lower CI ratio
    by_d: dict[int, list[dict[str, Any]]] = {}
    for m in models:
        if m["loss"] in ("vae", "beta_vae"):
            by_d.setdefault(m["d"], []).append(m)
    groups = {d: sorted(ms, key=lambda m: (m["beta"], m["loss"] != "vae", m["variant"]))
              for d, ms in sorted(by_d.items())
              if any(m["loss"] == "beta_vae" for m in ms) and len({m["beta"] for m in ms}) >= 2}
    for metric in BETA_TREND_METRICS:
        _, column, name, direction, fmt = _metric(metric)
        what = "fewer patterns indexed" if metric == "indexed" else f"lower {name}"
        if not groups:
            verdicts.append(_untestable(f"larger beta -> {what}", metric,
                                        "a beta_vae variant and a plain VAE (or a second beta) at the same d"))
        elif column not in table.columns:
            verdicts.append(_untestable(f"larger beta -> {what}", metric, _NEEDS_MEDIAN))
            continue
        for d, ms in groups.items():
            series = [(f"{'VAE' if m['loss'] == 'vae' else 'beta-VAE'} beta={m['beta']:g}", _value(m, column))
                      for m in ms]
            verdicts.append(_ordered_verdict(f"larger beta -> {what} (d = {d})", metric, series,
                                             -direction, tol[metric], fmt))
    return verdicts


def trends_markdown(verdicts: Sequence[Mapping[str, Any]],
                    tolerances: Mapping[str, float] | None = None,
                    similar_tolerances: Mapping[str, float] | None = None) -> str:
    """The trend verdicts as Markdown: one line per trend with its numbers, rules below."""
    tol = {**TREND_TOLERANCES, **(tolerances or {})}
    sim = {**SIMILAR_TOLERANCES, **(similar_tolerances or {})}
    lines = ["| Trend | Verdict | Decided on |", "|---|---|---|"]
    for v in verdicts:
        lines.append(f"| {v['trend']} | **{v['verdict']}** | {v['detail'].replace('|', '/')} |")
    units = {"indexed": " percentage points", "misorientation": " deg"}
    ordered = ", ".join(f"{_metric(k)[2]} {tol[k]:g}{units.get(k, '')}" for k in tol)
    similar = ", ".join(f"{_metric(k)[2]} {sim[k]:g}{units.get(k, '')}" for k in sim)
    notes = [
        "One training run per variant: a verdict here may flip with a retraining. "
        "`trends_seeds.csv` and `results/findings.md` judge each trend on every seed of "
        "`models.replicates` (it holds only if every seed agrees).",
        "Numbers: this run's Table 1 (`table1.csv`), every variant pooled over all scans; "
        "ratios and misorientation are medians of the per-pattern values, IQ is PyEBSDIndex "
        "pq; indexed is the `Indexed` column.",
        "More d / larger beta: the series sorted by d (plain VAEs) or by beta (the VAE as "
        "beta = 1 and the beta-VAEs of the same d). **holds**: monotone in the paper's "
        "direction, a step against it no larger than the tolerance counting as a tie, and "
        "the last beats the first by more than the tolerance; **partly**: the last beats the "
        "first but the series is not monotone; **does not hold**: otherwise.",
        f"Tolerances of the ordered trends: {ordered}.",
        f"Contrastive ~ VAE: **holds** when every metric is within its tolerance of the "
        f"same-d VAE's: {similar}.",
        "Paper (Calvat et al. 2025, Table 1): indexed 95.3 -> 100 %, median CI 0.06 -> 1.00, "
        "IQ 0.64 -> 0.96, sharpness 0.16 -> 0.38, misorientation 0.02 -> 0.01 deg from d = 16 "
        "to 256; contrastive-128 ~ VAE-128; beta 1 / 15 / 50 at d = 128: indexed 100 / 76.2 / "
        "39.2 %, median CI 1.00 / 0.94 / 0.35.",
    ]
    return ("# Table 1 trends: does this run show the paper's?\n\n" + "\n".join(lines) + "\n\n"
            + "\n".join(f"- {n}" for n in notes) + "\n")


def run_table_rule(metric_paths: Mapping[str, Sequence[str]], variants: Mapping[str, Any],
                   settings: Mapping[str, Any] | None, out_csv: str, out_md: str,
                   out_html: str, out_trends: str | None = None,
                   control_paths: Sequence[str] = (), original_paths: Sequence[str] = ()) -> pd.DataFrame:
    """What rule ``evaluate_table1`` runs: pool the per-pattern metrics into Table 1 (with
    the quality controls of every scan and the originals' absolute values) and, with
    ``out_trends``, state from it whether the paper's trends hold."""
    metrics = {name: [read_metrics(p)[0] for p in paths] for name, paths in metric_paths.items()}
    controls: dict[str, list[dict[str, np.ndarray]]] = {}
    for path in control_paths:
        for name, arrays in read_controls(path)[0].items():
            controls.setdefault(name, []).append(arrays)
    originals = [read_index(p)[0] for p in original_paths]
    frame = table1(metrics, variants, settings, controls=controls, originals=originals or None)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    write_text(out_md, table1_markdown(frame, settings))
    write_text(out_html, table1_html(frame, settings))
    log.info("Table 1:\n%s", table1_markdown(frame, settings))
    if out_trends is not None:
        trends = trends_markdown(trend_verdicts(frame))
        write_text(out_trends, trends)
        log.info("Trends:\n%s", trends)
    return frame


# --------------------------------------------------------------------------- seeds

#: The numeric Table 1 columns of the seed table and its spread rows.
SEED_COLUMNS = ("Indexed", *(m[1] for m in TREND_METRICS if m[1] != "Indexed"))


def seed_table(frames: Mapping[int, pd.DataFrame],
               seed_groups: Mapping[int, Mapping[str, str]]) -> pd.DataFrame:
    """Table 1's model rows of every seed (``frames``: seed -> :func:`table1` of that
    seed's models, named by variant) with columns ``seed`` and ``model``, then one
    ``spread`` row per variant: min, max and standard deviation over the seeds of
    :data:`SEED_COLUMNS` (``<column>_min`` ...; ``seed`` = ``spread``)."""
    rows = []
    for k, frame in sorted(frames.items()):
        models = frame[frame["variant"].isin(list(seed_groups[k]))].copy()
        models.insert(0, "seed", str(k))
        models.insert(1, "model", [seed_groups[k][v] for v in models["variant"]])
        rows.append(models)
    table = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame()
    spread = []
    for variant, g in table.groupby("variant", sort=False) if len(table) else ():
        row: dict[str, Any] = {"seed": "spread", "model": f"{len(g)} seeds", "variant": variant,
                               "Loss": g.iloc[0]["Loss"], "d": g.iloc[0]["d"],
                               "loss": g.iloc[0]["loss"], "beta": g.iloc[0]["beta"]}
        for col in SEED_COLUMNS:
            v = pd.to_numeric(g[col], errors="coerce").to_numpy(np.float64) if col in g else np.array([])
            v = v[np.isfinite(v)]
            row[col] = np.nan
            row[f"{col}_min"] = v.min() if v.size else np.nan
            row[f"{col}_max"] = v.max() if v.size else np.nan
            row[f"{col}_sd"] = v.std(ddof=1) if v.size > 1 else np.nan
        spread.append(row)
    return pd.concat([table, pd.DataFrame(spread)], ignore_index=True)


def seed_trend_verdicts(frames: Mapping[int, pd.DataFrame]) -> pd.DataFrame:
    """Each trend of :func:`trend_verdicts` judged on each seed's Table 1, and combined
    (:func:`latentebsd.replicates.combine_verdicts`: it holds only if every seed says
    so). One row per trend: ``trend``, ``metric``, ``verdict`` (combined), ``agreed``,
    ``n_seeds``, then per seed ``seed<k>_verdict`` and ``seed<k>_values`` (the numbers
    it was decided on)."""
    from latentebsd.replicates import agreed, combine_verdicts

    per_seed = {k: trend_verdicts(frame) for k, frame in sorted(frames.items())}
    order: list[str] = []
    by_trend: dict[str, dict[int, Mapping[str, Any]]] = {}
    for k, vs in per_seed.items():
        for v in vs:
            if v["trend"] not in by_trend:
                order.append(v["trend"])
            by_trend.setdefault(v["trend"], {})[k] = v
    rows = []
    for trend in order:
        seeds = by_trend[trend]
        testable = {k: v["verdict"] for k, v in seeds.items() if v["verdict"] != UNTESTABLE}
        first = next(iter(seeds.values()))
        combined = combine_verdicts(testable) if testable else UNTESTABLE
        row: dict[str, Any] = {"trend": trend, "metric": first["metric"], "verdict": combined,
                               "agreed": agreed(combined), "n_seeds": len(testable)}
        for k, v in seeds.items():
            row[f"seed{k}_verdict"] = v["verdict"]
            row[f"seed{k}_values"] = ", ".join(
                f"{lab}: {val:.4g}" if isinstance(val, (int, float)) else f"{lab}"
                for lab, val, *_ in v["values"]) if v["values"] else v.get("needs") or ""
        rows.append(row)
    return pd.DataFrame(rows)


def run_seeds_rule(metric_paths: Mapping[str, Sequence[str]],
                   seed_groups: Mapping[int, Mapping[str, str]],
                   variants: Mapping[str, Any], settings: Mapping[str, Any] | None,
                   out_table: str, out_trends: str) -> pd.DataFrame:
    """What rule ``evaluate_seeds`` runs: Table 1 of each seed's models
    (``seed_groups``: seed -> {variant: model}; ``metric_paths``: model -> per-scan
    metrics files), the per-seed table with its spread (:func:`seed_table`) and the
    trends judged on every seed (:func:`seed_trend_verdicts`)."""
    frames = {}
    for k, group in sorted(seed_groups.items(), key=lambda kv: int(kv[0])):
        metrics = {v: [read_metrics(p)[0] for p in metric_paths[m]] for v, m in group.items()}
        frames[int(k)] = table1(metrics, {v: variants[v] for v in group}, settings)
    groups = {int(k): dict(g) for k, g in seed_groups.items()}
    table = seed_table(frames, groups)
    with atomic_path(out_table) as tmp:
        table.to_csv(tmp, index=False)
    trends = seed_trend_verdicts(frames)
    with atomic_path(out_trends) as tmp:
        trends.to_csv(tmp, index=False)
    log.info("Trends over %d seed(s):\n%s", len(frames),
             trends[["trend", "verdict"]].to_string(index=False))
    return trends
