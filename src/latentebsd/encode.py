"""Stage ``encode``: every pattern of a scan -> a latent cube (feature, row, col), streamed.

One preprocessed scan x one trained model ->

- ``results/latent/{variant}/{scan}.nc`` and ``.tif``: the latent cube and its ImageJ
  hyperstack (:mod:`latentebsd.io.cube`);
- ``results/latent/{variant}/{scan}_reduction.json``: sizes and the data-reduction
  factor (raw pattern bytes / latent bytes), plus the encoding throughput.

Memory stays bounded for any scan size: patterns are read, encoded and written in
blocks of whole map rows (``maps.chunk_size`` patterns, rounded down to whole rows,
counted from row 0: :mod:`latentebsd.shards`). A sharded scan's blocks are encoded by
``encode_shard`` jobs and joined by :func:`gather_latent`; rule ``latent_summary``
tabulates every cube (:func:`summarize_reductions`).

Invalid patterns (flagged blank in preprocessing, stored as zeros) are encoded like
any other so that the cube always equals a direct encoder call; ``valid`` marks them
and the maps stage leaves them out of its statistics.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.io.atomic import atomic_path, write_text
from latentebsd.io.cube import CUBE_VARIABLES, cube_attrs, cube_writer
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.io.weights import load_model
from latentebsd.models import encode_patterns
from latentebsd.shards import check_covers, first_rows, row_range, rows_per_block
from latentebsd.workflow import job_device

log = logging.getLogger(__name__)

REDUCTION_DEFINITION = (
    "raw pattern bytes (raw_pattern_shape x raw_dtype, as in the original file) / "
    "latent bytes (latent_dim x float32 of latent_mean)"
)


def data_reduction(raw_pattern_shape: Sequence[int], raw_dtype: str | np.dtype,
                   latent_dim: int) -> dict[str, Any]:
    """Bytes per pattern before and after encoding.

    Parameters
    ----------
    raw_pattern_shape
        ``(H, W)`` of the pattern in the original file (before binning).
    raw_dtype
        Its dtype in the file (``uint16`` for UP2).
    latent_dim
        d; a pattern is stored as d float32 latent means.

    Returns
    -------
    dict
        ``raw_bytes_per_pattern``, ``latent_bytes_per_pattern``, ``data_reduction_factor``.
    """
    raw = int(np.prod([int(v) for v in raw_pattern_shape])) * np.dtype(raw_dtype).itemsize
    latent = int(latent_dim) * np.dtype(np.float32).itemsize
    return {"raw_bytes_per_pattern": raw, "latent_bytes_per_pattern": latent,
            "data_reduction_factor": raw / latent}


def encode_scan(
    preprocessed_path: str | os.PathLike,
    weights_path: str | os.PathLike,
    cube_path: str | os.PathLike,
    tiff_path: str | os.PathLike | None = None,
    reduction_path: str | os.PathLike | None = None,
    scan: str = "",
    variant: str = "",
    settings: Mapping[str, Any] | None = None,
    device: str = "cpu",
    threads: int = 1,
    progress: bool = True,
    rows: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Encode every pattern of a preprocessed scan and write the latent cube.

    Parameters
    ----------
    preprocessed_path
        Output of the preprocess stage (:mod:`latentebsd.io.preprocessed`).
    weights_path
        Trained model (:mod:`latentebsd.io.weights`).
    cube_path
        Output NetCDF (:mod:`latentebsd.io.cube`).
    tiff_path
        Output ImageJ TIFF of the latent means; ``None`` skips it.
    reduction_path
        Output JSON with the data-reduction factor; ``None`` skips it.
    scan, variant
        Names stored in the attrs.
    settings
        The validated ``maps`` config section (``None``: the schema's defaults); this
        stage uses ``chunk_size`` (patterns per block, rounded down to whole map rows;
        bounds memory) and ``batch_size`` (patterns per encoder forward pass).
    device
        ``"cpu"`` or ``"cuda"``.
    threads
        CPU threads for torch.
    progress
        Show a tqdm progress bar.
    rows
        Map rows ``(first_row, stop_row)`` to encode (a shard, :mod:`latentebsd.shards`);
        ``None``: the whole map. A shard's cube holds only those rows, with attrs
        ``first_row`` and ``scan_n_rows``.

    Returns
    -------
    dict
        What the reduction JSON holds.
    """
    cfg = config.section("maps") if settings is None else settings
    chunk_size, batch_size = cfg["chunk_size"], cfg["batch_size"]
    torch.set_num_threads(max(1, int(threads)))
    if device == "cpu":
        # Collapsed latent units push activations into denormals, which are very slow on CPU.
        torch.set_flush_denormal(True)
    encoder, _, meta = load_model(weights_path, device=device)
    with PreprocessedScan(preprocessed_path) as source:
        geometry, mask, valid = source.geometry, source.mask, source.valid
        n_rows, n_cols, step = geometry.n_rows, geometry.n_cols, geometry.step_um
        first_row, stop_row = row_range(rows, n_rows)
        n_out = (stop_row - first_row) * n_cols
        d = int(encoder.latent_dim)
        if tuple(source.pattern_shape) != tuple(encoder.pattern_shape):
            raise ValueError(
                f"{weights_path}: model expects {tuple(encoder.pattern_shape)} patterns but "
                f"{preprocessed_path} holds {tuple(source.pattern_shape)}"
            )
        raw_shape, raw_dtype = source.raw_pattern_shape, source.raw_dtype
        reduction = data_reduction(raw_shape, raw_dtype, d)
        attrs = {
            "scan": scan, "variant": variant, "latent_dim": d, "step_um": step,
            "n_rows": stop_row - first_row, "n_cols": n_cols,
            "data_reduction_factor": reduction["data_reduction_factor"],
            "data_reduction_definition": REDUCTION_DEFINITION,
            "raw_pattern_shape": np.asarray(raw_shape, np.int64), "raw_dtype": raw_dtype,
            "pattern_shape": np.asarray(source.pattern_shape, np.int64),
            "model_variant": json.dumps(meta.get("variant", {}), sort_keys=True),
            "source_patterns": str(Path(preprocessed_path).resolve()),
            "source_weights": str(Path(weights_path).resolve()),
            "layout": "pattern i of the scan sits at (y, x) = divmod(i, n_cols) * step_um",
        }
        if rows is not None:
            attrs.update(first_row=first_row, scan_n_rows=n_rows)
        block_rows = rows_per_block(n_cols, chunk_size)
        t0 = time.perf_counter()
        with cube_writer(cube_path, tiff_path, d, stop_row - first_row, n_cols, step, attrs,
                         first_row) as writer:
            bar = tqdm(total=n_out, unit="pat", disable=not progress,
                       desc=f"encode {variant}/{scan}")
            # Blocks start at multiples of block_rows from row 0 of the scan, so a
            # shard sees the same batches as the whole-scan job (latentebsd.shards).
            for r0 in range(first_row, stop_row, block_rows):
                r1 = min(r0 + block_rows, stop_row)
                block = source.read(r0 * n_cols, r1 * n_cols)
                mean, logvar = encode_patterns(encoder, block, batch_size, device, mask)
                shape = (r1 - r0, n_cols, d)
                writer.write(r0 - first_row, mean.reshape(shape).transpose(2, 0, 1),
                             logvar.reshape(shape).transpose(2, 0, 1),
                             valid[r0 * n_cols:r1 * n_cols].reshape(r1 - r0, n_cols))
                bar.update(len(block))
            bar.close()
        seconds = time.perf_counter() - t0

    summary = {
        "scan": scan, "variant": variant, "latent_dim": d, "n_rows": stop_row - first_row,
        "n_cols": n_cols, "n_patterns": n_out,
        "n_valid": int(valid[first_row * n_cols:stop_row * n_cols].sum()), "step_um": step,
        "raw_pattern_shape": list(raw_shape), "raw_dtype": raw_dtype,
        "pattern_shape": [int(v) for v in encoder.pattern_shape], **reduction,
        "data_reduction_definition": REDUCTION_DEFINITION,
        "raw_bytes_total": reduction["raw_bytes_per_pattern"] * n_out,
        "latent_bytes_total": reduction["latent_bytes_per_pattern"] * n_out,
        "encode_seconds": round(seconds, 3),
        "patterns_per_second": round(n_out / max(seconds, 1e-9), 1),
        "device": str(device), "threads": int(threads),
    }
    log.info("%s/%s: %d patterns -> d = %d in %.1f s (%.0f patterns/s), data reduction x%.1f",
             variant, scan, n_out, d, seconds, summary["patterns_per_second"],
             reduction["data_reduction_factor"])
    if reduction_path is not None:
        write_text(reduction_path, json.dumps(summary, indent=2) + "\n")
    return summary


