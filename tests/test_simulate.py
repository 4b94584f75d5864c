"""Synthetic scans (latentebsd.simulate) and Hough indexing helpers (latentebsd.index).

Small patterns (60 x 60) and tiny maps keep this under a few minutes on 2 cores; the
first PyEBSDIndex call in a fresh machine compiles numba code (~90 s, cached after).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from scipy import ndimage

from latentebsd.config import ConfigError, section
from latentebsd.io.truth import read_truth
from latentebsd.simulate import background, generate_microstructure, screen_mask, simulate_scan

MAP = (6, 8)
# An ideal detector (no imperfections, tests/test_imperfections.py has those): the
# geometry and orientation conventions are checked to a fraction of a degree
SMALL = {"pattern_shape": [60, 60], "chunk_size": 10, "pc_drift": 0.05,
         "wrought": {"grain_size": 4.0, "twin_fraction": 1.0},
         "imperfections": {"pc_jitter": 0.0, "band_blur": 0.0}}
SEED = 7


def _simulate(tmp_path, name, micro="wrought", settings=SMALL, seed=SEED, shape=MAP):
    up2, h5 = tmp_path / f"{name}.up2", tmp_path / f"{name}.h5"
    simulate_scan(up2, h5, micro, shape, section("simulation", settings), seed, progress=False)
    return up2, h5


@pytest.fixture(scope="module")
def wrought_scan(tmp_path_factory):
    return _simulate(tmp_path_factory.mktemp("sim"), "wrought")


def _patterns(up2):
    from latentebsd.io.patterns import PatternReader

    reader = PatternReader(up2)
    return reader.read(0, reader.n_patterns)


def _orientations(q):
    from orix.quaternion import Orientation, symmetry

    return Orientation(np.asarray(q).reshape(-1, 4), symmetry=symmetry.Oh)


# -- determinism ---------------------------------------------------------------------
def test_same_seed_same_bytes_different_seed_differs(tmp_path, wrought_scan):
    up2, h5 = wrought_scan
    up2_b, h5_b = _simulate(tmp_path, "again", settings={**SMALL, "chunk_size": 48})
    # Same seed: byte-identical, even with another chunk size
    assert up2.read_bytes() == up2_b.read_bytes()
    truth_a, geom_a, attrs_a = read_truth(h5)
    truth_b, geom_b, _ = read_truth(h5_b)
    for key in truth_a:
        np.testing.assert_array_equal(truth_a[key], truth_b[key], err_msg=key)
    np.testing.assert_array_equal(geom_a.pc, geom_b.pc)
    assert attrs_a["seed"] == SEED and attrs_a["microstructure"] == "wrought"
    assert attrs_a["settings"]["pattern_shape"] == [60, 60]

    up2_c, h5_c = _simulate(tmp_path, "other", seed=SEED + 1)
    assert up2.read_bytes() != up2_c.read_bytes()
    assert not np.array_equal(truth_a["quaternion"], read_truth(h5_c)[0]["quaternion"])


# -- file format ---------------------------------------------------------------------
def test_up2_reads_back_with_kikuchipy_and_pyebsdindex(wrought_scan):
    import kikuchipy as kp
    from pyebsdindex import ebsd_pattern

    up2, h5 = wrought_scan
    ours = _patterns(up2)
    assert ours.shape == (48, 60, 60) and ours.dtype == np.uint16

    s = kp.load(up2)
    assert s.data.shape == (*MAP, 60, 60)
    np.testing.assert_array_equal(s.data.reshape(-1, 60, 60), ours)

    f = ebsd_pattern.get_pattern_file_obj(str(up2))
    f.read_header()
    assert (f.nRows, f.nCols, f.patternH, f.patternW) == (*MAP, 60, 60)
    pats, _ = f.read_data(patStartCount=[0, 48], returnArrayOnly=True)
    np.testing.assert_array_equal(pats, ours)


def test_truth_file_contents(wrought_scan):
    _, h5 = wrought_scan
    truth, geom, _ = read_truth(h5)
    expected = {"grain_id": np.int32, "twin_mask": bool, "dislocation_density": np.float32,
                "cell_wall_mask": bool, "particle_mask": bool, "scratch_mask": bool,
                "domain_id": np.int32, "grain_boundary_mask": bool}
    for key, dtype in expected.items():
        assert truth[key].shape == MAP and truth[key].dtype == dtype, key
    assert truth["quaternion"].shape == (*MAP, 4)
    np.testing.assert_allclose(np.linalg.norm(truth["quaternion"], axis=-1), 1.0, atol=1e-9)
    # The PC drifts linearly: one per pattern, PCx falling along the columns
    assert geom.pc.shape == (48, 3) and geom.pattern_shape == (60, 60)
    pcx = geom.pc[:, 0].reshape(MAP)
    assert np.all(np.diff(pcx, axis=1) < 0)
    np.testing.assert_allclose(pcx[0, 0] - pcx[0, -1], SMALL["pc_drift"], rtol=1e-6)
    assert np.all(np.diff(geom.pc[:, 1].reshape(MAP), axis=0) < 0)  # PCy along rows


# -- detector realism ----------------------------------------------------------------
def test_screen_is_dark_and_background_is_not_flat(wrought_scan):
    up2, _ = wrought_scan
    pats = _patterns(up2).astype(np.float64)
    screen = screen_mask((60, 60), section("simulation")["screen_radius"])
    inside, outside = pats[:, screen], pats[:, ~screen]
    assert outside.mean() < 0.02 * inside.mean()
    assert np.percentile(outside, 99) < 0.1 * inside.mean()
    # Smooth map-mean pattern: the background hump and gradient dominate
    mean = ndimage.gaussian_filter(pats.mean(axis=0), 4)
    core = ndimage.binary_erosion(screen, iterations=8)
    assert mean[core].max() / mean[core].min() > 1.3
    # ... and the control: a flat background really is flat
    flat = section("simulation", {"pattern_shape": [60, 60], "background_hump": 0.0,
                                  "background_gradient": 0.0})
    bg = background(np.array([[0.5, 0.3, 0.6]]), flat)[0]
    np.testing.assert_allclose(bg[screen], 1.0, rtol=1e-5)


# -- indexing recovers the truth -------------------------------------------------------
def test_hough_indexing_recovers_truth_with_drifting_pc(wrought_scan):
    from latentebsd.index import build_indexer, index_patterns
    from latentebsd.orientations import indexed_orientations

    up2, h5 = wrought_scan
    truth, geom, _ = read_truth(h5)
    pats = _patterns(up2)
    indexer = build_indexer(geom)
    result = index_patterns(pats, geom, indexer=indexer)
    assert np.all(result["phase"] >= 0)
    true = _orientations(truth["quaternion"])
    angle = true.angle_with(indexed_orientations(result), degrees=True)
    assert np.all(angle < 2.0), np.round(angle, 2)
    assert np.median(angle) < 0.5
    # The convention check can fail: the inverse rotations are far off
    inverse = _orientations((~indexed_orientations(result)).data)
    assert np.median(true.angle_with(inverse, degrees=True)) > 10

    # A slice further into the scan uses its own PCs (start offset)
    part = index_patterns(pats[20:30], geom, start=20, indexer=indexer)
    angle = true[20:30].angle_with(indexed_orientations(part), degrees=True)
    assert np.all(angle < 2.0), np.round(angle, 2)


# -- microstructure truth ------------------------------------------------------------
def _micro(name, shape, settings, seed=3):
    cfg = section("simulation", settings)
    return generate_microstructure(name, shape, cfg, np.random.default_rng(seed))


def test_wrought_grains_twins_and_scratch():
    from orix.quaternion import Misorientation, symmetry

    t = _micro("wrought", (40, 50), {"wrought": {"grain_size": 12.0, "twin_fraction": 1.0}})
    assert len(np.unique(t.grain_id)) > 1
    assert t.twin_mask.any() and t.scratch_mask.any()
    assert np.all(t.pattern_blur_px[t.scratch_mask] > 0)
    # Twin boundaries count as boundaries: twin points with a non-twin 4-neighbour
    tw = t.twin_mask
    edge = np.zeros_like(tw)
    edge[1:] |= tw[1:] & ~tw[:-1]
    edge[:-1] |= tw[:-1] & ~tw[1:]
    edge[:, 1:] |= tw[:, 1:] & ~tw[:, :-1]
    edge[:, :-1] |= tw[:, :-1] & ~tw[:, 1:]
    assert edge.any() and np.all(t.grain_boundary_mask[edge])
    assert not np.any(t.grain_boundary_mask[_interior(t.grain_id == t.grain_id[20, 25])
                                            & ~tw & ~_near(tw)])

    # A twin is Sigma3 to its parent: 60 deg about <111>
    clean = ~t.scratch_mask
    checked = 0
    for g in np.unique(t.grain_id[t.twin_mask & clean]):
        twin = np.argwhere((t.grain_id == g) & t.twin_mask & clean)[0]
        parent = np.argwhere((t.grain_id == g) & ~t.twin_mask & clean)
        if not len(parent):
            continue
        q_t, q_p = t.quaternion[tuple(twin)], t.quaternion[tuple(parent[0])]
        o_t, o_p = _orientations(q_t), _orientations(q_p)
        assert o_p.angle_with(o_t, degrees=True)[0] == pytest.approx(60.0, abs=0.01)
        m = Misorientation((o_t * ~o_p).data, symmetry=(symmetry.Oh, symmetry.Oh)).reduce()
        axis = np.sort(np.abs(m.axis.unit.data.ravel()))
        np.testing.assert_allclose(axis, np.full(3, 1 / np.sqrt(3)), atol=1e-6)
        checked += 1
    assert checked >= 1

    # Some lamella is only 1-2 points thick: no point is more than 1 step from its edge
    thin = [d for d in np.unique(t.domain_id[t.twin_mask])
            if ndimage.distance_transform_edt(np.pad(t.domain_id == d, 1)).max() <= 1.0]
    assert thin


def _interior(mask):
    """Points whose 4-neighbours are all in ``mask`` (map edges do not count)."""
    return ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(2, 1),
                                  border_value=1)


def _near(mask):
    return ndimage.binary_dilation(mask, structure=ndimage.generate_binary_structure(2, 1))


def test_am_cells_particles_domains_and_columns():
    t = _micro("am", (48, 64), {})
    wall = t.cell_wall_mask
    assert wall.any() and (~wall).any()
    assert np.all(t.dislocation_density[wall] > 0)
    assert np.all(t.dislocation_density[~wall] == 0)
    assert np.all(t.pattern_blur_px[wall] > 0)
    assert t.particle_mask.any() and np.all(wall[t.particle_mask])
    w = t.particle_weight[t.particle_mask]
    assert np.all((w >= 0.2) & (w <= 0.4))
    assert not t.twin_mask.any()
    # Columnar: grains are taller than wide on average
    rows, cols = np.indices(t.grain_id.shape)
    ext = [(np.ptp(rows[t.grain_id == g]) + 1) / (np.ptp(cols[t.grain_id == g]) + 1)
           for g in np.unique(t.grain_id)]
    assert np.median(ext) > 1.5
    # Inside a grain the lattice rotates a little (domains, cells, gradient), not much
    o = _orientations(t.quaternion)
    right = o.reshape(*t.grain_id.shape)
    angle = right[:, 1:].angle_with(right[:, :-1], degrees=True)
    same = t.grain_id[:, 1:] == t.grain_id[:, :-1]
    assert 0.05 < np.median(angle[same]) < 3.0
    assert np.max(angle[same]) < 8.0
    assert len(np.unique(t.domain_id)) > len(np.unique(t.grain_id))
    # Rotation domains differ by a few tenths of a degree up to a few degrees
    dom_jump = same & (t.domain_id[:, 1:] != t.domain_id[:, :-1])
    assert dom_jump.any() and np.median(angle[dom_jump]) > 0.2


# -- errors ----------------------------------------------------------------------------
@pytest.mark.parametrize("settings, key", [
    ({"bogus": 1}, "bogus"),
    ({"counts": -5}, "counts"),
    ({"pattern_shape": [60]}, "pattern_shape"),
    ({"screen_radius": "big"}, "screen_radius"),
    ({"am": {"cell_sise": 3}}, "am.cell_sise"),
    ({"am": {"particle_weight": [0.4, 0.2]}}, "am.particle_weight"),
    ({"wrought": {"twin_fraction": 1.5}}, "wrought.twin_fraction"),
    ({"wrought": 3}, "wrought"),
    ({"chunk_size": 2.5}, "chunk_size"),
])
def test_bad_settings_name_the_key(settings, key):
    with pytest.raises(ConfigError, match=f"config key simulation\\.{re.escape(key)}"):
        section("simulation", settings)


def test_bad_microstructure_and_map_shape(tmp_path):
    with pytest.raises(ValueError, match="microstructure.*'cast'"):
        simulate_scan(tmp_path / "x.up2", tmp_path / "x.h5", "cast", MAP, {}, 0)
    with pytest.raises(ValueError, match="map_shape"):
        simulate_scan(tmp_path / "x.up2", tmp_path / "x.h5", "am", (0, 5), {}, 0)
    with pytest.raises(ValueError, match="seed"):
        simulate_scan(tmp_path / "x.up2", tmp_path / "x.h5", "am", MAP, {}, -1)


def test_defaults_resolve_and_partial_blocks_merge():
    cfg = section("simulation", {"am": {"cell_size": 4.0}})
    assert cfg["am"]["cell_size"] == 4.0
    assert cfg["am"]["grain_width"] == section("simulation")["am"]["grain_width"] == 10.0
    assert section("simulation") == section("simulation", section("simulation"))


# -- graded strength and the training-only polycrystal ---------------------------------
GRADING = {"levels": 4, "weakest": 0.1, "axis": "columns"}


def test_graded_am_scales_each_class_with_its_band():
    from latentebsd.simulate import graded_parameters, grading_levels

    cfg = section("simulation", {"am": {"particle_fraction": 0.5}})
    t = generate_microstructure("am", (40, 80), cfg, np.random.default_rng(5), GRADING)
    factors = grading_levels(GRADING)
    np.testing.assert_allclose(factors, [0.1, 0.1 ** (2 / 3), 0.1 ** (1 / 3), 1.0])
    # bands of 20 columns, weakest on the left
    np.testing.assert_array_equal(t.strength_level[0], np.repeat(np.arange(4), 20))
    np.testing.assert_allclose(t.strength, factors[t.strength_level])
    lo, hi = cfg["am"]["particle_weight"]
    for level, f in enumerate(factors):
        band = t.strength_level == level
        w = t.particle_weight[band & t.particle_mask]
        assert w.size and (w >= lo * f - 1e-6).all() and (w <= hi * f + 1e-6).all()
        blur = t.pattern_blur_px[band & t.cell_wall_mask]
        assert blur.max() <= cfg["am"]["wall_blur"] * cfg["pattern_shape"][1] * cfg["am"]["wall_density"][1] * f + 1e-5
    # stronger bands: more blur on the walls (means rise with the factor)
    means = [t.pattern_blur_px[(t.strength_level == k) & t.cell_wall_mask].mean() for k in range(4)]
    assert np.all(np.diff(means) > 0)
    params = graded_parameters("am", cfg, GRADING)
    assert set(params) == {"dislocation_cells", "dislocation_density", "particles", "rotation_domains"}
    np.testing.assert_allclose(params["particles"]["values"], hi * factors, rtol=1e-5)
    np.testing.assert_allclose(params["dislocation_cells"]["values"],
                               cfg["am"]["wall_rotation_deg"] * factors, rtol=1e-5)
    # band edges cut rotation domains: every domain lies in one band, so the per-point
    # level is the level its misorientation was simulated at
    for d in np.unique(t.domain_id):
        assert np.unique(t.strength_level[t.domain_id == d]).size == 1


def test_graded_lattice_rotation_at_walls_grows_with_the_band():
    """The misorientation of wall points to their cell's interior follows the band."""
    from orix.quaternion import Orientation, symmetry

    cfg = section("simulation", {"am": {"orientation_gradient_deg": 0.0,
                                        "domain_misorientation_deg": [0.0, 0.0],
                                        "cell_misorientation_deg": 0.0}})
    t = generate_microstructure("am", (40, 80), cfg, np.random.default_rng(2), GRADING)
    q = t.quaternion
    # with no gradient, domain or cell rotation, an interior point holds its grain's
    # orientation: a wall point's angle to a non-wall point of its grain is its own rotation
    angles = []
    for level in range(4):
        band = (t.strength_level == level) & t.cell_wall_mask
        rows, cols = np.nonzero(band)
        ref = np.array([q[(t.grain_id == t.grain_id[r, c]) & ~t.cell_wall_mask][0] for r, c in
                        zip(rows, cols)])
        o1 = Orientation(q[rows, cols], symmetry.Oh)
        o2 = Orientation(ref, symmetry.Oh)
        angles.append(np.degrees(o1.angle_with(o2)).max())
    factors = np.array([0.1, 0.1 ** (2 / 3), 0.1 ** (1 / 3), 1.0])
    assert np.all(np.array(angles) <= cfg["am"]["wall_rotation_deg"] * factors + 1e-6)
    assert np.all(np.diff(angles) > 0)


