"""The detection benchmark and the analyses beyond the paper: baselines, latent KAM /
GROD, novelty, occlusion saliency (latentebsd.baselines, .analogues, .benchmark,
.novelty, .saliency)."""

from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from latentebsd.analogues import latent_analogue_maps
from latentebsd.baselines import baseline_scan, fit_baseline
from latentebsd.benchmark import (probe, probe_inputs, sample_pixels, single_map,
                                  spatial_folds, verdict)
from latentebsd.config import section
from latentebsd.geometry import ScanGeometry
from latentebsd.groundtruth import average_ranks
from latentebsd.io.cube import read_features
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.novelty import explained_r2
from latentebsd.saliency import occlusion_maps

SHAPE = (24, 30)


def smooth(seed: int, sigma: float = 2.0) -> np.ndarray:
    f = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=SHAPE), sigma)
    return (f - f.mean()) / f.std()


# -- folds -----------------------------------------------------------------------------
@pytest.mark.parametrize("grid, guard", [((2, 2), 1), ((1, 4), 1), ((3, 2), 2), ((2, 2), 0)])
def test_folds_never_share_pixels_or_touch(grid, guard):
    folds = spatial_folds(SHAPE, grid, guard)
    assert folds.shape == SHAPE and set(np.unique(folds)) <= {-1, *range(grid[0] * grid[1])}
    assert len(np.unique(folds[folds >= 0])) == grid[0] * grid[1]
    if guard:
        # no two neighbouring points (8-neighbours) lie in different folds
        for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
            a = folds[max(0, -dr):SHAPE[0] - max(0, dr), max(0, -dc):SHAPE[1] - max(0, dc)]
            b = folds[max(0, dr):, max(0, dc):][:a.shape[0], :a.shape[1]] if dc >= 0 else \
                folds[dr:, :SHAPE[1] + dc]
            both = (a >= 0) & (b >= 0)
            assert np.all(a[both] == b[both]), (dr, dc)
    # each fold is one contiguous block
    for f in range(grid[0] * grid[1]):
        _, n = ndimage.label(folds == f)
        assert n == 1


def test_pixel_sample_is_seeded_and_inside_folds():
    folds = spatial_folds(SHAPE)
    valid = np.ones(SHAPE, bool)
    valid[0, :] = False
    a, b = sample_pixels(folds, valid, 100, 3), sample_pixels(folds, valid, 100, 3)
    assert np.array_equal(a, b) and len(a) == 100 and np.all(np.diff(a) > 0)
    assert np.all(folds.ravel()[a] >= 0) and np.all(valid.ravel()[a])
    assert len(sample_pixels(folds, valid, 10**6, 3)) == int((valid & (folds >= 0)).sum())


# -- scoring ---------------------------------------------------------------------------
def planted(kind: str):
    """A target and feature rows: row 3 carries it (with the sign flipped), the others
    are noise."""
    rng = np.random.default_rng(0)
    n = 800
    density = np.abs(rng.normal(size=n))
    target = density > 1.0 if kind == "mask" else density
    features = rng.normal(size=(6, n))
    features[3] = -2.0 * density + 0.3 * rng.normal(size=n)
    fold = np.arange(n) % 4
    return features, target, fold


@pytest.mark.parametrize("kind", ["mask", "continuous"])
def test_a_planted_feature_is_found_by_the_single_map_and_the_probe(kind):
    features, target, fold = planted(kind)
    train, test = fold != 0, fold == 0
    score, row, sign = single_map(average_ranks(features[:, train]), features, target, kind,
                                  train, test)
    assert row == 3 and sign == -1 and score > 0.9
    x_train, x_test = probe_inputs(features, train, test, 64)
    assert probe(x_train, x_test, target, kind, train, test, 1.0, 0) > 0.9
    noise = np.delete(features, 3, axis=0)  # the control: noise alone stays near chance
    x_train, x_test = probe_inputs(noise, train, test, 64)
    chance = 0.5 if kind == "mask" else 0.0
    assert abs(probe(x_train, x_test, target, kind, train, test, 1.0, 0) - chance) < 0.12


