"""Small scans run: a map with fewer patterns than the study's settings assume still gets
everything that can be computed for it, and says what it skipped and why.

Fast tests of the stages that meet a tiny map (the PCA / NMF baselines, the novelty
ranking, the saliency sample), and one slow run of the whole main job, through
Snakemake, on kikuchipy's real 3 x 3 Ni map (the only real data that ships offline)
beside a simulated two-phase scan.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from latentebsd.baselines import baseline_scan, fitted_components
from latentebsd.benchmark import spatial_folds
from latentebsd.config import section
from latentebsd.geometry import ScanGeometry
from latentebsd.io.cube import cube_attrs
from latentebsd.novelty import MIN_FOLD_POINTS, cross_validation_skipped

BENCHMARK = section("benchmark")


@pytest.fixture
def tiny_preprocessed(tmp_path):
    """A preprocessed 3 x 3 scan of 16 x 16 random patterns."""
    rng = np.random.default_rng(2)
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["patterns"] = rng.uniform(-1, 1, (9, 16, 16)).astype(np.float32)
        f["mask"] = np.ones((16, 16), bool)
        f["valid"] = np.ones(9, bool)
        ScanGeometry(3, 3, 1.5, (16, 16)).to_h5(f.create_group("geometry"))
    return path


@pytest.mark.parametrize("method", ["pca", "nmf"])
def test_a_baseline_of_a_tiny_map_holds_as_many_components_as_patterns(tiny_preprocessed, tmp_path,
                                                                      method, caplog):
    """Before: "9 valid patterns cannot give 16 components" stopped the main job."""
    import logging

    with caplog.at_level(logging.WARNING, logger="latentebsd.baselines"):
        info = baseline_scan(tiny_preprocessed, tmp_path / "c.nc", None, method, 16, 0, 4096, "ni")
    assert info["variant"] == f"{method}16" and info["k"] == 9 and info["requested"] == 16
    attrs = cube_attrs(tmp_path / "c.nc")
    assert attrs["latent_dim"] == 9 and attrs["requested_components"] == 16
    assert "9 valid patterns give only 9 of the 16 components" in caplog.text
    assert fitted_components(16, 1000) == 16 and fitted_components(16, 9) == 9
    with pytest.raises(ValueError, match="no valid pattern"):
        fitted_components(16, 0)


def test_novelty_says_why_a_map_is_too_small_for_cross_validation():
    small = spatial_folds((3, 3), BENCHMARK["fold_grid"], BENCHMARK["guard"])
    reason = cross_validation_skipped(small[small >= 0], (3, 3), BENCHMARK)
    assert reason.startswith("R² not computed: 1 scored points in 1 spatial folds of the 3 x 3 map")
    assert "guard 1" in reason and f"needs {MIN_FOLD_POINTS} in each of two folds" in reason
    big = spatial_folds((12, 12), BENCHMARK["fold_grid"], BENCHMARK["guard"])
    assert cross_validation_skipped(big[big >= 0], (12, 12), BENCHMARK) is None


def test_saliency_without_novelty_shows_only_the_top_ranked():
    from latentebsd.saliency import choose_features

    ranking = pd.DataFrame({"feature": [3, 1, 0, 2]})
    novelty = pd.DataFrame({"variant": "v", "feature": [3, 1, 0, 2], "novelty": np.nan})
    assert choose_features(ranking, novelty, "v", 2) == [(3, "top ranked"), (1, "top ranked")]
    novelty["novelty"] = [0.1, 0.0, 0.5, 0.2]
    novelty = novelty.sort_values("novelty", ascending=False)
    assert choose_features(ranking, novelty, "v", 2)[2:] == [(0, "most novel"), (2, "most novel")]


# -- the main job on a real 3 x 3 map beside a simulated two-phase scan -----------------
def _main_job_config(data) -> dict:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["scans"] = {
        # the README's settings for a user's scan, nothing shrunk for its size
        "ni": {"path": str(data), "binning": 1, "background": "static", "phases": ["FCC"]},
        "duplex": {"simulate": {"microstructure": "wrought", "map_shape": [10, 12],
                                "materials": ["ferrite", "austenite"]},
                   "background": "none"},
    }
    config["simulation"]["wrought"] = {"grain_size": 4.0, "twin_fraction": 0.0, "n_scratches": 0}
    config["models"]["variants"] = {k: config["models"]["variants"][k] for k in ("vae16", "vae32")}
    config["training"]["epochs"] = 2
    return config


@pytest.mark.slow  # the whole main job through Snakemake: ~4-6 min on 2 cores
def test_the_main_job_runs_on_a_3x3_real_map_and_a_two_phase_scan(tmp_path):
    """Every output of the main job for kikuchipy's real 3 x 3 Ni map (a user's scan,
    h5ebsd) and a simulated ferrite + austenite scan; the skips are logged and titled;
    the two-phase scan's maps, .ang and Table 1 follow its phases."""
    import orix.io

    sys.path.insert(0, str(REPO / "benchmarks"))
    from save_nickel_small import save_nickel_small

    work = tmp_path / "work"
    work.mkdir()
    for name in ("workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    data = save_nickel_small(work / "data" / "ni.h5")
    (work / "my.yaml").write_text(yaml.safe_dump(_main_job_config(data), sort_keys=False))
    run = subprocess.run([sys.executable, "-m", "snakemake", "--cores", "2", "--resources", "gpu=1",
                          "--configfile", "my.yaml"], cwd=work, capture_output=True, text=True,
                         timeout=1500)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    results, logs = work / "results", work / "logs"
    for path in ("latent/pca16/ni.nc", "latent/nmf16/ni.nc", "benchmark/novelty/ni.png",
                 "benchmark/saliency/ni.png", "evaluation/table1.md", "evaluation/figures/ni_ipf.png",
                 "evaluation/figures/duplex_conventional.png", "index/original/duplex.ang",
                 "benchmark/detection_limits.md"):
        assert (results / path).stat().st_size > 0, path
    assert cube_attrs(results / "latent/pca16/ni.nc")["latent_dim"] == 9
    assert "9 valid patterns give only 9 of the 16 components" in \
        (logs / "benchmark/baseline/pca16/ni.log").read_text()
    novelty_log = (logs / "benchmark/novelty/ni.log").read_text()
    assert "R² not computed: 1 scored points" in novelty_log
    assert np.isnan(pd.read_csv(results / "benchmark/novelty/ni.csv")["novelty"]).all()
    assert "fewer than benchmark.saliency_points" in (logs / "benchmark/saliency/ni.log").read_text()
    # the two-phase scan
    with h5py.File(results / "evaluation/conventional/duplex.h5") as f:
        phase_map = f["phase_id"][()]
    with h5py.File(results / "simulated/duplex_truth.h5") as f:
        truth = f["truth/phase_id"][()]
    assert np.mean(phase_map == truth) >= 0.98 and 0 < truth.mean() < 1
    xmap = orix.io.load(results / "index/original/duplex.ang")
    assert {p.name for i, p in xmap.phases_in_data if i >= 0} == {"ferrite", "austenite"}
    xmap_ni = orix.io.load(results / "index/original/ni.ang")
    assert {p.name for i, p in xmap_ni.phases_in_data if i >= 0} == {"FCC"}
    table = (results / "evaluation/table1.md").read_text()
    assert "counts as not agreeing" in table
    assert "wrong_phase_n" in pd.read_csv(results / "evaluation/table1.csv").columns
