"""Maps stage: ranking, segmentation, ground-truth matching, settings and figures."""

from __future__ import annotations


import h5py
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from conftest import save_untrained_model
from latentebsd.config import ConfigError, section
from latentebsd.encode import encode_scan
from latentebsd.figures import figure_beta, figure_cells, figure_dimensionality, select_cell_features
from latentebsd.geometry import ScanGeometry
from latentebsd.groundtruth import domain_boundaries, match_truth, summarize_truth_matches
from latentebsd.io.cube import write_cube
from latentebsd.maps import feature_maps, moran_i, rank_cube, segment_cube
from latentebsd.plan import make_plan

SHAPE = (24, 30)


def smooth_field(seed: int, sigma: float = 3.0) -> np.ndarray:
    """Spatially correlated noise, unit variance."""
    f = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=SHAPE), sigma)
    return (f - f.mean()) / f.std()


def noise(seed: int, scale: float = 1.0) -> np.ndarray:
    return scale * np.random.default_rng(seed).normal(size=SHAPE)


# --------------------------------------------------------------------------- ranking


def test_moran_i_known_values():
    checker = np.indices(SHAPE).sum(axis=0) % 2 * 2.0 - 1
    assert moran_i(checker, neighbours=4) == pytest.approx(-1.0)
    halves = np.zeros(SHAPE)
    halves[:, SHAPE[1] // 2:] = 1
    assert moran_i(halves) > 0.9
    assert abs(moran_i(noise(0))) < 0.1
    assert moran_i(np.ones(SHAPE)) == 0.0  # constant map: no structure, no NaN


def test_moran_i_ignores_invalid_pixels():
    field = smooth_field(1)
    valid = np.ones(SHAPE, bool)
    valid[5:8, 10:20] = False
    spoiled = field.copy()
    spoiled[~valid] = 1e6
    assert moran_i(spoiled, valid) == pytest.approx(moran_i(np.where(valid, field, -3.0), valid))
    assert moran_i(spoiled, valid, neighbours=8) == pytest.approx(moran_i(field, valid, neighbours=8))


def test_ranking_puts_planted_structure_above_noise(tmp_path):
    d = 6
    mean = np.stack([noise(10 + i) for i in range(d)])
    logvar = np.full((d, *SHAPE), np.log(0.01))  # confident posterior everywhere
    mean[4] = smooth_field(2)           # the planted structure
    mean[1] = 0.01 * smooth_field(3)    # smooth but collapsed: tiny variance ...
    logvar[1] = 0.0                     # ... against a unit posterior variance
    write_cube(tmp_path / "c.nc", mean, logvar, step_um=0.5)
    ranking, thumbs = rank_cube(tmp_path / "c.nc", section("maps", {"montage_tile_px": 10}), progress=False)
    assert ranking["feature"].iloc[0] == 4
    assert ranking["rank"].tolist() == list(range(1, d + 1))
    assert ranking.set_index("feature").loc[4, "moran_i"] > 0.8
    assert ranking.set_index("feature").loc[1, "moran_i"] > 0.8  # smooth, yet ...
    assert ranking.set_index("feature").loc[1, "reliability"] < 0.01  # ... carries nothing
    assert ranking.set_index("feature").loc[1, "score"] < 0.01  # noise-level score
    assert thumbs.shape == (d, 8, 10)  # 24 x 30 block-averaged by 3
    by_moran, _ = rank_cube(tmp_path / "c.nc", section("maps", {"rank_by": "moran_i"}), progress=False)
    assert set(by_moran["feature"].iloc[:2]) == {1, 4}


@pytest.mark.parametrize("neighbours", [4, 8])
def test_streamed_ranking_equals_whole_map_statistics(tmp_path, neighbours):
    """Row blocks of 3 rows (tiny memory budget) give the whole-map numbers."""
    from latentebsd.maps import feature_statistics

    d = 5
    mean = np.stack([smooth_field(60 + i, 1.5) + 7.0 * i for i in range(d)]).astype(np.float32)
    logvar = np.stack([noise(70 + i, 0.5) - 2 for i in range(d)]).astype(np.float32)
    valid = np.random.default_rng(1).random(SHAPE) > 0.1
    write_cube(tmp_path / "c.nc", mean, logvar, valid=valid)
    settings = section("maps", {"memory_mb": 4 * 8 * d * SHAPE[1] * 3 / 1024**2,
                                "moran_neighbours": neighbours, "montage_tile_px": 30})
    ranking, thumbs = rank_cube(tmp_path / "c.nc", settings, progress=False)
    expect = feature_statistics(mean, logvar, valid, neighbours)
    got = ranking.set_index("feature").sort_index()
    for key in ("moran_i", "std", "posterior_std", "reliability", "score", "p_lo", "p_hi"):
        np.testing.assert_allclose(got[key].to_numpy(), expect[key], rtol=1e-6, atol=1e-9, err_msg=key)
    np.testing.assert_allclose(thumbs, np.where(valid, mean, np.nan), rtol=1e-6)  # factor 1: the maps


# --------------------------------------------------------------------------- segmentation


def test_segmentation_separates_two_planted_regions(tmp_path):
    d = 5
    region = np.zeros(SHAPE, bool)
    region[:, :12] = True
    region[18:, :] = True
    centre = np.random.default_rng(0).normal(size=d) * 3
    mean = np.stack([noise(20 + i, 0.3) for i in range(d)]) + np.where(region, 1.0, 0.0) * centre[:, None, None]
    valid = np.ones(SHAPE, bool)
    valid[0, 0] = False
    write_cube(tmp_path / "c.nc", mean, valid=valid)
    labels, info = segment_cube(tmp_path / "c.nc", "kmeans", 2, sample_size=200, seed=1,
                                max_bytes=4 * d * SHAPE[1] * 5, progress=False)
    assert labels.shape == SHAPE and labels.dtype == np.int16 and labels[0, 0] == -1
    inside = labels[region & valid]
    outside = labels[~region & valid]
    assert len(np.unique(inside)) == 1 and len(np.unique(outside)) == 1 and inside[0] != outside[0]
    assert info["fractions"][0] >= info["fractions"][1]  # cluster 0 is the larger one
    assert inside[0] == (0 if region.sum() > (~region).sum() else 1)
    gmm, _ = segment_cube(tmp_path / "c.nc", "gmm", 2, sample_size=300, seed=1, progress=False)
    assert len(np.unique(gmm[region & valid])) == 1 and len(np.unique(gmm[~region & valid])) == 1


# --------------------------------------------------------------------------- ground truth


def planted_truth() -> tuple[dict, np.ndarray]:
    """Truth with two grains, a twin lamella, a rotation domain and a density field; and a
    cube whose features 2, 5 and 7 carry the twin, the grain boundary and the density."""
    grain = np.zeros(SHAPE, np.int32)
    grain[:, 15:] = 1
    twin = np.zeros(SHAPE, bool)
    twin[8:11, :15] = True
    domain = grain * 10 + twin
    domain[16:, 20:] = 99  # a rotation domain inside grain 1
    gb = np.zeros(SHAPE, bool)
    gb[:, 14:16] = True
    density = np.clip(smooth_field(5), 0, None)
    truth = {"grain_id": grain, "twin_mask": twin, "domain_id": domain, "grain_boundary_mask": gb,
             "dislocation_density": density, "particle_mask": np.zeros(SHAPE, bool)}
    d = 10
    mean = np.stack([noise(30 + i) for i in range(d)])
    mean[2] = -2.0 * twin + noise(50, 0.3)                      # sign flipped: AUC ~ 0
    mean[5] = np.where(grain == 1, 3.0, -3.0) + noise(51, 0.2)  # a step: shows as an edge
    mean[7] = density + noise(52, 0.05)
    mean[8] = np.where(domain == 99, 2.0, 0.0) + noise(53, 0.2)
    return truth, mean


def test_domain_boundaries_only_inside_grains_and_not_at_twins():
    truth, _ = planted_truth()
    b = domain_boundaries(truth["domain_id"], truth["grain_id"], truth["twin_mask"])
    assert b[16, 25] and b[15, 25] and b[20, 20] and b[20, 19]  # both sides of the domain edge
    assert not b[:, 14].any()  # grain boundary (different grains)
    assert not b[7:12, :14].any()  # twin boundaries belong to the twins class
    crossing = truth["domain_id"].copy()
    crossing[8:11, 5:8] = 77  # a second lamella crossing the first: twin / twin boundary
    assert not domain_boundaries(crossing, truth["grain_id"], truth["twin_mask"])[7:12, :15].any()


def test_truth_matching_finds_planted_features(tmp_path):
    truth, mean = planted_truth()
    write_cube(tmp_path / "c.nc", mean, scan="s", variant="v")
    ranking, _ = rank_cube(tmp_path / "c.nc", progress=False)
    table, best = match_truth(tmp_path / "c.nc", truth, section("maps", {"memory_mb": 0.01 * 3}), ranking)
    t = table.set_index("class")
    assert t.loc["twins", "best_feature"] == 2 and t.loc["twins", "score"] > 0.95
    assert t.loc["twins", "representation"] == "value"
    assert t.loc["grain_boundaries", "best_feature"] == 5
    assert t.loc["grain_boundaries", "representation"] == "gradient"
    assert t.loc["dislocation_density", "best_feature"] == 7
    assert t.loc["dislocation_density", "metric"] == "abs_spearman" and t.loc["dislocation_density", "score"] > 0.9
    assert t.loc["rotation_domains", "best_feature"] == 8
    assert not t.loc["particles", "present"] and not t.loc["scratch", "present"]
    assert t.loc["twins", "score"] > t.loc["twins", "median_score"] + 0.2
    assert set(best) == {"grain_boundaries", "twins", "dislocation_density", "rotation_domains"}
    assert t.loc["twins", "spatial_rank"] == int(ranking.set_index("feature").loc[2, "rank"])

    table.to_csv(tmp_path / "m.csv", index=False)
    long = summarize_truth_matches([tmp_path / "m.csv"], tmp_path / "l.csv", tmp_path / "w.csv")
    wide = pd.read_csv(tmp_path / "w.csv")
    assert len(long) == len(table)
    assert wide.set_index("class").loc["twins", "v"].endswith("(f2)")


def test_truth_shape_mismatch_is_an_error(tmp_path):
    truth, mean = planted_truth()
    write_cube(tmp_path / "c.nc", mean[:, :10])
    with pytest.raises(ValueError, match="shape"):
        match_truth(tmp_path / "c.nc", truth)


# --------------------------------------------------------------------------- settings


def test_settings_defaults_and_errors():
    cfg = section("maps", {"top_k": 3, "segmentation": {"n_clusters": 4}})
    assert cfg["top_k"] == 3 and cfg["segmentation"] == {**section("maps")["segmentation"], "n_clusters": 4}
    assert section("maps")["segmentation"] == {"method": "kmeans", "n_clusters": 6, "sample_size": 100000}
    for bad, key in [({"topk": 3}, "maps.topk"), ({"top_k": 0}, "maps.top_k"),
                     ({"rank_by": "x"}, "maps.rank_by"), ({"percentiles": [99, 1]}, "maps.percentiles"),
                     ({"moran_neighbours": 6}, "maps.moran_neighbours"),
                     ({"segmentation": {"k": 2}}, "maps.segmentation.k"),
                     ({"segmentation": {"method": "dbscan"}}, "maps.segmentation.method"),
                     ({"segmentation": {"n_clusters": 8, "sample_size": 4}}, "maps.segmentation.sample_size"),
                     ({"figure_pattern": -1}, "maps.figure_pattern")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            section("maps", bad)


# --------------------------------------------------------------------------- rule outputs


def test_feature_maps_writes_every_output(tmp_path):
    truth, mean = planted_truth()
    write_cube(tmp_path / "c.nc", mean[:4], step_um=0.5, scan="s", variant="v")
    tops = [tmp_path / f"top{i}.png" for i in range(1, 6)]  # more than d = 4: placeholder
    ranking = feature_maps(tmp_path / "c.nc", tmp_path / "r.csv", tmp_path / "m.png", tops,
                           tmp_path / "seg.npy", tmp_path / "seg.png",
                           section("maps", {"segmentation": {"n_clusters": 2, "sample_size": 100}}), seed=3,
                           truth_csv=tmp_path / "t.csv", truth_png=tmp_path / "t.png", progress=False)
    assert all(p.stat().st_size > 0 for p in [tmp_path / "m.png", tmp_path / "seg.png", tmp_path / "t.png", *tops])
    absent = pd.read_csv(tmp_path / "t.csv")  # no truth for this scan: every class absent
    assert len(absent) == 7 and not absent["present"].any()
    on_disk = pd.read_csv(tmp_path / "r.csv")
    assert on_disk["feature"].tolist() == ranking["feature"].tolist()
    assert (np.diff(on_disk["score"]) <= 0).all()
    assert np.load(tmp_path / "seg.npy").shape == SHAPE


def test_reconstruction_figures(tmp_path):
    """Figs 8, 9, 10 on a small preprocessed scan with three untrained models."""
    n_rows, n_cols, shape = 5, 6, (32, 32)
    rng = np.random.default_rng(0)
    mask = np.ones(shape, bool)
    mask[:3] = False
    with h5py.File(tmp_path / "p.h5", "w") as f:
        f["patterns"] = np.where(mask, rng.uniform(-1, 1, (n_rows * n_cols, *shape)), 0).astype(np.float32)
        f["mask"] = mask
        f["valid"] = np.ones(n_rows * n_cols, bool)
        ScanGeometry(n_rows, n_cols, 0.5, shape).to_h5(f.create_group("geometry"))
    specs = {"vae8": {"loss": "vae", "latent_dim": 8}, "vae16": {"loss": "vae", "latent_dim": 16},
             "beta8": {"loss": "beta_vae", "latent_dim": 8, "beta": 15}}
    weights, cubes = {}, {}
    for name, spec in specs.items():
        weights[name] = save_untrained_model(tmp_path / f"{name}.pt", spec["latent_dim"], shape, spec["loss"],
                                             spec.get("beta"), seed=spec["latent_dim"])
        cubes[name] = encode_scan(tmp_path / "p.h5", weights[name], tmp_path / f"{name}.nc", progress=False) and \
            tmp_path / f"{name}.nc"
    dims = {"vae8": 8, "vae16": 16}
    fig8 = figure_dimensionality(tmp_path / "p.h5", {v: cubes[v] for v in dims}, weights, specs,
                                 tmp_path / "f8.png", tmp_path / "f8.csv", "s", None, seed=1)
    assert fig8["variant"].tolist() == ["vae8", "vae16"] and fig8["pattern_index"].nunique() == 1
    fixed = figure_dimensionality(tmp_path / "p.h5", {v: cubes[v] for v in dims}, weights, specs,
                                  tmp_path / "f8b.png", tmp_path / "f8b.csv", "s",
                                  section("maps", {"figure_pattern": 13}))
    assert fixed["row"].iloc[0] == 2 and fixed["col"].iloc[0] == 1

    fig10 = figure_beta(tmp_path / "p.h5", cubes, weights, specs, tmp_path / "f10.png", tmp_path / "f10.csv",
                        "s", section("maps", {"beta_variants": ["vae8", "missing", "beta8"], "n_random": 2}),
                        seed=1)
    assert fig10["variant"].unique().tolist() == ["vae8", "beta8"]  # "missing" skipped
    for _, g in fig10.groupby("variant"):
        best, worst = g.set_index("kind")["masked_l2"][["best", "worst"]]
        assert best <= g["median_l2"].iloc[0] <= worst

    rankings = {}
    for v in dims:
        rankings[v] = tmp_path / f"{v}_r.csv"
        feature_maps(cubes[v], rankings[v], tmp_path / f"{v}_m.png", [], tmp_path / f"{v}.npy",
                     tmp_path / f"{v}_s.png", section("maps", {"segmentation": {"n_clusters": 2, "sample_size": 30}}),
                     progress=False)
    fig9 = figure_cells({v: cubes[v] for v in dims}, rankings, specs, tmp_path / "f9.png", tmp_path / "f9.csv",
                        None, "s")
    top = {v: int(pd.read_csv(rankings[v])["feature"].iloc[0]) for v in dims}
    assert dict(zip(fig9["variant"], fig9["feature"])) == top
    assert fig9["title"].iloc[0].startswith("highest-ranked latent map")  # no truth here
    assert all((tmp_path / f).stat().st_size > 0 for f in ("f8.png", "f9.png", "f10.png"))


def test_cell_selection_prefers_ground_truth(tmp_path):
    pd.DataFrame({"feature": [3, 1], "rank": [1, 2], "score": [0.9, 0.5]}).to_csv(tmp_path / "r.csv", index=False)
    pd.DataFrame({"class": ["dislocation_cells"], "present": [True], "best_feature": [1],
                  "representation": ["gradient"], "score": [0.97]}).to_csv(tmp_path / "t.csv", index=False)
    pd.DataFrame({"class": ["dislocation_cells"], "present": [False], "best_feature": [np.nan],
                  "representation": [np.nan], "score": [np.nan]}).to_csv(tmp_path / "n.csv", index=False)
    chosen = select_cell_features({"a": tmp_path / "r.csv", "b": tmp_path / "r.csv", "c": tmp_path / "r.csv"},
                                  {"a": tmp_path / "t.csv", "b": tmp_path / "n.csv"}).set_index("variant")
    assert chosen.loc["a", "feature"] == 1 and chosen.loc["a", "representation"] == "gradient"
    assert chosen.loc["b", "feature"] == 3 and chosen.loc["c", "feature"] == 3


def test_fig9_title_states_the_verdict_from_the_numbers():
    """Fig. 9 never says "shows the cells" for maps at chance: with ground truth it says
    whether any map reaches the detection AUC, with the best latent and conventional AUC;
    on a real scan (no truth) the maps are the highest-ranked, not maps that show cells."""
    from latentebsd.figures import cells_title

    weak = pd.DataFrame({"selected_by": ["ground truth: ROC-AUC vs cell_wall_mask"] * 3,
                         "score": [0.53, 0.55, 0.56]})
    title = cells_title(weak, {"KAM": 0.81, "sharpness": 0.62})
    assert title.startswith("no latent map detects the dislocation cells")
    assert "best cell-wall ROC-AUC 0.56" in title and "conventional KAM 0.81" in title
    assert "shows" not in title
    strong = weak.assign(score=[0.55, 0.91, 0.86])
    assert cells_title(strong).startswith("latent maps that detect the dislocation cells")
    real = pd.DataFrame({"selected_by": ["top spatial-structure rank"] * 2, "score": [0.9, 0.8]})
    title = cells_title(real)
    assert title.startswith("highest-ranked latent map") and "not measured" in title


def test_conventional_cell_scores_rank_kam_on_the_walls_above_noise(tmp_path):
    """The conventional side of Fig. 9's verdict: a KAM map high on the cell walls scores
    ROC-AUC ~1 against the truth, a noise sharpness map ~0.5, scored like latent maps."""
    from latentebsd.figures import conventional_cell_scores
    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.conventional import MAP_KEYS, write_conventional

    rng = np.random.default_rng(0)
    walls = np.zeros((12, 16), bool)
    walls[::4] = True
    walls[:, ::4] = True
    geometry = ScanGeometry(12, 16, 0.5, (20, 20))
    with h5py.File(tmp_path / "t.h5", "w") as f:  # what read_truth needs of a truth file
        geometry.to_h5(f.create_group("geometry"))
        f.create_group("truth").create_dataset("cell_wall_mask", data=walls)
        f.attrs.update({"microstructure": "am", "seed": 0, "settings": "{}"})
    maps = {k: np.zeros((12, 16)) for k in MAP_KEYS}
    maps.update(kam_deg=walls + 0.1 * rng.random((12, 16)), sharpness=rng.random((12, 16)),
                grod_deg=np.full((12, 16), np.nan))  # a map without values is left out
    write_conventional(tmp_path / "c.h5", maps, geometry, {})
    scores = conventional_cell_scores(tmp_path / "c.h5", tmp_path / "t.h5")
    assert scores["KAM"] > 0.95 and 0.3 < scores["sharpness"] < 0.8
    assert "GROD" not in scores


def test_the_plan_of_a_config():
    from latentebsd.config import validate_config

    config = validate_config({
        "scans": {"w": {"simulate": {"microstructure": "wrought", "map_shape": [4, 5]}},
                  "a": {"simulate": {"microstructure": "am", "map_shape": [4, 5]}},
                  "real": {"path": "x.up2", "pc": [0.5, 0.5, 0.6], "phases": ["FCC"]}},
        "models": {"variants": {"vae64": {"loss": "vae", "latent_dim": 64}, "vae16": {"loss": "vae", "latent_dim": 16},
                                "betavae15": {"loss": "beta_vae", "latent_dim": 128, "beta": 15}}},
        "maps": {"top_k": 2, "beta_variants": ["vae128", "betavae15"]},
    })
    plan = make_plan(config)
    assert plan.vae_variants == ["vae16", "vae64"]  # by latent dimension
    assert plan.beta_variants == ["betavae15"]  # vae128 is not configured: skipped
    assert plan.truth_scans == ["w", "a"] and plan.cell_scans == ["a", "real"]
    assert plan.top == ["top01", "top02"] and plan.sources == ["original", "vae64", "vae16", "betavae15"]
    assert plan.panel_variant == "vae64"  # no vae128: the first variant
    assert plan.shards == {}  # nothing over shard_patterns; real's file does not exist yet