def test_probe_inputs_reduce_to_the_leading_components_of_the_training_pixels():
    rng = np.random.default_rng(1)
    features = rng.normal(size=(20, 300))
    train = np.arange(300) < 200
    x_train, x_test = probe_inputs(features, train, ~train, 5)
    assert x_train.shape == (200, 5) and x_test.shape == (100, 5)
    assert np.allclose(x_train.mean(axis=0), 0.0, atol=1e-9)  # centred on the training pixels
    full_train, _ = probe_inputs(features, train, ~train, 64)
    assert full_train.shape == (200, 20) and np.allclose(full_train.std(axis=0), 1.0)


def test_verdict_is_a_fold_by_fold_sign_test():
    import pandas as pd

    rows = []
    for fold, (a, b, c) in enumerate([(0.9, 0.8, 0.85), (0.92, 0.81, 0.95), (0.88, 0.8, 0.8),
                                      (0.91, 0.79, 0.9)]):
        rows += [{"scan": "s", "class": "x", "mode": "probe", "fold": fold, "method": m, "score": v}
                 for m, v in (("a", a), ("b", b), ("c", c))]
    frame = pd.DataFrame(rows)
    assert verdict(frame, "s", "x", "a", "b") == "beats"
    assert verdict(frame, "s", "x", "b", "a") == "loses"
    assert verdict(frame, "s", "x", "a", "c") == "matches"  # c wins one fold
    assert verdict(frame, "s", "x", "a", "missing") == "n/a"


def test_the_verdict_compares_a_latent_variant_chosen_without_the_scored_fold():
    """Best-of-N by held-out means picks "lucky" (mean 0.85 against 0.82, from two lucky
    folds); the choice for each fold is made on the other folds only."""
    import pandas as pd

    from latentebsd.benchmark import SELECTED, fold_selected, verdicts

    scores = {"conventional": [0.80, 0.80, 0.80, 0.80], "steady": [0.82, 0.82, 0.82, 0.82],
              "lucky": [1.0, 1.0, 0.70, 0.70]}
    frame = pd.DataFrame([{"scan": "s", "class": "x", "mode": "probe", "metric": "roc_auc",
                           "family": "latent", "fold": f, "level": -1, "method": m, "score": v}
                          for m, vals in scores.items() for f, v in enumerate(vals)])
    frame.loc[frame["method"] == "conventional", "family"] = "conventional"
    sel = fold_selected(frame, ["steady", "lucky"]).set_index("fold")
    # fold 0: lucky's other folds average 0.80 < 0.82; fold 2: 0.90 > 0.82
    assert sel["chosen"].to_dict() == {0: "steady", 1: "steady", 2: "lucky", 3: "lucky"}
    assert sel["score"].to_dict() == {0: 0.82, 1: 0.82, 2: 0.70, 3: 0.70}
    v = verdicts(frame, ["steady", "lucky"], None).iloc[0]
    assert v["best_latent"] == "lucky" and np.isclose(v["selected_latent_score"], 0.76)
    assert v["latent_vs_conventional"] == "matches"  # +0.02, +0.02, -0.10, -0.10
    assert (sel["method"] == SELECTED).all()


def test_a_gap_in_one_conventional_map_leaves_the_others_intact():
    """KAM is NaN inside a one-point twin; IQ there must keep its value."""
    from latentebsd.benchmark import fill_invalid

    iq = np.arange(12, dtype=float).reshape(3, 4)
    kam = np.ones((3, 4))
    kam[1, 2] = np.nan
    valid = np.ones((3, 4), bool)
    valid[0, 0] = False
    out = fill_invalid(np.stack([iq, kam]), valid)
    assert out[0, 1, 2] == iq[1, 2]  # kept
    assert out[0, 0, 0] == np.median(iq[valid])  # invalid point: the map's own median
    assert out[1, 1, 2] == 1.0 and np.isfinite(out).all()


