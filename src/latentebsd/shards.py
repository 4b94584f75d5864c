"""Blocks of map rows: the shards of a large scan, and the blocks every stage walks.

A scan of more than ``shard_patterns`` patterns (top-level config key; ``null`` = never)
is cut into row blocks. Rules ``encode_shard``, ``decode_shard``, ``index_shard`` and
``metrics_shard`` each process one block - they read their rows from the scan-level
input files and write a shard file - and the ``gather_*`` rules put the shard files back
together into exactly the files the unsharded rules write (each stage module has its
``gather_*`` function; the checks they share are here). Each shard is one cluster job,
so the paper's ~900k-pattern scans index in parallel across nodes.

Identical results
-----------------
The encoder, the decoder and the Hough indexer give slightly different floats for the
same pattern in batches of different composition (oneDNN/cuDNN choose kernels by batch
size). Every stage therefore walks its rows in fixed blocks counted from row 0 of the
scan, and shard boundaries fall on multiples of every stage's block
(:func:`aligned_shard_rows`): a shard job then sees the very batches the unsharded job
sees, and the gathered files equal the unsharded ones bit for bit (tested).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np


# --------------------------------------------------------------------------------------
# Blocks and shards
# --------------------------------------------------------------------------------------
def rows_per_block(n_cols: int, chunk_size: int) -> int:
    """Whole map rows per processing block: ``chunk_size`` patterns rounded down (>= 1 row).

    Every stage walks a scan in such blocks counted from row 0, so that a shard job sees
    exactly the batches of the whole-scan job (module docstring).
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size: expected >= 1, got {chunk_size}")
    return max(1, int(chunk_size) // int(n_cols))


def stage_block_rows(config: Mapping[str, Any], n_cols: int) -> int:
    """Rows that every shard boundary must be a multiple of: the least common multiple
    of the encode block (``maps.chunk_size``) and the decode / index block
    (``evaluation.chunk_size``) of a validated config."""
    encode = rows_per_block(n_cols, config["maps"]["chunk_size"])
    evaluate = rows_per_block(n_cols, config["evaluation"]["chunk_size"])
    return math.lcm(encode, evaluate)


def aligned_shard_rows(n_rows: int, n_cols: int, shard_patterns: int | None,
                       align_rows: int = 1) -> list[tuple[int, int]]:
    """Row ranges ``[(first_row, stop_row), ...]`` of a scan's shards.

    One range (the whole map) when the scan holds at most ``shard_patterns`` patterns or
    ``shard_patterns`` is ``None``. Otherwise blocks of ``shard_patterns // n_cols`` rows,
    rounded down to a multiple of ``align_rows`` (never below ``align_rows``); the last
    block takes the remainder.
    """
    if n_rows < 1 or n_cols < 1 or align_rows < 1:
        raise ValueError(f"bad map {n_rows} x {n_cols} or alignment {align_rows}")
    if shard_patterns is None or n_rows * n_cols <= int(shard_patterns):
        return [(0, n_rows)]
    if int(shard_patterns) < 1:
        raise ValueError(f"config key shard_patterns: expected null or >= 1, got {shard_patterns}")
    rows = max(align_rows, (int(shard_patterns) // n_cols) // align_rows * align_rows)
    return [(r0, min(r0 + rows, n_rows)) for r0 in range(0, n_rows, rows)]


def row_range(rows: Sequence[int] | None, n_rows: int) -> tuple[int, int]:
    """``(first_row, stop_row)`` of a shard job's ``rows`` (``None``: the whole map),
    checked against a map of ``n_rows`` rows."""
    first, stop = (0, n_rows) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= first < stop <= n_rows:
        raise ValueError(f"rows {first}:{stop} outside the map's 0:{n_rows}")
    return first, stop


# --------------------------------------------------------------------------------------
# Gathering (the checks every gather_* function shares)
# --------------------------------------------------------------------------------------
def first_rows(paths: Sequence[str | os.PathLike],
               read_first_row: Callable[[Path], tuple[Path, int, int]]) -> list[tuple[Path, int, int]]:
    """``(path, first_row, n_rows)`` per shard, checked to tile the map from row 0."""
    shards = sorted((read_first_row(Path(p)) for p in paths), key=lambda s: s[1])
    expected = 0
    for path, first, n_rows in shards:
        if first != expected:
            raise ValueError(f"{path}: shard starts at map row {first}, expected {expected} "
                             f"(a shard is missing or overlaps)")
        expected = first + n_rows
    return shards


def check_covers(shards: list[tuple[Path, int, int]], n_rows: int, what: str) -> None:
    """The shards of :func:`first_rows` reach the scan's last row."""
    covered = shards[-1][1] + shards[-1][2] if shards else 0
    if covered != n_rows:
        raise ValueError(f"{what}: shards cover map rows 0:{covered}, the scan has {n_rows}")


def h5_first_row(path: Path) -> tuple[Path, int, int]:
    """``(path, first_row, n_rows)`` of an HDF5 shard file (index or metrics)."""
    with h5py.File(path, "r") as f:
        if "first_row" not in f.attrs or "shard_n_rows" not in f.attrs:
            raise ValueError(f"{path}: not a shard file (no 'first_row' / 'shard_n_rows')")
        return path, int(f.attrs["first_row"]), int(f.attrs["shard_n_rows"])


def concatenate(shards: list[tuple[Path, int, int]],
                reader: Callable[[Path], tuple[dict[str, np.ndarray], dict[str, Any]]],
                ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The per-pattern arrays of the shards end to end, and the first shard's attrs
    (without the shard's own ``first_row`` / ``shard_n_rows``)."""
    parts, attrs = [], {}
    for path, _, _ in shards:
        arrays, a = reader(path)
        parts.append(arrays)
        attrs = attrs or a
    keys = parts[0].keys()
    for path_, arrays in zip((s[0] for s in shards), parts):
        if arrays.keys() != keys:
            raise ValueError(f"{path_}: datasets {sorted(arrays)} differ from {sorted(keys)}")
    attrs = {k: v for k, v in attrs.items() if k not in ("first_row", "shard_n_rows")}
    return {k: np.concatenate([p[k] for p in parts]) for k in keys}, attrs
