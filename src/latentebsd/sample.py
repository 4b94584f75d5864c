"""Training / validation sample: N random patterns per scan, split 80/20 (paper: 16k
patterns from each of 6 maps, 96k in all).

Patterns are drawn without replacement from each scan's valid patterns, with one seeded
generator; exactly ``round(val_fraction * n)`` of every scan's draws go to validation,
so both sets hold every scan in the same proportion. The sample is written scan by
scan (:mod:`latentebsd.io.sample`); memory holds one read batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.io.sample import sample_writer

log = logging.getLogger(__name__)


def choose_patterns(valid: np.ndarray, n: int, val_fraction: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and validation pattern indices drawn from ``valid`` patterns."""
    candidates = np.flatnonzero(valid)
    take = min(n, len(candidates))
    drawn = rng.choice(candidates, size=take, replace=False)
    n_val = int(round(val_fraction * take))
    return np.sort(drawn[n_val:]), np.sort(drawn[:n_val])


def sample_training_set(
    preprocessed: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch: int = 1024,
    progress: bool = True,
) -> Path:
    """Draw the training and validation patterns from preprocessed scans.

    Parameters
    ----------
    preprocessed
        Preprocessed scan files (:mod:`latentebsd.io.preprocessed`); all must share
        one pattern shape.
    out_path
        Output (:mod:`latentebsd.io.sample`).
    settings
        The validated ``sample`` config section (``None``: the schema's defaults):
        ``patterns_per_scan`` (all valid ones if a scan has fewer) and
        ``val_fraction`` (of each scan's draws).
    seed
        Seed of the one generator behind every draw.
    batch
        Patterns copied per read (memory only).
    """
    cfg = config.section("sample") if settings is None else settings
    patterns_per_scan, val_fraction = cfg["patterns_per_scan"], cfg["val_fraction"]
    paths = [Path(p) for p in preprocessed]
    if not paths:
        raise ValueError("no preprocessed scans to sample from (config key scans is empty)")
    rng = np.random.default_rng(seed)
    picks, shapes, masks = [], [], []
    for path in paths:
        with PreprocessedScan(path) as scan:
            shapes.append(scan.pattern_shape)
            masks.append(scan.mask)
            train_idx, val_idx = choose_patterns(scan.valid, patterns_per_scan, val_fraction, rng)
        if len(train_idx) + len(val_idx) < patterns_per_scan:
            log.warning("%s: only %d valid patterns, fewer than sample.patterns_per_scan = %d",
                        path, len(train_idx) + len(val_idx), patterns_per_scan)
        picks.append((train_idx, val_idx))
    if len(set(shapes)) > 1:
        listing = ", ".join(f"{p.name}: {s}" for p, s in zip(paths, shapes))
        raise ValueError(f"preprocessed scans differ in pattern shape ({listing}); one model "
                         f"needs one pattern shape: adjust preprocess.binning per detector")
    h, w = shapes[0]
    n_train = sum(len(t) for t, _ in picks)
    n_val = sum(len(v) for _, v in picks)
    with sample_writer(out_path, n_train, n_val, (h, w)) as out:
        sources = {"train": np.zeros((n_train, 2), np.int64), "val": np.zeros((n_val, 2), np.int64)}
        offsets = {"train": 0, "val": 0}
        bar = tqdm(total=n_train + n_val, desc="sample", unit="pat", disable=not progress)
        for scan_index, (path, (train_idx, val_idx)) in enumerate(zip(paths, picks)):
            with PreprocessedScan(path) as scan:
                for name, idx in (("train", train_idx), ("val", val_idx)):
                    at = offsets[name]
                    for i in range(0, len(idx), batch):
                        part = idx[i:i + batch]
                        out.sets[name][at + i:at + i + len(part)] = scan.read_at(part)
                    sources[name][at:at + len(idx)] = np.column_stack(
                        [np.full(len(idx), scan_index), idx])
                    offsets[name] += len(idx)
                    bar.update(len(idx))
        bar.close()
        out.finish(sources, np.logical_and.reduce(masks), [p.stem for p in paths], seed,
                   val_fraction)
    log.info("sample: %d train + %d validation patterns of %d x %d from %d scans",
             n_train, n_val, h, w, len(paths))
    return Path(out_path)
