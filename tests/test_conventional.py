"""Conventional EBSD maps (KAM, grains, GROD, IPF) and the comparison figures."""

from __future__ import annotations

import numpy as np
import pytest

from latentebsd.config import section
from latentebsd.conventional import (
    conventional_maps,
    grain_reference_orientation_deviation,
    kernel_average_misorientation,
    run_conventional_rule,
    segment_grains,
)
from latentebsd.figures import choose_latent_features, run_fig11_rule, run_latent_panel_rule
from latentebsd.geometry import ScanGeometry
from latentebsd.io.conventional import read_conventional
from latentebsd.io.index import INDEX_DTYPE, read_index, write_index
from latentebsd.orientations import ipf_colors

EVALUATION = section("evaluation")


def _rot(axis, angle_deg):
    from orix.quaternion import Rotation

    return Rotation.from_axes_angles(axis, angle_deg, degrees=True)


@pytest.fixture
def two_grains():
    """4 x 6 map: grain A (cols 0-2) and grain B (cols 3-5, 50+ deg away). In A, (1, 1)
    is turned +1 deg and (2, 1) -1 deg about z (so A's mean stays g1); (0, 0) is stored
    as a symmetry-equivalent quaternion and (3, 2) with the opposite sign."""
    from orix.quaternion import Rotation, symmetry

    g1, g2 = _rot([1, 2, 3], 40), _rot([3, -1, 1], 25)
    q = np.zeros((4, 6, 4))
    q[:, :3], q[:, 3:] = g1.data, g2.data
    r = _rot([0, 0, 1], 1.0)
    q[1, 1] = (r * g1).data
    q[2, 1] = (~r * g1).data
    q[0, 0] = (Rotation(symmetry.O.data[5]) * g1).data
    q[3, 2] = -g1.data
    return q


def test_kam_on_known_rotations(two_grains):
    kam = kernel_average_misorientation(two_grains, threshold_deg=5.0, neighbours=4)
    # (1, 1): neighbours at 1 (up), 2 (down: -1 vs +1), 1 (left), 1 (right) deg
    assert kam[1, 1] == pytest.approx(5.0 / 4, abs=1e-6)
    assert kam[0, 1] == pytest.approx(1.0 / 3, abs=1e-6)  # 3 neighbours: 1, 0, 0
    # the 50-deg grain boundary is above the threshold: only same-grain neighbours count
    assert kam[0, 2] == pytest.approx(0.0, abs=1e-6) and kam[0, 3] == pytest.approx(0.0, abs=1e-6)
    # with a threshold below 1 deg the turned points have no neighbour left
    assert np.isnan(kernel_average_misorientation(two_grains, 0.5)[1, 1])
    kam8 = kernel_average_misorientation(two_grains, 5.0, neighbours=8)
    # (1, 2): edges 0, 0, 1 (+ boundary); corners 0, 1 (+ 2 boundary) -> 2 / 5
    assert kam8[1, 2] == pytest.approx(2.0 / 5, abs=1e-6)
    mask = np.ones((4, 6), bool)
    mask[1, 1] = False
    masked = kernel_average_misorientation(two_grains, 5.0, mask=mask)
    assert np.isnan(masked[1, 1]) and masked[0, 1] == pytest.approx(0.0, abs=1e-6)


def test_grains_and_grod_with_symmetry_and_sign(two_grains):
    labels = segment_grains(two_grains, tolerance_deg=5.0)
    assert set(labels[:, :3].ravel()) == {0} and set(labels[:, 3:].ravel()) == {1}
    grod = grain_reference_orientation_deviation(two_grains, labels)
    assert grod[1, 1] == pytest.approx(1.0, abs=1e-4) and grod[2, 1] == pytest.approx(1.0, abs=1e-4)
    others = np.ones((4, 6), bool)
    others[1:3, 1] = False
    assert np.all(grod[others] < 1e-4)
    # a shifted grain: every point turned by 2 deg except one -> the mean moves
    q = two_grains.copy()
    q[:, 3:] = (_rot([1, 0, 0], 2.0) * _rot([3, -1, 1], 25)).data
    q[0, 5] = _rot([3, -1, 1], 25).data
    grod2 = grain_reference_orientation_deviation(q, segment_grains(q, 5.0))
    assert grod2[0, 5] == pytest.approx(2.0 * 11 / 12, abs=0.02)
    # masked points and small grains get -1 / NaN
    mask = np.ones((4, 6), bool)
    mask[:, 3:] = False
    labels = segment_grains(two_grains, 5.0, mask=mask)
    assert np.all(labels[:, 3:] == -1) and np.all(labels[:, :3] == 0)
    assert np.all(np.isnan(grain_reference_orientation_deviation(two_grains, labels)[:, 3:]))
    assert np.all(segment_grains(two_grains, 5.0, min_size=13) == -1)
    assert np.all(segment_grains(two_grains, 5.0, mask=np.zeros((4, 6), bool)) == -1)
    # a tolerance below 1 deg cuts the turned points off grain A
    assert len(np.unique(segment_grains(two_grains, 0.5))) == 4


def test_ipf_colours():
    q = np.array([[1.0, 0, 0, 0], [1.0, 0, 0, 0], _rot([0, 0, 1], 45).data[0]])
    rgb = ipf_colors(q, indexed=np.array([True, False, True]), direction="x")
    np.testing.assert_allclose(rgb[0], [1, 0, 0], atol=1e-6)  # x || [100]: red
    np.testing.assert_allclose(rgb[1], [0, 0, 0])  # not indexed: black
    np.testing.assert_allclose(rgb[2], [0, 1, 0], atol=0.01)  # x || [110]: green
    with pytest.raises(ValueError, match="direction"):
        ipf_colors(q, direction="w")