def test_analogue_and_saliency_files_round_trip_and_name_a_foreign_file(tmp_path):
    from latentebsd.io.analogues import read_analogues, write_analogues
    from latentebsd.io.saliency import read_saliency, write_saliency

    g = ScanGeometry(3, 4, 0.5, (8, 8))
    maps = {"latent_kam": np.full((3, 4), 0.5), "latent_grod": np.arange(12.0).reshape(3, 4)}
    write_analogues(tmp_path / "a.h5", maps, g, {"scan": "s"})
    back = read_analogues(tmp_path / "a.h5")
    assert all(np.array_equal(back[k], maps[k]) for k in maps)
    data = {"occlusion": np.ones((2, 3, 3)), "mean_pattern": np.zeros((2, 8, 8)),
            "features": np.array([4, 1]), "mask": np.ones((8, 8), bool)}
    write_saliency(tmp_path / "s.h5", data, {"variant": "vae16"})
    arrays, attrs = read_saliency(tmp_path / "s.h5")
    assert arrays["features"].tolist() == [4, 1] and attrs["variant"] == "vae16"
    with pytest.raises(ValueError, match=r"a\.h5: not a saliency file"):
        read_saliency(tmp_path / "a.h5")
    with pytest.raises(ValueError, match=r"s\.h5: not a latent-analogues file"):
        read_analogues(tmp_path / "s.h5")


# -- latent KAM / GROD -----------------------------------------------------------------
def test_latent_kam_and_grod_of_a_constant_cube_are_zero():
    cube = np.full((4, *SHAPE), 3.0)
    grain = np.zeros(SHAPE, int)
    out = latent_analogue_maps([cube[:2], cube[2:]], grain, np.ones(SHAPE, bool))
    assert np.all(out["latent_kam"] == 0) and np.all(out["latent_grod"] == 0)


def test_latent_kam_and_grod_equal_a_hand_computation_on_3x3():
    f0 = np.array([[0.0, 1, 2], [1, 2, 3], [2, 3, 4]])
    f1 = np.array([[1.0, 0, 1], [0, 1, 0], [1, 0, 1]])
    cube = np.stack([f0, f1])
    grain = np.array([[0, 0, 0], [0, 0, 0], [0, 0, 1]])  # the corner is another grain
    valid = np.ones((3, 3), bool)
    out = latent_analogue_maps([cube[:1], cube[1:]], grain, valid, neighbours=8)
    z = np.stack([(f - f.mean()) / f.std() for f in cube])  # standardised over the scan
    # centre (1, 1): its 8 neighbours but the corner (2, 2), in another grain
    nb = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]
    kam = np.mean([np.sqrt(np.mean((z[:, 1, 1] - z[:, r, c]) ** 2)) for r, c in nb])
    assert out["latent_kam"][1, 1] == pytest.approx(kam)
    inside = grain == 0
    mean = z[:, inside].mean(axis=1)
    assert out["latent_grod"][1, 1] == pytest.approx(np.sqrt(np.mean((z[:, 1, 1] - mean) ** 2)))
    # the one-point grain: no neighbour in its grain, GROD 0
    assert np.isnan(out["latent_kam"][2, 2]) and out["latent_grod"][2, 2] == 0.0
    # 4 neighbours: only the edge ones
    out4 = latent_analogue_maps([cube], grain, valid, neighbours=4)
    nb4 = [(0, 1), (1, 0), (1, 2), (2, 1)]
    assert out4["latent_kam"][1, 1] == pytest.approx(
        np.mean([np.sqrt(np.mean((z[:, 1, 1] - z[:, r, c]) ** 2)) for r, c in nb4]))


# -- novelty ---------------------------------------------------------------------------
def test_a_map_that_is_linear_in_iq_has_no_novelty_and_a_new_one_does():
    rng = np.random.default_rng(2)
    n = 600
    iq = rng.normal(size=n)
    kam = rng.normal(size=n)
    x = np.column_stack([iq, kam])
    grain = rng.integers(0, 5, n)
    fold = np.arange(n) % 4
    y = np.column_stack([3.0 * iq - 1.0,  # exactly linear in IQ
                         np.sin(7 * np.arange(n) / n) + 0.01 * rng.normal(size=n),  # new
                         np.array([0.5, -1.0, 2.0, 0.0, 1.5])[grain]])  # constant per grain
    r2 = explained_r2(y, x, grain, fold)
    assert r2[0] > 0.999 and r2[1] < 0.2 and r2[2] > 0.99


