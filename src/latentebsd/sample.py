"""Training / validation sample: N random patterns per scan, split 80/20 (paper: 16k
patterns from each of 6 maps, 96k in all).

Patterns are drawn without replacement from each scan's valid patterns, with one seeded
generator; exactly ``round(val_fraction * n)`` of every scan's draws go to validation,
so both sets hold every scan in the same proportion. The sample is written scan by scan; memory holds one read batch.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import h5py
import numpy as np
from tqdm.auto import tqdm

from latentebsd.io import atomic_path

log = logging.getLogger(__name__)


def choose_patterns(valid: np.ndarray, n: int, val_fraction: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and validation pattern indices drawn from ``valid`` patterns."""
    candidates = np.flatnonzero(valid)
    take = min(n, len(candidates))
    drawn = rng.choice(candidates, size=take, replace=False)
    n_val = int(round(val_fraction * take))
    return np.sort(drawn[n_val:]), np.sort(drawn[:n_val])


def _copy_rows(src: h5py.Dataset, indices: np.ndarray, dst: h5py.Dataset, at: int,
               batch: int) -> None:
    for i in range(0, len(indices), batch):
        part = indices[i:i + batch]
        dst[at + i:at + i + len(part)] = src[part]


def sample_training_set(
    preprocessed: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    patterns_per_scan: int,
    val_fraction: float = 0.2,
    seed: int = 0,
    batch: int = 1024,
    progress: bool = True,
) -> Path:
    """Draw the training and validation patterns from preprocessed scans.

    Parameters
    ----------
    preprocessed
        Preprocessed scan files (:func:`latentebsd.preprocess.preprocess_scan`); all
        must share one pattern shape.
    out_path
        Output HDF5: ``train`` / ``val`` (n, h, w) float32, ``train_source`` /
        ``val_source`` (n, 2) int64 = (scan index, pattern index), ``mask`` (h, w) bool =
        pixels on screen in every scan, attribute ``scans`` (file stems, in order).
    patterns_per_scan
        Patterns drawn from each scan (all valid ones if the scan has fewer).
    val_fraction
        Fraction of each scan's draws that goes to validation.
    seed
        Seed of the one generator behind every draw.
    """
    if not 0 < val_fraction < 1:
        raise ValueError(f"config key sample.val_fraction: expected 0 < value < 1, got {val_fraction}")
    if patterns_per_scan < 2:
        raise ValueError(f"config key sample.patterns_per_scan: expected >= 2, got {patterns_per_scan}")
    paths = [Path(p) for p in preprocessed]
    if not paths:
        raise ValueError("no preprocessed scans to sample from (config key scans is empty)")
    rng = np.random.default_rng(seed)
    picks, shapes, masks = [], [], []
    for path in paths:
        with h5py.File(path, "r") as f:
            shapes.append(f["patterns"].shape[1:])
            masks.append(f["mask"][()])
            train_idx, val_idx = choose_patterns(f["valid"][()], patterns_per_scan, val_fraction, rng)
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
    with atomic_path(out_path) as tmp, h5py.File(tmp, "w") as out:
        sets = {
            "train": out.create_dataset("train", (n_train, h, w), np.float32, chunks=(min(n_train, 64), h, w)),
            "val": out.create_dataset("val", (n_val, h, w), np.float32, chunks=(min(n_val, 64), h, w)),
        }
        sources = {"train": np.zeros((n_train, 2), np.int64), "val": np.zeros((n_val, 2), np.int64)}
        offsets = {"train": 0, "val": 0}
        bar = tqdm(total=n_train + n_val, desc="sample", unit="pat", disable=not progress)
        for scan_index, (path, (train_idx, val_idx)) in enumerate(zip(paths, picks)):
            with h5py.File(path, "r") as f:
                for name, idx in (("train", train_idx), ("val", val_idx)):
                    at = offsets[name]
                    _copy_rows(f["patterns"], idx, sets[name], at, batch)
                    sources[name][at:at + len(idx)] = np.column_stack(
                        [np.full(len(idx), scan_index), idx])
                    offsets[name] += len(idx)
                    bar.update(len(idx))
        bar.close()
        out.create_dataset("train_source", data=sources["train"])
        out.create_dataset("val_source", data=sources["val"])
        out.create_dataset("mask", data=np.logical_and.reduce(masks))
        out.attrs["scans"] = [p.stem for p in paths]
        out.attrs["seed"] = seed
        out.attrs["val_fraction"] = val_fraction
    log.info("sample: %d train + %d validation patterns of %d x %d from %d scans",
             n_train, n_val, h, w, len(paths))
    return Path(out_path)
