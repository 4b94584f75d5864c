"""Sharded scans: split a large scan into blocks of map rows, gather the blocks back.

A scan of more than ``shard_patterns`` patterns (top-level config key; ``null`` = never)
is cut into row blocks. Rules ``encode_shard``, ``decode_shard``, ``index_shard`` and
``metrics_shard`` each process one block - they read their rows from the scan-level
input files and write a shard file - and the ``gather_*`` rules put the shard files back
together into exactly the files the unsharded rules write. Each shard is one cluster job,
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

import json
import logging
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

log = logging.getLogger(__name__)

#: Regex that matches no wildcard value (for a rule with no scans to serve).
NO_MATCH = "(?!x)x"


# --------------------------------------------------------------------------------------
# Planning (at DAG-build time)
# --------------------------------------------------------------------------------------
def stage_block_rows(config: Mapping[str, Any], n_cols: int) -> int:
    """Rows that every shard boundary must be a multiple of: the least common multiple
    of the encode block (``maps.chunk_size``) and the decode / index block
    (``evaluation.chunk_size``)."""
    from latentebsd.encode import rows_per_block
    from latentebsd.evaluate import resolve_evaluation_settings
    from latentebsd.maps import resolve_maps_settings

    encode = rows_per_block(n_cols, resolve_maps_settings(config.get("maps"))["chunk_size"])
    evaluate = rows_per_block(n_cols, resolve_evaluation_settings(config.get("evaluation"))["chunk_size"])
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


def scan_map_shape(config: Mapping[str, Any], name: str) -> tuple[int, int] | None:
    """``(n_rows, n_cols)`` of a scan known before it is preprocessed, or ``None``.

    A simulated scan's ``map_shape``; else the scan's ``nav_shape``; else the pattern
    file's own header (``None`` if the file is not there yet).
    """
    scan = config["scans"][name]
    if "simulate" in scan:
        return tuple(int(v) for v in scan["simulate"]["map_shape"])
    if "nav_shape" in scan:
        return tuple(int(v) for v in scan["nav_shape"])
    path = Path(scan["path"])
    if not path.is_file():
        return None
    from latentebsd.io import PatternReader

    return tuple(int(v) for v in PatternReader(path).map_shape)


def shard_plan(config: Mapping[str, Any], scans: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    """Row ranges of the shards of every scan that is split (scans not split are absent)."""
    shard_patterns = config.get("shard_patterns")
    if shard_patterns is None:
        return {}
    plan: dict[str, list[tuple[int, int]]] = {}
    for name in scans:
        shape = scan_map_shape(config, name)
        if shape is None:
            log.warning("scan %s: map shape unknown until its file exists; not sharded", name)
            continue
        ranges = aligned_shard_rows(*shape, shard_patterns, stage_block_rows(config, shape[1]))
        if len(ranges) > 1:
            plan[name] = ranges
    return plan


def row_range(rows: Sequence[int] | None, n_rows: int) -> tuple[int, int]:
    """``(first_row, stop_row)`` of a shard job's ``rows`` (``None``: the whole map),
    checked against a map of ``n_rows`` rows."""
    first, stop = (0, n_rows) if rows is None else (int(rows[0]), int(rows[1]))
    if not 0 <= first < stop <= n_rows:
        raise ValueError(f"rows {first}:{stop} outside the map's 0:{n_rows}")
    return first, stop


def scan_regex(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) if names else NO_MATCH


def shard_paths(pattern: str, plan: Mapping[str, Sequence[tuple[int, int]]], scan: str,
                **wildcards: str) -> list[str]:
    """``pattern`` (with ``{scan}``, ``{shard}`` and ``wildcards``) for every shard of a scan."""
    return [pattern.format(scan=scan, shard=k, **wildcards) for k in range(len(plan[scan]))]


# --------------------------------------------------------------------------------------
# Gathering
# --------------------------------------------------------------------------------------
def _first_rows(paths: Sequence[str | os.PathLike], read_first_row) -> list[tuple[Path, int, int]]:
    """``(path, first_row, n_rows)`` per shard, checked to tile the map from row 0."""
    shards = sorted((read_first_row(Path(p)) for p in paths), key=lambda s: s[1])
    expected = 0
    for path, first, n_rows in shards:
        if first != expected:
            raise ValueError(f"{path}: shard starts at map row {first}, expected {expected} "
                             f"(a shard is missing or overlaps)")
        expected = first + n_rows
    return shards


def _check_covers(shards: list[tuple[Path, int, int]], n_rows: int, what: str) -> None:
    covered = shards[-1][1] + shards[-1][2] if shards else 0
    if covered != n_rows:
        raise ValueError(f"{what}: shards cover map rows 0:{covered}, the scan has {n_rows}")


def gather_latent(cube_paths: Sequence[str | os.PathLike], summary_paths: Sequence[str | os.PathLike],
                  cube_path: str | os.PathLike, tiff_path: str | os.PathLike | None,
                  reduction_path: str | os.PathLike | None, max_bytes: int = 64 * 1024**2) -> Path:
    """Shard cubes of ``encode_shard`` -> the scan's cube, TIFF and reduction JSON."""
    from latentebsd.encode import CUBE_VARIABLES, cube_attrs, cube_writer
    from latentebsd.io import atomic_path

    def first_row(path: Path) -> tuple[Path, int, int]:
        attrs = cube_attrs(path)
        if "first_row" not in attrs:
            raise ValueError(f"{path}: not a shard cube (no 'first_row' attribute)")
        return path, int(attrs["first_row"]), int(attrs["n_rows"])

    shards = _first_rows(cube_paths, first_row)
    attrs = cube_attrs(shards[0][0])
    n_rows, n_cols, d = int(attrs.pop("scan_n_rows")), int(attrs["n_cols"]), int(attrs["latent_dim"])
    attrs.pop("first_row")
    attrs["n_rows"] = n_rows
    _check_covers(shards, n_rows, str(cube_path))
    with cube_writer(cube_path, tiff_path, d, n_rows, n_cols, float(attrs["step_um"]), attrs) as writer:
        for path, first, rows in shards:
            with h5py.File(path, "r") as f:
                step = max(1, max_bytes // (8 * d * n_cols))
                for r in range(0, rows, step):
                    s = slice(r, min(r + step, rows))
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
        with atomic_path(reduction_path) as tmp:
            Path(tmp).write_text(json.dumps(total, indent=2) + "\n")
    log.info("gathered %d shard cubes into %s", len(shards), cube_path)
    return Path(cube_path)


def gather_up2(shard_paths_: Sequence[str | os.PathLike], preprocessed_path: str | os.PathLike,
               out_path: str | os.PathLike, chunk_size: int = 4096) -> Path:
    """Decoded shard UP2s of ``decode_shard`` (in map order) -> the scan's UP2."""
    from latentebsd.evaluate import read_screen
    from latentebsd.io import PatternReader, write_up2

    geometry, _, _ = read_screen(preprocessed_path)
    readers = [PatternReader(p) for p in shard_paths_]
    n = sum(r.n_patterns for r in readers)
    if n != geometry.n_patterns:
        raise ValueError(f"{out_path}: shards hold {n} patterns, {preprocessed_path} "
                         f"{geometry.n_patterns}")

    def chunks():
        for reader in readers:
            for _, chunk in reader.chunks(chunk_size):
                yield chunk

    return write_up2(out_path, chunks(), geometry.map_shape, geometry.pattern_shape,
                     geometry.step_um)


def _h5_first_row(path: Path) -> tuple[Path, int, int]:
    with h5py.File(path, "r") as f:
        if "first_row" not in f.attrs or "shard_n_rows" not in f.attrs:
            raise ValueError(f"{path}: not a shard file (no 'first_row' / 'shard_n_rows')")
        return path, int(f.attrs["first_row"]), int(f.attrs["shard_n_rows"])


def _concatenate(shards: list[tuple[Path, int, int]], reader) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
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


def gather_index(shard_paths_: Sequence[str | os.PathLike], preprocessed_path: str | os.PathLike,
                 out_h5: str | os.PathLike, out_ang: str | os.PathLike | None) -> dict[str, np.ndarray]:
    """Index shard files of ``index_shard`` -> the scan's index ``.h5`` and ``.ang``."""
    from latentebsd.evaluate import read_index, read_screen, write_index
    from latentebsd.index import INDEX_DTYPE, write_ang

    geometry, _, _ = read_screen(preprocessed_path)
    shards = _first_rows(shard_paths_, _h5_first_row)
    _check_covers(shards, geometry.n_rows, str(out_h5))
    arrays, attrs = _concatenate(shards, lambda p: read_index(p)[::2])
    attrs["n_indexed"] = int(np.count_nonzero(arrays["indexed"]))
    write_index(out_h5, arrays, geometry, attrs)
    if out_ang is not None:
        result = np.zeros(geometry.n_patterns, INDEX_DTYPE)
        for name in INDEX_DTYPE.names:
            result[name] = arrays[name]
        write_ang(out_ang, result, geometry, arrays["indexed"])
    log.info("gathered %d index shards into %s", len(shards), out_h5)
    return arrays


def gather_metrics(shard_paths_: Sequence[str | os.PathLike], preprocessed_path: str | os.PathLike,
                   out_path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Metric shard files of ``metrics_shard`` -> the scan's per-pattern metrics file."""
    from latentebsd.evaluate import read_metrics, read_screen, write_metrics

    geometry, _, _ = read_screen(preprocessed_path)
    shards = _first_rows(shard_paths_, _h5_first_row)
    _check_covers(shards, geometry.n_rows, str(out_path))
    arrays, attrs = _concatenate(shards, read_metrics)
    arrays.pop("row"), arrays.pop("col")
    write_metrics(out_path, arrays, geometry, attrs)
    return arrays


def run_gather_rule(kind: str, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> None:
    """What the ``gather_*`` rules run: ``kind`` is ``latent``, ``decoded``, ``index`` or
    ``metrics``; ``inputs`` / ``outputs`` are the rule's named files."""
    if kind == "latent":
        gather_latent(inputs["cubes"], inputs["summaries"], outputs["cube"], outputs.get("tiff"),
                      outputs.get("reduction"))
    elif kind == "decoded":
        gather_up2(inputs["shards"], inputs["preprocessed"], outputs["up2"])
    elif kind == "index":
        gather_index(inputs["shards"], inputs["preprocessed"], outputs["h5"], outputs.get("ang"))
    elif kind == "metrics":
        gather_metrics(inputs["shards"], inputs["preprocessed"], outputs["metrics"])
    else:
        raise ValueError(f"unknown shard kind {kind!r} (latent, decoded, index, metrics)")
