"""The training / validation sample: ``results/sample/dataset.h5``.

Datasets ``train`` / ``val`` (n, h, w) float32 (chunked 64 patterns), ``train_source`` /
``val_source`` (n, 2) int64 = (scan index, pattern index), ``mask`` (h, w) bool = pixels
on screen in every scan; attrs ``scans`` (file stems, in order), ``seed``,
``val_fraction`` and, when simulated scans were sampled, ``distinct_orientations`` /
``distinct_orientations_scans``.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latentebsd.io.atomic import atomic_path


class SampleWriter:
    """The sample being written: fill ``sets["train"]`` / ``sets["val"]``, then :meth:`finish`."""

    def __init__(self, f: h5py.File, n_train: int, n_val: int, shape: tuple[int, int]) -> None:
        h, w = shape
        self._f = f
        self.sets = {
            "train": f.create_dataset("train", (n_train, h, w), np.float32,
                                      chunks=(min(n_train, 64), h, w)),
            "val": f.create_dataset("val", (n_val, h, w), np.float32, chunks=(min(n_val, 64), h, w)),
        }

    def finish(self, sources: dict[str, np.ndarray], mask: np.ndarray, scans: Sequence[str],
               seed: int, val_fraction: float, extra_attrs: Mapping[str, Any] | None = None) -> None:
        f = self._f
        f.create_dataset("train_source", data=sources["train"])
        f.create_dataset("val_source", data=sources["val"])
        f.create_dataset("mask", data=mask)
        f.attrs["scans"] = list(scans)
        f.attrs["seed"] = seed
        f.attrs["val_fraction"] = val_fraction
        for key, value in (extra_attrs or {}).items():
            f.attrs[key] = value


@contextlib.contextmanager
def sample_writer(path: str | os.PathLike, n_train: int, n_val: int,
                  shape: tuple[int, int]) -> Iterator[SampleWriter]:
    """The sample file being written; it appears under ``path`` only when complete."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield SampleWriter(f, n_train, n_val, shape)


def read_sample(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train (N, h, w), val (M, h, w), mask (h, w) bool)``, checked."""
    path = Path(path)
    with h5py.File(path, "r") as f:
        for key in ("train", "val", "mask"):
            if key not in f:
                raise KeyError(f"{path}: missing dataset {key!r}")
        train = np.asarray(f["train"][()], dtype=np.float32)
        val = np.asarray(f["val"][()], dtype=np.float32)
        mask = np.asarray(f["mask"][()], dtype=bool)
    if train.ndim != 3 or val.ndim != 3 or train.shape[1:] != mask.shape or val.shape[1:] != mask.shape:
        raise ValueError(f"{path}: inconsistent shapes train {train.shape}, val {val.shape}, mask {mask.shape}")
    if len(train) == 0:
        raise ValueError(f"{path}: empty training set")
    return train, val, mask