def test_grain_means_leave_out_points_outside_any_grain_and_held_out_points():
    from latentebsd.novelty import grain_means

    grain = np.array([0, 0, -1, 1, 1, 2])
    y = np.array([1.0, 3.0, 100.0, 5.0, 7.0, 9.0])
    train = np.array([True, True, True, True, False, False])
    overall = y[train].mean()  # 27.25
    assert grain_means(y, grain, train).tolist() == [2.0, 2.0, overall, 5.0, 5.0, overall]


# -- baselines -------------------------------------------------------------------------
@pytest.fixture
def preprocessed(tmp_path):
    """A preprocessed scan whose patterns are mixtures of 3 fixed images plus noise."""
    rng = np.random.default_rng(4)
    n_rows, n_cols, shape = 8, 10, (16, 16)
    basis = rng.normal(size=(3, *shape))
    weights = np.abs(rng.normal(size=(n_rows * n_cols, 3)))
    pats = np.einsum("nk,khw->nhw", weights, basis) + 0.05 * rng.normal(size=(n_rows * n_cols, *shape))
    pats = np.clip(pats / np.abs(pats).max(), -1, 1).astype(np.float32)
    mask = np.ones(shape, bool)
    mask[:2, :2] = False
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["patterns"] = np.where(mask, pats, 0)
        f["mask"] = mask
        f["valid"] = np.ones(n_rows * n_cols, bool)
        ScanGeometry(n_rows, n_cols, 0.5, shape).to_h5(f.create_group("geometry"))
    return path


def test_streamed_pca_equals_in_memory_pca(preprocessed):
    """Chunked IncrementalPCA (3 chunks) against sklearn's PCA on all patterns at once:
    the same explained variance within 1e-6 and components within 1e-4 (up to sign)."""
    from sklearn.decomposition import PCA

    with PreprocessedScan(preprocessed) as scan:
        streamed, _ = fit_baseline(scan, "pca", 3, 0, chunk_size=30)  # 3 row blocks of 30
        x = scan.read(0, scan.n_patterns)[:, scan.mask]
    full = PCA(n_components=3).fit(x)
    np.testing.assert_allclose(streamed.explained_variance_, full.explained_variance_, rtol=1e-6)
    for a, b in zip(streamed.components_, full.components_):
        np.testing.assert_allclose(a * np.sign(a @ b), b, atol=1e-4)


@pytest.mark.parametrize("method", ["pca", "nmf"])
def test_baseline_cube_holds_one_map_per_component(preprocessed, tmp_path, method):
    info = baseline_scan(preprocessed, tmp_path / "c.nc", tmp_path / "c.tif", method, 3, 0, 30, "s")
    assert info["variant"] == f"{method}3"
    maps = read_features(tmp_path / "c.nc", [0, 1, 2])
    assert maps.shape == (3, 8, 10) and np.isfinite(maps).all() and maps.std() > 0
    with h5py.File(tmp_path / "c.nc") as f:
        assert "latent_logvar" not in f and f.attrs["baseline"] == method
    if method == "nmf":
        assert (maps >= 0).all()


# -- saliency --------------------------------------------------------------------------
def test_the_occlusion_map_of_a_feature_that_reads_one_region_peaks_there():
    shape = (20, 20)
    region = (slice(4, 8), slice(12, 16))

    def encode(x: np.ndarray) -> np.ndarray:  # feature 0 reads the region, feature 1 all
        return np.column_stack([x[:, region[0], region[1]].sum(axis=(1, 2)), x.sum(axis=(1, 2))])

    pats = np.random.default_rng(5).uniform(0.5, 1.0, (6, *shape)).astype(np.float32)
    occ = occlusion_maps(encode, pats, [0, 1], patch=4, stride=2)
    peak = np.unravel_index(np.argmax(occ[0]), shape)
    assert region[0].start <= peak[0] < region[0].stop and region[1].start <= peak[1] < region[1].stop
    assert occ[0][0:3, 0:3].max() == 0.0  # far from the region: no change
    assert occ[1].min() > 0  # the global feature changes wherever the patch goes


