"""Encode every pattern of a scan into a latent cube (feature, row, col), streamed.

Stage ``encode`` of the workflow: one preprocessed scan x one trained model ->

- ``results/latent/{variant}/{scan}.nc``: NetCDF4 (HDF5, written with h5netcdf) that
  ``xarray.open_dataset`` opens. Data variables ``latent_mean`` and ``latent_logvar``
  (float32, dims ``("feature", "y", "x")``) and ``valid`` (int8, ``("y", "x")``, 1 where
  the preprocessed pattern is valid); coordinates ``feature`` = 0..d-1, ``y`` =
  row * step and ``x`` = col * step in micrometres (``units="um"``); dataset attrs
  ``scan``, ``variant``, ``latent_dim``, ``step_um``, ``data_reduction_factor`` and more.
  HDF5 chunks are ``(d, rows_per_chunk, n_cols)``, so a block of map rows reads as a
  few whole chunks.
- ``results/latent/{variant}/{scan}.tif``: the latent means as an ImageJ hyperstack
  (one float32 page per feature, axes ZYX, pixel size in um) that Fiji opens.
- ``results/latent/{variant}/{scan}_reduction.json``: sizes and the data-reduction
  factor (raw pattern bytes / latent bytes), plus the encoding throughput.

Memory stays bounded for any scan size: patterns are read, encoded and written in
blocks of whole map rows (``maps.chunk_size`` patterns, rounded down to whole rows);
both output files are filled block by block (the TIFF through a memory map), never
assembled in memory.

Invalid patterns (flagged blank in preprocessing, stored as zeros) are encoded like
any other so that the cube always equals a direct encoder call; ``valid`` marks them
and the maps stage leaves them out of its statistics.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np

from latentebsd.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

CUBE_VARIABLES = ("latent_mean", "latent_logvar")
#: Target size of one HDF5 chunk of the cube; 1-4 MiB reads efficiently and fits
#: h5py's chunk cache.
CHUNK_TARGET_BYTES = 2 * 1024**2
REDUCTION_DEFINITION = (
    "raw pattern bytes (raw_pattern_shape x raw_dtype, as in the original file) / "
    "latent bytes (latent_dim x float32 of latent_mean)"
)


# --------------------------------------------------------------------------- helpers


def rows_per_block(n_cols: int, chunk_size: int) -> int:
    """Whole map rows per encode block: ``chunk_size`` patterns rounded down (>= 1 row)."""
    if chunk_size < 1:
        raise ValueError(f"config key maps.chunk_size: expected >= 1, got {chunk_size}")
    return max(1, int(chunk_size) // int(n_cols))


def cube_chunk_rows(latent_dim: int, n_rows: int, n_cols: int) -> int:
    """Map rows per HDF5 chunk ``(d, rows, n_cols)`` so that a chunk is about 2 MiB."""
    row_bytes = 4 * int(latent_dim) * int(n_cols)
    return int(min(n_rows, max(1, CHUNK_TARGET_BYTES // row_bytes)))


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


# --------------------------------------------------------------------------- writers


class _CubeWriter:
    """NetCDF cube, filled one block of map rows at a time, and its ImageJ TIFF, written
    from the finished cube in feature groups of at most ``tiff_max_bytes`` (a TIFF page is
    one whole feature map; a memory map of the TIFF would keep every written page
    resident, half a gigabyte at d = 128 for a 1M-point map)."""

    def __init__(self, nc_path: Path, tif_path: Path | None, d: int, n_rows: int, n_cols: int,
                 step_um: float, attrs: dict[str, Any], first_row: int = 0,
                 tiff_max_bytes: int = 64 * 1024**2) -> None:
        import h5netcdf

        self.nc = h5netcdf.File(nc_path, "w")
        self.nc.dimensions = {"feature": d, "y": n_rows, "x": n_cols}
        coords = {
            "feature": (np.arange(d, dtype=np.int32), {"long_name": "latent feature index"}),
            "y": ((first_row + np.arange(n_rows)) * step_um,
                  {"units": "um", "long_name": "map row position"}),
            "x": (np.arange(n_cols) * step_um, {"units": "um", "long_name": "map column position"}),
        }
        for name, (values, var_attrs) in coords.items():
            var = self.nc.create_variable(name, (name,), values.dtype)
            var[:] = values
            var.attrs.update(var_attrs)
        chunks = (d, cube_chunk_rows(d, n_rows, n_cols), n_cols)
        self.vars = {}
        for name, long_name in zip(CUBE_VARIABLES, ("latent posterior mean", "latent posterior log-variance")):
            var = self.nc.create_variable(name, ("feature", "y", "x"), np.float32, chunks=chunks)
            var.attrs["long_name"] = long_name
            self.vars[name] = var
        self.valid = self.nc.create_variable("valid", ("y", "x"), np.int8)
        self.valid.attrs.update({"long_name": "pattern valid (1) or flagged blank (0)",
                                 "flag_values": np.array([0, 1], np.int8),
                                 "flag_meanings": "invalid valid"})
        self.nc.attrs.update(attrs)
        self.nc_path, self.tif_path, self.step_um = nc_path, tif_path, step_um
        self.tiff_max_bytes = tiff_max_bytes

    def write(self, r0: int, mean: np.ndarray, logvar: np.ndarray, valid: np.ndarray) -> None:
        """Rows ``r0 : r0 + len`` from ``(d, rows, cols)`` blocks and ``(rows, cols)`` valid."""
        r1 = r0 + mean.shape[1]
        self.vars["latent_mean"][:, r0:r1, :] = mean
        self.vars["latent_logvar"][:, r0:r1, :] = logvar
        self.valid[r0:r1, :] = valid.astype(np.int8)

    def close(self, complete: bool = True) -> None:
        """Close the NetCDF file, then (if ``complete``) write the TIFF from it."""
        import tifffile

        d, n_rows, n_cols = self.vars["latent_mean"].shape
        self.nc.close()
        if self.tif_path is None or not complete:
            return

        def pages() -> Iterator[np.ndarray]:
            for _, (group,) in iter_feature_groups(self.nc_path, self.tiff_max_bytes):
                yield from group

        # ImageJ reads XResolution as pixels per `unit`; the features are the Z axis.
        with tifffile.TiffWriter(self.tif_path, imagej=True) as tif:
            tif.write(pages(), shape=(d, n_rows, n_cols), dtype=np.float32,
                      resolution=(1.0 / self.step_um, 1.0 / self.step_um),
                      metadata={"unit": "um", "axes": "ZYX",
                                "Labels": [f"feature {i}" for i in range(d)]})


@contextlib.contextmanager
def cube_writer(cube_path: str | os.PathLike, tiff_path: str | os.PathLike | None, d: int,
                n_rows: int, n_cols: int, step_um: float, attrs: dict[str, Any],
                first_row: int = 0, tiff_max_bytes: int = 64 * 1024**2) -> Iterator[_CubeWriter]:
    """A latent cube (and ImageJ TIFF) being written: ``writer.write(r0, mean, logvar,
    valid)`` block by block; the files appear under their names only when all went well."""
    tif_ctx = atomic_path(tiff_path) if tiff_path is not None else contextlib.nullcontext()
    with atomic_path(cube_path) as nc_tmp, tif_ctx as tif_tmp:
        writer = _CubeWriter(Path(nc_tmp), tif_tmp, d, n_rows, n_cols, step_um, attrs, first_row,
                             tiff_max_bytes)
        try:
            yield writer
        except BaseException:
            writer.close(complete=False)
            raise
        writer.close()


def write_cube(cube_path: str | os.PathLike, mean: np.ndarray, logvar: np.ndarray | None = None,
               valid: np.ndarray | None = None, step_um: float = 1.0,
               tiff_path: str | os.PathLike | None = None, **attrs: Any) -> Path:
    """Write an in-memory ``(d, n_rows, n_cols)`` latent cube in the encode stage's format.

    For latent maps that come from elsewhere (another encoder, a PCA) and for tests;
    :func:`encode_scan` streams instead. ``logvar`` defaults to zeros (unit posterior
    variance), ``valid`` to all True; ``attrs`` go into the dataset attributes.
    """
    mean = np.asarray(mean, np.float32)
    if mean.ndim != 3:
        raise ValueError(f"mean must be (d, n_rows, n_cols), got shape {mean.shape}")
    d, n_rows, n_cols = mean.shape
    logvar = np.zeros_like(mean) if logvar is None else np.asarray(logvar, np.float32)
    valid = np.ones((n_rows, n_cols), bool) if valid is None else np.asarray(valid, bool)
    base = {"scan": "", "variant": "", "latent_dim": d, "step_um": float(step_um),
            "n_rows": n_rows, "n_cols": n_cols, "data_reduction_factor": float("nan")}
    base.update(attrs)
    with cube_writer(cube_path, tiff_path, d, n_rows, n_cols, float(step_um), base) as writer:
        writer.write(0, mean, logvar, valid)
    return Path(cube_path)


# --------------------------------------------------------------------------- encode


def encode_scan(
    preprocessed_path: str | os.PathLike,
    weights_path: str | os.PathLike,
    cube_path: str | os.PathLike,
    tiff_path: str | os.PathLike | None = None,
    reduction_path: str | os.PathLike | None = None,
    scan: str = "",
    variant: str = "",
    chunk_size: int = 2048,
    batch_size: int = 512,
    device: str = "cpu",
    threads: int = 1,
    progress: bool = True,
    rows: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Encode every pattern of a preprocessed scan and write the latent cube.

    Parameters
    ----------
    preprocessed_path
        Output of the preprocess stage (``patterns``, ``mask``, ``valid``, ``geometry``).
    weights_path
        Trained model (:func:`latentebsd.train.load_model` reads it).
    cube_path
        Output NetCDF (module docstring).
    tiff_path
        Output ImageJ TIFF of the latent means; ``None`` skips it.
    reduction_path
        Output JSON with the data-reduction factor; ``None`` skips it.
    scan, variant
        Names stored in the attrs.
    chunk_size
        Patterns per block (rounded down to whole map rows); bounds memory.
    batch_size
        Patterns per encoder forward pass.
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
    import torch
    from tqdm import tqdm

    from latentebsd.models import encode_patterns
    from latentebsd.preprocess import read_preprocessed_geometry
    from latentebsd.shards import row_range
    from latentebsd.train import load_model

    torch.set_num_threads(max(1, int(threads)))
    if device == "cpu":
        # Collapsed latent units push activations into denormals, which are very slow on CPU.
        torch.set_flush_denormal(True)
    encoder, _, meta = load_model(weights_path, device=device)
    geometry = read_preprocessed_geometry(preprocessed_path)
    n_rows, n_cols, step = geometry.n_rows, geometry.n_cols, geometry.step_um
    first_row, stop_row = row_range(rows, n_rows)
    n_out = (stop_row - first_row) * n_cols
    d = int(encoder.latent_dim)

    with h5py.File(preprocessed_path, "r") as f:
        patterns, mask, valid = f["patterns"], f["mask"][()], f["valid"][()]
        if tuple(patterns.shape[1:]) != tuple(encoder.pattern_shape):
            raise ValueError(
                f"{weights_path}: model expects {tuple(encoder.pattern_shape)} patterns but "
                f"{preprocessed_path} holds {tuple(patterns.shape[1:])}"
            )
        if len(patterns) != n_rows * n_cols:
            raise ValueError(f"{preprocessed_path}: {len(patterns)} patterns for a "
                             f"{n_rows} x {n_cols} map")
        raw_shape = tuple(int(v) for v in f.attrs.get("raw_pattern_shape", patterns.shape[1:]))
        raw_dtype = str(f.attrs.get("raw_dtype", "uint16"))
        reduction = data_reduction(raw_shape, raw_dtype, d)
        attrs = {
            "scan": scan, "variant": variant, "latent_dim": d, "step_um": step,
            "n_rows": stop_row - first_row, "n_cols": n_cols,
            "data_reduction_factor": reduction["data_reduction_factor"],
            "data_reduction_definition": REDUCTION_DEFINITION,
            "raw_pattern_shape": np.asarray(raw_shape, np.int64), "raw_dtype": raw_dtype,
            "pattern_shape": np.asarray(patterns.shape[1:], np.int64),
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
                block = patterns[r0 * n_cols:r1 * n_cols]
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
        with atomic_path(reduction_path) as tmp:
            Path(tmp).write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def run_encode_rule(preprocessed: str, weights: str, cube: str, tiff: str | None, reduction: str,
                    scan: str, variant: str, settings: dict[str, Any], gpus: int,
                    threads: int, rows: tuple[int, int] | None = None) -> dict[str, Any]:
    """What rules ``encode`` and ``encode_shard`` (``rows`` given, no TIFF) run: resolve
    ``maps`` settings, pick the device, encode.

    CUDA is used only when the job was given a GPU (``resources: gpu >= 1``) and torch
    sees one.
    """
    from latentebsd.maps import resolve_maps_settings
    from latentebsd.workflow import job_device

    cfg = resolve_maps_settings(settings)
    device = job_device(gpus)
    return encode_scan(preprocessed, weights, cube, tiff, reduction, scan=scan, variant=variant,
                       chunk_size=cfg["chunk_size"], batch_size=cfg["batch_size"],
                       device=device, threads=threads, rows=rows)


# --------------------------------------------------------------------------- reading


def _attr_value(value: Any) -> Any:
    """An HDF5 attribute as a plain Python value (NetCDF stores scalars as 1-element arrays)."""
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.ndarray) and value.size == 1 and value.dtype.kind in "biuf":
        return value.reshape(()).item()
    if isinstance(value, np.generic):
        return value.item()
    return value


def cube_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """Dataset attributes and shape of a latent cube (without reading the data)."""
    with h5py.File(path, "r") as f:
        if "latent_mean" not in f:
            raise ValueError(f"{path}: not a latent cube (no latent_mean variable)")
        attrs = {k: _attr_value(v) for k, v in f.attrs.items() if not k.startswith("_")}
        d, n_rows, n_cols = f["latent_mean"].shape
    attrs.update({"latent_dim": int(d), "n_rows": int(n_rows), "n_cols": int(n_cols),
                  "step_um": float(attrs["step_um"])})
    return attrs


def read_valid(path: str | os.PathLike) -> np.ndarray:
    """``(n_rows, n_cols)`` bool: pixels whose pattern was valid."""
    with h5py.File(path, "r") as f:
        return f["valid"][()].astype(bool)


def iter_row_blocks(path: str | os.PathLike, max_bytes: int,
                    variables: Sequence[str] = ("latent_mean",)
                    ) -> Iterator[tuple[int, int, list[np.ndarray]]]:
    """Blocks of whole map rows of a cube, each variable ``(d, rows, cols)``.

    Rows per block are a multiple of the file's chunk rows where that fits in
    ``max_bytes``, so each HDF5 chunk is read once.
    """
    with h5py.File(path, "r") as f:
        dsets = [f[v] for v in variables]
        d, n_rows, n_cols = dsets[0].shape
        chunk_rows = (dsets[0].chunks or (d, 1, n_cols))[1]
        row_bytes = 4 * d * n_cols * len(dsets)
        rows = max(1, int(max_bytes) // row_bytes)
        rows = max(chunk_rows, rows - rows % chunk_rows) if rows >= chunk_rows else rows
        for r0 in range(0, n_rows, rows):
            r1 = min(n_rows, r0 + rows)
            yield r0, r1, [ds[:, r0:r1, :] for ds in dsets]


def iter_feature_groups(path: str | os.PathLike, max_bytes: int,
                        variables: Sequence[str] = ("latent_mean",),
                        features: Sequence[int] | None = None,
                        ) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Groups of whole feature maps, each variable ``(g, n_rows, n_cols)``.

    ``g`` is as large as ``max_bytes`` allows. The cube is chunked by map rows, so each
    group reads the whole file once: few groups for a small cube, bounded memory for a
    large one.

    Yields
    ------
    feature_ids, arrays
        The features of the group (ascending) and one array per variable.
    """
    with h5py.File(path, "r") as f:
        dsets = [f[v] for v in variables]
        d, n_rows, n_cols = dsets[0].shape
        wanted = np.arange(d) if features is None else np.asarray(sorted(set(int(i) for i in features)))
        if len(wanted) and (wanted.min() < 0 or wanted.max() >= d):
            raise IndexError(f"{path}: feature ids outside 0..{d - 1}")
        per_map = 4 * n_rows * n_cols * len(dsets)
        g = max(1, int(max_bytes) // per_map)
        for i in range(0, len(wanted), g):
            ids = wanted[i:i + g]
            if len(ids) and np.all(np.diff(ids) == 1):
                arrays = [ds[int(ids[0]):int(ids[-1]) + 1] for ds in dsets]
            else:
                arrays = [ds[ids] for ds in dsets]
            yield ids, [np.asarray(a, dtype=np.float32) for a in arrays]


def read_features(path: str | os.PathLike, features: Sequence[int],
                  variable: str = "latent_mean") -> np.ndarray:
    """Maps of the given features, ``(len(features), n_rows, n_cols)``, in the order given."""
    features = [int(i) for i in features]
    maps = {}
    for ids, (arr,) in iter_feature_groups(path, 2**62, (variable,), features):
        maps.update({int(i): a for i, a in zip(ids, arr)})
    return np.stack([maps[i] for i in features]) if features else np.zeros((0, 0, 0), np.float32)


def read_latents_at(path: str | os.PathLike, indices: np.ndarray, max_bytes: int = 256 * 1024**2,
                    variable: str = "latent_mean") -> np.ndarray:
    """Latent vectors ``(len(indices), d)`` of the patterns at row-major ``indices``.

    Reads row blocks and keeps the wanted pixels, so memory is one block plus the result.
    """
    indices = np.asarray(indices, dtype=np.int64)
    with h5py.File(path, "r") as f:
        d, n_rows, n_cols = f[variable].shape
    if len(indices) and (indices.min() < 0 or indices.max() >= n_rows * n_cols):
        raise IndexError(f"{path}: pattern indices outside 0..{n_rows * n_cols - 1}")
    out = np.empty((len(indices), d), np.float32)
    rows = indices // n_cols
    for r0, r1, (block,) in iter_row_blocks(path, max_bytes, (variable,)):
        sel = np.flatnonzero((rows >= r0) & (rows < r1))
        if len(sel):
            local = indices[sel] - r0 * n_cols
            out[sel] = block.reshape(d, -1)[:, local].T
    return out


def summarize_reductions(json_paths: Sequence[str | os.PathLike], out_csv: str | os.PathLike) -> "pd.DataFrame":
    """One CSV row per latent cube from the per-cube reduction JSONs (sizes, throughput)."""
    import pandas as pd

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
