"""Detector imperfections of the simulator (issue 25, latentebsd.simulate).

Tiny maps and patterns: the whole file takes about a minute on 2 cores (plus
PyEBSDIndex's numba compilation in a fresh cache).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from latentebsd.config import ConfigError, section
from latentebsd.io.truth import read_truth
from latentebsd.simulate import imperfections_of, pc_errors, simulate_scan

#: Every imperfection off, stated explicitly: the ideal detector of before issue 25.
NONE = {"pc_jitter": 0.0, "pc_offset": [0.0, 0.0, 0.0], "pc_drift_error": 0.0,
        "camera_tilt_error": 0.0, "radial_distortion": 0.0, "band_blur": 0.0}
#: sha256 of the UP2 files the simulator wrote before the imperfections existed
#: (commit 68cd796; 40 x 40 patterns, chunk_size 7, counts 300, seed 11).
OLD_SHA256 = {
    ("wrought", (5, 6)): "1aa2adaa58df053ac0312ecbc0e4557bdc8dba524786fc248d5f40a8e84ed8ff",
    ("am", (6, 8)): "3200934a03ec22012b87dee456f8beb056165a31a8ba4161837887444965e4ff",
}
#: One grain, no twins or scratches: every neighbour pair is within-grain, so the
#: Hough index's neighbour misorientation is its orientation noise.
ONE_GRAIN = {"pattern_shape": [60, 60], "chunk_size": 64,
             "wrought": {"grain_size": 60.0, "twin_fraction": 0.0, "n_scratches": 0}}


def _simulate(tmp_path, name, settings, micro="wrought", shape=(6, 6), seed=5):
    up2, h5 = tmp_path / f"{name}.up2", tmp_path / f"{name}.h5"
    simulate_scan(up2, h5, micro, shape, section("simulation", settings), seed, progress=False)
    return up2, h5


@pytest.mark.parametrize("micro,shape", list(OLD_SHA256))
def test_zero_imperfections_give_the_old_patterns_byte_for_byte(tmp_path, micro, shape):
    settings = {"pattern_shape": [40, 40], "chunk_size": 7, "counts": 300.0,
                "imperfections": NONE}
    up2, h5 = _simulate(tmp_path, micro, settings, micro, shape, seed=11)
    assert hashlib.sha256(up2.read_bytes()).hexdigest() == OLD_SHA256[(micro, shape)]
    truth, geometry, attrs = read_truth(h5)
    assert not truth["pc_error"].any()
    np.testing.assert_array_equal(truth["pc_used"].reshape(-1, 3), geometry.pc)
    assert attrs["imperfections"] == NONE


def test_pc_errors_have_the_requested_size():
    rng = np.random.default_rng(0)
    imp = imperfections_of({"imperfections": {"pc_jitter": 0.003}})
    err = pc_errors((200, 150), imp, rng)
    assert err.shape == (200, 150, 3)
    np.testing.assert_allclose(err.reshape(-1, 3).std(axis=0), 0.003, rtol=0.02)
    np.testing.assert_allclose(err.reshape(-1, 3).mean(axis=0), 0.0, atol=1e-4)

    imp = imperfections_of({"imperfections": {"pc_offset": [0.01, -0.02, 0.005]}})
    np.testing.assert_array_equal(pc_errors((3, 4), imp, rng)[2, 3], [0.01, -0.02, 0.005])

    # the drift error: a plane, largest (= the setting) at the map's edge, 0 at its centre
    imp = imperfections_of({"imperfections": {"pc_drift_error": 0.01}})
    err = pc_errors((21, 31), imp, rng)
    assert np.linalg.norm(err, axis=-1).max() == pytest.approx(0.01)
    np.testing.assert_allclose(err[10, 15], 0.0, atol=1e-12)
    assert np.abs(np.diff(err, 2, axis=1)).max() < 1e-12  # linear along the rows


def test_truth_records_the_pc_actually_used_and_the_jitter_asked_for(tmp_path):
    jitter, offset = 0.004, [0.002, 0.0, -0.003]
    settings = {**ONE_GRAIN, "pattern_shape": [32, 32],
                "imperfections": {"pc_jitter": jitter, "pc_offset": offset}}
    _, h5 = _simulate(tmp_path, "jitter", settings, shape=(12, 12))
    truth, geometry, attrs = read_truth(h5)
    err = truth["pc_error"].reshape(-1, 3)
    # the geometry is the nominal PC (what the workflow indexes with); pc_used the true one
    np.testing.assert_allclose(truth["pc_used"].reshape(-1, 3) - geometry.pc, err, atol=1e-12)
    # 144 draws per component: the sample std is within ~15 % of the requested one
    np.testing.assert_allclose(err.std(axis=0), jitter, rtol=0.2)
    np.testing.assert_allclose(err.mean(axis=0), offset, atol=3 * jitter / 12)
    assert attrs["imperfections"]["pc_jitter"] == jitter
    assert attrs["imperfections"]["pc_offset"] == offset
    assert json.loads(json.dumps(attrs["settings"]))["imperfections"]["pc_jitter"] == jitter
    # the microstructure does not move: imperfections draw from a generator of their own
    _, h5_ideal = _simulate(tmp_path, "ideal", {**settings, "imperfections": NONE}, shape=(12, 12))
    np.testing.assert_array_equal(read_truth(h5_ideal)[0]["quaternion"], truth["quaternion"])


def _neighbour_scatter(pats, geometry, quat=None):
    """Median misorientation (deg) of all 4-neighbour pairs of the Hough index."""
    from latentebsd.index import build_indexer, index_patterns
    from latentebsd.orientations import pair_angles

    result = index_patterns(pats, geometry, indexer=build_indexer(geometry))
    assert (result["nmatch"] >= 5).all()
    idx = np.arange(geometry.n_patterns).reshape(geometry.map_shape)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return float(np.median(pair_angles(result["quat"][a], result["quat"][b])))


def test_index_scatter_rises_with_pc_jitter_and_comes_from_it(tmp_path):
    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.patterns import PatternReader

    medians = {}
    for jitter in (0.0, 0.003, 0.01):
        up2, h5 = _simulate(tmp_path, f"j{jitter}", {**ONE_GRAIN,
                                                     "imperfections": {"pc_jitter": jitter}})
        truth, geometry, _ = read_truth(h5)
        reader = PatternReader(up2)
        pats = reader.read(0, reader.n_patterns)
        medians[jitter] = _neighbour_scatter(pats, geometry)
        if jitter == 0.01:
            # told the PC each pattern was really rendered with, the index is as quiet
            # as the ideal detector's: the added scatter is the PC error asked for
            true = ScanGeometry(*geometry.map_shape, geometry.step_um, geometry.pattern_shape,
                                truth["pc_used"].reshape(-1, 3), geometry.sample_tilt,
                                geometry.camera_tilt)
            told_truth = _neighbour_scatter(pats, true)
    assert medians[0.0] < medians[0.003] < medians[0.01], medians
    assert medians[0.01] > 3 * medians[0.0], medians
    assert told_truth < 2 * medians[0.0] + 0.05, (told_truth, medians)


@pytest.mark.parametrize("imperfections,key", [
    ({"pc_jitter": -0.1}, "simulation.imperfections.pc_jitter"),
    ({"pc_offset": [0.0, 0.1]}, "simulation.imperfections.pc_offset"),
    ({"band_blur": 1.0}, "simulation.imperfections.band_blur"),
    ({"pc_wobble": 0.1}, "simulation.imperfections"),
])
def test_bad_imperfections_name_the_key(imperfections, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        section("simulation", {"imperfections": imperfections})


def test_distortion_and_band_blur_change_the_patterns_but_not_the_truth(tmp_path):
    base = {**ONE_GRAIN, "pattern_shape": [32, 32], "imperfections": NONE}
    up0, h0 = _simulate(tmp_path, "none", base, shape=(2, 2))
    for name, change in (("distortion", {"radial_distortion": 0.05}),
                         ("blur", {"band_blur": 0.03}), ("tilt", {"camera_tilt_error": 1.0})):
        up, h = _simulate(tmp_path, name, {**base, "imperfections": {**NONE, **change}},
                          shape=(2, 2))
        assert up.read_bytes() != up0.read_bytes(), name
        truth, _, attrs = read_truth(h)
        np.testing.assert_array_equal(truth["quaternion"], read_truth(h0)[0]["quaternion"])
        (key, value), = change.items()
        assert attrs["imperfections"][key] == value