def run_encode_rule(preprocessed: str, weights: str, cube: str, tiff: str | None, reduction: str,
                    scan: str, variant: str, settings: Mapping[str, Any], gpus: int,
                    threads: int, rows: tuple[int, int] | None = None,
                    shared: int = 0) -> dict[str, Any]:
    """What rules ``encode`` and ``encode_shard`` (``rows`` given, no TIFF) run.

    CUDA is used only when the job was given a GPU (``resources: gpu >= 1``) or shares
    this machine's (``gpu_shared``) and torch sees one
    (:func:`latentebsd.workflow.job_device`).
    """
    return encode_scan(preprocessed, weights, cube, tiff, reduction, scan=scan, variant=variant,
                       settings=settings, device=job_device(gpus, "encode", shared), threads=threads,
                       rows=rows)


def gather_latent(cube_paths: Sequence[str | os.PathLike], summary_paths: Sequence[str | os.PathLike],
                  cube_path: str | os.PathLike, tiff_path: str | os.PathLike | None,
                  reduction_path: str | os.PathLike | None, max_bytes: int = 64 * 1024**2) -> Path:
    """Shard cubes of ``encode_shard`` -> the scan's cube, TIFF and reduction JSON
    (rule ``gather_latent``)."""
    def first_row(path: Path) -> tuple[Path, int, int]:
        attrs = cube_attrs(path)
        if "first_row" not in attrs:
            raise ValueError(f"{path}: not a shard cube (no 'first_row' attribute)")
        return path, int(attrs["first_row"]), int(attrs["n_rows"])

    shards = first_rows(cube_paths, first_row)
    attrs = cube_attrs(shards[0][0])
    n_rows, n_cols, d = int(attrs.pop("scan_n_rows")), int(attrs["n_cols"]), int(attrs["latent_dim"])
    attrs.pop("first_row")
    attrs["n_rows"] = n_rows
    check_covers(shards, n_rows, str(cube_path))
    with cube_writer(cube_path, tiff_path, d, n_rows, n_cols, float(attrs["step_um"]), attrs) as writer:
        for path, first, n_shard_rows in shards:
            with h5py.File(path, "r") as f:
                step = max(1, max_bytes // (8 * d * n_cols))
                for r in range(0, n_shard_rows, step):
                    s = slice(r, min(r + step, n_shard_rows))
                    writer.write(first + r, *(f[v][:, s, :] for v in CUBE_VARIABLES),
                                 f["valid"][s, :])
    if reduction_path is not None:
        summaries = [json.loads(Path(p).read_text()) for p in summary_paths]
        total = dict(summaries[0])
        for key in ("n_patterns", "n_valid", "raw_bytes_total", "latent_bytes_total", "encode_seconds"):
            total[key] = sum(s[key] for s in summaries)
        total["n_rows"] = n_rows
        total["encode_seconds"] = round(total["encode_seconds"], 3)
        total["patterns_per_second"] = round(total["n_patterns"] / max(total["encode_seconds"], 1e-9), 1)
        total["n_shards"] = len(summaries)
        write_text(reduction_path, json.dumps(total, indent=2) + "\n")
    log.info("gathered %d shard cubes into %s", len(shards), cube_path)
    return Path(cube_path)


def summarize_reductions(json_paths: Sequence[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """One CSV row per latent cube from the per-cube reduction JSONs (sizes, throughput)."""
    rows = []
    for path in json_paths:
        try:
            rows.append(json.loads(Path(path).read_text()))
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: unreadable reduction summary ({err})") from err
    columns = ["scan", "variant", "latent_dim", "n_patterns", "n_valid", "raw_pattern_shape",
               "raw_dtype", "raw_bytes_per_pattern", "latent_bytes_per_pattern",
               "data_reduction_factor", "raw_bytes_total", "latent_bytes_total",
               "encode_seconds", "patterns_per_second", "device"]
    frame = pd.DataFrame(rows)
    frame = frame[[c for c in columns if c in frame.columns]]
    if "raw_pattern_shape" in frame:
        frame["raw_pattern_shape"] = frame["raw_pattern_shape"].map(lambda s: "x".join(map(str, s)))
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    return frame
