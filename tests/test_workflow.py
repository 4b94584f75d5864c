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


def test_dry_run_of_the_default_config_shows_the_whole_dag():
    run = snakemake("-n", "--quiet", "rules")
    assert run.returncode == 0, run.stderr + run.stdout
    out = run.stdout + run.stderr
    for rule in ("simulate_scan", "preprocess", "sample", "train"):
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
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path


@pytest.mark.slow
def test_main_job_runs_to_the_training_sample(tmp_path):
    """simulate -> preprocess -> sample on two tiny scans, through Snakemake."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for scan in config["scans"].values():
        scan["simulate"]["map_shape"] = [4, 5]
    config["sample"]["patterns_per_scan"] = 10
    work = workflow_copy(tmp_path, config)
    run = snakemake("--cores", "2", "results/sample/dataset.h5", cwd=work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    with h5py.File(work / "results/sample/dataset.h5") as f:
        assert f["train"].shape == (16, 60, 60) and f["val"].shape == (4, 60, 60)
        assert np.abs(f["train"][()]).max() <= 1.0
        assert list(f.attrs["scans"]) == ["wrought", "am"]
    for log in ("simulate/wrought", "preprocess/am", "sample"):
        assert (work / "logs" / f"{log}.log").exists()
