"""The Snakemake workflow itself: DAG, lint, and a tiny end-to-end run."""

from __future__ import annotations

import shutil
import subprocess
import sys

import h5py
import numpy as np
import pytest
import yaml

from conftest import REPO

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def snakemake(*args: str, cwd=REPO, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout)


def test_dry_run_of_the_default_config_shows_the_whole_dag(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    run = snakemake("-n", "--quiet", "rules", cwd=workflow_copy(tmp_path, config))
    assert run.returncode == 0, run.stderr + run.stdout
    out = run.stdout + run.stderr
    for rule in ("simulate_scan", "preprocess", "sample", "train", "encode", "feature_maps",
                 "decode", "index_scan", "evaluate_table1", "conventional_maps"):
        assert rule in out, f"rule {rule} missing from the dry run:\n{out}"


def test_lint_is_clean():
    run = snakemake("--lint")
    assert run.returncode == 0, run.stdout + run.stderr


def test_config_typo_stops_the_workflow_with_the_key_named(tmp_path):
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["preprocess"]["binnig"] = 2
    bad = tmp_path / "typo.yaml"
    bad.write_text(yaml.safe_dump(config))
    run = snakemake("-n", "--configfile", str(bad))
    assert run.returncode != 0
    assert "config key preprocess.binnig: unknown key" in run.stdout + run.stderr


def workflow_copy(tmp_path, config: dict):
    """The workflow's files in a scratch directory, with ``config`` as its config."""
    for name in ("Snakefile", "rules", "scripts", "config", "envs"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def tiny_config() -> dict:
    """The default study shrunk to seconds: 4 x 5 maps of 60 x 60 patterns (30 x 30 after
    binning), three variants, one epoch."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for scan in config["scans"].values():
        scan["simulate"]["map_shape"] = [4, 5]
    config["simulation"]["pattern_shape"] = [60, 60]
    config["sample"]["patterns_per_scan"] = 10
    config["models"]["variants"] = {
        name: config["models"]["variants"][name] for name in ("vae16", "vae32", "betavae15")
    }
    config["training"].update(epochs=1, batch_size=8)
    config["maps"]["segmentation"]["n_clusters"] = 3
    return config


@pytest.mark.slow
def test_main_job_runs_end_to_end(tmp_path):
    """The whole DAG on two tiny scans, through Snakemake: every stage's outputs exist."""
    work = workflow_copy(tmp_path, tiny_config())
    run = snakemake("--cores", "2", "--resources", "gpu=1", cwd=work, timeout=900)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    with h5py.File(work / "results/sample/dataset.h5") as f:
        assert f["train"].shape == (16, 30, 30) and f["val"].shape == (4, 30, 30)
        assert np.abs(f["train"][()]).max() <= 1.0
        assert list(f.attrs["scans"]) == ["wrought", "am"]
    for path in (
        "results/models/vae32/weights.pt",
        "results/models/losses_all.png",
        "results/latent/vae16/am.nc",
        "results/decoded/betavae15/wrought.up2",
        "results/index/original/am.ang",
        "results/evaluation/table1.md",
        "results/evaluation/figures/wrought_ipf.png",
    ):
        assert (work / path).stat().st_size > 0, path
    table = (work / "results/evaluation/table1.md").read_text()
    assert "VAE" in table and "16" in table and "32" in table
    for log in ("simulate/wrought", "preprocess/am", "sample", "train/vae16"):
        assert (work / "logs" / f"{log}.log").exists()
