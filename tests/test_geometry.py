"""Scan geometry: HDF5 round trip, binning, pattern-centre conventions."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from latentebsd.geometry import ScanGeometry, pc_to_bruker


def test_h5_round_trip_with_drifting_pc(tmp_path):
    pc = np.column_stack([np.linspace(0.4, 0.6, 6), np.full(6, 0.5), np.full(6, 0.7)])
    geometry = ScanGeometry(2, 3, 0.25, (120, 100), pc, sample_tilt=69.5, camera_tilt=8.0)
    with h5py.File(tmp_path / "g.h5", "w") as f:
        geometry.to_h5(f.create_group("geometry"))
    with h5py.File(tmp_path / "g.h5") as f:
        back = ScanGeometry.from_h5(f["geometry"])
    assert back.map_shape == (2, 3) and back.pattern_shape == (120, 100)
    assert (back.step_um, back.sample_tilt, back.camera_tilt) == (0.25, 69.5, 8.0)
    np.testing.assert_array_equal(back.pc, pc)
    np.testing.assert_array_equal(back.pc_of(2, 4), pc[2:4])
    binned = back.binned(4)
    assert binned.pattern_shape == (30, 25)
    np.testing.assert_array_equal(binned.pc, pc)  # fractions do not change under binning


def test_pc_shape_is_checked():
    with pytest.raises(ValueError, match=r"pc must have shape \(3,\) or \(6, 3\)"):
        ScanGeometry(2, 3, 1.0, (10, 10), pc=np.zeros((5, 3)))


def test_tsl_pc_converts_to_bruker():
    # TSL's y is measured from the bottom of a square pattern: y_bruker = 1 - y_tsl.
    bruker = pc_to_bruker(np.array([0.45, 0.70, 0.65]), "tsl", (120, 120))
    np.testing.assert_allclose(bruker, [0.45, 0.30, 0.65], atol=1e-12)
    np.testing.assert_array_equal(pc_to_bruker(np.array([0.1, 0.2, 0.3]), "bruker", (5, 5)),
                                  [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="pc_convention must be one of"):
        pc_to_bruker(np.array([0.5, 0.5, 0.5]), "matlab", (5, 5))
