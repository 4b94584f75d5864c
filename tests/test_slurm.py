"""SLURM execution through ``profiles/slurm``: on a real SLURM cluster, and with a fake one.

``test_the_profile_runs_the_study_on_a_real_slurm_cluster`` submits the tiny study with
``sbatch`` to a real cluster (``sudo tests/slurm/start-cluster.sh`` makes one on this
machine; see tests/slurm/README.md) and checks it from ``sacct``. It is mandatory when
``LATENTEBSD_REAL_SLURM=1`` is set and skipped when it is not and no SLURM answers.

``test_profile_submits_gpu_jobs_with_gpus_and_cpu_jobs_without`` runs the real
``snakemake-executor-plugin-slurm`` against fake ``sbatch``, ``squeue``, ``sacct``,
``scontrol``, ``sinfo``, ``sacctmgr``, ``sshare``, ``scancel`` and ``srun``: small
Python scripts written into ``tmp_path`` that record their arguments and really run
the jobs on this machine:

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
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import yaml

from conftest import REPO

GPU_RULES = {"train", "encode", "decode", "encode_shard", "decode_shard"}  # resources: gpu=gpu_slot (1 on a cluster)
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
    for name in ("workflow", "config", "profiles"):
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
    """The shipped profile, unmodified, against the fake SLURM.

    What the real-cluster test cannot check: the profile's own values as shipped. The
    real test has to shrink them to fit its node (2 CPUs, ~16 GB, one fake GPU):
    ``mem_mb`` 8-32 GB and ``cpus_per_gpu: 8`` would be refused by ``sbatch`` there.
    Here every job's ``-p``, ``-t``, ``--mem`` and ``--cpus-per-gpu`` are checked
    against the profile's values, and ``--cpus-per-gpu`` against its ``set-threads``.
    It also needs no cluster, so it runs where the real one is skipped."""
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
    profile = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    for args in calls:
        line = without_wrap(args)
        rule = submitted_rule(args)
        wanted = {**profile["default-resources"], **profile["set-resources"].get(rule, {})}
        # runtime / mem_mb as the rule declares them (the profile keeps only site
        # settings); a runtime that grows with the input adds ceil(per_gb x a tiny scan)
        minutes, per_gb, mem_mb = declared_resources()[rule]
        assert args[args.index("--mem") + 1] == str(mem_mb), line
        runtime = int(args[args.index("-t") + 1])
        assert runtime == minutes if not per_gb else minutes <= runtime <= minutes + 1, line
        assert args[args.index("-p") + 1] == wanted["slurm_partition"], line
        if rule in GPU_RULES:
            assert f"--cpus-per-gpu={wanted['cpus_per_gpu']}" in args, line
            assert wanted["cpus_per_gpu"] == profile["set-threads"][rule], rule
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


# --------------------------------------------------------------------------- real SLURM

REAL_SLURM_ENV = "LATENTEBSD_REAL_SLURM"
START_CLUSTER = "sudo tests/slurm/start-cluster.sh"
SHARD_RULES = {"encode_shard", "decode_shard", "index_shard", "metrics_shard"}
# Table 1 needs every GPU stage and every shard stage (29 jobs of the tiny study's 43;
# the maps and figures would add 14 jobs, two minutes on SLURM, and no other kind of job)
REAL_TARGET = "results/evaluation/table1.md"
SACCT_FIELDS = ("JobIDRaw", "JobName", "Partition", "AllocTRES", "State", "Start", "End", "WorkDir")


def _slurm_problem() -> str | None:
    """Why no working SLURM (with accounting, partitions cpu and gpu) answers here, or None."""
    missing = [c for c in ("sbatch", "sacct", "squeue", "scancel", "scontrol", "sinfo")
               if shutil.which(c) is None]
    if missing:
        return f"{', '.join(missing)} not found on PATH"

    def ask(*cmd):
        try:
            run = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return None, f"`{shlex.join(cmd)}` timed out"
        if run.returncode != 0:
            return None, f"`{shlex.join(cmd)}` failed: {(run.stderr or run.stdout).strip()[-300:]}"
        return run.stdout, None

    out, why = ask("scontrol", "ping")
    if why or "UP" not in out:
        return why or f"slurmctld is not up: {out.strip()}"
    out, why = ask("sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobIDRaw")
    if why:  # no slurmdbd: sacct, which the plugin follows jobs with, has nothing to read
        return why
    out, why = ask("sinfo", "-h", "-o", "%P|%a|%T")
    if why:
        return why
    states = {}
    for line in out.split():
        part, avail, state = line.split("|")
        states.setdefault(part.rstrip("*"), []).append((avail, state))
    for part in ("cpu", "gpu"):
        ok = [s for a, s in states.get(part, []) if a == "up" and s.rstrip("*") in
              ("idle", "mixed", "allocated", "completing") and not s.endswith("*")]
        if not ok:
            return f"partition {part!r} has no usable node (sinfo: {states.get(part)})"
    return None


def real_slurm_or_skip() -> None:
    """Skip without a working SLURM - unless LATENTEBSD_REAL_SLURM=1 says there is one:
    then its absence is a failure."""
    mandatory = os.environ.get(REAL_SLURM_ENV) == "1"
    problem = _slurm_problem()
    for module in ("snakemake_executor_plugin_slurm", "snakemake_executor_plugin_slurm_jobstep"):
        try:  # only with a cluster: the plugin runs `which sacct` when imported
            problem or __import__(module)
        except ImportError:
            problem = f"{module} is not installed (pip install -e '.[slurm]')"
    if problem is None:
        return
    if mandatory:
        pytest.fail(f"{REAL_SLURM_ENV}=1, but there is no working SLURM here: {problem}")
    pytest.skip(f"no working SLURM here ({problem}); start one with `{START_CLUSTER}` "
                f"(then set {REAL_SLURM_ENV}=1, or run: eval \"$({START_CLUSTER})\")")


def workflow_rules() -> list[str]:
    """Names of the workflow's rules (``rule x:`` and ``use rule ... as x``)."""
    text = "".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    return [a or b for a, b in re.findall(r"^(?:rule (\w+):|use rule \w+ as (\w+))", text, re.M)]


