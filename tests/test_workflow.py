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


def job_counts(dry_run_output: str) -> dict[str, int]:
    """``rule -> jobs`` from the job-stats table of ``snakemake -n --quiet rules``."""
    counts = {}
    for line in dry_run_output.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts


def test_a_scan_over_shard_patterns_runs_as_shard_jobs_and_gathers(tmp_path):
    run = snakemake("-n", "--quiet", "rules", cwd=workflow_copy(tmp_path, tiny_config()))
    assert run.returncode == 0, run.stderr + run.stdout
    jobs = job_counts(run.stdout + run.stderr)
    variants, shards = 3, 2  # am: 2 shards; wrought: whole
    assert jobs["encode"] == jobs["decode"] == jobs["evaluate_metrics"] == variants
    assert jobs["encode_shard"] == jobs["decode_shard"] == jobs["metrics_shard"] == variants * shards
    assert jobs["gather_latent"] == jobs["gather_decoded"] == jobs["gather_metrics"] == variants
    assert jobs["index_scan"] == variants + 1  # original + one per variant
    assert jobs["index_shard"] == (variants + 1) * shards and jobs["gather_index"] == variants + 1


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
    """The default study shrunk to seconds: 3 x 5 (wrought) and 4 x 5 (am) maps of
    60 x 60 patterns (30 x 30 after binning), three variants, one epoch. ``am`` is over
    ``shard_patterns`` = 15: its per-scan stages run as two shard jobs (rows 0:3, 3:4)
    and a gather; ``wrought`` runs whole."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["scans"]["wrought"]["simulate"]["map_shape"] = [3, 5]
    config["scans"]["am"]["simulate"]["map_shape"] = [4, 5]
    config["shard_patterns"] = 15
    config["maps"]["chunk_size"] = 5  # 1-row blocks, so shards may be any whole rows
    config["evaluation"]["chunk_size"] = 5
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
    for log in ("simulate/wrought", "preprocess/am", "sample", "train/vae16",
                "encode/vae16/am/shard_1", "index/original/am/shard_0", "index/original/am_gather"):
        assert (work / "logs" / f"{log}.log").exists(), log
    # am went through shards: the gathered files are whole, the shard files are gone
    with h5py.File(work / "results/index/original/am.h5") as f:
        assert f["phase"].shape == (20,) and f["geometry"].attrs["n_rows"] == 4
    with h5py.File(work / "results/evaluation/metrics/vae16/am.h5") as f:
        assert f["row"][-1] == 3 and len(f["indexed"]) == 20
    assert not [p for p in (work / "results").rglob("*") if "shards" in p.parts and p.is_file()]


def test_job_device_uses_cuda_only_for_a_job_given_a_gpu():
    import torch

    from latentebsd.workflow import job_device

    assert job_device(0) == job_device(None) == "cpu"
    assert job_device(1) == ("cuda" if torch.cuda.is_available() else "cpu")
