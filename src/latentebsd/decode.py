"""Stage ``decode``: every latent mean of a scan through the decoder, back to a 16-bit UP2.

The paper judges each model by what a conventional EBSD analysis makes of its
reconstructions: every pattern is encoded, decoded, written back to UP2 and indexed
like the preprocessed original (:mod:`latentebsd.index`). Latent means are read a block
of map rows at a time (:func:`latentebsd.io.cube.iter_latent_blocks`); pixels off the
screen are set to 0 as in the preprocessed originals; one fixed scale
(:data:`latentebsd.io.patterns.UP2_RANGE`, ``[-1, 1] -> [0, 65535]``) serves every scan
and variant. A sharded scan's blocks are decoded by ``decode_shard`` jobs and joined by
:func:`gather_up2`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.geometry import ScanGeometry
from latentebsd.io.cube import cube_attrs, iter_latent_blocks
from latentebsd.io.patterns import PatternReader, to_uint16, write_up2
from latentebsd.io.preprocessed import read_screen
from latentebsd.io.weights import load_model
from latentebsd.models import decode_latents
from latentebsd.workflow import job_device

log = logging.getLogger(__name__)


def decode_scan(latent_path: str | os.PathLike, decoder: Any, out_path: str | os.PathLike,
                geometry: ScanGeometry, mask: np.ndarray,
                settings: Mapping[str, Any] | None = None, device: str = "cpu",
                progress: bool = True, rows: tuple[int, int] | None = None) -> Path:
    """Decode every latent mean of a scan and write the patterns as a 16-bit UP2.

    Parameters
    ----------
    latent_path
        Latent cube (:mod:`latentebsd.io.cube`).
    decoder
        A :class:`latentebsd.models.Decoder` (or any module mapping ``(N, d)`` to
        ``(N, 1, h, w)`` with ``latent_dim`` and ``pattern_shape`` attributes).
    out_path
        Output ``.up2``; written to a temporary name and renamed when complete.
    geometry
        The preprocessed scan's geometry (map shape, step, pattern shape).
    mask
        ``(h, w)`` screen mask; pixels off the screen are written as 0 (mid-grey), as
        in the preprocessed patterns (the decoder was never trained on them).
    settings
        The validated ``evaluation`` config section (``None``: the schema's defaults):
        ``chunk_size`` points per latent block, ``decode_batch_size`` patterns per
        decoder call (memory only).
    device
        Torch device of the decoder.
    progress
        Show a tqdm bar.
    rows
        Map rows ``(first_row, stop_row)`` to decode (a shard, :mod:`latentebsd.shards`):
        the UP2 then holds only those rows. ``None``: the whole map.
    """
    cfg = config.section("evaluation") if settings is None else settings
    attrs = cube_attrs(latent_path)
    d, n_rows, n_cols = attrs["latent_dim"], attrs["n_rows"], attrs["n_cols"]
    if (n_rows, n_cols) != geometry.map_shape:
        raise ValueError(f"{latent_path}: latent map {n_rows} x {n_cols} does not match the "
                         f"preprocessed scan's {geometry.map_shape}")
    if int(getattr(decoder, "latent_dim", d)) != d:
        raise ValueError(f"{latent_path}: {d} latent features, the decoder takes "
                         f"{decoder.latent_dim}")
    shape = tuple(int(v) for v in getattr(decoder, "pattern_shape", geometry.pattern_shape))
    if shape != geometry.pattern_shape:
        raise ValueError(f"the decoder makes {shape} patterns, the scan has "
                         f"{geometry.pattern_shape}")
    mask = np.asarray(mask, dtype=bool)
    out_geometry = geometry if rows is None else geometry.row_block(*rows)

    def chunks() -> Iterator[np.ndarray]:
        bar = tqdm(total=out_geometry.n_patterns, desc=f"decode {Path(out_path).name}",
                   unit="pat", disable=not progress)
        for _, z in iter_latent_blocks(latent_path, cfg["chunk_size"], rows):
            patterns = decode_latents(decoder, z, batch_size=cfg["decode_batch_size"], device=device)
            bar.update(len(z))
            yield to_uint16(np.where(mask, patterns, 0.0))
        bar.close()

    return write_up2(out_path, chunks(), out_geometry.map_shape, geometry.pattern_shape,
                     geometry.step_um)


def run_decode_rule(weights_path: str, latent_path: str, preprocessed_path: str, out_path: str,
                    settings: Mapping[str, Any] | None, gpu: int = 0, threads: int = 1,
                    rows: tuple[int, int] | None = None, shared: int = 0) -> Path:
    """What rules ``decode`` and ``decode_shard`` (``rows`` given) run: load a trained
    model, decode one scan (or shard) to UP2. ``settings``: the validated
    ``evaluation`` section.

    CUDA is used only when ``gpu >= 1`` (the rule's ``resources.gpu``) or ``shared >= 1``
    (``resources.gpu_shared``) and available.
    """
    cfg = config.section("evaluation") if settings is None else settings
    torch.set_num_threads(max(1, int(threads)))
    device = job_device(gpu, "decode", shared)
    _, decoder, meta = load_model(weights_path, device=device)
    geometry, mask, _ = read_screen(preprocessed_path)
    log.info("decode %s with %s (%s) on %s", latent_path, weights_path, meta.get("variant"),
             device)
    return decode_scan(latent_path, decoder, out_path, geometry, mask, cfg, device=device,
                       rows=rows)


def gather_up2(shard_paths: Sequence[str | os.PathLike], preprocessed_path: str | os.PathLike,
               out_path: str | os.PathLike, chunk_size: int = 4096) -> Path:
    """Decoded shard UP2s of ``decode_shard`` (in map order) -> the scan's UP2 (rule
    ``gather_decoded``)."""
    geometry, _, _ = read_screen(preprocessed_path)
    readers = [PatternReader(p) for p in shard_paths]
    n = sum(r.n_patterns for r in readers)
    if n != geometry.n_patterns:
        raise ValueError(f"{out_path}: shards hold {n} patterns, {preprocessed_path} "
                         f"{geometry.n_patterns}")

    def chunks() -> Iterator[np.ndarray]:
        for reader in readers:
            for _, chunk in reader.chunks(chunk_size):
                yield chunk

    return write_up2(out_path, chunks(), geometry.map_shape, geometry.pattern_shape,
                     geometry.step_um)
