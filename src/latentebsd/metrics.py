"""Stage ``evaluate_metrics``: each decoded pattern against its original, pattern by pattern.

Both index files (:mod:`latentebsd.io.index`) of one scan -> one metrics file
(:mod:`latentebsd.io.metrics`). Definitions:

- Indexed: PyEBSDIndex found a solution (``phase >= 0``) that at least ``min_nmatch``
  (default 5 of the 9 detected bands) agree on - what OIM users mean by an indexed point,
  a solution that is not noise (their CI > 0.1 rule): a white-noise disc gets a
  solution from 3 - 4 matched bands in 77 % of cases, never from 5
  (``benchmarks/quality_controls.py``). Any solution at all (``phase >= 0``) counted
  even a decoder that learnt nothing as indexing well.
- Ratios are decoded / original for the same pattern with the same indexer and the
  same mask: CI ratio (PyEBSDIndex ``cm``, the open analogue of OIM's CI), IQ ratio
  from PyEBSDIndex ``pq`` (mean Radon peak height, the closer analogue of EDAX IQ) and
  from kikuchipy's Krieger Lassen image quality, sharpness ratio. Where the original's
  value is <= 1e-12 (e.g. ``cm`` of a pattern that was not indexed) the ratio is
  undefined (NaN). A decoded pattern that is not indexed has ``cm`` = 0 and so a CI
  ratio of 0.
- Misorientation: orix's symmetry-reduced angle between the decoded and the original
  orientation, in the Laue group of their phase (the scan's phases, which the
  original's index file records; :mod:`latentebsd.phases`), for patterns indexed in
  both as the same phase (:func:`latentebsd.orientations.phase_pair_angles`, in
  chunks). ``wrong_phase``: indexed in both, as different phases - no misorientation
  exists, and Table 1 counts such a pattern as not agreeing.

A sharded scan's blocks run as ``metrics_shard`` jobs, joined by :func:`gather_metrics`.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from latentebsd import config
from latentebsd.io.index import is_indexed, read_index
from latentebsd.io.metrics import read_metrics, write_metrics
from latentebsd.io.preprocessed import read_screen
from latentebsd.orientations import phase_pair_angles
from latentebsd.phases import PhaseSpec, laue_groups, phases_of
from latentebsd.shards import check_covers, concatenate, first_rows, h5_first_row

log = logging.getLogger(__name__)

def _ratio(num: np.ndarray, den: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    ok = np.isfinite(num) & np.isfinite(den) & (den > eps)
    np.divide(num, den, out=out, where=ok)
    return out


def pattern_metrics(original: Mapping[str, np.ndarray], decoded: Mapping[str, np.ndarray],
                    min_nmatch: int | None = None, phases: Sequence[PhaseSpec] | None = None,
                    ) -> dict[str, np.ndarray]:
    """Decoded vs original, pattern by pattern (see the module docstring).

    Parameters
    ----------
    original, decoded
        Index arrays of the same scan (:func:`latentebsd.io.index.read_index`): ``quat``, ``pq``, ``cm``,
        ``nmatch``, ``phase``, ``iq_kp``, ``sharpness``; ``original["valid"]`` if present.
    min_nmatch
        Bands a solution needs to count as indexed (``None``: ``evaluation.min_nmatch``'s
        default).
    phases
        The scan's phases, which the ``phase`` fields index (``None``: FCC nickel).

    Returns
    -------
    dict
        ``(n,)`` arrays: ``valid``, ``indexed_original``, ``indexed`` (decoded),
        ``wrong_phase`` (indexed in both as different phases) and
        :data:`METRICS` (NaN where undefined).
    """
    if min_nmatch is None:
        min_nmatch = config.section("evaluation")["min_nmatch"]
    n = len(original["phase"])
    if len(decoded["phase"]) != n:
        raise ValueError(f"original has {n} patterns, decoded {len(decoded['phase'])}")
    valid = np.asarray(original.get("valid", np.ones(n, bool)), dtype=bool)
    idx_o = is_indexed(original, min_nmatch)
    idx_d = is_indexed(decoded, min_nmatch)
    both = idx_o & idx_d
    p_o, p_d = np.asarray(original["phase"]), np.asarray(decoded["phase"])
    mis = np.full(n, np.nan)
    mis[both] = phase_pair_angles(np.asarray(original["quat"])[both],
                                  np.asarray(decoded["quat"])[both], p_o[both], p_d[both],
                                  laue_groups(phases) if phases else None)
    return {
        "valid": valid,
        "indexed_original": idx_o,
        "indexed": idx_d,
        "wrong_phase": both & (p_o != p_d),
        "ci_ratio": _ratio(decoded["cm"], original["cm"]),
        "iq_pq_ratio": _ratio(decoded["pq"], original["pq"]),
        "iq_kp_ratio": _ratio(decoded["iq_kp"], original["iq_kp"]),
        "misorientation_deg": mis,
        "sharpness_ratio": _ratio(decoded["sharpness"], original["sharpness"]),
    }


def run_metrics_rule(original_path: str, decoded_path: str, out_path: str,
                     settings: Mapping[str, Any] | None, variant: str, scan: str,
                     rows: tuple[int, int] | None = None) -> None:
    """What rules ``evaluate_metrics`` and ``metrics_shard`` (``rows`` given) run: one
    scan (or shard) x variant; ``settings`` is the validated ``evaluation`` section."""
    cfg = config.section("evaluation") if settings is None else settings
    original, geometry, attrs = read_index(original_path, rows)
    decoded, geometry_d, _ = read_index(decoded_path, rows)
    if geometry_d.map_shape != geometry.map_shape:
        raise ValueError(f"{decoded_path}: map {geometry_d.map_shape} differs from "
                         f"{original_path}'s {geometry.map_shape}")
    phases = phases_of(attrs)
    metrics = pattern_metrics(original, decoded, cfg["min_nmatch"], phases)
    attrs = {"variant": variant, "scan": scan, "min_nmatch": cfg["min_nmatch"],
             "sharpness": json.dumps(cfg["sharpness"])}
    if rows is not None:
        attrs.update(first_row=int(rows[0]), shard_n_rows=int(rows[1]) - int(rows[0]))
    write_metrics(out_path, metrics, geometry, attrs, 0 if rows is None else int(rows[0]))
    v = metrics["valid"]
    log.info("%s / %s: %.1f %% indexed, median misorientation %.3f deg", variant, scan,
             100 * metrics["indexed"][v].mean() if v.any() else float("nan"),
             np.nanmedian(metrics["misorientation_deg"][v]) if v.any() else float("nan"))
    if metrics["wrong_phase"][v].any():
        log.info("%s / %s: %d decoded patterns indexed as another phase than their original "
                 "(counted as not agreeing)", variant, scan, int(metrics["wrong_phase"][v].sum()))


def gather_metrics(shard_paths: Sequence[str | os.PathLike], preprocessed_path: str | os.PathLike,
                   out_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Metric shard files of ``metrics_shard`` -> the scan's per-pattern metrics file
    (rule ``gather_metrics``)."""
    geometry, _, _ = read_screen(preprocessed_path)
    shards = first_rows(shard_paths, h5_first_row)
    check_covers(shards, geometry.n_rows, str(out_path))
    arrays, attrs = concatenate(shards, read_metrics)
    arrays.pop("row"), arrays.pop("col")
    write_metrics(out_path, arrays, geometry, attrs)
    return arrays
