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
from latentebsd.io.truth import read_truth

log = logging.getLogger(__name__)


def choose_patterns(valid: np.ndarray, n: int, val_fraction: float,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Sorted train and validation pattern indices drawn from ``valid`` patterns."""
    candidates = np.flatnonzero(valid)
    take = min(n, len(candidates))
    drawn = rng.choice(candidates, size=take, replace=False)
    n_val = int(round(val_fraction * take))
    return np.sort(drawn[n_val:]), np.sort(drawn[:n_val])


#: The smallest pattern side the networks take (latentebsd.models.architecture_for);
#: a common size below it is no fix to suggest.
MIN_MODEL_SIDE = 16


def _size(shape: Sequence[int]) -> str:
    return f"{int(shape[0])} x {int(shape[1])}"


def common_binning(raw_shapes: Sequence[Sequence[int]],
                   at_most: Sequence[int] | None = None,
                   min_side: int = MIN_MODEL_SIDE) -> tuple[tuple[int, int], list[int]] | None:
    """A pattern size that every raw size block-bins to exactly, and the factors that
    get there: the largest one not above ``at_most`` (``(h, w)``; e.g. the largest size
    the scans have now), else the largest; ``None`` if integer binning cannot make the
    sizes equal with both sides at least ``min_side``."""
    h0, w0 = (int(v) for v in raw_shapes[0])
    found = []
    for f0 in range(1, min(h0, w0) + 1):
        if h0 % f0 or w0 % f0:
            continue
        target = (h0 // f0, w0 // f0)
        if min(target) < min_side:
            break
        factors = []
        for h, w in raw_shapes:
            f, rest = divmod(int(h), target[0])
            if rest or f < 1 or int(w) != f * target[1]:
                break
            factors.append(f)
        else:
            found.append((target, factors))  # largest target first
    if not found:
        return None
    if at_most is not None:
        fitting = [c for c in found if c[0][0] <= at_most[0] and c[0][1] <= at_most[1]]
        if fitting:
            return fitting[0]
    return found[0]


def shape_mismatch_message(scans: Sequence[str], shapes: Sequence[Sequence[int]],
                           raw_shapes: Sequence[Sequence[int]], binnings: Sequence[int]) -> str:
    """The error for preprocessed scans of different pattern sizes: every scan's size,
    raw size and binning, and the ``scans.<name>.binning`` values that would fix it."""
    listing = ", ".join(
        f"{name} is {_size(shape)} from {_size(raw)} raw (binning {b})"
        for name, shape, raw, b in zip(scans, shapes, raw_shapes, binnings))
    message = (f"preprocessed scans differ in pattern shape ({listing}); one model needs one "
               f"pattern shape: set scans.<name>.binning so that every scan is binned to the "
               f"same size")
    largest = max(shapes, key=lambda hw: int(hw[0]) * int(hw[1]))
    common = common_binning(raw_shapes, at_most=largest)
    if common is None:
        return message + (f"; no integer binning makes these raw sizes equal (at "
                          f"{MIN_MODEL_SIDE} px or more a side): crop or resample one scan's "
                          f"patterns to a size the others bin to")
    target, factors = common
    fix = ", ".join(f"scans.{name}.binning: {f}" for name, f in zip(scans, factors))
    return message + f", e.g. {fix} (all {_size(target)})"


def orientation_ids(truth_path: str | os.PathLike) -> np.ndarray:
    """Row-major id of the simulated orientation at every point: grain or twin lamella
    (``wrought``, ``polycrystal``: ``domain_id``), grain (``am``: its rotation domains,
    cells and gradients stay within ~2 deg of the grain's orientation)."""
    truth, _, attrs = read_truth(truth_path)
    key = "grain_id" if attrs["microstructure"] == "am" else "domain_id"
    return truth[key].ravel()


def sample_training_set(
    preprocessed: Sequence[str | os.PathLike],
    out_path: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    batch: int = 1024,
    progress: bool = True,
    truths: Mapping[str, str | os.PathLike] | None = None,
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
    truths
        Scan file stem -> ground-truth file of the simulated scans: the number of
        distinct simulated orientations (:func:`orientation_ids`) among the training
        patterns is logged and stored as attr ``distinct_orientations`` (over the
        scans with ground truth, named in ``distinct_orientations_scans``).
    """
    cfg = config.section("sample") if settings is None else settings
    patterns_per_scan, val_fraction = cfg["patterns_per_scan"], cfg["val_fraction"]
    paths = [Path(p) for p in preprocessed]
    if not paths:
        raise ValueError("no preprocessed scans to sample from (config key scans is empty)")
    rng = np.random.default_rng(seed)
    picks, shapes, masks, raw_shapes, binnings = [], [], [], [], []
    for path in paths:
        with PreprocessedScan(path) as scan:
            shapes.append(scan.pattern_shape)
            raw_shapes.append(scan.raw_pattern_shape)
            binnings.append(int(scan.attrs.get("binning", 1)))
            masks.append(scan.mask)
            train_idx, val_idx = choose_patterns(scan.valid, patterns_per_scan, val_fraction, rng)
        if len(train_idx) + len(val_idx) < patterns_per_scan:
            log.warning("%s: only %d valid patterns, fewer than sample.patterns_per_scan = %d",
                        path, len(train_idx) + len(val_idx), patterns_per_scan)
        picks.append((train_idx, val_idx))
    if len(set(shapes)) > 1:
        raise ValueError(shape_mismatch_message([p.stem for p in paths], shapes, raw_shapes,
                                                binnings))
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
                   val_fraction, distinct_orientations(paths, picks, truths or {}))
    log.info("sample: %d train + %d validation patterns of %d x %d from %d scans",
             n_train, n_val, h, w, len(paths))
    return Path(out_path)


def distinct_orientations(paths: Sequence[Path], picks: Sequence[tuple[np.ndarray, np.ndarray]],
                          truths: Mapping[str, str | os.PathLike]) -> dict[str, Any]:
    """Attrs ``distinct_orientations`` (training patterns) and
    ``distinct_orientations_scans`` for the scans with ground truth (none: empty)."""
    counts, scans = 0, []
    for path, (train_idx, _) in zip(paths, picks):
        if path.stem not in truths:
            continue
        ids = np.unique(orientation_ids(truths[path.stem])[train_idx])
        log.info("%s: %d distinct simulated orientations in %d training patterns",
                 path.stem, len(ids), len(train_idx))
        counts += len(ids)
        scans.append(path.stem)
    if not scans:
        return {}
    log.info("training sample: %d distinct simulated orientations (scans %s)", counts,
             ", ".join(scans))
    return {"distinct_orientations": counts, "distinct_orientations_scans": scans}
