"""The latent cube: ``results/latent/{variant}/{scan}.nc`` and its ImageJ TIFF.

- ``.nc``: NetCDF4 (HDF5, written with h5netcdf) that ``xarray.open_dataset`` opens.
  Data variables ``latent_mean`` and ``latent_logvar`` (float32, dims
  ``("feature", "y", "x")``) and ``valid`` (int8, ``("y", "x")``, 1 where the
  preprocessed pattern is valid); coordinates ``feature`` = 0..d-1, ``y`` = row * step
  and ``x`` = col * step in micrometres (``units="um"``); dataset attrs ``scan``,
  ``variant``, ``latent_dim``, ``step_um``, ``data_reduction_factor`` and more. HDF5
  chunks are ``(d, rows_per_chunk, n_cols)``, so a block of map rows reads as a few
  whole chunks. A shard's cube (``encode_shard``) holds only its rows, with attrs
  ``first_row`` and ``scan_n_rows``.
- ``.tif``: the latent means as an ImageJ hyperstack (one float32 page per feature,
  axes ZYX, pixel size in um) that Fiji opens.

Writing goes block of map rows by block (:func:`cube_writer`); reading, with h5py, by
row blocks (:func:`iter_row_blocks`, :func:`iter_latent_blocks`), by feature groups
(:func:`iter_feature_groups`, :func:`read_features`) or at scattered pixels
(:func:`read_latents_at`), so memory stays bounded for any scan size.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5netcdf
import h5py
import numpy as np
import tifffile

from latentebsd.io.atomic import atomic_path
from latentebsd.shards import row_range, rows_per_block

CUBE_VARIABLES = ("latent_mean", "latent_logvar")
#: Target size of one HDF5 chunk of the cube; 1-4 MiB reads efficiently and fits
#: h5py's chunk cache.
CHUNK_TARGET_BYTES = 2 * 1024**2


def budget_bytes(memory_mb: float, factor: float = 1.0) -> int:
    """Bytes of float32 cube data one step may read under a ``memory_mb`` budget
    (config ``maps.memory_mb``), leaving room for ``factor`` x work arrays."""
    return max(1, int(memory_mb * 1024**2 / factor))


def cube_chunk_rows(latent_dim: int, n_rows: int, n_cols: int) -> int:
    """Map rows per HDF5 chunk ``(d, rows, n_cols)`` so that a chunk is about 2 MiB."""
    row_bytes = 4 * int(latent_dim) * int(n_cols)
    return int(min(n_rows, max(1, CHUNK_TARGET_BYTES // row_bytes)))


class _CubeWriter:
    """NetCDF cube, filled one block of map rows at a time, and its ImageJ TIFF, written
    from the finished cube in feature groups of at most ``tiff_max_bytes`` (a TIFF page is
    one whole feature map; a memory map of the TIFF would keep every written page
    resident, half a gigabyte at d = 128 for a 1M-point map)."""

    def __init__(self, nc_path: Path, tif_path: Path | None, d: int, n_rows: int, n_cols: int,
                 step_um: float, attrs: dict[str, Any], first_row: int = 0,
                 tiff_max_bytes: int = 64 * 1024**2, with_logvar: bool = True) -> None:
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
        names = CUBE_VARIABLES if with_logvar else CUBE_VARIABLES[:1]
        for name, long_name in zip(names, ("latent posterior mean", "latent posterior log-variance")):
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

    def write(self, r0: int, mean: np.ndarray, logvar: np.ndarray | None,
              valid: np.ndarray) -> None:
        """Rows ``r0 : r0 + len`` from ``(d, rows, cols)`` blocks and ``(rows, cols)`` valid
        (``logvar`` ``None`` for a cube without one)."""
        r1 = r0 + mean.shape[1]
        self.vars["latent_mean"][:, r0:r1, :] = mean
        if logvar is not None:
            self.vars["latent_logvar"][:, r0:r1, :] = logvar
        self.valid[r0:r1, :] = valid.astype(np.int8)

    def close(self, complete: bool = True) -> None:
        """Close the NetCDF file, then (if ``complete``) write the TIFF from it."""
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
                first_row: int = 0, tiff_max_bytes: int = 64 * 1024**2,
                with_logvar: bool = True) -> Iterator[_CubeWriter]:
    """A latent cube (and ImageJ TIFF) being written: ``writer.write(r0, mean, logvar,
    valid)`` block by block; the files appear under their names only when all went well.
    ``with_logvar=False`` writes maps without a posterior variance (PCA / NMF scores)."""
    tif_ctx = atomic_path(tiff_path) if tiff_path is not None else contextlib.nullcontext()
    with atomic_path(cube_path) as nc_tmp, tif_ctx as tif_tmp:
        writer = _CubeWriter(Path(nc_tmp), tif_tmp, d, n_rows, n_cols, step_um, attrs, first_row,
                             tiff_max_bytes, with_logvar)
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
    :func:`latentebsd.encode.encode_scan` streams instead. ``logvar`` defaults to zeros (unit posterior
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


def check_map_shape(path: str | os.PathLike, shape: tuple[int, int], against: str) -> dict[str, Any]:
    """:func:`cube_attrs` of the cube at ``path``, after checking that its map is
    ``shape`` (``against`` names where that shape comes from, for the error)."""
    attrs = cube_attrs(path)
    if (attrs["n_rows"], attrs["n_cols"]) != tuple(shape):
        raise ValueError(f"{path}: map {attrs['n_rows']} x {attrs['n_cols']} differs from "
                         f"{against}'s {shape[0]} x {shape[1]}")
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


def iter_latent_blocks(path: str | os.PathLike, chunk_size: int,
                       rows: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, means (n, d))``, a block of whole map rows (about ``chunk_size``
    points) at a time, in row-major point order; ``rows`` = ``(first_row, stop_row)``
    limits it to a shard (blocks still counted from row 0)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: latent cube not found")
    with h5py.File(path, "r") as f:
        if "latent_mean" not in f or f["latent_mean"].ndim != 3:
            raise ValueError(f"{path}: not a latent cube (no (feature, y, x) latent_mean)")
        mean = f["latent_mean"]
        d, n_rows, n_cols = mean.shape
        first_row, stop_row = row_range(rows, n_rows)
        step = rows_per_block(n_cols, chunk_size)
        for r0 in range(first_row, stop_row, step):
            block = np.asarray(mean[:, r0:min(r0 + step, stop_row), :], dtype=np.float32)
            yield r0 * n_cols, block.reshape(d, -1).T
