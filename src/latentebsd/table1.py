"""Stage ``evaluate_table1``: the paper's Table 1 from every variant's per-pattern metrics.

10/50/90 % quantiles of the metrics (:mod:`latentebsd.metrics`) pooled over all scans
(valid patterns), the fraction indexed three ways, and the paper's numbers beside ours;
written as CSV, Markdown and HTML (the report's page).
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

#: Table 1 columns: (our metric, header, paper key).
TABLE_COLUMNS = (
    ("ci_ratio", "CI ratio", "ci_ratio"),
    ("iq_pq_ratio", "IQ ratio (pq)", "iq_ratio"),
    ("iq_kp_ratio", "IQ ratio (kikuchipy)", None),
    ("misorientation_deg", "Misorientation (deg)", "misorientation_deg"),
    ("sharpness_ratio", "Sharpness ratio", "sharpness_ratio"),
)


def format_quantiles(values: np.ndarray, quantiles: Sequence[float], digits: int = 2) -> str:
    """``"q10/q50/q90"`` of the finite values, ``"n/a"`` when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    return "/".join(f"{x:.{digits}f}" for x in np.quantile(v, list(quantiles)))


def table1(metrics_by_variant: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
           variants: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any] | None = None,
           original_indexed: Sequence[np.ndarray] | None = None) -> pd.DataFrame:
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

    Returns
    -------
    pandas.DataFrame
        Columns ``variant``, ``Loss``, ``d``, ``n_patterns``, ``Indexed`` (``%``),
        ``Indexed (any solution)``, ``Indexed and agreeing`` (indexed within
        ``agree_deg`` of the original's orientation), one ``"q10/q50/q90"`` column per metric of
        :data:`TABLE_COLUMNS`, the numeric quantiles (``<metric>_q10`` ...), and the
        paper's values (``Paper ...`` columns, empty where the paper has no such model).
    """
    cfg = config.section("evaluation") if settings is None else settings
    qs = cfg["quantiles"]
    rows = []
    for name, per_scan in metrics_by_variant.items():
        if name not in variants:
            raise ValueError(f"variant {name!r} is not in models.variants")
        if not per_scan:
            raise ValueError(f"no metrics for variant {name!r}")
        pooled = {k: np.concatenate([np.asarray(m[k])[np.asarray(m["valid"], bool)]
                                     for m in per_scan])
                  for k in ("indexed", "indexed_any", *METRICS)}
        n = len(pooled["indexed"])
        var = variants[name]
        key = variant_key(var)
        agree = pooled["indexed"] & (np.nan_to_num(pooled["misorientation_deg"], nan=np.inf)
                                     < cfg["agree_deg"])
        row: dict[str, Any] = {"variant": name, "Loss": loss_label(var), "d": key[1],
                               "n_patterns": n,
                               "Indexed": _percent(pooled["indexed"]),
                               "Indexed (any solution)": _percent(pooled["indexed_any"]),
                               "Indexed and agreeing": _percent(agree)}
        for metric, header, _ in TABLE_COLUMNS:
            row[header] = format_quantiles(pooled[metric], qs)
        for metric, _, _ in TABLE_COLUMNS:
            finite = pooled[metric][np.isfinite(pooled[metric])]
            for q in qs:
                row[f"{metric}_q{round(100 * q)}"] = (float(np.quantile(finite, q))
                                                     if finite.size else np.nan)
            row[f"{metric}_n"] = int(finite.size)
        paper = PAPER_TABLE1.get(key, {})
        row["Paper indexed"] = paper.get("indexed", "")
        for _, header, paper_key in TABLE_COLUMNS:
            if paper_key is not None:
                row[f"Paper {header}"] = paper.get(paper_key, "")
        rows.append(row)
    if original_indexed is None:
        first = next(iter(metrics_by_variant.values()), [])
        original_indexed = [np.asarray(m["indexed_original"])[np.asarray(m["valid"], bool)]
                            for m in first]
    frame = pd.DataFrame(rows)
    if original_indexed:
        ref = np.concatenate([np.asarray(v, bool) for v in original_indexed])
        reference = {"variant": "original", "Loss": "Original (preprocessed)", "d": "",
                     "n_patterns": len(ref), "Indexed": _percent(ref),
                     "Indexed (any solution)": "", "Indexed and agreeing": ""}
        frame = pd.concat([pd.DataFrame([reference]), frame], ignore_index=True)
    return frame


def _percent(flags: np.ndarray) -> float:
    flags = np.asarray(flags, bool)
    return round(100.0 * flags.mean(), 1) if flags.size else float("nan")


def table1_notes(settings: Mapping[str, Any] | None = None) -> list[str]:
    """The definitions a Table 1 rendering states under the table."""
    cfg = config.section("evaluation") if settings is None else settings
    s = cfg["sharpness"]
    part = "Re(FFT2(p))" if s["part"] == "real" else "|FFT2(p)|"
    qs = "/".join(f"{round(100 * q)} %" for q in cfg["quantiles"])
    return [
        f"Quantiles {qs} of the per-pattern values, pooled over all scans (valid patterns).",
        f"Indexed: PyEBSDIndex solution with >= {cfg['min_nmatch']} matched bands; "
        "'any solution': phase >= 0 (how OIM counts indexed points); 'and agreeing': "
        f"indexed within {cfg['agree_deg']:g} deg of the original's orientation.",
        "CI ratio: PyEBSDIndex confidence metric cm, decoded / original (the paper: EDAX OIM "
        "CI). IQ ratio (pq): PyEBSDIndex mean Radon peak height (closest to EDAX IQ); "
        "IQ ratio (kikuchipy): Krieger Lassen image quality. Ratios with an original "
        "value of 0 are left out.",
        "Misorientation: m-3m angle between decoded and original orientation (orix), "
        "patterns indexed in both.",
        f"Sharpness: F = fftshift({part}), M = max|F|, count(F > M / {s['divisor']:g}) / (H W), "
        + ("on the 16-bit UP2 intensity scale (p + 1, off-screen mid-grey)."
           if s["intensity"] == "up2" else "on the masked zero-mean [-1, 1] pattern."),
        "Hough: " + "; ".join(f"{k} -> {v}" for k, v in PAPER_HOUGH_MAPPING.items())
        + f" (used: {json.dumps(cfg['hough'])}).",
        "Paper rows: Calvat et al. 2025, Table 1 (480 x 480 patterns binned to 120 x 120, "
        "EDAX OIM 8 indexing); ours: this workflow's scans and indexer.",
    ]


def table1_markdown(frame: pd.DataFrame, settings: Mapping[str, Any] | None = None) -> str:
    """Table 1 as Markdown: an "ours" and a "paper" line per model, notes below."""
    headers = ["Loss", "d", "", "Indexed", "Indexed (any solution)", "Indexed and agreeing",
               *[h for _, h, _ in TABLE_COLUMNS]]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in frame.iterrows():
        ours = [str(row["Loss"]), str(row["d"]), "ours", _fmt_pct(row["Indexed"]),
                _fmt_pct(row["Indexed (any solution)"]), _fmt_pct(row["Indexed and agreeing"]),
                *[str(row.get(h, "")) if isinstance(row.get(h, ""), str) else ""
                  for _, h, _ in TABLE_COLUMNS]]
        lines.append("| " + " | ".join(ours) + " |")
        if row["variant"] != "original":
            paper = ["", "", "paper", str(row.get("Paper indexed", "")), "", "",
                     *[str(row.get(f"Paper {h}", "")) if p else "" for _, h, p in TABLE_COLUMNS]]
            lines.append("| " + " | ".join(paper) + " |")
    notes = "\n".join(f"- {n}" for n in table1_notes(settings))
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
    headers = ["Loss", "d", "", "Indexed", "Indexed (any solution)", "Indexed and agreeing",
               *[h for _, h, _ in TABLE_COLUMNS]]
    body = []
    for _, row in frame.iterrows():
        cells = [row["Loss"], row["d"], "ours", _fmt_pct(row["Indexed"]),
                 _fmt_pct(row["Indexed (any solution)"]), _fmt_pct(row["Indexed and agreeing"]),
                 *[row.get(h, "") if isinstance(row.get(h, ""), str) else ""
                   for _, h, _ in TABLE_COLUMNS]]
        body.append("<tr class='ours'>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                                  for c in cells) + "</tr>")
        if row["variant"] != "original":
            cells = ["", "", "paper", row.get("Paper indexed", ""), "", "",
                     *[row.get(f"Paper {h}", "") if p else "" for _, h, p in TABLE_COLUMNS]]
            body.append("<tr class='paper'>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                                       for c in cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table1_notes(settings))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Table 1</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:center}"
        "tr.paper td{color:#666;font-style:italic;border-bottom:2px solid #888}"
        "th{background:#eee}</style></head><body>"
        "<h3>Table 1: reconstruction quality seen by Hough indexing (ours vs the paper)</h3>"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"
        + "".join(body) + f"</table><ul>{notes}</ul></body></html>\n"
    )


def run_table_rule(metric_paths: Mapping[str, Sequence[str]], variants: Mapping[str, Any],
                   settings: Mapping[str, Any] | None, out_csv: str, out_md: str,
                   out_html: str) -> pd.DataFrame:
    """What rule ``evaluate_table1`` runs: pool the per-pattern metrics into Table 1."""
    metrics = {name: [read_metrics(p)[0] for p in paths] for name, paths in metric_paths.items()}
    frame = table1(metrics, variants, settings)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    write_text(out_md, table1_markdown(frame, settings))
    write_text(out_html, table1_html(frame, settings))
    log.info("Table 1:\n%s", table1_markdown(frame, settings))
    return frame