def test_detection_limit_is_the_lowest_strength_from_which_every_band_detects():
    from latentebsd.detection_limits import detection_limit

    values = [0.05, 0.1, 0.2, 0.5, 1.0]
    assert detection_limit(range(5), values, [0.5, 0.6, 0.85, 0.9, 0.95], 0.8) == 0.2
    # a dip above the limit moves it up: every stronger band must detect
    assert detection_limit(range(5), values, [0.9, 0.5, 0.85, 0.79, 0.95], 0.8) == 1.0
    assert detection_limit(range(5), values, [0.9, 0.9, 0.9, 0.9, 0.7], 0.8) == np.inf
    assert detection_limit([4, 3, 2, 1, 0], values[::-1], [0.95, 0.9, 0.85, 0.6, 0.5], 0.8) == 0.2


def test_detection_scores_each_graded_band_and_finds_a_planted_limit(tmp_path):
    """A map that carries the class only from band 2 on: the probe's limit is band 2's
    strength, and conventional (pure noise) never reaches it."""
    import pandas as pd

    from latentebsd.benchmark import detection_scan
    from latentebsd.detection_limits import detection_limits
    from latentebsd.io.conventional import MAP_KEYS, write_conventional
    from latentebsd.io.cube import cube_writer
    from latentebsd.io.truth import write_truth

    rng = np.random.default_rng(0)
    shape = (32, 48)
    level = np.repeat(np.arange(4), 12)[None].repeat(32, 0).astype(np.int16)
    mask = rng.random(shape) < 0.3
    signal = np.where(level >= 2, mask * 3.0, 0.0) + rng.normal(0, 0.3, shape)
    geometry = ScanGeometry(*shape, 1.0, (16, 16), np.array([0.5, 0.5, 0.5]), 70.0, 0.0)
    zeros = np.zeros(shape, bool)
    truth = {"grain_id": np.zeros(shape, np.int32), "domain_id": np.zeros(shape, np.int32),
             "cell_wall_mask": mask, "particle_mask": zeros, "twin_mask": zeros,
             "scratch_mask": zeros, "grain_boundary_mask": zeros,
             "dislocation_density": np.zeros(shape, np.float32),
             "pattern_blur_px": np.zeros(shape, np.float32), "strength_level": level,
             "strength": np.array([0.1, 0.2, 0.5, 1.0])[level].astype(np.float32),
             "quaternion": np.tile([1.0, 0, 0, 0], (*shape, 1))}
    grading = {"levels": [0.1, 0.2, 0.5, 1.0], "axis": "columns",
               "classes": {"dislocation_cells": {"parameter": "rot (deg)",
                                                 "values": [0.1, 0.2, 0.5, 1.0]}}}
    write_truth(tmp_path / "t.h5", truth, geometry, "am", 0, {}, grading)
    maps = {key: rng.normal(size=shape) for key in MAP_KEYS}
    maps.update(ipf_rgb=np.zeros((*shape, 3)), rodrigues=np.zeros((*shape, 3)),
                valid=np.ones(shape, bool),
                indexed=np.ones(shape, bool), grain_id=np.zeros(shape, np.int32))
    write_conventional(tmp_path / "c.h5", maps, geometry, {"scan": "s"})
    cube = tmp_path / "lat.nc"
    with cube_writer(cube, None, 2, *shape, 1.0, {"variant": "lat", "latent_dim": 2, "step_um": 1.0},
                     with_logvar=False) as w:
        w.write(0, np.stack([signal, rng.normal(size=shape)]).astype(np.float32), None,
                np.ones(shape, bool))
    frame = detection_scan(tmp_path / "t.h5", tmp_path / "c.h5", {"lat": cube}, {},
                           section("benchmark", {"max_pixels": 10000}), "s", seed=0)
    banded = frame[(frame["level"] >= 0) & (frame["class"] == "dislocation_cells")]
    assert set(banded["level"]) == {0, 1, 2, 3}
    limits = detection_limits(frame, 0.8).set_index(["mode", "method"])
    assert limits.loc[("probe", "lat"), "limit"] == 0.5
    assert limits.loc[("probe", "conventional"), "limit"] == np.inf
    # the whole-fold rows are what the detection table summarises, one per fold and mode
    whole = frame[(frame["level"] < 0) & (frame["class"] == "dislocation_cells")]
    assert len(whole) == len(pd.unique(whole["fold"])) * 2 * 2  # 2 methods x 2 modes


