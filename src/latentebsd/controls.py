"""Stage ``quality_controls``: what Table 1's measures give to patterns without bands.

A ratio of decoded to original quality says something about a model only if patterns
that carry no bands score far lower. Two controls per scan, measured exactly as a
model's decoded patterns are - written to 16 bits as a decoded UP2 is, Hough-indexed
with each point's own pattern centre, quality inside the screen window
(:func:`latentebsd.index.screen_window`), compared pattern by pattern with the original
(:func:`latentebsd.metrics.pattern_metrics`):

- ``blank_disc``: every on-screen pixel the mean of the scan's preprocessed patterns on
  the screen, off-screen 0 - a decoder that learnt nothing (beta-VAE 50 comes close:
  its Fig. 10 reconstructions are grey discs);
- ``mean_pattern``: the mean of the scan's valid preprocessed patterns, rescaled to
  [-1, 1] on the screen as preprocessing rescales a pattern - a decoder that learnt
  the average pattern only. On a map of few grains it still holds their bands.

Both are indexed at ``evaluation.controls.patterns`` valid points drawn at random (seeded
by the config's seed and the scan's name) and become Table 1's control rows.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from latentebsd import config
from latentebsd.index import build_indexer, index_patterns, pattern_quality, screen_window
from latentebsd.io.controls import write_controls
from latentebsd.io.index import INDEX_DTYPE, read_index
from latentebsd.io.patterns import UP2_RANGE, from_uint16, to_uint16
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.metrics import pattern_metrics
from latentebsd.phases import phases_of
from latentebsd.shards import rows_per_block

log = logging.getLogger(__name__)

#: Control name -> its label in Table 1.
CONTROLS = {"blank_disc": "Control: blank disc", "mean_pattern": "Control: scan's mean pattern"}


def control_patterns(scan: PreprocessedScan, chunk_size: int = 1024) -> dict[str, np.ndarray]:
    """The two control patterns ``(h, w)`` of a preprocessed scan (module docstring),
    after the 16-bit round trip a decoded pattern goes through; streamed in chunks."""
    total = np.zeros(scan.pattern_shape, np.float64)
    count = 0
    step = rows_per_block(scan.geometry.n_cols, chunk_size) * scan.geometry.n_cols
    for a in range(0, scan.n_patterns, step):
        b = min(a + step, scan.n_patterns)
        ok = scan.valid[a:b]
        total += scan.read(a, b)[ok].sum(axis=0, dtype=np.float64)
        count += int(ok.sum())
    if count == 0:
        raise ValueError(f"{scan.path}: no valid pattern to build the quality controls from")
    mean = total / count
    on = mean[scan.mask]
    blank = np.where(scan.mask, on.mean(), 0.0)
    span = on.max() - on.min()
    rescaled = np.where(scan.mask, 2.0 * (mean - on.min()) / span - 1.0 if span > 0 else 0.0, 0.0)
    # the 16-bit round trip, then masked as the index stage masks what it reads
    return {name: np.where(scan.mask, from_uint16(to_uint16(p.astype(np.float32), *UP2_RANGE)),
                           np.float32(0.0)).astype(np.float32)
            for name, p in (("blank_disc", blank), ("mean_pattern", rescaled))}


def sample_points(valid: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``min(n, valid points)`` distinct valid row-major indices, sorted, drawn with ``seed``."""
    candidates = np.flatnonzero(valid)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(candidates, size=min(int(n), len(candidates)), replace=False))


def quality_controls(preprocessed_path: str | os.PathLike, original_index_path: str | os.PathLike,
                     out_path: str | os.PathLike, settings: Mapping[str, Any] | None = None,
                     seed: int = 0, scan_name: str = "") -> dict[str, dict[str, np.ndarray]]:
    """Measure both controls of one scan against its original patterns and write them
    (:mod:`latentebsd.io.controls`). ``settings``: the validated ``evaluation`` section.

    Returns
    -------
    dict
        Control name -> per-point metric arrays.
    """
    cfg = config.section("evaluation") if settings is None else settings
    original, _, index_attrs = read_index(original_index_path)
    with PreprocessedScan(preprocessed_path) as scan:
        if len(original["phase"]) != scan.n_patterns:
            raise ValueError(f"{original_index_path}: {len(original['phase'])} patterns, "
                             f"{preprocessed_path} has {scan.n_patterns}")
        geometry, mask = scan.geometry, scan.mask
        patterns = control_patterns(scan, cfg["chunk_size"])
        points = sample_points(scan.valid, cfg["controls"]["patterns"], seed)
    window = screen_window(mask)
    phases = phases_of(index_attrs)  # the scan's phases, as its original was indexed
    indexer = build_indexer(geometry, phase_list=phases, patternmask=mask, **cfg["hough"])
    reference = {k: np.asarray(v)[points] for k, v in original.items()
                 if np.ndim(v) >= 1 and len(v) == geometry.n_patterns}
    metrics, quality = {}, {}
    for name, pattern in patterns.items():
        stack = np.repeat(pattern[None], len(points), axis=0)
        result = index_patterns(stack, geometry, indexer=indexer, points=points,
                                chunk_size=min(512, cfg["chunk_size"]))
        # one pattern: its quality is the same at every point
        q = {k: np.full(len(points), v[0]) for k, v in pattern_quality(stack[:1], window,
                                                                       cfg["sharpness"]).items()}
        decoded = {**{f: result[f] for f in INDEX_DTYPE.names}, **q}
        metrics[name] = pattern_metrics(reference, decoded, cfg["min_nmatch"], phases)
        quality[name] = {"pq_median": float(np.median(result["pq"])),
                         "cm_median": float(np.median(result["cm"])),
                         "sharpness": float(q["sharpness"][0]), "iq_kp": float(q["iq_kp"][0])}
        m = metrics[name]
        log.info("%s %s: indexed %.1f %% of %d points, median sharpness ratio %.3f, "
                 "median pq ratio %.3f", scan_name, name, 100 * m["indexed"].mean(), len(points),
                 np.nanmedian(m["sharpness_ratio"]) if np.isfinite(m["sharpness_ratio"]).any() else np.nan,
                 np.nanmedian(m["iq_pq_ratio"]) if np.isfinite(m["iq_pq_ratio"]).any() else np.nan)
    attrs = {"scan": scan_name, "min_nmatch": cfg["min_nmatch"], "seed": int(seed),
             "sharpness": json.dumps(cfg["sharpness"]),
             "quality_window": json.dumps([window[0].start, window[0].stop,
                                           window[1].start, window[1].stop])}
    write_controls(out_path, metrics, points, quality, attrs)
    return metrics
