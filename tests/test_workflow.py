"""The Snakemake workflow itself: DAG, lint, and a tiny end-to-end run."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO
from latentebsd.config import validate_config
from latentebsd.plan import make_plan

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


def test_the_quick_overlay_runs_every_job_of_the_default(tmp_path):
    """config/quick.yaml promises every output of the default on smaller maps: the same
    jobs, rule for rule, and only sizes changed."""
    runs = {}
    for name, extra in (("default", ()), ("quick", ("--configfile", "config/config.yaml",
                                                    "config/quick.yaml"))):
        config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
        (tmp_path / name).mkdir()
        run = snakemake("-n", "--quiet", "rules", *extra,
                        cwd=workflow_copy(tmp_path / name, config))
        assert run.returncode == 0, run.stderr + run.stdout
        runs[name] = job_counts(run.stdout + run.stderr)
    # the default's seed replicates (4 models: vae16 and vae128 @seed1, @seed2) are the
    # only jobs quick leaves out: trained once, encoded / decoded / indexed / scored per scan
    per_model = {"train": 1, "encode": 2, "decode": 2, "index_scan": 2, "evaluate_metrics": 2}
    assert runs["quick"]["train"] == 8 and runs["default"]["train"] == 12
    assert set(runs["quick"]) == set(runs["default"])
    for rule, n in runs["default"].items():
        if rule == "total":
            continue
        assert runs["quick"][rule] == n - 4 * per_model.get(rule, 0), rule
    quick = yaml.safe_load((REPO / "config" / "quick.yaml").read_text())
    assert set(quick) <= {"scans", "sample", "training", "models"}, set(quick)
    assert quick.get("models", {}) in ({}, {"replicates": {"seeds": 1}})
    for scan in quick["scans"].values():
        assert set(scan) == {"simulate"} and set(scan["simulate"]) == {"map_shape"}


def test_the_gpu_overlay_is_the_default_at_the_paper_scale(tmp_path):
    """config/gpu.yaml: every job of the default, with the paper's network input,
    widths, batch and optimiser (our stabilisers beside them)."""
    from latentebsd.config import validate_config

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    run = snakemake("-n", "--quiet", "rules", "--configfile", "config/config.yaml", "config/gpu.yaml",
                    cwd=workflow_copy(tmp_path, config))
    assert run.returncode == 0, run.stderr + run.stdout
    assert job_counts(run.stdout + run.stderr)["train"] == 8 + 4  # and the seed replicates
    merged = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for key, value in yaml.safe_load((REPO / "config" / "gpu.yaml").read_text()).items():
        merged[key].update(value)
    training = validate_config(merged)["training"]
    assert merged["preprocess"]["binning"] == 1 and merged["simulation"]["pattern_shape"] == [120, 120]
    assert (training["batch_size"], training["learning_rate"], training["adam_betas"]) == (256, 1e-3, [0.9, 0.999])
    assert training["width_factor"] == 1.0 and training["max_base_channels"] is None
    assert training["base_channels"] is None and training["init"] == "glorot"
    assert training["kl_hold_epochs"] == training["kl_warmup_epochs"] == 0
    assert training["lr_warmup_steps"] > 0 and training["grad_clip_norm"] is not None


def test_a_scan_over_shard_patterns_runs_as_shard_jobs_and_gathers(tmp_path):
    run = snakemake("-n", "--quiet", "rules", cwd=workflow_copy(tmp_path, tiny_config()))
    assert run.returncode == 0, run.stderr + run.stdout
    jobs = job_counts(run.stdout + run.stderr)
    # + vae16@seed1, @seed2 (the default's replicates); am: 2 shards
    variants, shards = len(make_plan(validate_config(tiny_config())).model_specs), 2
    assert variants == 3 + 2
    assert jobs["encode"] == jobs["decode"] == jobs["evaluate_metrics"] == variants
    assert jobs["encode_shard"] == jobs["decode_shard"] == jobs["metrics_shard"] == variants * shards
    assert jobs["gather_latent"] == jobs["gather_decoded"] == jobs["gather_metrics"] == variants
    assert jobs["index_scan"] == variants + 1  # original + one per model
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
    for name in ("workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return tmp_path


def tiny_config() -> dict:
    """The default study shrunk to seconds: 3 x 5 (wrought), 4 x 5 (am) and 3 x 4
    (polycrystal, training only) maps of
    60 x 60 patterns (30 x 30 after binning), three variants, one epoch. ``am`` is over
    ``shard_patterns`` = 15: its per-scan stages run as two shard jobs (rows 0:3, 3:4)
    and a gather; ``wrought`` runs whole."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["scans"]["wrought"]["simulate"]["map_shape"] = [3, 5]
    config["scans"]["am"]["simulate"]["map_shape"] = [4, 5]
    config["scans"]["polycrystal"]["simulate"]["map_shape"] = [3, 4]  # role: train
    config["shard_patterns"] = 15
    config["maps"]["chunk_size"] = 5  # 1-row blocks, so shards may be any whole rows
    config["evaluation"]["chunk_size"] = 5
    config["simulation"]["pattern_shape"] = [60, 60]
    # the ideal detector: at 30 x 30 (60 binned by 2) the calibrated PC jitter and band
    # blur leave 69 % of the originals indexable (CI, 2026-12-05; 99.9 % at the default's
    # 60 x 60), and the end-to-end checks assume an indexable tiny study
    config["simulation"]["imperfections"].update(pc_jitter=0.0, band_blur=0.0)
    config["sample"]["patterns_per_scan"] = 10
    config["models"]["variants"] = {
        name: config["models"]["variants"][name] for name in ("vae16", "vae32", "betavae15")
    }
    # enough epochs (of 2 steps) that a kill can land mid-training, after a checkpoint
    config["training"].update(epochs=60, batch_size=8)
    config["maps"]["segmentation"]["n_clusters"] = 3
    # PCA / NMF of a 15-pattern scan; no guard band, or a 3 x 5 map keeps 3 pixels
    config["benchmark"] = {"components": 4, "guard": 0}
    return config