def test_a_cube_of_another_map_shape_is_refused_with_its_path(tmp_path):
    from latentebsd.io.cube import check_map_shape, write_cube

    write_cube(tmp_path / "c.nc", np.zeros((2, 3, 4), np.float32))
    assert check_map_shape(tmp_path / "c.nc", (3, 4), "the scan")["latent_dim"] == 2
    with pytest.raises(ValueError, match=r"c\.nc: map 3 x 4 differs from the scan's 4 x 3"):
        check_map_shape(tmp_path / "c.nc", (4, 3), "the scan")


def test_method_style_is_one_per_method_and_the_same_in_every_figure():
    """13 methods get 13 different (colour, marker, line) styles; a variant keeps its
    style whatever subset a figure shows; derived methods keep their variant's colour."""
    from latentebsd.plotting import method_style

    variants = ["vae16", "vae32", "vae64", "vae128", "vae256", "contrastive128", "betavae15",
                "betavae50", "pca", "nmf"]
    methods = [("conventional", "conventional"), *[(v, "baseline" if v in ("pca", "nmf")
                                                    else "latent") for v in variants],
               ("conventional+vae128", "combined"), ("latentKAM/GROD vae128", "analogue")]
    styles = [method_style(m, variants, f) for m, f in methods]
    keys = {(s["color"], s["marker"], s["linestyle"]) for s in styles}
    assert len(keys) == 13
    assert len({s["color"] for s in styles[:11]}) == 11  # no reused colour among the 11 bases
    assert method_style("vae128", variants) == method_style("vae128", variants, "latent")
    assert method_style("conventional+vae128", variants)["color"] == styles[4]["color"]


def test_detection_limit_axes_label_only_the_graded_values(tmp_path):
    """The strength axis of detection_limits.png is labelled at the graded values only
    (no overlapping minor-tick labels on a span of less than a decade), the parameter
    name is wrapped, and every method has a legend entry."""
    import matplotlib

    matplotlib.use("Agg")
    from latentebsd import detection_limits as dl
    from latentebsd.plotting import pyplot

    values = [0.5 * f for f in np.geomspace(0.05, 1, 6)]
    rows = [{"scan": "am", "class": "particles", "metric": "roc_auc", "method": m,
             "family": fam, "fold": k, "level": i, "strength": v / values[-1],
             "parameter": "max particle pattern weight", "value": v, "mode": "probe",
             "score": 0.5 + 0.08 * i}
            for m, fam in (("conventional", "conventional"), ("vae16", "latent"),
                           ("pca", "baseline")) for i, v in enumerate(values) for k in range(2)]
    seen = {}
    plt = pyplot()
    original = dl.save_figure

    def keep(fig, path, dpi=110, tight=False):
        ax = fig.axes[0]
        fig.canvas.draw()
        seen["labels"] = [t.get_text() for t in ax.get_xticklabels(minor=False) if t.get_text()]
        seen["minor"] = [t.get_text() for t in ax.get_xticklabels(minor=True) if t.get_text()]
        seen["legend"] = [t.get_text() for t in fig.legends[0].get_texts()]
        original(fig, path, dpi, tight)

    dl.save_figure = keep
    try:
        dl.plot_limits(pd.DataFrame(rows), tmp_path / "limits.png", 0.8)
    finally:
        dl.save_figure = original
        plt.close("all")
    assert seen["labels"] == [f"{v:.3g}" for v in values] and seen["minor"] == []
    assert sorted(seen["legend"]) == ["conventional", "pca", "vae16"]
    assert (tmp_path / "limits.png").stat().st_size > 0


