"""SLURM execution through ``profiles/slurm`` with a fake SLURM on PATH.

The real ``snakemake-executor-plugin-slurm`` submits the jobs; ``sbatch``, ``squeue``,
``sacct``, ``scontrol``, ``sinfo``, ``sacctmgr``, ``sshare``, ``scancel`` and ``srun``
are small Python scripts written into ``tmp_path`` that record their arguments and
really run the jobs on this machine:

- ``sbatch`` takes the job's command from ``--wrap=...`` (or the script on stdin),
  runs it with ``bash`` under the job's ``-D`` directory with ``SLURM_JOB_ID`` etc.
  set (``SLURM_GPUS`` when ``--gpus`` was requested), writes its output to the
  ``--output`` file, records the exit code and prints the job id (``--parsable``).
  It waits for the job before answering (``sync=True``, so that the test spends no
  time in the plugin's growing poll intervals) or leaves it running (``sync=False``);
- ``sacct`` / ``squeue`` report each job of the run (``--name <run uuid>``) as
  RUNNING, COMPLETED or FAILED from that exit code;
- ``srun`` (called by the ``slurm-jobstep`` executor inside the job) drops its own
  options and runs the command.

Every call is appended to ``<state>/<command>.log`` as one shell-quoted line.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO

GPU_RULES = {"train", "encode", "decode", "encode_shard", "decode_shard"}  # resources: gpu=1 in rules/*.smk
FAKE_COMMANDS = ("sbatch", "squeue", "sacct", "scontrol", "sinfo", "sacctmgr", "sshare",
                 "scancel", "srun")

FAKE_SLURM = r'''
import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path

STATE = Path(__STATE__)
SYNC = __SYNC__          # sbatch waits for the job (no queueing delay in the test)
NAME = Path(sys.argv[0]).name
ARGS = sys.argv[1:]
JOBS = STATE / "jobs"


def record():
    import shlex
    STATE.mkdir(parents=True, exist_ok=True)
    with open(STATE / f"{NAME}.log", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.write(shlex.join(ARGS) + "\n")


def option(names, default=None):
    """Value of the first of ``names`` in ARGS (``--opt value`` or ``--opt=value``)."""
    for i, arg in enumerate(ARGS):
        for name in names:
            if arg == name and i + 1 < len(ARGS):
                return ARGS[i + 1]
            if name.startswith("--") and arg.startswith(name + "="):
                return arg[len(name) + 1:]
    return default


def next_job_id():
    JOBS.mkdir(parents=True, exist_ok=True)
    with open(STATE / "last_job_id", "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        job_id = int(f.read().strip() or 1000) + 1
        f.seek(0)
        f.truncate()
        f.write(str(job_id))
    return str(job_id)


def job_state(job_id):
    rc = JOBS / f"{job_id}.rc"
    if not rc.exists():
        return "RUNNING"
    return "COMPLETED" if rc.read_text().strip() == "0" else "FAILED"


def jobs_named(name):
    for meta in sorted(JOBS.glob("*.json")) if JOBS.exists() else []:
        info = json.loads(meta.read_text())
        if name is None or info["name"] == name:
            yield info["id"]


def sbatch():
    wrap = option(["--wrap"])
    script = wrap if wrap is not None else sys.stdin.read()
    job_id = next_job_id()
    name = option(["--job-name", "-J"], "sbatch")
    workdir = option(["-D", "--chdir"], os.getcwd())
    output = option(["--output", "-o"], f"slurm-{job_id}.out").replace("%j", job_id)
    output = os.path.join(workdir, output)
    os.makedirs(os.path.dirname(output), exist_ok=True)
    (JOBS / f"{job_id}.json").write_text(json.dumps({"id": job_id, "name": name, "args": ARGS}))
    (JOBS / f"{job_id}.sh").write_text(script + "\n")
    env = dict(os.environ, SLURM_JOB_ID=job_id, SLURM_JOBID=job_id, SLURM_JOB_NAME=name,
               SLURM_SUBMIT_DIR=os.getcwd(), SLURM_NTASKS="1")
    gpus = option(["--gpus", "-G"])
    if gpus:
        env["SLURM_GPUS"] = gpus
    cpus = option(["--cpus-per-task", "-c"]) or option(["--cpus-per-gpu"])
    if cpus:
        env["SLURM_CPUS_PER_TASK"] = cpus
    rc, tmp = JOBS / f"{job_id}.rc", JOBS / f"{job_id}.rc.tmp"
    runner = f'bash "{JOBS / (job_id + ".sh")}"; echo $? > "{tmp}"; mv "{tmp}" "{rc}"'
    with open(output, "w") as log:
        proc = subprocess.Popen(["bash", "-c", runner], cwd=workdir, env=env, stdin=subprocess.DEVNULL,
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    if SYNC:
        proc.wait()
    print(job_id)


def sacct():
    name = option(["--name"])
    fmt = option(["--format", "-o"], "")
    if name is not None and "State" in fmt:       # the plugin's status query
        for job_id in jobs_named(name):
            print(f"{job_id}|{job_state(job_id)}")
    # anything else (account guess, failure reasons, node list): empty answer


def squeue():
    name = option(["--name", "-n"])
    for job_id in jobs_named(name):
        print(f"{job_id}|{job_state(job_id)}")


def scontrol():
    if ARGS[:2] == ["show", "config"]:
        print("Configuration data as of fake SLURM\nMaxArraySize            = 1001")


def sinfo():
    print("PARTITION\ncpu*\ngpu")


def srun():
    # Drop srun's own options (all given as single tokens: -n1, --cpu-bind=q, ...),
    # run the rest; `sh -s` reads the job script from stdin.
    i = 0
    while i < len(ARGS) and ARGS[i].startswith("-"):
        i += 1
    if i == len(ARGS):
        sys.exit("fake srun: no command")
    os.execvp(ARGS[i], ARGS[i:])


record()
handler = {"sbatch": sbatch, "sacct": sacct, "squeue": squeue, "scontrol": scontrol,
           "sinfo": sinfo, "srun": srun}.get(NAME)
if handler is not None:
    handler()
'''


def install_fake_slurm(root: Path, sync: bool = True) -> tuple[Path, Path]:
    """Write the fake SLURM commands into ``root/bin``; return ``(bin, state)``."""
    bin_dir, state = root / "bin", root / "slurm_state"
    bin_dir.mkdir(parents=True)
    state.mkdir()
    source = FAKE_SLURM.replace("__STATE__", repr(str(state))).replace("__SYNC__", repr(sync))
    for name in FAKE_COMMANDS:
        path = bin_dir / name
        path.write_text(f"#!{sys.executable}\n{source}")
        path.chmod(0o755)
    return bin_dir, state


def recorded(state: Path, command: str) -> list[list[str]]:
    log = state / f"{command}.log"
    return [shlex.split(line) for line in log.read_text().splitlines()] if log.exists() else []


def submitted_rule(sbatch_args: list[str]) -> str:
    """Rule of one sbatch call, from the plugin's ``--comment rule_<rule>[_wildcards_...]``."""
    comment = sbatch_args[sbatch_args.index("--comment") + 1]
    return comment.removeprefix("rule_").split("_wildcards_")[0]


