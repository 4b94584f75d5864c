"""Scan geometry: map grid, step size, detector pattern centre and tilts.

One :class:`ScanGeometry` travels with every scan through the workflow (simulated
scans write it next to their UP2 file, preprocessing copies it into its output) so
that indexing and plotting downstream never guess a convention.

Conventions
-----------
- Patterns are stored row-major over the map: pattern ``i`` sits at
  ``(row, col) = divmod(i, n_cols)``.
- The pattern centre (PC) is kept in **Bruker** convention (``PCx``, ``PCy`` as
  fractions of the pattern width / height from the top-left corner, ``PCz`` as a fraction
  of the pattern height), which is kikuchipy's ``EBSDDetector`` default. Fractions do not
  change under binning. ``pc`` is either one ``(3,)`` vector for the whole scan or one
  ``(n_rows * n_cols, 3)`` row per pattern (a PC that drifts across the scan).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import h5py
import numpy as np

PC_CONVENTIONS = ("bruker", "tsl", "edax", "oxford", "emsoft")


@dataclass
class ScanGeometry:
    """Where each pattern of a scan was recorded and how the detector saw it.

    Parameters
    ----------
    n_rows, n_cols
        Map shape (square grid).
    step_um
        Step size in micrometres (same along x and y).
    pattern_shape
        ``(height, width)`` of one pattern in pixels.
    pc
        Pattern centre(s) in Bruker convention, shape ``(3,)`` or ``(n_rows*n_cols, 3)``.
    sample_tilt
        Sample tilt in degrees (70 on a standard EBSD setup).
    camera_tilt
        Detector tilt in degrees (kikuchipy's ``tilt``; PyEBSDIndex's ``camElev``).
    working_distance_mm
        SEM working distance in mm where the pattern file states it (only the ``.ang``
        header uses it), else ``None``.
    """

    n_rows: int
    n_cols: int
    step_um: float
    pattern_shape: tuple[int, int]
    pc: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.5, 0.6]))
    sample_tilt: float = 70.0
    camera_tilt: float = 0.0
    working_distance_mm: float | None = None

    def __post_init__(self) -> None:
        self.n_rows = int(self.n_rows)
        self.n_cols = int(self.n_cols)
        self.step_um = float(self.step_um)
        self.pattern_shape = (int(self.pattern_shape[0]), int(self.pattern_shape[1]))
        self.pc = np.asarray(self.pc, dtype=np.float64)
        if self.n_rows < 1 or self.n_cols < 1:
            raise ValueError(f"map shape must be positive, got {self.map_shape}")
        if self.step_um <= 0:
            raise ValueError(f"step_um must be > 0, got {self.step_um}")
        if self.working_distance_mm is not None:
            wd = float(self.working_distance_mm)
            self.working_distance_mm = wd if np.isfinite(wd) and wd > 0 else None
        if self.pc.shape not in ((3,), (self.n_patterns, 3)):
            raise ValueError(
                f"pc must have shape (3,) or ({self.n_patterns}, 3) for a "
                f"{self.n_rows} x {self.n_cols} map, got {self.pc.shape}"
            )

    @property
    def map_shape(self) -> tuple[int, int]:
        """``(n_rows, n_cols)``."""
        return (self.n_rows, self.n_cols)

    @property
    def n_patterns(self) -> int:
        """Number of patterns in the map."""
        return self.n_rows * self.n_cols

    def pc_of(self, start: int, stop: int) -> np.ndarray:
        """Bruker PCs of patterns ``start:stop``, shape ``(stop - start, 3)``."""
        if self.pc.ndim == 1:
            return np.broadcast_to(self.pc, (stop - start, 3)).copy()
        return self.pc[start:stop].copy()

    def mean_pc(self) -> np.ndarray:
        """The scan's mean Bruker PC, shape ``(3,)``."""
        return self.pc if self.pc.ndim == 1 else self.pc.mean(axis=0)

    def row_block(self, first_row: int, stop_row: int) -> "ScanGeometry":
        """The geometry of map rows ``first_row:stop_row`` (a shard of the scan)."""
        if not 0 <= first_row < stop_row <= self.n_rows:
            raise ValueError(f"rows {first_row}:{stop_row} outside the map's 0:{self.n_rows}")
        n_rows = stop_row - first_row
        pc = self.pc if self.pc.ndim == 1 else self.pc_of(first_row * self.n_cols,
                                                            stop_row * self.n_cols)
        return ScanGeometry(n_rows, self.n_cols, self.step_um, self.pattern_shape, pc.copy(),
                            self.sample_tilt, self.camera_tilt, self.working_distance_mm)

    def binned(self, factor: int) -> "ScanGeometry":
        """The same geometry for patterns binned by ``factor`` (PC fractions unchanged)."""
        h, w = self.pattern_shape
        return ScanGeometry(
            self.n_rows, self.n_cols, self.step_um, (h // factor, w // factor),
            self.pc.copy(), self.sample_tilt, self.camera_tilt, self.working_distance_mm,
        )

    def to_h5(self, group: h5py.Group) -> None:
        """Write into an (open, writable) HDF5 group."""
        group.attrs["n_rows"] = self.n_rows
        group.attrs["n_cols"] = self.n_cols
        group.attrs["step_um"] = self.step_um
        group.attrs["pattern_shape"] = np.asarray(self.pattern_shape, dtype=np.int64)
        group.attrs["sample_tilt"] = self.sample_tilt
        group.attrs["camera_tilt"] = self.camera_tilt
        group.attrs["pc_convention"] = "bruker"
        if self.working_distance_mm is not None:
            group.attrs["working_distance_mm"] = float(self.working_distance_mm)
        group.create_dataset("pc", data=self.pc)

    @classmethod
    def from_h5(cls, group: h5py.Group) -> "ScanGeometry":
        """Read what :meth:`to_h5` wrote."""
        a = group.attrs
        return cls(
            n_rows=int(a["n_rows"]), n_cols=int(a["n_cols"]), step_um=float(a["step_um"]),
            pattern_shape=tuple(int(v) for v in a["pattern_shape"]), pc=group["pc"][()],
            sample_tilt=float(a["sample_tilt"]), camera_tilt=float(a["camera_tilt"]),
            # files written before the working distance was kept have none
            working_distance_mm=(float(a["working_distance_mm"])
                                 if "working_distance_mm" in a else None),
        )

    def to_dict(self) -> dict[str, Any]:
        """A JSON/YAML-friendly summary (mean PC only)."""
        return {
            "n_rows": self.n_rows, "n_cols": self.n_cols, "step_um": self.step_um,
            "pattern_shape": list(self.pattern_shape),
            "pc_bruker_mean": [float(v) for v in self.mean_pc()],
            "pc_varies": bool(self.pc.ndim == 2),
            "sample_tilt": self.sample_tilt, "camera_tilt": self.camera_tilt,
            "working_distance_mm": self.working_distance_mm,
        }


def pc_to_bruker(pc: np.ndarray, convention: str, pattern_shape: tuple[int, int]) -> np.ndarray:
    """Convert pattern centre(s) from ``convention`` to Bruker, via kikuchipy's detector.

    Parameters
    ----------
    pc
        ``(3,)`` or ``(n, 3)`` pattern centres.
    convention
        One of ``bruker``, ``tsl``/``edax``, ``oxford``, ``emsoft``.
    pattern_shape
        ``(height, width)`` of the patterns the PC refers to.
    """
    from kikuchipy.detectors import EBSDDetector

    conv = convention.lower()
    if conv not in PC_CONVENTIONS:
        raise ValueError(f"pc_convention must be one of {PC_CONVENTIONS}, got {convention!r}")
    pc = np.asarray(pc, dtype=np.float64)
    if conv == "bruker":
        return pc.copy()
    det = EBSDDetector(shape=tuple(pattern_shape), pc=np.atleast_2d(pc),
                       convention="tsl" if conv == "edax" else conv)
    out = det.pc.reshape(-1, 3)
    return out[0] if pc.ndim == 1 else out