README_COMMAND = ("--cores", "2", "--resources", "gpu=1")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The tiny study run once through Snakemake, as the README runs it: the work
    directory, and a copy of its results (runs compared with it reuse the directory:
    the latent cubes and preprocessed scans record the absolute paths of their inputs)."""
    work = workflow_copy(tmp_path_factory.mktemp("study"), tiny_config())
    run = snakemake(*README_COMMAND, cwd=work, timeout=1200)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    saved = work.parent / "reference_results"
    shutil.copytree(work / "results", saved)
    shutil.copytree(work / "logs", work.parent / "reference_logs")
    return work, saved


@pytest.mark.slow
def test_main_job_runs_end_to_end(reference):
    """The whole DAG on two tiny scans, through Snakemake: every stage's outputs exist."""
    work, results = reference
    logs = work.parent / "reference_logs"
    with h5py.File(results / "sample/dataset.h5") as f:
        assert f["train"].shape == (24, 30, 30) and f["val"].shape == (6, 30, 30)
        assert np.abs(f["train"][()]).max() <= 1.0
        assert list(f.attrs["scans"]) == ["wrought", "am", "polycrystal"]
        # distinct simulated orientations trained on, counted from the ground truth
        source = f["train_source"][()]
        expected = 0
        for k, scan in enumerate(f.attrs["scans"]):
            with h5py.File(results / f"simulated/{scan}_truth.h5") as t:
                key = "grain_id" if scan == "am" else "domain_id"
                ids = t["truth"][key][()].ravel()
            expected += len(np.unique(ids[source[source[:, 0] == k, 1]]))
        assert f.attrs["distinct_orientations"] == expected > 3
    # role: train - sampled, never mapped, re-indexed or evaluated
    assert not [p for p in results.rglob("*polycrystal*")
                if not p.is_relative_to(results / "simulated")
                and not p.is_relative_to(results / "preprocessed")]
    for path in (
        "models/vae32/weights.pt",
        "models/losses_all.png",
        "latent/vae16/am.nc",
        "decoded/betavae15/wrought.up2",
        "index/original/am.ang",
        "evaluation/table1.md",
        "evaluation/figures/wrought_ipf.png",
        "benchmark/detection_limits.md",
        "benchmark/detection_limits.png",
    ):
        assert (results / path).stat().st_size > 0, path
    from latentebsd.benchmark import COLUMNS

    scored = pd.concat([pd.read_csv(results / f"benchmark/detection/{scan}.csv")
                        for scan in ("wrought", "am")])
    assert tuple(scored.columns) == COLUMNS
    assert (scored["method"] == "conventional").any()  # something was scored
    table = (results / "evaluation/table1.md").read_text()
    assert "VAE" in table and "16" in table and "32" in table
    # the numbers, not only the words (issue 26): Table 1 and the detection benchmark
    check_table1_csv(pd.read_csv(results / "evaluation/table1.csv"),
                     tiny_config()["models"]["variants"], n_patterns=3 * 5 + 4 * 5)
    check_detection_csv(pd.read_csv(results / "benchmark/detection.csv"), ["vae16", "vae32", "betavae15"],
                        scans={"wrought", "am"})
    for log in ("numba_warmup/simulate", "numba_warmup/index", "simulate/wrought", "preprocess/am",
                "sample", "train/vae16", "encode/vae16/am/shard_1", "index/original/am/shard_0",
                "index/original/am_gather"):
        assert (logs / f"{log}.log").exists(), log
    assert "torch device cpu" in (logs / "train/vae16.log").read_text()
    # am went through shards: the gathered files are whole, the shard files are gone
    with h5py.File(results / "index/original/am.h5") as f:
        assert f["phase"].shape == (20,) and f["geometry"].attrs["n_rows"] == 4
    with h5py.File(results / "evaluation/metrics/vae16/am.h5") as f:
        assert f["row"][-1] == 3 and len(f["indexed"]) == 20
    assert not [p for p in results.rglob("*") if "shards" in p.parts and p.is_file()]
    assert not (results / ".numba").exists() or not list((results / ".numba").iterdir())  # temp()


