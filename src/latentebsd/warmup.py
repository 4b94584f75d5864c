"""Stage ``numba_warmup``: compile every numba path of the workflow once, before the jobs.

kikuchipy, orix and PyEBSDIndex compile their numba functions on first use and cache
them on disk (:mod:`latentebsd.numba_cache`). The warm-up jobs run those paths on a
tiny scan of their own - ``simulate``: kikuchipy's pattern projection (fixed and
drifting pattern centre) and orix's rotations for both microstructures; ``index``:
PyEBSDIndex's Hough indexing of preprocessed and decoded (UP2) patterns, kikuchipy's
image quality, orix's ``.ang`` writer, misorientations, grains, KAM, GROD and IPF
colours - so that the workflow's jobs only ever load compiled code from the cache:

- the cold compile (~90 s for PyEBSDIndex on 2 cores) is paid once, by a job that
  runs beside the simulation and the training, not by the first index job of every
  scan;
- **outputs do not depend on whether the cache was cold.** numba code compiled in a
  process and the same code loaded from the cache by another process can differ in
  the last bits: the orientations of 833 of 3072 patterns of one decoded scan differed
  by up to 1e-13 between a run that compiled in the index job and one that loaded
  (``benchmarks/RESULTS.md``). With every job loading, a cold and a warm run, or a
  killed run and its rerun, give byte-identical files.

Each warm-up job writes a small JSON (what it ran, how long it took, where the cache
is); it is a temporary output, so a later run that needs a numba stage warms up again
(seconds when the cache is warm).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numba
import numpy as np

from latentebsd import config, numba_cache
from latentebsd.conventional import conventional_maps, plot_ipf
from latentebsd.index import index_scan
from latentebsd.io.atomic import write_text
from latentebsd.io.index import read_index
from latentebsd.io.patterns import to_uint16, write_up2
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.io.truth import read_truth_geometry
from latentebsd.metrics import pattern_metrics
from latentebsd.orientations import ipf_colors
from latentebsd.preprocess import preprocess_scan
from latentebsd.simulate import simulate_scan

log = logging.getLogger(__name__)

PARTS = ("simulate", "index")
#: The tiny scan of the warm-up: map shape and pattern size (compiled code depends on
#: array types, not sizes).
_MAP, _PATTERN = (3, 4), [40, 40]


def _simulate(work: Path, simulation: Mapping[str, Any]) -> dict[str, Path]:
    """Both microstructures, drifting PC (per-pattern path) and one pattern per chunk
    (kikuchipy's fixed-PC path)."""
    out = {}
    for micro, chunk in (("am", 5), ("wrought", 1)):
        settings = {**simulation, "pattern_shape": _PATTERN, "chunk_size": chunk,
                    "pc_drift": max(float(simulation["pc_drift"]), 0.01)}
        up2, truth = work / f"{micro}.up2", work / f"{micro}_truth.h5"
        simulate_scan(up2, truth, micro, _MAP, settings, seed=1, progress=False)
        out[micro] = up2
    return out


def _index(work: Path, simulation: Mapping[str, Any], evaluation: Mapping[str, Any]) -> None:
    """Index preprocessed and decoded patterns; then every orientation map the
    evaluation stages draw from them."""
    up2 = _simulate(work, simulation)["am"]
    geometry = read_truth_geometry(work / "am_truth.h5")
    pre = preprocess_scan(up2, work / "am.h5", geometry, config.section("preprocess", {"binning": 1}),
                          progress=False)
    with PreprocessedScan(pre) as scan:
        decoded = write_up2(work / "decoded.up2", [to_uint16(scan.read(0, scan.n_patterns))],
                            scan.geometry.map_shape, scan.pattern_shape, scan.geometry.step_um)
    original = index_scan(pre, pre, work / "orig.h5", work / "orig.ang", evaluation, "original",
                          progress=False)
    again = index_scan(decoded, pre, work / "dec.h5", work / "dec.ang", evaluation, "decoded",
                       progress=False)
    pattern_metrics(original, again, evaluation["min_nmatch"])
    arrays, geo, _ = read_index(work / "orig.h5")
    for neighbours in (4, 8):
        maps = conventional_maps(arrays, geo, {**evaluation, "kam": {**evaluation["kam"],
                                                                     "neighbours": neighbours}})
    for direction in ("x", "y", "z"):
        ipf_colors(arrays["quat"], arrays["indexed"], direction)
    plot_ipf(maps, geo, work / "ipf.png", "warm-up", evaluation["ipf_direction"], 40)


def warm_up(part: str, out_path: str | os.PathLike,
            simulation: Mapping[str, Any] | None = None,
            evaluation: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run the numba paths of ``part`` (:data:`PARTS`) and write what was done as JSON.

    Parameters
    ----------
    part
        ``simulate`` or ``index`` (module docstring).
    out_path
        Output JSON: ``part``, ``seconds``, ``cache_dir``, ``numba`` version.
    simulation, evaluation
        The validated config sections the real jobs run with (``None``: defaults).
    """
    if part not in PARTS:
        raise ValueError(f"warm-up part must be one of {PARTS}, got {part!r}")
    simulation = config.section("simulation") if simulation is None else simulation
    evaluation = config.section("evaluation") if evaluation is None else evaluation
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"latentebsd-warmup-{part}-") as tmp:
        if part == "simulate":
            _simulate(Path(tmp), simulation)
        else:
            _index(Path(tmp), simulation, evaluation)
    summary = {"part": part, "seconds": round(time.perf_counter() - t0, 1),
               "cache_dir": str(numba_cache.cache_dir()), "numba": numba.__version__,
               "numpy": np.__version__}
    log.info("numba warm-up %s: %.1f s (cache %s)", part, summary["seconds"], summary["cache_dir"])
    write_text(out_path, json.dumps(summary, indent=2) + "\n")
    return summary