def test_an_ungraded_scan_is_what_it_was_and_records_one_level(tmp_path):
    cfg = section("simulation", {"am": {}})
    a = generate_microstructure("am", (12, 16), cfg, np.random.default_rng(1), None)
    b = generate_microstructure("am", (12, 16), cfg, np.random.default_rng(1),
                                {"levels": 1, "weakest": 0.5, "axis": "rows"})
    for name in ("quaternion", "particle_weight", "pattern_blur_px"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert (a.strength == 1).all() and (a.strength_level == 0).all()
    _, h5 = _simulate(tmp_path, "g", "am", SMALL, shape=(4, 6))
    assert read_truth(h5)[2]["grading"]["levels"] == [1.0]


def test_graded_scan_writes_its_levels_and_parameters(tmp_path):
    up2, h5 = tmp_path / "g.up2", tmp_path / "g.h5"
    simulate_scan(up2, h5, "wrought", (4, 8), section("simulation", SMALL), 3,
                  grading={"levels": 2, "weakest": 0.25, "axis": "columns"}, progress=False)
    truth, _, attrs = read_truth(h5)
    assert attrs["grading"]["levels"] == [0.25, 1.0]
    assert attrs["grading"]["classes"]["scratch"]["values"] == [0.375, 1.5]
    np.testing.assert_array_equal(truth["strength_level"][0], [0, 0, 0, 0, 1, 1, 1, 1])


def test_polycrystal_has_many_small_random_grains():
    cfg = section("simulation", {})
    t = generate_microstructure("polycrystal", (48, 64), cfg, np.random.default_rng(0))
    n = len(np.unique(t.grain_id))
    assert n > 1000 and not t.twin_mask.any() and not t.scratch_mask.any()
    # one random orientation per grain: grain means of the quaternions differ
    q = t.quaternion.reshape(-1, 4)
    first = np.unique(t.grain_id.ravel(), return_index=True)[1]
    assert len(np.unique(np.round(q[first], 6), axis=0)) == n
