"""Deployment: the workflow used the way the Snakemake workflow catalog deploys it -
`snakedeploy deploy-workflow`, a `module` inside a bigger workflow, a pinned release -
and the checks that make that safe (installed package version, default config vs.
--config / --configfile, clearing a killed run only in the top-level local run)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
import yaml

from conftest import REPO
from test_workflow import SNAKEMAKE, job_counts, tiny_config, workflow_copy
from latentebsd.config import validate_config
from latentebsd.plan import make_plan


def run(*args: str, cwd: Path, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    full = {**os.environ, **(env or {})}
    return subprocess.run([*SNAKEMAKE, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full)


def snakefile_version() -> str:
    return re.search(r'^LATENTEBSD_VERSION = "([^"]+)"', (REPO / "workflow" / "Snakefile").read_text(), re.M)[1]


# ------------------------------------------------------------------- versions, pins


def test_workflow_package_and_environment_name_one_version():
    """The Snakefile's LATENTEBSD_VERSION (what the workflow checks at parse time),
    pyproject's version (what pip installs), latentebsd.__version__ (what is checked)
    and the tag the conda environment installs the package from are one version."""
    import latentebsd

    version = snakefile_version()
    assert tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"] == version
    assert latentebsd.__version__ == version
    env = (REPO / "workflow" / "envs" / "latentebsd.yaml").read_text()
    assert re.search(rf"latentebsd @ git\+https://\S+@v{re.escape(version)}$", env, re.M), env


def test_a_different_or_missing_package_stops_the_run_naming_both_versions(tmp_path):
    wrong = tmp_path / "wrong" / "latentebsd"
    wrong.mkdir(parents=True)
    (wrong / "__init__.py").write_text('__version__ = "0.0.1"\n')
    result = run("-n", cwd=REPO, env={"PYTHONPATH": str(wrong.parent)})
    out = result.stdout + result.stderr
    assert result.returncode != 0
    assert f"workflow is version {snakefile_version()}" in out and "package is version 0.0.1" in out, out
    assert f"pip install {REPO}" in out, out  # a clone: install the package beside it

    missing = tmp_path / "missing" / "latentebsd"
    missing.mkdir(parents=True)
    (missing / "__init__.py").write_text('raise ImportError("No module named latentebsd")\n')
    result = run("-n", cwd=REPO, env={"PYTHONPATH": str(missing.parent)})
    out = result.stdout + result.stderr
    assert result.returncode != 0 and "which is not installed" in out, out


def test_the_conda_environment_is_pinned_to_the_lock_and_has_no_relative_path():
    """envs/latentebsd.yaml: Snakemake builds it from a copy under .snakemake/conda, so
    a path (``-e ..``) would point at the wrong directory; its pip pins are those of
    requirements-lock.txt (those of the package itself, without the tests'), as
    .ci/lock.py writes both."""
    env = yaml.safe_load((REPO / "workflow" / "envs" / "latentebsd.yaml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert not [p for p in pip if p.startswith(("-e", ".", "/", "file:"))], pip
    lock = {line.split("==")[0]: line for line in (REPO / "requirements-lock.txt").read_text().splitlines()
            if line and not line.startswith("#")}
    pinned = {p.split("==")[0]: p for p in pip if "==" in p}
    assert pinned.items() <= lock.items()  # the lock adds the tests' and SLURM's packages
    assert "torch" in pinned and "snakemake" in pinned and "pytest" in lock and "pytest" not in pinned
    assert all(re.fullmatch(r"[a-z0-9-]+==[0-9][\w.]*", line) for line in lock.values()), lock


def test_snakemake_files_are_snakefmt_clean():
    """The catalog's formatting check: `snakefmt --check .` (2.1.0, the [test] extra) on
    the Snakefile and rules/*.smk."""
    pytest.importorskip("snakefmt")
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "."], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr + "\n(run: snakefmt .)"


# ------------------------------------------------------------------------- config


def test_config_overrides_the_default_and_a_configfile_replaces_it(tmp_path):
    """No --configfile: the embedded default runs, --config overriding single keys (as
    Snakemake's `configfile:` directive). A --configfile replaces the default: none of
    its simulated scans run beside the user's one."""
    work = workflow_copy(tmp_path, yaml.safe_load((REPO / "config" / "config.yaml").read_text()))
    result = run("-n", "--quiet", "rules", "--config", "seed=7", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    assert job_counts(result.stdout + result.stderr)["simulate_scan"] == 3
    bad = run("-n", "--config", "seed=-1", cwd=work)  # reaches validation: merged, not ignored
    assert bad.returncode != 0 and "config key seed" in bad.stdout + bad.stderr

    own = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    own["scans"] = {"mine": own["scans"]["wrought"]}
    (work / "mine.yaml").write_text(yaml.safe_dump(own))
    result = run("-n", "--quiet", "rules", "--configfile", "mine.yaml", "--config", "seed=7", cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    jobs = job_counts(result.stdout + result.stderr)
    assert jobs["simulate_scan"] == 1 and jobs["preprocess"] == 1, jobs


# ----------------------------------------------------------- clearing a killed run


def _fake_losses(work: Path, variants) -> None:
    from latentebsd.train import CSV_COLUMNS, _loss_frame

    n = len(CSV_COLUMNS) - 5
    frame = _loss_frame([np.array([[8, *np.linspace(1, 0.5, n)]] * 4)],
                        [[4, 1, "train", 32, *[0.5] * n], [4, 1, "val", 8, *[0.6] * n]])
    for v in variants:
        (work / "results/models" / v).mkdir(parents=True, exist_ok=True)
        frame.to_csv(work / "results/models" / v / "losses.csv", index=False)


def test_a_cluster_job_leaves_other_jobs_partial_files_and_locks_alone(tmp_path):
    """Snakemake inside a cluster job (as the SLURM jobstep and every remote executor
    start it: --mode remote --nolock --no-hooks) runs its job and touches neither the
    run's locks nor the half-written files of other jobs, which may be running on other
    nodes (flock there proves nothing). The top-level local run clears both."""
    config = tiny_config()
    work = workflow_copy(tmp_path, config)
    _fake_losses(work, config["models"]["variants"])
    lock = work / ".snakemake/locks/0.input.lock"
    partial = work / "results/models/vae16/.weights.partial.pt"
    lock.parent.mkdir(parents=True)
    lock.touch()
    partial.touch()
    target = "results/models/losses_all.png"
    job = run(target, "--mode", "remote", "--nolock", "--no-hooks", "--force", "--cores", "1",
              "--allowed-rules", "plot_losses", cwd=work)
    assert job.returncode == 0, job.stdout[-3000:] + job.stderr[-3000:]
    assert (work / target).exists() and lock.exists() and partial.exists()

    top = run(target, "--force", "--cores", "1", "--allowed-rules", "plot_losses", cwd=work)
    assert top.returncode == 0, top.stdout[-3000:] + top.stderr[-3000:]
    assert not lock.exists() and not partial.exists()
    assert "removed 1 half-written file(s)" in top.stderr


def test_clearing_needs_the_top_level_run_and_the_local_executor(tmp_path, monkeypatch):
    import latentebsd.workflow as wf

    monkeypatch.setattr(wf, "_claim", None)
    (tmp_path / ".snakemake/locks").mkdir(parents=True)
    (tmp_path / ".snakemake/locks/0.output.lock").touch()
    partial = tmp_path / "results/a/.b.partial.h5"
    partial.parent.mkdir(parents=True)
    partial.touch()
    assert not wf.claim_workdir(tmp_path, main=False)  # a job, or a module's host
    assert wf.clear_partials(tmp_path) == 0 and partial.exists()
    assert (tmp_path / ".snakemake/locks/0.output.lock").exists()
    try:
        assert wf.claim_workdir(tmp_path, main=True)
        assert not (tmp_path / ".snakemake/locks/0.output.lock").exists()
        assert wf.clear_partials(tmp_path, local=False) == 0 and partial.exists()  # cluster
        assert wf.clear_partials(tmp_path, local=True) == 1 and not partial.exists()
    finally:
        wf._claim.close()
        monkeypatch.setattr(wf, "_claim", None)


# --------------------------------------------------------------- module, snakedeploy


HOST_SNAKEFILE = """\
configfile: "host.yaml"


module latentebsd:
    snakefile:
        "{snakefile}"
    config:
        config["latentebsd"]
    prefix:
        "studies/ebsd"


use rule * from latentebsd as latentebsd_*


rule all:
    input:
        rules.latentebsd_all.input,
    default_target: True
"""


def snapshot(root: Path, skip: tuple[str, ...]) -> dict[str, float]:
    return {str(p.relative_to(root)): p.stat().st_mtime for p in root.rglob("*")
            if p.is_file() and not p.relative_to(root).parts[0] in skip}


@pytest.mark.slow
def test_a_host_workflow_runs_latentebsd_as_a_module_under_its_prefix(tmp_path):
    """A bigger workflow `module`s latentebsd with its config section and a prefix: the
    tiny study runs, every output, log and benchmark lands under the prefix, and
    nothing of the host outside it is written or deleted (a half-written file of the
    host's own included)."""
    host = tmp_path / "host"
    host.mkdir()
    (host / "Snakefile").write_text(HOST_SNAKEFILE.format(snakefile=REPO / "workflow" / "Snakefile"))
    (host / "host.yaml").write_text(yaml.safe_dump({"latentebsd": tiny_config(), "other": 1}))
    (host / "results/other").mkdir(parents=True)
    (host / "results/other/.table.partial.csv").write_text("the host's own job, running")
    (host / "data.txt").write_text("the host's data")
    before = snapshot(host, skip=(".snakemake", "studies"))

    result = run("--cores", "2", "--resources", "gpu=1", cwd=host, timeout=1800)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert snapshot(host, skip=(".snakemake", "studies")) == before
    study = host / "studies/ebsd"
    for path in ("results/models/vae16/weights.pt", "results/evaluation/table1.md",
                 "results/index/original/am.ang", "logs/train/vae16.log",
                 "benchmarks/out/train_vae16.tsv"):
        assert (study / path).stat().st_size > 0, path
    assert not (host / "results/models").exists() and not (host / "logs").exists()
    # the checkpoints (kept: training.keep_checkpoint) beside the weights, under the prefix
    checkpoints = sorted(p.relative_to(host) for p in host.rglob("checkpoint.pt"))
    trained = sorted(make_plan(validate_config(tiny_config())).model_specs)  # + seed replicates
    assert checkpoints == [Path(f"studies/ebsd/results/models/{v}/checkpoint.pt")
                           for v in trained], checkpoints
    assert not (REPO / "studies").exists()


def _tagged_repo(tmp_path: Path, tag: str) -> Path:
    """The workflow's files as a git repository with ``tag``, at a path that
    snakedeploy's GitHub provider accepts (it matches 'github' in the URL; git clones a
    file:// URL offline)."""
    repo = tmp_path / "github" / "latentebsd"
    repo.mkdir(parents=True)
    for name in ("workflow", "config", "profiles",
                 "LICENSE", "pyproject.toml", ".snakemake-workflow-catalog.yml"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, repo / name)
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for cmd in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "release"], ["tag", tag]):
        subprocess.run(["git", *cmd], cwd=repo, check=True, env=env, capture_output=True)
    return repo


def test_snakedeploy_deploys_a_tagged_release(tmp_path):
    """`snakedeploy deploy-workflow <repo> <dest> --tag v<version>` (from a local git
    repository by file:// URL, offline) copies config/, profiles/ and LICENSE and
    writes a Snakefile that uses the tag's workflow as a module with the copied config;
    with that module pointed at the clone (GitHub is not reachable from the tests) the
    deployed workflow's dry run plans the whole study in the deployment directory."""
    tag = f"v{snakefile_version()}"
    repo = _tagged_repo(tmp_path, tag)
    dest = tmp_path / "deployed"
    deploy = subprocess.run([sys.executable, "-c", "from snakedeploy.client import main; main()",
                             "deploy-workflow", f"file://{repo}", str(dest), "--tag", tag],
                            capture_output=True, text=True, timeout=300)
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    assert (dest / "config/config.yaml").read_text() == (REPO / "config/config.yaml").read_text()
    assert (dest / "config/README.md").exists() and (dest / "profiles/slurm/config.yaml").exists()
    assert (dest / "LICENSE").exists()
    snakefile = (dest / "workflow/Snakefile").read_text()
    assert f'path="workflow/Snakefile", tag="{tag}")' in snakefile, snakefile

    local = re.sub(r'github\([^)]*\)', f'"{repo / "workflow" / "Snakefile"}"', snakefile)
    (dest / "workflow/Snakefile").write_text(local)
    result = run("-n", "--quiet", "rules", cwd=dest)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    jobs = job_counts(result.stdout + result.stderr)
    default = yaml.safe_load((REPO / "config" / "config.yaml").read_text())["models"]
    replicas = default.get("replicates") or {"seeds": 1, "variants": []}
    expected = len(default["variants"]) + (replicas["seeds"] - 1) * len(replicas["variants"])
    assert jobs["train"] == expected == 12 and jobs["simulate_scan"] == 3, jobs  # 8 + 2 x 2 replicates
    assert not (repo / "results").exists() and not (repo / ".snakemake").exists()
