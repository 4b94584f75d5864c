"""The preprocessed scan: ``results/preprocessed/{scan}.h5``.

Datasets ``patterns`` (n, h, w) float32 in [-1, 1] (row-major map order, chunked 64
patterns at a time), ``mask`` (h, w) bool (True = on the detector screen, after
binning), ``mask_full_resolution``, ``valid`` (n,) bool, ``background`` (H, W) float32
(the background subtracted, full resolution; zeros for ``none``), group ``geometry``
(:meth:`ScanGeometry.to_h5` of the binned patterns) and file attrs ``source``,
``binning``, ``background`` (``mean``, ``static`` or ``none``), ``rescale``, ``mask_method``,
``n_invalid``, ``raw_pattern_shape``, ``raw_dtype`` (and ``patterns.rescale_range``
for per-scan rescaling).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from latentebsd.geometry import ScanGeometry
from latentebsd.io.atomic import atomic_path

_REQUIRED = ("patterns", "mask", "valid", "geometry")


class PreprocessedWriter:
    """The file being written: fill ``patterns`` chunk by chunk, then :meth:`finish`."""

    def __init__(self, f: h5py.File, n: int, pattern_shape: tuple[int, int]) -> None:
        h, w = pattern_shape
        self._f = f
        self.patterns = f.create_dataset("patterns", shape=(n, h, w), dtype=np.float32,
                                         chunks=(min(n, 64), h, w))

    def finish(self, mask: np.ndarray, mask_full_resolution: np.ndarray, valid: np.ndarray,
               background: np.ndarray, geometry: ScanGeometry, attrs: Mapping[str, Any]) -> None:
        """Write the per-scan arrays, the geometry (binned patterns) and the attrs."""
        f = self._f
        f.create_dataset("mask", data=mask)
        f.create_dataset("mask_full_resolution", data=mask_full_resolution)
        f.create_dataset("valid", data=valid)
        f.create_dataset("background", data=background.astype(np.float32))
        geometry.to_h5(f.create_group("geometry"))
        f.attrs.update(dict(attrs))


@contextlib.contextmanager
def preprocessed_writer(path: str | os.PathLike, n: int,
                        pattern_shape: tuple[int, int]) -> Iterator[PreprocessedWriter]:
    """A preprocessed scan being written; it appears under ``path`` only when complete."""
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        yield PreprocessedWriter(f, n, pattern_shape)


class PreprocessedScan:
    """Read access to a preprocessed scan (a context manager; the file stays open).

    Attributes
    ----------
    path, geometry, mask, valid, attrs
        ``mask`` (h, w) bool, ``valid`` (n,) bool, ``attrs`` the file attributes.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"{self.path}: preprocessed scan not found")
        self._f = h5py.File(self.path, "r")
        try:
            for key in _REQUIRED:
                if key not in self._f:
                    raise ValueError(f"{self.path}: not a preprocessed scan (no {key!r})")
            self._patterns = self._f["patterns"]
            self.geometry = ScanGeometry.from_h5(self._f["geometry"])
            self.mask = self._f["mask"][()].astype(bool)
            self.valid = self._f["valid"][()].astype(bool)
            self.attrs = dict(self._f.attrs)
            g = self.geometry
            if self.mask.shape != g.pattern_shape or self.valid.shape != (g.n_patterns,) \
                    or self._patterns.shape != (g.n_patterns, *g.pattern_shape):
                raise ValueError(
                    f"{self.path}: patterns {self._patterns.shape} / mask {self.mask.shape} / "
                    f"valid {self.valid.shape} do not fit the geometry ({g.pattern_shape}, "
                    f"{g.n_patterns} patterns)")
        except BaseException:
            self._f.close()
            raise

    @property
    def n_patterns(self) -> int:
        return self.geometry.n_patterns

    @property
    def pattern_shape(self) -> tuple[int, int]:
        return self.geometry.pattern_shape

    @property
    def raw_pattern_shape(self) -> tuple[int, int]:
        """Pattern shape in the original file, before binning."""
        return tuple(int(v) for v in self.attrs.get("raw_pattern_shape", self.pattern_shape))

    @property
    def raw_dtype(self) -> str:
        return str(self.attrs.get("raw_dtype", "uint16"))

    def read(self, start: int, stop: int) -> np.ndarray:
        """Patterns ``start:stop`` (row-major), float32."""
        return np.asarray(self._patterns[start:stop], dtype=np.float32)

    def read_at(self, indices: Sequence[int]) -> np.ndarray:
        """Patterns at sorted, distinct row-major ``indices``, float32."""
        indices = np.asarray(indices, np.int64)
        if not len(indices):
            return np.zeros((0, *self.pattern_shape), np.float32)
        return np.asarray(self._patterns[indices], dtype=np.float32)

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "PreprocessedScan":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_screen(path: str | os.PathLike) -> tuple[ScanGeometry, np.ndarray, np.ndarray]:
    """Geometry, screen mask ``(h, w)`` and ``valid`` flags ``(n,)`` of a preprocessed scan."""
    with PreprocessedScan(path) as scan:
        return scan.geometry, scan.mask, scan.valid


def read_geometry(path: str | os.PathLike) -> ScanGeometry:
    """The binned-pattern geometry stored in a preprocessed scan."""
    with h5py.File(path, "r") as f:
        return ScanGeometry.from_h5(f["geometry"])