def declared_resources() -> dict[str, tuple[int, float, int]]:
    """``rule -> (minutes, per_gb, mem_mb)`` as workflow/rules/*.smk declare them
    (``runtime=minutes(n[, per_gb=k])``, ``mem_mb=megabytes(m)``); a ``use rule a as b``
    without its own resources inherits ``a``'s."""
    text = "".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    blocks = re.split(r"^(?=rule \w+:|use rule \w+ as \w+)", text, flags=re.M)
    out: dict[str, tuple[int, float, int]] = {}
    for block in blocks:
        head = re.match(r"rule (\w+):|use rule (\w+) as (\w+)", block)
        if not head:
            continue
        name = head.group(1) or head.group(3)
        rt = re.search(r"runtime=minutes\((\d+)(?:, per_gb=([\d.]+))?\)", block)
        mem = re.search(r"mem_mb=megabytes\((\d+)\)", block)
        if rt and mem:
            out[name] = (int(rt.group(1)), float(rt.group(2) or 0), int(mem.group(1)))
        elif head.group(2):
            out[name] = out[head.group(2)]
    return out


def test_every_rule_declares_runtime_and_memory_and_the_scan_rules_grow_with_input():
    """Rules, not the profile, size the jobs: every rule declares both, and the rules
    that stream a whole scan ask for more time for a bigger scan."""
    declared = declared_resources()
    assert set(workflow_rules()) <= set(declared), set(workflow_rules()) - set(declared)
    for rule in ("preprocess", "index_scan", "encode", "decode", "evaluate_metrics"):
        assert declared[rule][1] > 0, rule
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    for rule, resources in profile["set-resources"].items():
        assert not {"runtime", "mem_mb"} & set(resources), rule


