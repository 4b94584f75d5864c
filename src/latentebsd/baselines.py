"""Stage ``baseline_cube``: PCA and NMF of the preprocessed patterns, as latent cubes.

The linear baselines the latent maps are judged against: k components of the on-screen
pixels of one scan's preprocessed patterns (k = ``benchmark.components``, by default the
smallest latent dimension of the models), fitted and applied in chunks so a
1M-pattern scan fits in bounded memory - scikit-learn's ``IncrementalPCA`` (exact for
the mean; its components converge to the in-memory PCA's, see the test for the
tolerance) and ``MiniBatchNMF`` (on ``p + 1``: NMF needs non-negative data). The
component scores are written as a cube in the latent-cube format
(:mod:`latentebsd.io.cube`, without a posterior variance), named like a model variant
(``pca16``, ``nmf16``), so that ranking, montage, segmentation, ground-truth matching
and the detection benchmark run on them unchanged.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from latentebsd.io.cube import cube_writer
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.shards import rows_per_block

log = logging.getLogger(__name__)

METHODS = ("pca", "nmf")


def baseline_name(method: str, k: int) -> str:
    """The variant name of a baseline cube: ``pca16``, ``nmf16``."""
    return f"{method}{int(k)}"


def baseline_components(benchmark: Mapping[str, Any], variants: Mapping[str, Mapping[str, Any]]) -> int:
    """k of the baselines: ``benchmark.components``, else the smallest latent dimension."""
    k = benchmark.get("components")
    if k is None:
        k = min(int(v["latent_dim"]) for v in variants.values())
    return int(k)


#: Passes of MiniBatchNMF over the scan's chunks (one partial fit per chunk and pass).
NMF_PASSES = 10


def _chunks(scan: PreprocessedScan, chunk_size: int, at_least: int,
            valid_only: bool) -> Iterator[tuple[int, np.ndarray]]:
    """``(start, on-screen pixels (n, p))`` chunks of whole map rows, each of at least
    ``at_least`` patterns (a short last chunk joins the one before: a partial fit needs
    as many samples as components)."""
    n_cols, n = scan.geometry.n_cols, scan.n_patterns
    rows = max(rows_per_block(n_cols, chunk_size), -(-int(at_least) // n_cols))
    starts = list(range(0, n, rows * n_cols))
    if len(starts) > 1 and n - starts[-1] < at_least:
        starts.pop()
    for i, start in enumerate(starts):
        stop = starts[i + 1] if i + 1 < len(starts) else n
        x = scan.read(start, stop)[:, scan.mask]
        yield start, (x[scan.valid[start:stop]] if valid_only else x)


def fitted_components(k: int, n_valid: int) -> int:
    """How many components a scan of ``n_valid`` valid patterns can give: ``k``, or
    ``n_valid`` on a scan with fewer patterns (a tiny map)."""
    if n_valid < 1:
        raise ValueError("no valid pattern to fit a baseline to")
    return min(int(k), int(n_valid))


def fit_baseline(scan: PreprocessedScan, method: str, k: int, seed: int,
                 chunk_size: int) -> tuple[Any, float]:
    """A fitted ``IncrementalPCA`` / ``MiniBatchNMF`` of the scan's valid patterns (k
    components, or as many as it has valid patterns: :func:`fitted_components`), and
    the shift added to the pixels before (NMF: 1, to make them non-negative)."""
    # scikit-learn costs ~1 s to import, and latentebsd.plan (read at every Snakemake
    # start) imports this module for the baseline names only
    from sklearn.decomposition import IncrementalPCA, MiniBatchNMF

    if method not in METHODS:
        raise ValueError(f"config key benchmark.baselines: expected {METHODS}, got {method!r}")
    k = fitted_components(k, int(scan.valid.sum()))
    if method == "pca":
        model, shift, passes = IncrementalPCA(n_components=k), 0.0, 1
    else:
        model = MiniBatchNMF(n_components=k, init="nndsvda", random_state=seed)
        shift, passes = 1.0, NMF_PASSES
    for _ in range(passes):
        for _, x in _chunks(scan, chunk_size, k, valid_only=True):
            if len(x) >= k:
                model.partial_fit(x + shift)
    return model, shift


def baseline_scan(preprocessed_path: str | os.PathLike, cube_path: str | os.PathLike,
                  tiff_path: str | os.PathLike | None, method: str, k: int, seed: int = 0,
                  chunk_size: int = 4096, scan_name: str = "") -> dict[str, Any]:
    """Fit a baseline to one preprocessed scan and write its component scores as a cube.

    A scan with fewer valid patterns than ``k`` (a tiny map) gets as many components as
    it has patterns, under the configured name (``pca16`` with 9 components on a 3 x 3
    map); the cube's ``latent_dim`` is the number fitted, its attribute
    ``requested_components`` the configured ``k``, and the log says so.

    Returns
    -------
    dict
        ``method``, ``k`` (fitted), ``requested``, the variant name and (PCA)
        ``explained_variance_ratio``.
    """
    name = baseline_name(method, k)
    requested = int(k)
    with PreprocessedScan(preprocessed_path) as scan:
        n_valid = int(scan.valid.sum())
        k = fitted_components(requested, n_valid)
        if k < requested:
            log.warning("%s / %s: %d valid patterns give only %d of the %d components "
                        "(config key benchmark.components): the cube holds %d", scan_name,
                        name, n_valid, k, requested, k)
        model, shift = fit_baseline(scan, method, k, seed, chunk_size)
        g = scan.geometry
        attrs = {"scan": scan_name, "variant": name, "latent_dim": k, "step_um": g.step_um,
                 "requested_components": requested,
                 "n_rows": g.n_rows, "n_cols": g.n_cols, "data_reduction_factor": float("nan"),
                 "baseline": method, "model_variant": json.dumps({"loss": method, "latent_dim": k}),
                 "source_patterns": str(Path(preprocessed_path).resolve()),
                 "layout": "pattern i of the scan sits at (y, x) = divmod(i, n_cols) * step_um"}
        with cube_writer(cube_path, tiff_path, k, g.n_rows, g.n_cols, g.step_um, attrs,
                         with_logvar=False) as writer:
            for start, x in _chunks(scan, chunk_size, 1, valid_only=False):
                scores = model.transform(x + shift).astype(np.float32)
                rows = len(x) // g.n_cols
                r0 = start // g.n_cols
                valid = scan.valid[start:start + len(x)].reshape(rows, g.n_cols)
                scores[~valid.ravel()] = 0.0
                writer.write(r0, scores.reshape(rows, g.n_cols, k).transpose(2, 0, 1), None, valid)
    info = {"method": method, "k": k, "requested": requested, "variant": name}
    if method == "pca":
        info["explained_variance_ratio"] = float(model.explained_variance_ratio_.sum())
    log.info("%s / %s: %s", scan_name, name, info)
    return info


def run_baseline_rule(preprocessed: str, cube: str, tiff: str | None, variant: str,
                      benchmark: Mapping[str, Any], variants: Mapping[str, Any], seed: int,
                      scan: str) -> dict[str, Any]:
    """What rule ``baseline_cube`` runs: ``variant`` is ``pca<k>`` or ``nmf<k>``."""
    k = baseline_components(benchmark, variants)
    method = variant[:-len(str(k))]
    if baseline_name(method, k) != variant:
        raise ValueError(f"{variant}: not a configured baseline ({baseline_variants(benchmark, variants)})")
    return baseline_scan(preprocessed, cube, tiff, method, k, seed,
                         int(benchmark["chunk_size"]), scan)


def baseline_variants(benchmark: Mapping[str, Any], variants: Mapping[str, Any]) -> list[str]:
    """The baseline cube names a config asks for (``benchmark.baselines`` x k)."""
    k = baseline_components(benchmark, variants)
    return [baseline_name(m, k) for m in benchmark["baselines"]]