# -- maps and figures from index files ---------------------------------------------------
MAP = (6, 8)


def _index_arrays(seed: int, drop: float = 0.0) -> dict:
    """Index-file arrays of a 6 x 8 map: 2 grains, one point turned by 3 deg."""
    rng = np.random.default_rng(seed)
    n = MAP[0] * MAP[1]
    result = np.zeros(n, INDEX_DTYPE)
    q = np.where((np.arange(n) % MAP[1] < 4)[:, None], _rot([1, 2, 3], 40).data,
                 _rot([3, -1, 1], 25).data)
    q[9] = (_rot([0, 1, 0], 3.0) * _rot([1, 2, 3], 40)).data
    result["quat"] = q
    result["pq"] = rng.uniform(1, 2, n)
    result["cm"] = rng.uniform(0.3, 1, n)
    result["nmatch"] = 6
    result["phase"] = np.where(rng.uniform(size=n) < drop, -1, 0)
    arrays = {k: result[k] for k in INDEX_DTYPE.names}
    arrays.update(iq_kp=rng.uniform(0.2, 0.4, n), sharpness=rng.uniform(0.3, 0.5, n),
                  valid=np.ones(n, bool), indexed=result["phase"] >= 0)
    return arrays


@pytest.fixture
def index_files(tmp_path):
    geometry = ScanGeometry(*MAP, step_um=0.5, pattern_shape=(60, 60))
    paths = {}
    for i, name in enumerate(("original", "vae16", "betavae50")):
        paths[name] = str(tmp_path / f"{name}.h5")
        write_index(paths[name], _index_arrays(i, drop=0.3 * i), geometry, {"source": name})
    return paths, geometry


def test_conventional_maps_values(index_files):
    arrays, geometry, _ = read_index(index_files[0]["original"])
    maps = conventional_maps(arrays, geometry, EVALUATION)
    assert maps["ipf_rgb"].shape == (*MAP, 3) and maps["grain_id"].max() == 1
    assert maps["grod_deg"][1, 1] == pytest.approx(3.0 * 23 / 24, abs=0.01)  # 24-point grain
    assert maps["kam_deg"][1, 1] == pytest.approx(3.0, abs=1e-4)
    assert maps["kam_deg"][0, 1] == pytest.approx(1.0, abs=1e-4)  # neighbours 0, 0, 3 deg
    np.testing.assert_allclose(maps["iq_pq"].ravel(), arrays["pq"])


def test_figures_and_rules(index_files, tmp_path):
    from test_evaluate import write_latent_cube

    paths, geometry = index_files
    out = {k: tmp_path / f"{k}.png" for k in ("ipf", "panel", "latent", "ranked", "fig11")}
    run_conventional_rule(paths["original"], str(tmp_path / "conv.h5"), str(out["ipf"]),
                          str(out["panel"]), EVALUATION, "s")
    maps, geo = read_conventional(tmp_path / "conv.h5")
    assert geo.map_shape == MAP and maps["grain_id"].max() == 1

    rng = np.random.default_rng(0)
    cube = rng.normal(size=(5, *MAP)) * np.array([0.1, 0.2, 3.0, 0.5, 1.0])[:, None, None]
    write_latent_cube(tmp_path / "lat.nc", cube)
    features = run_latent_panel_rule(str(tmp_path / "lat.nc"), str(tmp_path / "conv.h5"),
                                     str(out["latent"]), section("evaluation", {"panel_features": 2}),
                                     "s", "vae16")
    assert features == [2, 4]  # highest variance first
    (tmp_path / "ranking.csv").write_text("scan,variant,feature,score\ns,v,3,0.9\ns,v,0,0.5\n")
    features = run_latent_panel_rule(str(tmp_path / "lat.nc"), str(tmp_path / "conv.h5"),
                                     str(out["ranked"]), section("evaluation", {"panel_region": [1, 5, 2, 8]}),
                                     "s", "vae16", ranking_csv=str(tmp_path / "ranking.csv"))
    assert features == [3, 0]
    variants = {"vae16": {"loss": "vae", "latent_dim": 16},
                "betavae50": {"loss": "beta_vae", "latent_dim": 128, "beta": 50}}
    run_fig11_rule(paths, variants, str(out["fig11"]), EVALUATION, "s")
    # nine sources: a grid of 3 per row (IPF above IQ), not a 4,000 px strip
    many = {"original": paths["original"], **{f"v{k}": paths["vae16"] for k in range(8)}}
    run_fig11_rule(many, {f"v{k}": {"loss": "vae", "latent_dim": 16} for k in range(8)},
                   str(tmp_path / "fig11_many.png"), EVALUATION, "s")
    from PIL import Image

    width, height = Image.open(tmp_path / "fig11_many.png").size
    assert width < 1600 and height > width
    for path in out.values():
        assert path.stat().st_size > 10_000, path
    with pytest.raises(ValueError, match="evaluation.panel_region"):
        run_latent_panel_rule(str(tmp_path / "lat.nc"), str(tmp_path / "conv.h5"),
                              str(tmp_path / "x.png"), section("evaluation", {"panel_region": [0, 9, 0, 3]}),
                              "s", "v")
    (tmp_path / "bad.csv").write_text("feature\n7\n")
    with pytest.raises(ValueError, match="outside"):
        choose_latent_features(tmp_path / "lat.nc", 1, tmp_path / "bad.csv")