def test_saliency_figure_has_a_colour_bar_per_feature(tmp_path):
    """Each occlusion panel gets its own labelled colour bar (latent scales differ)."""
    import matplotlib

    matplotlib.use("Agg")
    from latentebsd import saliency

    rng = np.random.default_rng(0)
    mask = np.ones((20, 20), bool)
    mask[:2] = False
    captured = {}
    original = saliency.save_figure

    def keep(fig, path, dpi=110, tight=False):
        captured["labels"] = [a.get_ylabel() for a in fig.axes if a.get_ylabel()]
        original(fig, path, dpi, tight)

    saliency.save_figure = keep
    try:
        saliency.plot_saliency(rng.random((2, 20, 20)), rng.random((2, 20, 20)), mask,
                               [(3, "top rank"), (7, "novel")], tmp_path / "s.png", "t")
    finally:
        saliency.save_figure = original
    assert captured["labels"] == ["|Δ f3| when blanked", "|Δ f7| when blanked"]
    assert (tmp_path / "s.png").stat().st_size > 0


# -- guards on the numbers (issue 26) ----------------------------------------------------
def _detection_files(tmp_path, rng, shape, mask, latent_maps):
    """Truth (``mask`` as dislocation cells), pure-noise conventional maps and a latent
    cube of ``latent_maps`` for :func:`latentebsd.benchmark.detection_scan`."""
    from latentebsd.io.conventional import MAP_KEYS, write_conventional
    from latentebsd.io.cube import cube_writer
    from latentebsd.io.truth import write_truth

    geometry = ScanGeometry(*shape, 1.0, (16, 16), np.array([0.5, 0.5, 0.5]), 70.0, 0.0)
    zeros = np.zeros(shape, bool)
    level = np.zeros(shape, np.int16)
    truth = {"grain_id": np.zeros(shape, np.int32), "domain_id": np.zeros(shape, np.int32),
             "cell_wall_mask": mask, "particle_mask": zeros, "twin_mask": zeros,
             "scratch_mask": zeros, "grain_boundary_mask": zeros,
             "dislocation_density": np.zeros(shape, np.float32),
             "pattern_blur_px": np.zeros(shape, np.float32), "strength_level": level,
             "strength": np.ones(shape, np.float32),
             "quaternion": np.tile([1.0, 0, 0, 0], (*shape, 1))}
    grading = {"levels": [1.0], "axis": "columns", "classes": {}}
    write_truth(tmp_path / "t.h5", truth, geometry, "am", 0, {}, grading)
    maps = {key: rng.normal(size=shape) for key in MAP_KEYS}
    maps.update(ipf_rgb=np.zeros((*shape, 3)), rodrigues=rng.normal(size=(*shape, 3)),
                valid=np.ones(shape, bool),
                indexed=np.ones(shape, bool), grain_id=np.zeros(shape, np.int32))
    write_conventional(tmp_path / "c.h5", maps, geometry, {"scan": "s"})
    cube = tmp_path / "lat.nc"
    with cube_writer(cube, None, len(latent_maps), *shape, 1.0,
                     {"variant": "lat", "latent_dim": len(latent_maps), "step_um": 1.0},
                     with_logvar=False) as w:
        w.write(0, np.stack(latent_maps).astype(np.float32), None, np.ones(shape, bool))
    return tmp_path / "t.h5", tmp_path / "c.h5", cube