def real_cluster_profile(dest: Path) -> dict:
    """A copy of profiles/slurm that fits the test node (2 CPUs, ~16 GB, one fake GPU),
    written to ``dest/config.yaml``; everything else (partitions, retries,
    rerun-incomplete, jobs, latency-wait) as shipped. Changed:

    - ``mem_mb``: 8-32 GB per job is more than the node has (``sbatch`` refuses it):
      1000 MB x attempt;
    - ``runtime``: 10 min x attempt (a tiny study's job takes seconds);
    - ``cpus_per_gpu`` and ``set-threads``: 8 CPUs per GPU job is more than the node
      has; 1, which is also what every rule declares, so that the outputs equal the
      local run's (torch's sums depend on the thread count);
    - the plugin's status polling: 1 s instead of 40 s before the first check (the
      plugin adds 10 s per check that finds nothing finished; both only save time).
    """
    profile = yaml.safe_load((REPO / "profiles" / "slurm" / "config.yaml").read_text())
    small = {"mem_mb": "1000 * attempt", "runtime": "10 * attempt"}
    profile["default-resources"].update(small)
    # every rule declares its own runtime / mem_mb (rules/*.smk), which default-resources
    # do not override: set-resources does
    for rule in workflow_rules():
        profile["set-resources"].setdefault(rule, {})
    for resources in profile["set-resources"].values():
        resources.update(small)
        if "cpus_per_gpu" in resources:
            resources["cpus_per_gpu"] = 1
    profile["set-threads"] = {rule: 1 for rule in profile["set-threads"]}
    profile["slurm-init-seconds-before-status-checks"] = 1
    profile["seconds-between-status-checks"] = 1
    dest.mkdir(parents=True, exist_ok=True)
    (dest / "config.yaml").write_text(yaml.safe_dump(profile, sort_keys=False))
    return profile


def _run_ids(output: str) -> list[str]:
    return re.findall(r"SLURM run ID: (\S+)", output)


def _submissions(output: str) -> dict[str, tuple[str, str]]:
    """``slurm job id -> (rule, wildcards)`` from the plugin's submission lines, whose
    log path is ``.snakemake/slurm_logs/rule_<rule>/<wildcards>/<id>.log``."""
    found = {}
    for job_id, log in re.findall(r"submitted with SLURM jobid (\d+) \(log: (\S+)\)", output):
        parts = Path(log).parts
        i = parts.index("slurm_logs")
        rule = parts[i + 1].removeprefix("rule_")
        found[job_id] = (rule, "/".join(parts[i + 2:-1]))
    return found


def _sacct_jobs(run_ids: list[str], since: str, expected: set[str], timeout: float = 90):
    """The jobs of the runs ``run_ids`` (their job name) from ``sacct``, polled until
    every job of ``expected`` has a final row: a terminal state, its partition, start and
    end (slurmctld sends records to slurmdbd asynchronously, so they lag behind)."""
    deadline = time.monotonic() + timeout
    while True:
        run = subprocess.run(["sacct", "-X", "-P", "-n", "-S", since, "--name", ",".join(run_ids),
                              "-o", ",".join(SACCT_FIELDS)], capture_output=True, text=True)
        rows = {}
        for line in run.stdout.splitlines():
            values = line.split("|")
            if len(values) == len(SACCT_FIELDS):
                rows[values[0]] = dict(zip(SACCT_FIELDS, values))
        done = [rows.get(j) for j in expected]
        if run.returncode == 0 and all(
                r and r["Partition"] and r["Start"] not in ("", "Unknown", "None")
                and r["End"] not in ("", "Unknown", "None")
                and r["State"].split()[0] in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT",
                                              "OUT_OF_MEMORY", "NODE_FAIL")
                for r in done):
            return rows
        if time.monotonic() > deadline:
            pytest.fail(f"sacct has no final rows for jobs {sorted(expected - set(rows))} "
                        f"after {timeout} s:\n{run.stdout}{run.stderr}")
        time.sleep(1)


def _overlap(a: dict, b: dict) -> bool:
    start = max(datetime.fromisoformat(a["Start"]), datetime.fromisoformat(b["Start"]))
    end = min(datetime.fromisoformat(a["End"]), datetime.fromisoformat(b["End"]))
    return start < end


def _cancel_running_train(proc: subprocess.Popen, work: Path, variant: str, timeout: float = 600):
    """Wait until the run's train job is RUNNING in SLURM and has written a checkpoint
    (so that a resubmission resumes); ``scancel`` it. Returns its SLURM job id."""
    checkpoint = work / "results" / "models" / variant / "checkpoint.pt"
    weights = work / "results" / "models" / variant / "weights.pt"
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%T|%k|%Z"],
                               capture_output=True, text=True).stdout
        for line in queue.splitlines():
            job_id, state, comment, workdir = line.split("|", 3)
            if (workdir == str(work) and comment == f"rule_train_wildcards_{variant}"
                    and state == "RUNNING" and checkpoint.exists() and not weights.exists()):
                subprocess.run(["scancel", job_id], check=True)
                return job_id
        time.sleep(0.1)
    pytest.fail("the train job was never seen RUNNING with a checkpoint (finished before "
                f"the poll, or never started; run ended: {proc.poll() is not None})")


