"""Training/validation sample drawn from preprocessed scans."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from latentebsd.geometry import ScanGeometry
from latentebsd.config import section
from latentebsd.sample import sample_training_set


def fake_preprocessed(path, n, shape=(6, 6), invalid=(), offset=0.0, mask=None, attrs=None):
    patterns = (np.arange(n, dtype=np.float32)[:, None, None] + offset) * np.ones(shape, np.float32)
    valid = np.ones(n, bool)
    valid[list(invalid)] = False
    with h5py.File(path, "w") as f:
        f["patterns"] = patterns
        f["valid"] = valid
        f["mask"] = np.ones(shape, bool) if mask is None else mask
        ScanGeometry(1, n, 1.0, shape).to_h5(f.create_group("geometry"))
        f.attrs.update(attrs or {})
    return path


def read(path):
    with h5py.File(path) as f:
        return {k: f[k][()] for k in f}, dict(f.attrs)


def test_counts_split_sources_and_mask(tmp_path):
    mask_b = np.ones((6, 6), bool)
    mask_b[0, 0] = False
    a = fake_preprocessed(tmp_path / "a.h5", 50, invalid=[0, 1, 2])
    b = fake_preprocessed(tmp_path / "b.h5", 40, offset=1000, mask=mask_b)
    data, attrs = read(sample_training_set([a, b], tmp_path / "s.h5", section("sample", {"patterns_per_scan": 20}), seed=1, progress=False))
    assert data["train"].shape == (32, 6, 6) and data["val"].shape == (8, 6, 6)
    assert list(attrs["scans"]) == ["a", "b"]
    for split in ("train", "val"):
        src = data[f"{split}_source"]
        # each stored pattern is the one its source row names (fake patterns = index + offset)
        expected = src[:, 1] + 1000 * src[:, 0]
        np.testing.assert_array_equal(data[split][:, 3, 3], expected)
        assert not np.isin(src[src[:, 0] == 0, 1], [0, 1, 2]).any()  # invalid never drawn
    both = np.concatenate([data["train_source"], data["val_source"]])
    assert len(np.unique(both, axis=0)) == 40  # no pattern drawn twice
    assert (np.bincount(data["val_source"][:, 0]) == [4, 4]).all()  # 20 % of each scan
    assert data["mask"].sum() == 35


def test_seeded(tmp_path):
    a = fake_preprocessed(tmp_path / "a.h5", 100)
    s1, _ = read(sample_training_set([a], tmp_path / "1.h5", section("sample", {"patterns_per_scan": 30}), seed=5, progress=False))
    s2, _ = read(sample_training_set([a], tmp_path / "2.h5", section("sample", {"patterns_per_scan": 30}), seed=5, progress=False))
    s3, _ = read(sample_training_set([a], tmp_path / "3.h5", section("sample", {"patterns_per_scan": 30}), seed=6, progress=False))
    np.testing.assert_array_equal(s1["train_source"], s2["train_source"])
    assert not np.array_equal(s1["train_source"], s3["train_source"])


def test_scans_of_different_pattern_shape_are_rejected(tmp_path):
    """The error names each scan's size, raw size and binning, and the per-scan binning
    key with the factors that bin both scans to one size."""
    a = fake_preprocessed(tmp_path / "a.h5", 10, shape=(60, 60),
                          attrs={"raw_pattern_shape": (60, 60), "binning": 1})
    b = fake_preprocessed(tmp_path / "b.h5", 10, shape=(30, 30),
                          attrs={"raw_pattern_shape": (120, 120), "binning": 4})
    with pytest.raises(ValueError, match=(
            r"differ in pattern shape \(a is 60 x 60 from 60 x 60 raw \(binning 1\), b is 30 x 30 "
            r"from 120 x 120 raw \(binning 4\)\).*set scans\.<name>\.binning so that every scan "
            r"is binned to the same size, e\.g\. scans\.a\.binning: 1, scans\.b\.binning: 2 "
            r"\(all 60 x 60\)")):
        sample_training_set([a, b], tmp_path / "s.h5", section("sample", {"patterns_per_scan": 5}), progress=False)
    assert not (tmp_path / "s.h5").exists()


def test_shape_mismatch_without_an_integer_fix_says_so():
    from latentebsd.sample import common_binning, shape_mismatch_message

    assert common_binning([(480, 480), (240, 240), (480, 480)], at_most=(120, 120)) == \
        ((120, 120), [4, 2, 4])
    message = shape_mismatch_message(["a", "b"], [(60, 60), (60, 80)], [(60, 60), (60, 80)], [1, 1])
    assert "no integer binning makes these raw sizes equal" in message
    assert "e.g." not in message