# -- what table1.csv and detection.csv must say (issue 26) --------------------------------
def _finite(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def check_table1_csv(frame: pd.DataFrame, variants: dict, n_patterns: int | None = None) -> None:
    """Assert what must hold in any run's ``table1.csv`` (:func:`latentebsd.table1.table1`
    written as ``run_table_rule`` writes it): every column; the originals indexed (the
    tiny study's 30 x 30 simulated patterns: 93 - 100 % per scan measured, a graded
    scan's damaged column may miss one); the blank-disc control indexed nowhere with a
    sharpness ratio < 0.2; every model's sharpness above the blank disc's (a decoder's
    output has more structure than a constant disc); quantiles ordered; ratios >= 0 (but
    Krieger-Lassen IQ's);
    agreeing <= indexed; the paper's values beside the models it has."""
    from latentebsd.io.metrics import METRICS
    from latentebsd.table1 import PAPER_TABLE1, TABLE_COLUMNS
    from latentebsd.variants import variant_key

    columns = ["variant", "Loss", "d", "loss", "beta", "n_patterns", "Indexed", "Indexed and agreeing",
               "Paper indexed", *[h for _, h, _ in TABLE_COLUMNS],
               *[f"Paper {h}" for _, h, _ in TABLE_COLUMNS],
               *[f"{m}_q{q}" for m in METRICS for q in (10, 50, 90)], *[f"{m}_n" for m in METRICS],
               "Original Sharpness", "Original IQ (PyEBSDIndex pq)", "Original CI (PyEBSDIndex cm)"]
    missing = [c for c in columns if c not in frame.columns]
    assert not missing, missing
    rows = frame.set_index("variant")
    assert list(frame["variant"])[:3] == ["original", "control_blank_disc", "control_mean_pattern"]
    assert set(rows.index) == {"original", "control_blank_disc", "control_mean_pattern", *variants}
    original, blank = rows.loc["original"], rows.loc["control_blank_disc"]
    if n_patterns is not None:
        assert original["n_patterns"] == n_patterns
        assert all(rows.loc[v, "n_patterns"] == n_patterns for v in variants)
    assert original["Indexed"] >= 85.0, original["Indexed"]
    assert str(original["Original Sharpness"]).count("/") == 2
    assert blank["Indexed"] <= 1.0 and blank["sharpness_ratio_q50"] < 0.2, blank
    for name, row in rows.drop(index="original").iterrows():
        assert 0.0 <= _finite(row["Indexed and agreeing"]) <= row["Indexed"] <= 100.0, name
        for metric in METRICS:
            q = [_finite(row[f"{metric}_q{p}"]) for p in (10, 50, 90)]
            if all(np.isfinite(q)):
                assert q[0] <= q[1] <= q[2], (name, metric, q)
                # Krieger-Lassen IQ (1 - inertia / its maximum) goes negative on a noisy
                # 30 x 30 window, and so does its ratio; every other metric is >= 0
                assert metric == "iq_kp_ratio" or q[0] >= 0.0, (name, metric, q)
                assert row[f"{metric}_n"] > 0
    for name in variants:
        row = rows.loc[name]
        assert row["sharpness_ratio_q50"] > blank["sharpness_ratio_q50"], (name, row["sharpness_ratio_q50"])
        assert row["Indexed"] >= blank["Indexed"]
        paper = PAPER_TABLE1.get(variant_key(variants[name]))
        assert (row["Paper indexed"] == paper["indexed"]) if paper else pd.isna(row["Paper indexed"])


def check_detection_csv(frame: pd.DataFrame, latent: list, scans: set) -> None:
    """Assert what must hold in any run's ``detection.csv`` (``run_summary_rule``): every
    column; whole held-out folds only; AUCs (and their fold means) in [0, 1], Spearman's
    rho in [-1, 1]; both modes; conventional EBSD and every latent variant scored;
    ``folds`` counts the fold scores it summarises and ``mean`` is their mean."""
    from latentebsd.benchmark import COLUMNS

    missing = [c for c in (*COLUMNS, "mean", "sd", "folds") if c not in frame.columns]
    assert not missing, missing
    assert len(frame) > 0 and set(frame["scan"]) <= scans and (frame["level"] < 0).all()
    assert set(frame["mode"]) == {"single", "probe"}
    assert {"conventional", *latent} <= set(frame["method"])
    assert set(frame["metric"]) <= {"roc_auc", "spearman"}
    auc = frame[frame["metric"] == "roc_auc"]
    rho = frame[frame["metric"] == "spearman"]
    assert frame["score"].notna().any()
    for col in ("score", "mean"):  # NaN (a constant prediction's rho) is no score
        a, r = auc[col].dropna(), rho[col].dropna()
        assert a.between(0.0, 1.0).all(), a[~a.between(0.0, 1.0)]
        assert r.between(-1.0, 1.0).all(), r[~r.between(-1.0, 1.0)]
    keys = ["scan", "class", "metric", "method", "family", "mode"]
    counts = frame.groupby(keys)["score"].transform("count")
    assert (counts == frame["folds"]).all()
    means = frame.groupby(keys)["score"].transform("mean")
    np.testing.assert_allclose(means, frame["mean"], atol=1e-5)


def test_the_csv_checks_pass_the_writers_output_and_fail_a_wrong_table(tmp_path):
    """The end-to-end test's checks on table1.csv and detection.csv, run on files the
    real writers (``run_table_rule``'s CSV, ``run_summary_rule``) write from synthetic
    metrics and fold scores - and a table whose blank disc indexes fails them."""
    from latentebsd.benchmark import COLUMNS, run_summary_rule
    from latentebsd.io.metrics import METRICS
    from latentebsd.table1 import table1

    variants = {"vae16": {"loss": "vae", "latent_dim": 16},
                "betavae15": {"loss": "beta_vae", "latent_dim": 128, "beta": 15}}
    rng = np.random.default_rng(0)

    def metrics(level: float, indexed: float, n: int = 20) -> dict:
        m = {k: rng.uniform(0.8, 1.2, n) * level for k in METRICS}
        m["misorientation_deg"] = rng.uniform(0.0, 0.5, n)
        m.update(indexed=np.arange(n) < indexed * n, indexed_original=np.ones(n, bool),
                 valid=np.ones(n, bool), wrong_phase=np.zeros(n, bool))
        return m

    fields = {"cm": 0.5, "pq": 1.0, "sharpness": 0.02, "iq_kp": 0.3, "nmatch": 8, "fit": 0.5}
    originals = [{**{k: np.full(20, v) for k, v in fields.items()}, "valid": np.ones(20, bool)}]
    frame = table1({"vae16": [metrics(0.5, 0.9)], "betavae15": [metrics(0.3, 0.6)]}, variants,
                   controls={"blank_disc": [metrics(0.01, 0.0)], "mean_pattern": [metrics(0.2, 0.1)]},
                   originals=originals)
    frame.to_csv(tmp_path / "table1.csv", index=False)  # as run_table_rule writes it
    check_table1_csv(pd.read_csv(tmp_path / "table1.csv"), variants, n_patterns=20)
    wrong = table1({"vae16": [metrics(0.5, 0.9)], "betavae15": [metrics(0.3, 0.6)]}, variants,
                   controls={"blank_disc": [metrics(0.01, 0.5)], "mean_pattern": [metrics(0.2, 0.1)]},
                   originals=originals)
    wrong.to_csv(tmp_path / "wrong.csv", index=False)
    with pytest.raises(AssertionError):
        check_table1_csv(pd.read_csv(tmp_path / "wrong.csv"), variants, n_patterns=20)

    rows = []
    for scan in ("wrought", "am"):
        for method, family in (("conventional", "conventional"), ("vae16", "latent"),
                               ("betavae15", "latent")):
            for fold in range(4):
                for mode in ("single", "probe"):
                    for cls, kind, metric in (("scratches", "mask", "roc_auc"),
                                              ("dislocation_density", "continuous", "spearman")):
                        rows.append({"scan": scan, "class": cls, "kind": kind, "metric": metric,
                                     "method": method, "family": family, "fold": fold, "n_train": 30,
                                     "level": -1, "n_test": 10, "n_test_positive": 3, "n_train_positive": 9,
                                     "strength": np.nan, "parameter": "", "value": np.nan, "mode": mode,
                                     "chosen": "+map 0",
                                     "score": rng.uniform(0.4, 1.0) if kind == "mask" else rng.uniform(-1, 1)})
    per_scan = []
    for scan in ("wrought", "am"):
        part = pd.DataFrame([r for r in rows if r["scan"] == scan], columns=COLUMNS)
        part.to_csv(tmp_path / f"{scan}.csv", index=False)
        per_scan.append(str(tmp_path / f"{scan}.csv"))
    out = tmp_path / "detection.csv"
    run_summary_rule(per_scan, str(out), str(tmp_path / "d.md"), str(tmp_path / "d.html"),
                     str(tmp_path / "d.png"), ["vae16", "betavae15"], None)
    detection = pd.read_csv(out)
    check_detection_csv(detection, ["vae16", "betavae15"], {"wrought", "am"})
    detection.loc[0, "score"] = 1.5 if detection.loc[0, "metric"] == "roc_auc" else -1.5
    with pytest.raises(AssertionError):
        check_detection_csv(detection, ["vae16", "betavae15"], {"wrought", "am"})


@pytest.mark.slow
def test_the_report_of_the_finished_study_holds_every_figure(reference, tmp_path):
    """`snakemake --report` on the finished tiny study (the catalog's `report: true`):
    a self-contained HTML file with the captions' categories and the figures."""
    work, _ = reference
    report = tmp_path / "report.html"
    run = snakemake("--report", str(report), cwd=work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    text = report.read_text()
    for expected in ("0. Training", "3. Conventional EBSD maps", "6. Detection benchmark",
                     "losses_all.png", "table1"):
        assert expected in text, expected
    assert report.stat().st_size > 200_000  # the figures are embedded


def _output_of(log: Path, work: Path) -> Path:
    """The output whose absence means the job of ``log`` has not finished."""
    parts = log.relative_to(work / "logs").with_suffix("").parts
    stage = parts[0]
    if parts[-1].startswith("shard_"):  # logs/<stage>/<a>/<scan>/shard_<k>.log
        kind = {"encode": ("latent", "nc"), "index": ("index", "h5")}[stage]
        return work / "results/shards" / kind[0] / parts[1] / parts[2] / f"{parts[3][6:]}.{kind[1]}"
    if stage == "train":
        return work / "results/models" / parts[1] / "weights.pt"
    if stage == "encode":
        return work / "results/latent" / parts[1] / f"{parts[2].removesuffix('_gather')}.nc"
    return work / "results/index" / parts[1] / f"{parts[2].removesuffix('_gather')}.h5"


def kill_during(work: Path, stage: str, timeout: float = 900) -> bool:
    """Start the README command; SIGKILL its whole process group as soon as a job of
    ``stage`` (train, encode, index) is running - its log written by this run, its
    output missing (train: and a checkpoint on disk, so that the rerun resumes).
    Returns whether a job was caught unfinished; False if the run ended first."""
    start = time.time()
    proc = subprocess.Popen([*SNAKEMAKE, *README_COMMAND], cwd=work, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while proc.poll() is None and time.time() < start + timeout:
            for log in (work / "logs" / stage).rglob("*.log"):
                out = _output_of(log, work)
                running = log.stat().st_mtime >= start and not out.exists()
                if running and stage == "train":
                    running = (work / "results/models" / log.stem / "checkpoint.pt").exists()
                if running:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    return not out.exists()
            time.sleep(0.005)
        return False
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.slow
def test_a_run_killed_in_train_encode_and_index_reruns_to_identical_files(reference):
    """SIGKILL of the whole run (the Snakemake process group) once during training, once
    during encoding, once during Hough indexing; the README command, rerun, finishes
    the study with every output byte-identical to the uninterrupted run (model weights
    and figures included) and no half-written file left."""
    work, reference_results = reference
    for name in ("results", "logs", ".snakemake", "benchmarks"):
        shutil.rmtree(work / name, ignore_errors=True)
    caught = {}
    for stage in ("train", "encode", "index"):
        for _ in range(6):  # a job that finishes within the poll misses: the next one
            if kill_during(work, stage):
                caught[stage] = True
                break
    assert caught == {"train": True, "encode": True, "index": True}, caught
    final = snakemake(*README_COMMAND, cwd=work, timeout=1200)
    assert final.returncode == 0, final.stdout[-3000:] + final.stderr[-3000:]
    assert "resuming" in "".join(p.read_text() for p in (work / "logs/train").glob("*.log"))
    sys.path.insert(0, str(REPO / "benchmarks"))
    from compare_results import compare

    n, problems = compare(reference_results, work / "results", figures=True)
    assert n > 80 and not problems, problems
    assert not list((work / "results").rglob(".*.partial*"))


def test_gpu_slots_on_clusters_shared_gpus_on_workstations(tmp_path, monkeypatch):
    from latentebsd.workflow import gpu_request, gpu_share

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver = (str(tmp_path / "nvidia0"),)
    assert gpu_request(local=True) == 0 and gpu_request(local=False) == 1  # cluster: own GPU
    assert gpu_share(local=True, device_files=driver) == 0  # a CPU-only machine
    (tmp_path / "nvidia0").touch()
    assert gpu_share(local=True, device_files=driver) == 1  # a GPU workstation: shared
    assert gpu_share(local=False, device_files=driver) == 0  # cluster jobs have their own
    assert gpu_share(local=True, forced_cpu=True, device_files=driver) == 0  # --resources gpu=0
    for hidden in ("", "-1"):
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", hidden)
        assert gpu_share(local=True, device_files=driver) == 0


@pytest.mark.parametrize("driver, resources, shared", [
    (False, ["--resources", "gpu=1"], 0),  # a CPU-only laptop: side by side on the CPU
    (True, ["--resources", "gpu=1"], 1),  # a GPU workstation: several share the GPU
    (True, ["--resources", "gpu=0"], 0),  # the CPU asked for
])
def test_local_network_jobs_never_wait_for_one_gpu_slot(tmp_path, driver, resources, shared):
    """With ``--resources gpu=1`` (the README's command) a GPU slot per train / encode /
    decode job would run them one at a time: on a CPU-only machine while the other cores
    idle, on a GPU machine while the GPU idles. Locally they ask for no slot; on a
    machine with a GPU driver they share it (``gpu_shared=1``)."""
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    fake = tmp_path / "nvidia0"
    fake.touch()
    env = {**os.environ, "LATENTEBSD_GPU_DEVICE_FILES": str(fake) if driver else str(tmp_path / "none")}
    env.pop("CUDA_VISIBLE_DEVICES", None)
    out = subprocess.run([*SNAKEMAKE, "-n", *resources], cwd=workflow_copy(_mkdir(tmp_path / "w"), config),
                         capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    text = out.stdout + out.stderr
    for rule in ("train", "encode", "decode"):
        block = text.split(f"rule {rule}:\n", 1)[1].split("\n\n", 1)[0]
        assert "gpu=0" in block and f"gpu_shared={shared}" in block, block


def test_gpu_admission_holds_at_most_n_slots(tmp_path, monkeypatch):
    """Shared GPU jobs wait for one of n slots (flock): two processes with n = 1 run one
    after the other; the slot count follows the GPU's memory or the environment."""
    from latentebsd.workflow import GPU_JOBS_ENV, gpu_jobs

    monkeypatch.delenv(GPU_JOBS_ENV, raising=False)
    assert (gpu_jobs(141 * 10**9), gpu_jobs(24 * 2**30), gpu_jobs(8 * 2**30)) == (21, 4, 1)
    monkeypatch.setenv(GPU_JOBS_ENV, "3")
    assert gpu_jobs(8 * 2**30) == 3
    monkeypatch.setenv(GPU_JOBS_ENV, "zero")
    with pytest.raises(ValueError, match="LATENTEBSD_GPU_JOBS"):
        gpu_jobs(8 * 2**30)
    code = ("import sys, time; from latentebsd.workflow import gpu_admission; "
            f"k = gpu_admission(1, poll_s=0.05, lock_dir={str(tmp_path)!r}); "
            "print(time.time()); time.sleep(1.0); print(time.time())")
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    spans = sorted(tuple(map(float, p.communicate(timeout=60)[0].split())) for p in procs)
    assert spans[1][0] >= spans[0][1] - 0.05  # the second started after the first ended


def test_job_device_uses_cuda_only_for_a_job_given_a_gpu(monkeypatch):
    import torch

    from latentebsd.workflow import job_device

    for var in ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "LATENTEBSD_GPU_FALLBACK"):
        monkeypatch.delenv(var, raising=False)
    assert job_device(0) == job_device(None) == "cpu"
    assert job_device(1) == ("cuda" if torch.cuda.is_available() else "cpu")


def test_a_gpu_job_never_runs_on_the_cpu_in_silence(monkeypatch, caplog):
    import torch

    from latentebsd.workflow import job_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for var in ("SLURM_JOB_GPUS", "CUDA_VISIBLE_DEVICES", "LATENTEBSD_GPU_FALLBACK"):
        monkeypatch.delenv(var, raising=False)
    with caplog.at_level("INFO", logger="latentebsd.workflow"):
        assert job_device(1, "train") == "cpu"  # a workstation without a GPU: a warning
    assert "train: asked for a GPU" in caplog.text and "CUDA build" in caplog.text
    assert "train: torch device cpu (job resources gpu=1, gpu_shared=0)" in caplog.text
    monkeypatch.setenv("SLURM_JOB_GPUS", "0")  # SLURM allocated one that PyTorch cannot use
    with pytest.raises(RuntimeError, match="allocated GPU.*LATENTEBSD_GPU_FALLBACK=cpu"):
        job_device(1, "train")
    monkeypatch.delenv("SLURM_JOB_GPUS")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(RuntimeError, match="allocated GPU"):
        job_device(1, "encode")
    monkeypatch.setenv("LATENTEBSD_GPU_FALLBACK", "cpu")  # a test cluster without real GPUs
    assert job_device(1, "encode") == "cpu"
    assert job_device(0, "decode") == "cpu"  # no GPU asked for: nothing to check


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_the_readme_own_scan_block_plans_a_study_as_written(tmp_path):
    """The README's own-scan block, saved as `my.yaml` with only its pattern file's path
    pointed at a real (tiny) UP2, plans the whole study through `snakemake -n
    --configfile my.yaml` - what a new user runs first."""
    from conftest import band_patterns
    from latentebsd.io.patterns import write_up2

    text = (REPO / "README.md").read_text()
    own = text[text.index("## Your own scans"):]
    block = own[own.index("```yaml\n") + len("```yaml\n"):]
    block = yaml.safe_load(block[:block.index("```")])
    work = workflow_copy(tmp_path, yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    (scan,) = block["scans"]
    shape = (24, 24)
    write_up2(work / "mine.up2", [band_patterns(12, shape)], (3, 4), shape, 1.0)
    block["scans"][scan]["path"] = "mine.up2"
    (work / "my.yaml").write_text(yaml.safe_dump(block, sort_keys=False))
    run = snakemake("-n", "--quiet", "rules", "--configfile", "my.yaml", cwd=work)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    jobs = job_counts(run.stdout + run.stderr)
    assert jobs["train"] == len(block["models"]["variants"]) and "simulate_scan" not in jobs, jobs
    assert jobs["index_scan"] >= 1 + len(block["models"]["variants"]), jobs