def _snakemake_slurm(work: Path, profile: Path, env: dict, log: Path) -> subprocess.Popen:
    with open(log, "w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "snakemake", REAL_TARGET, "--workflow-profile", str(profile)],
            cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)


def _wait(proc: subprocess.Popen, work: Path, timeout: float = 900, idle: float = 120) -> int:
    """Wait for the run; fail as soon as it outlives its jobs: Snakemake still waiting
    while SLURM has had no job of it (by work dir) queued or running for ``idle`` s -
    it has missed the end of one (the plugin following jobs with sacct does so for a
    job cancelled while running: sacct's state is then "CANCELLED by <uid>")."""
    start = last_active = time.monotonic()
    while proc.poll() is None:
        now = time.monotonic()
        queue = subprocess.run(["squeue", "-h", "-o", "%i|%T|%Z"], capture_output=True, text=True)
        if queue.returncode != 0 or any(line.split("|", 2)[2] == str(work)
                                        for line in queue.stdout.splitlines()):
            last_active = now
        elif now - last_active > idle:
            pytest.fail(f"Snakemake still waits, but SLURM has had no job of this run queued or "
                        f"running for {idle:.0f} s: it missed a job's end")
        if now - start > timeout:
            pytest.fail(f"the SLURM run took more than {timeout:.0f} s")
        time.sleep(2)
    return proc.returncode