def test_a_feature_perfect_only_on_the_held_out_fold_is_never_chosen_nor_trained_on(
        tmp_path, monkeypatch):
    """Latent map 0 equals the class mask on fold 0 and is noise elsewhere; map 1 carries
    the class everywhere, weaker. Scoring fold 0, the single map is chosen on the other
    folds (map 1), the probe never sees fold 0's pixels, and no training call of either
    mode is handed a scored pixel."""
    import latentebsd.benchmark as bm

    rng = np.random.default_rng(3)
    shape = (32, 48)
    mask = rng.random(shape) < 0.3
    folds = spatial_folds(shape, tuple(section("benchmark")["fold_grid"]), section("benchmark")["guard"])
    leak = np.where(folds == 0, 3.0 * mask + 0.01 * rng.normal(size=shape), rng.normal(size=shape))
    honest = 1.5 * mask + rng.normal(size=shape)
    truth, conventional, cube = _detection_files(tmp_path, rng, shape, mask, [leak, honest])

    seen = []  # (train, test) of every training call

    def spy(real, train_at, test_at):
        # the real function, recording the (train, test) masks it is handed
        def wrapped(*args, **kwargs):
            seen.append((real.__name__, np.asarray(args[train_at], bool), np.asarray(args[test_at], bool)))
            return real(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(bm, "single_map_prediction", spy(bm.single_map_prediction, 4, 5))
    monkeypatch.setattr(bm, "probe_inputs", spy(bm.probe_inputs, 1, 2))
    frame = bm.detection_scan(truth, conventional, {"lat": cube}, {},
                              section("benchmark", {"max_pixels": 10000}), "s", seed=0)
    assert {name for name, _, _ in seen} == {"single_map_prediction", "probe_inputs"}
    for name, train, test in seen:
        assert train.sum() > 0 and test.sum() > 0 and not (train & test).any(), name
    rows = frame[(frame["method"] == "lat") & (frame["class"] == "dislocation_cells")
                 & (frame["level"] < 0)].set_index(["mode", "fold"])
    assert rows.loc[("single", 0), "chosen"].endswith("map 1"), rows.loc[("single", 0), "chosen"]
    # map 1's own AUC is ~0.86; map 0 would score ~1.0 on fold 0
    assert rows.loc[("single", 0), "score"] < 0.95
    assert rows.loc[("probe", 0), "score"] < 0.95


def test_novelty_ranks_an_unexplained_structured_map_above_an_explained_one_on_spatial_folds():
    """On a 24 x 30 map in spatial folds with 2 x 2-point grains: a map that is 2 x IQ is
    explained (R^2 near 1), a smooth field unrelated to the conventional maps is not
    (its held-out grains have no training points, so a pixel never predicts itself),
    and the second is the more novel at equal structure."""
    from latentebsd.novelty import novelty_score

    folds = spatial_folds(SHAPE, (2, 2), 1).ravel()
    keep = folds >= 0
    iq, kam = smooth(1).ravel(), smooth(2).ravel()
    rows, cols = np.mgrid[:SHAPE[0], :SHAPE[1]]
    grain = ((rows // 2) * (SHAPE[1] // 2) + cols // 2).ravel()
    x = np.column_stack([iq, kam])[keep]
    y = np.column_stack([2.0 * iq + 0.05 * np.random.default_rng(3).normal(size=iq.size),
                         smooth(7).ravel()])[keep]
    r2 = explained_r2(y, x, grain[keep], folds[keep])
    assert r2[0] > 0.95 and r2[1] < 0.3, r2
    novelty = novelty_score(np.array([0.8, 0.8]), r2)
    assert novelty[1] > 2 * novelty[0]


def test_the_novelty_formula_is_structure_times_what_is_left_unexplained():
    from latentebsd.novelty import novelty_score

    structure = np.array([0.8, 0.8, 0.1, 0.8, 0.8])
    r2 = np.array([0.0, 0.9, 0.0, 1.7, -0.4])  # R^2 is clipped to [0, 1]
    np.testing.assert_allclose(novelty_score(structure, r2), [0.8, 0.08, 0.1, 0.0, 0.8])
    assert np.isnan(novelty_score(np.array([0.5]), np.array([np.nan]))[0])