def without_wrap(args: list[str]) -> str:
    return shlex.join(a for a in args if not a.startswith("--wrap"))


def slurm_logs(work: Path) -> str:
    """For failure messages: the SLURM logs the plugin kept (those of failed jobs) and
    the rule logs."""
    logs = [*sorted((work / ".snakemake" / "slurm_logs").rglob("*.log")),
            *sorted((work / "logs").rglob("*.log"))]
    return "".join(f"\n--- {log.relative_to(work)}:\n{log.read_text(errors='replace')[-2000:]}"
                   for log in logs)


def tiny_workflow(work: Path) -> None:
    """The workflow's files in ``work`` with a config small enough for a 1-min run."""
    for name in ("Snakefile", "rules", "scripts", "config", "envs", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for scan in config["scans"].values():
        scan["simulate"]["map_shape"] = [4, 5]
    config["simulation"]["pattern_shape"] = [60, 60]     # binning 2 -> 30 x 30 patterns
    config["sample"]["patterns_per_scan"] = 10
    config["models"]["variants"] = {k: config["models"]["variants"][k] for k in ("vae16", "betavae15")}
    config["training"] = {**(config.get("training") or {}), "epochs": 1}
    # 20-pattern scans over shard_patterns = 10: encode runs as 2 shard jobs + a gather
    config["shard_patterns"] = 10
    config["maps"]["chunk_size"] = config["evaluation"]["chunk_size"] = 5
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


@pytest.mark.slow
def test_profile_submits_gpu_jobs_with_gpus_and_cpu_jobs_without(tmp_path):
    pytest.importorskip("snakemake_executor_plugin_slurm",
                        reason="pip install -e '.[slurm]' (snakemake-executor-plugin-slurm)")
    pytest.importorskip("snakemake_executor_plugin_slurm_jobstep",
                        reason="snakemake-executor-plugin-slurm-jobstep missing")
    work = tmp_path / "work"
    work.mkdir()
    tiny_workflow(work)
    bin_dir, state = install_fake_slurm(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    target, sharded = "results/models/vae16/weights.pt", "results/latent/vae16/am.nc"
    start = time.monotonic()
    run = subprocess.run(
        [sys.executable, "-m", "snakemake", "--workflow-profile", "profiles/slurm", target, sharded,
         # only to make the fake cluster fast: poll every second
         "--seconds-between-status-checks", "1", "--slurm-init-seconds-before-status-checks", "1"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    elapsed = time.monotonic() - start
    out = run.stdout[-4000:] + run.stderr[-6000:] + slurm_logs(work)
    assert run.returncode == 0, out
    assert (work / target).stat().st_size > 0 and (work / sharded).stat().st_size > 0, out

    calls = recorded(state, "sbatch")
    lines = {rule: [a for a in calls if submitted_rule(a) == rule] for rule in map(submitted_rule, calls)}
    summary = "\n".join(without_wrap(a) for a in calls)
    assert {"simulate_scan", "preprocess", "sample", "train"} <= set(lines), summary
    assert len(lines["train"]) == 1, summary          # only vae16 was asked for
    assert len(lines["encode_shard"]) == 2 and len(lines["gather_latent"]) == 1, summary
    for args in calls:
        line = without_wrap(args)
        assert "--mem" in args and "-t" in args, line
        if submitted_rule(args) in GPU_RULES:
            # a GPU job: one GPU, CPUs per GPU, the GPU partition placeholder
            assert "--gpus=1" in args, line
            assert any(a.startswith("--cpus-per-gpu=") for a in args), line
            assert args[args.index("-p") + 1] == "gpu", line
        else:
            # a CPU job: no GPU request of any form, the CPU partition placeholder
            assert not any(a.startswith(("--gpus", "--gres", "-G", "--cpus-per-gpu")) for a in args), line
            assert args[args.index("-p") + 1] == "cpu", line
            assert "--ntasks=1" in args and any(a.startswith("--cpus-per-task=") for a in args), line
    # inside every job the slurm-jobstep executor ran the rule through srun, asking
    # for the GPU again in the GPU job
    sruns = recorded(state, "srun")
    assert len(sruns) == len(calls), summary
    assert sum("--gpus=1" in a for a in sruns) == len(lines["train"]) + len(lines["encode_shard"])
    # the jobs really ran (the trained model was checked above)
    assert (work / "results/sample/dataset.h5").stat().st_size > 0
    print(f"\nsbatch train: {without_wrap(lines['train'][0])}"
          f"\nsbatch encode_shard: {without_wrap(lines['encode_shard'][0])}"
          f"\nsbatch sample: {without_wrap(lines['sample'][0])}\nrun took {elapsed:.1f} s")