def _stop(proc: subprocess.Popen, run_ids: list[str]) -> None:
    """Stop a run left behind by a failed assertion: Ctrl-C (the plugin cancels its
    jobs), then SIGKILL, then scancel whatever of its runs is still queued."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    for run_id in run_ids:
        subprocess.run(["scancel", "--name", run_id], capture_output=True)


@pytest.mark.slow
def test_the_profile_runs_the_study_on_a_real_slurm_cluster(tmp_path):
    """The tiny study up to Table 1 (one variant; ``am`` over ``shard_patterns``, so
    there are shard jobs) through ``snakemake --workflow-profile`` (a copy of profiles/slurm that fits
    the node) on a real SLURM cluster, one train job cancelled with ``scancel`` while it
    runs. From ``sacct``, for the jobs of this run only (job name = the plugin's run id):
    every job COMPLETED (but the cancelled one); the GPU rules ran on partition gpu with
    ``gres/gpu=1``, every other rule on cpu without a GPU; two shard jobs of one stage
    ran at the same time; the cancelled job was resubmitted by the profile's
    ``retries`` (or, with ``retries: 0``, completed by rerunning the command) and
    resumed from its checkpoint. The outputs equal, file by file, those of a local run
    (``--cores 2 --resources gpu=1``) made before it in the same directory."""
    real_slurm_or_skip()
    from test_workflow import tiny_config, workflow_copy

    sys.path.insert(0, str(REPO / "benchmarks"))
    from compare_results import compare

    variant = "vae16"
    config = tiny_config()
    config["models"]["variants"] = {variant: config["models"]["variants"][variant]}
    work = tmp_path / "work"
    work.mkdir()
    workflow_copy(work, config)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "SBATCH_", "SRUN_"))}
    # the node's GPU is a fake one and PyTorch here a CPU build: a GPU job that cannot use
    # its GPU fails (latentebsd.workflow.job_device) unless told to use the CPU
    env["LATENTEBSD_GPU_FALLBACK"] = "cpu"
    t0 = time.monotonic()

    # 1. the local run, in the directory the SLURM run will use (files record input paths)
    local = subprocess.run([sys.executable, "-m", "snakemake", REAL_TARGET, "--cores", "2",
                            "--resources", "gpu=1"],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert local.returncode == 0, local.stdout[-3000:] + local.stderr[-3000:]
    local_results = tmp_path / "local_results"
    shutil.move(work / "results", local_results)
    for name in ("logs", "benchmarks", ".snakemake"):
        shutil.rmtree(work / name, ignore_errors=True)
    t_local = time.monotonic() - t0

    # 2. the same study on SLURM; cancel the train job once it runs
    profile_dir = tmp_path / "profile"
    profile = real_cluster_profile(profile_dir)
    since = (datetime.now() - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")
    logs = [tmp_path / "snakemake_slurm_1.log"]
    proc = _snakemake_slurm(work, profile_dir, env, logs[0])
    try:
        cancelled = _cancel_running_train(proc, work, variant)
        _wait(proc, work)
    finally:
        _stop(proc, _run_ids(logs[0].read_text()))
    if proc.returncode != 0:  # the cancelled job was not resubmitted: run the command again
        logs.append(tmp_path / "snakemake_slurm_2.log")
        proc = _snakemake_slurm(work, profile_dir, env, logs[1])
        try:
            _wait(proc, work)
        finally:
            _stop(proc, _run_ids(logs[1].read_text()))
    output = "".join(log.read_text() for log in logs)
    assert proc.returncode == 0, output[-6000:] + slurm_logs(work)
    outcome = "resubmitted by retries" if len(logs) == 1 else "completed by the rerun"
    t_slurm = time.monotonic() - t0 - t_local

    # 3. what SLURM recorded of these runs
    run_ids, submitted = _run_ids(output), _submissions(output)
    assert len(run_ids) == len(logs) and cancelled in submitted, output[-3000:]
    rows = _sacct_jobs(run_ids, since, set(submitted))
    assert set(rows) == set(submitted), (sorted(rows), sorted(submitted))
    assert all(r["WorkDir"] == str(work) for r in rows.values())
    table = [f"{'job':>6}  {'rule':<34} {'partition':<9} {'AllocTRES':<44} {'state':<14} start -> end"]
    for job_id in sorted(rows, key=int):
        r, (rule, wildcards) = rows[job_id], submitted[job_id]
        name = f"{rule}[{wildcards}]" if wildcards else rule
        table.append(f"{job_id:>6}  {name:<34} {r['Partition']:<9} {r['AllocTRES']:<44} "
                     f"{r['State']:<14} {r['Start'][11:]} -> {r['End'][11:]}")
    text = "\n".join(table)
    (tmp_path / "sacct.txt").write_text(text + "\n")
    print(f"\nsacct of the run(s) {', '.join(run_ids)} (also in {tmp_path / 'sacct.txt'}):\n{text}")

    rules = {rule for rule, _ in submitted.values()}
    assert GPU_RULES <= rules and SHARD_RULES <= rules, rules
    for job_id, r in rows.items():
        rule, wildcards = submitted[job_id]
        line = f"{job_id} {rule}[{wildcards}]: {r}"
        if job_id == cancelled:
            assert r["State"].startswith("CANCELLED"), line
        else:
            assert r["State"] == "COMPLETED", line
        if rule in GPU_RULES:
            assert r["Partition"] == "gpu" and "gres/gpu=1" in r["AllocTRES"].split(","), line
        else:
            assert r["Partition"] == "cpu" and "gres/gpu" not in r["AllocTRES"], line

    # shard jobs of one stage side by side (2 CPUs; the GPU shards share the one GPU)
    overlapping = [(submitted[a], submitted[b]) for a in rows for b in rows
                   if int(a) < int(b) and submitted[a][0] in SHARD_RULES
                   and submitted[a][0] == submitted[b][0] and _overlap(rows[a], rows[b])]
    assert overlapping, f"no two shard jobs of one stage ran at the same time:\n{text}"

    # the cancelled train job: run again (same rule and wildcards) and completed, resuming
    again = [j for j in rows if int(j) > int(cancelled) and submitted[j] == submitted[cancelled]]
    assert [rows[j]["State"] for j in again] == ["COMPLETED"], text
    same_run = rows[again[0]]["JobName"] == rows[cancelled]["JobName"]
    assert same_run == (len(logs) == 1), (outcome, text)
    assert outcome == ("resubmitted by retries" if profile.get("retries", 0) >= 1
                       else "completed by the rerun"), outcome
    train_log = (work / "logs" / "train" / f"{variant}.log").read_text()
    assert "resuming" in train_log, train_log[-2000:]

    # 4. the same files as the local run
    n, problems = compare(local_results, work / "results", figures=True)
    assert n > 25 and not problems, problems
    print(f"cancelled train job {cancelled}: {outcome} (job {again[0]}), resumed from its checkpoint; "
          f"shard jobs side by side: {overlapping[0]}; {n} files equal to the local run's\n"
          f"local run {t_local:.0f} s, SLURM run {t_slurm:.0f} s, "
          f"test {time.monotonic() - t0:.0f} s")
