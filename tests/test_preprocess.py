"""Preprocessing: invariants, chunked == in-memory, and bad input."""

from __future__ import annotations

import hashlib

import h5py
import numpy as np
import pytest

from latentebsd.config import section
from latentebsd.geometry import ScanGeometry
from latentebsd.io.patterns import PatternFileError, write_up2
from latentebsd.preprocess import bin_mask, preprocess_scan


def reference(raw: np.ndarray, mask: np.ndarray, factor: int, per_scan: bool,
              background: np.ndarray | None = None) -> np.ndarray:
    """The paper's preprocessing on a whole in-memory scan, written independently
    (``background``: subtracted instead of the scan's mean pattern)."""
    x = raw.astype(np.float64)
    x = x - (x.mean(axis=0) if background is None else background)
    n, h, w = x.shape
    binned = np.zeros((n, h // factor, w // factor))
    for i in range(factor):
        for j in range(factor):
            binned += x[:, i::factor, j::factor]
    binned /= factor**2
    on = binned[:, mask]
    if per_scan:
        lo, hi = on.min(), on.max()
    else:
        lo, hi = on.min(axis=1, keepdims=True), on.max(axis=1, keepdims=True)
    out = np.zeros_like(binned)
    out[:, mask] = 2 * (on - lo) / (hi - lo) - 1
    return out


def settings(**kwargs):
    """The ``preprocess`` section with ``kwargs`` (``mask`` a partial mask mapping)."""
    return section("preprocess", kwargs)


def run(tiny_scan, out, **kwargs):
    preprocess_scan(tiny_scan["path"], out, tiny_scan["geometry"], settings(**kwargs),
                    progress=False)
    with h5py.File(out, "r") as f:
        return {k: f[k][()] for k in ("patterns", "mask", "valid", "background")}, \
            ScanGeometry.from_h5(f["geometry"])


def test_invariants_range_mask_background(tiny_scan, tmp_path):
    result, geometry = run(tiny_scan, tmp_path / "p.h5", binning=2)
    pats, mask = result["patterns"], result["mask"]
    assert pats.shape == (35, 12, 12) and pats.dtype == np.float32
    np.testing.assert_array_equal(mask, bin_mask(tiny_scan["screen"], 2))
    assert 0.4 < mask.mean() < 0.9  # the dark corners really are masked
    on = pats[:, mask]
    np.testing.assert_allclose(on.min(axis=1), -1, atol=1e-6)
    np.testing.assert_allclose(on.max(axis=1), 1, atol=1e-6)
    assert np.all(pats[:, ~mask] == 0)
    np.testing.assert_allclose(result["background"], tiny_scan["patterns"].mean(axis=0), rtol=1e-5)
    assert geometry.pattern_shape == (12, 12) and geometry.map_shape == (5, 7)
    np.testing.assert_allclose(geometry.pc, tiny_scan["geometry"].pc)


def test_background_is_removed_per_scan(tiny_scan, tmp_path):
    """With one linear scale per scan, the scan mean after background removal is flat."""
    result, _ = run(tiny_scan, tmp_path / "p.h5", binning=2, rescale="per_scan")
    mask = result["mask"]
    raw_mean = tiny_scan["patterns"].mean(axis=0)
    assert raw_mean[tiny_scan["screen"]].std() > 1000  # the raw background is far from flat
    scan_mean = result["patterns"].mean(axis=0)[mask]
    assert scan_mean.std() < 1e-5
    on = result["patterns"][:, mask]
    assert on.min() == pytest.approx(-1, abs=1e-6) and on.max() == pytest.approx(1, abs=1e-6)


@pytest.mark.parametrize("rescale", ["per_pattern", "per_scan"])
def test_chunked_equals_in_memory(tiny_scan, tmp_path, rescale):
    chunked, _ = run(tiny_scan, tmp_path / "a.h5", binning=2, rescale=rescale, chunk_size=4)
    whole, _ = run(tiny_scan, tmp_path / "b.h5", binning=2, rescale=rescale, chunk_size=10_000)
    np.testing.assert_array_equal(chunked["patterns"], whole["patterns"])
    expected = reference(tiny_scan["patterns"], whole["mask"], 2, rescale == "per_scan")
    np.testing.assert_allclose(chunked["patterns"], expected, atol=2e-5)


def test_mask_methods(tiny_scan, tmp_path):
    none, _ = run(tiny_scan, tmp_path / "n.h5", binning=1, mask={"method": "none"})
    assert none["mask"].all()
    circle, _ = run(tiny_scan, tmp_path / "c.h5", binning=1,
                    mask={"method": "circle", "radius": 0.9})
    np.testing.assert_array_equal(circle["mask"], tiny_scan["screen"])


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _assert_nothing_written(tmp_path, keep):
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(keep)


def test_blank_pattern_is_an_error_naming_file_and_index(tmp_path, tiny_scan):
    pats = tiny_scan["patterns"].copy()
    pats[3] = 0
    pats[17] = 1234
    path = write_up2(tmp_path / "blank.up2", [pats], (5, 7), (24, 24), 0.5)
    before = _sha(path)
    with pytest.raises(PatternFileError, match=r"blank\.up2: 2 constant .*\[3, 17\]"):
        preprocess_scan(path, tmp_path / "out.h5", tiny_scan["geometry"], settings(binning=2), progress=False)
    _assert_nothing_written(tmp_path, ["blank.up2", "tiny.up2"])
    assert _sha(path) == before


def test_blank_patterns_can_be_flagged(tmp_path, tiny_scan):
    pats = tiny_scan["patterns"].copy()
    pats[3] = 0
    path = write_up2(tmp_path / "blank.up2", [pats], (5, 7), (24, 24), 0.5)
    preprocess_scan(path, tmp_path / "out.h5", tiny_scan["geometry"],
                    settings(binning=2, blank_patterns="flag"), progress=False)
    with h5py.File(tmp_path / "out.h5") as f:
        assert f["valid"][()].sum() == 34 and not f["valid"][3]
        assert np.all(f["patterns"][3] == 0)
        keep = np.ones(35, bool)
        keep[3] = False
        np.testing.assert_allclose(f["background"][()], pats[keep].mean(axis=0), rtol=1e-5)


def test_nan_patterns_are_an_error(tmp_path, tiny_scan):
    import kikuchipy as kp

    data = tiny_scan["patterns"].astype(np.float32)
    data[8, 2, 2] = np.nan
    path = tmp_path / "nan.h5"
    kp.signals.EBSD(data.reshape(5, 7, 24, 24)).save(path)
    with pytest.raises(PatternFileError, match=r"nan\.h5: 1 pattern\(s\) contain NaN.*index 8"):
        preprocess_scan(path, tmp_path / "out.h5", tiny_scan["geometry"], settings(binning=2), progress=False)
    assert not (tmp_path / "out.h5").exists()


def test_binning_must_divide_pattern_size(tiny_scan, tmp_path):
    with pytest.raises(ValueError, match=r"preprocess\.binning: 5 does not divide .*24 x 24"):
        preprocess_scan(tiny_scan["path"], tmp_path / "o.h5", tiny_scan["geometry"],
                        settings(binning=5), progress=False)


def test_pattern_size_inconsistent_with_geometry(tiny_scan, tmp_path):
    geometry = ScanGeometry(5, 7, 0.5, (30, 30))
    with pytest.raises(PatternFileError, match=r"patterns are \(24, 24\).*expects \(30, 30\)"):
        preprocess_scan(tiny_scan["path"], tmp_path / "o.h5", geometry, settings(binning=2), progress=False)


def test_map_shape_inconsistent_with_geometry(tiny_scan, tmp_path):
    geometry = ScanGeometry(7, 5, 0.5, (24, 24))
    with pytest.raises(PatternFileError, match=r"map shape \(7, 5\).*\(5, 7\)"):
        preprocess_scan(tiny_scan["path"], tmp_path / "o.h5", geometry, settings(binning=2), progress=False)
    assert not (tmp_path / "o.h5").exists()


def test_failure_midway_leaves_no_output(tiny_scan, tmp_path, monkeypatch):
    import latentebsd.preprocess as pre

    calls = {"n": 0}
    original = pre.rescale_to_unit_range

    def fail_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("disk full")
        return original(*args, **kwargs)

    monkeypatch.setattr(pre, "rescale_to_unit_range", fail_on_third)
    out_dir = tmp_path / "out"
    with pytest.raises(RuntimeError, match="disk full"):
        preprocess_scan(tiny_scan["path"], out_dir / "p.h5", tiny_scan["geometry"],
                        settings(binning=2, chunk_size=5), progress=False)
    assert list(out_dir.iterdir()) == []


# -- background choice, per-scan overrides ------------------------------------------------
def _h5ebsd_with_background(tmp_path, tiny_scan, background):
    """The tiny scan as kikuchipy h5ebsd, storing ``background`` as its static background."""
    import kikuchipy as kp

    s = kp.signals.EBSD(tiny_scan["patterns"].reshape(5, 7, 24, 24))
    s.static_background = background
    path = tmp_path / "tiny.h5"
    s.save(path)
    return path


def test_static_background_is_the_files_and_none_subtracts_nothing(tmp_path, tiny_scan):
    """``static`` subtracts the background the file stores (here a smooth ramp, not the
    mean), ``none`` nothing; each result equals the reference preprocessing with that
    background, and the file records which one was used."""
    yy, xx = np.mgrid[:24, :24]
    static = (3000 + 100 * yy + 50 * xx).astype(np.uint16)
    path = _h5ebsd_with_background(tmp_path, tiny_scan, static)
    raw = tiny_scan["patterns"].astype(np.float64)
    for method, subtracted in (("static", static.astype(np.float64)), ("none", np.zeros((24, 24)))):
        out = tmp_path / f"{method}.h5"
        preprocess_scan(path, out, tiny_scan["geometry"], settings(binning=2, background=method),
                        progress=False)
        with h5py.File(out) as f:
            assert f.attrs["background"] == method
            np.testing.assert_array_equal(f["background"][()], subtracted.astype(np.float32))
            expected = reference(raw, f["mask"][()], 2, False, background=subtracted)
            np.testing.assert_allclose(f["patterns"][()], expected, atol=2e-5)
    with h5py.File(tmp_path / "static.h5") as a, h5py.File(tmp_path / "none.h5") as b:
        assert not np.allclose(a["patterns"][()], b["patterns"][()], atol=1e-3)


def test_static_background_errors_name_the_key(tmp_path, tiny_scan):
    """No static background in the file (UP2), or one of another shape: the error names
    the key that asked for it, and nothing is written."""
    from latentebsd.preprocess import run_preprocess_rule

    out = tmp_path / "out.h5"
    with pytest.raises(PatternFileError, match=r"config key preprocess\.background: static, but "
                                               r".*tiny\.up2 \(edax_binary\) stores no static"):
        preprocess_scan(tiny_scan["path"], out, tiny_scan["geometry"],
                        settings(binning=2, background="static"), progress=False)
    sub = tmp_path / "h5"
    sub.mkdir()
    path = _h5ebsd_with_background(sub, tiny_scan, np.ones((24, 24), np.uint16))
    with h5py.File(path, "r+") as f:  # a background of the wrong size
        header = f["Scan 1/EBSD/Header"]
        del header["static_background"]
        header["static_background"] = np.ones((12, 12), np.uint16)
    scan_cfg = {"path": str(path), "pc": [0.5, 0.45, 0.6], "background": "static"}
    with pytest.raises(PatternFileError, match=r"config key scans\.mine\.background: static, but "
                                               r"the background pattern .* is 12 x 12 and its "
                                               r"patterns are 24 x 24"):
        run_preprocess_rule("mine", str(path), None, str(out), scan_cfg, settings(binning=2))
    assert not out.exists()


def test_mean_background_on_a_small_map_warns(tmp_path, tiny_scan, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="latentebsd.preprocess"):
        run(tiny_scan, tmp_path / "p.h5", binning=2)
    assert "preprocess.background = mean on a map of only 35 patterns (< 1000)" in caplog.text
    with h5py.File(tmp_path / "p.h5") as f:
        assert f.attrs["background"] == "mean"


def test_per_scan_binning_overrides_and_is_named(tmp_path, tiny_scan):
    """``scans.<name>.binning`` wins over ``preprocess.binning``, and its error names it."""
    from latentebsd.preprocess import run_preprocess_rule

    scan_cfg = {"path": str(tiny_scan["path"]), "pc": [0.5, 0.45, 0.6], "sample_tilt": 70,
                "camera_tilt": 0, "binning": 3}
    out = run_preprocess_rule("mine", str(tiny_scan["path"]), None, str(tmp_path / "a.h5"),
                              scan_cfg, settings(binning=2))
    with h5py.File(out) as f:
        assert f["patterns"].shape == (35, 8, 8) and f.attrs["binning"] == 3
    with pytest.raises(ValueError, match=r"config key scans\.mine\.binning: 5 does not divide "
                                         r"the pattern size 24 x 24"):
        run_preprocess_rule("mine", str(tiny_scan["path"]), None, str(tmp_path / "b.h5"),
                            {**scan_cfg, "binning": 5}, settings(binning=2))


def test_output_never_replaces_the_raw_scan(tiny_scan):
    before = _sha(tiny_scan["path"])
    with pytest.raises(ValueError, match=r"would replace the raw scan"):
        preprocess_scan(tiny_scan["path"], tiny_scan["path"], tiny_scan["geometry"],
                        settings(binning=2), progress=False)
    assert _sha(tiny_scan["path"]) == before


def test_bin_mask_keeps_a_binned_pixel_only_when_every_source_pixel_is_on_screen():
    """Expected masks built by hand: a binned pixel half on the screen's edge is off screen
    (its average mixes screen and the dark frame around it)."""
    mask = np.array([[1, 1, 1, 0, 0, 0],
                     [1, 1, 1, 1, 0, 0],
                     [0, 1, 1, 1, 1, 1],
                     [1, 1, 1, 1, 1, 1]], bool)
    expected = np.array([[1, 0, 0],
                         [0, 1, 1]], bool)
    np.testing.assert_array_equal(bin_mask(mask, 2), expected)
    np.testing.assert_array_equal(bin_mask(mask, 1), mask)
    ring = np.ones((6, 6), bool)
    ring[2, 2] = False  # one dark source pixel darkens exactly one 3 x 3 block
    np.testing.assert_array_equal(bin_mask(ring, 3), np.array([[0, 1], [1, 1]], bool))
