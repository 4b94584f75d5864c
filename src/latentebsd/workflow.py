"""Glue between Snakemake and the library: the working directory of a run, the log of a
rule job, its GPU slot and its torch device."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_claim: IO | None = None  # held open (and locked) for the life of the Snakemake process


def claim_workdir(workdir: str | os.PathLike = ".") -> bool:
    """Take the run lock of ``workdir`` for this Snakemake process; when no other live
    run holds it, clear what a killed run left behind.

    A run killed with SIGKILL (a closed laptop lid, a cluster's time limit, ``kill -9``)
    leaves Snakemake's locks under ``.snakemake/locks`` - the next run would refuse to
    start until ``--unlock`` - and the temporary ``.<name>.partial.<ext>`` files of the
    outputs it was writing. The kernel releases this ``flock`` when the holder dies, so
    getting it proves that nobody is running here: the stale locks and temporaries are
    removed (and reported), and the README command simply runs again. A second,
    concurrent Snakemake (a dry run in another terminal, or Snakemake inside a cluster
    job) does not get the lock and touches nothing. Returns whether it got the lock.
    """
    global _claim
    if _claim is not None:
        return True
    meta = Path(workdir) / ".snakemake"
    meta.mkdir(exist_ok=True)
    f = open(meta / "latentebsd-run.lock", "a")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another run is alive here (or the file system has no flock)
        f.close()
        return False
    _claim = f
    locks = sorted((meta / "locks").glob("*")) if (meta / "locks").is_dir() else []
    results = Path(workdir) / "results"
    # the names io.atomic.atomic_path writes under: .<stem>.partial<suffix>
    partials = sorted(results.rglob(".*.partial*")) if results.is_dir() else []
    for path in [*locks, *partials]:
        path.unlink(missing_ok=True)
    if locks or partials:
        print(f"latentebsd: removed what a killed run left: {len(locks)} Snakemake lock(s), "
              f"{len(partials)} half-written file(s) under {results}", file=sys.stderr)
    return True


@contextlib.contextmanager
def rule_log(path: str | os.PathLike | None) -> Iterator[None]:
    """Send ``logging``, warnings, prints and progress bars of a rule to its log file.

    Exceptions are logged with their traceback before they propagate, so the rule's
    log says why it failed.
    """
    if path is None:
        logging.basicConfig(level=logging.INFO, force=True)
        yield
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", buffering=1) as f, contextlib.redirect_stderr(f), contextlib.redirect_stdout(f):
        logging.basicConfig(stream=f, level=logging.INFO, force=True,
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        logging.captureWarnings(True)
        try:
            yield
        except BaseException:
            logging.getLogger("latentebsd").exception("rule failed")
            raise
        finally:
            logging.captureWarnings(False)


#: Set to ``cpu`` to let a job that SLURM gave a GPU train on the CPU when PyTorch cannot
#: use that GPU (a test cluster without real GPUs); otherwise such a job fails.
GPU_FALLBACK_ENV = "LATENTEBSD_GPU_FALLBACK"


#: Device files of a GPU driver: NVIDIA (CUDA) and AMD (ROCm, which PyTorch also calls cuda).
GPU_DEVICE_FILES = ("/proc/driver/nvidia/version", "/dev/nvidia0", "/dev/kfd")


def gpu_request(local: bool, device_files: tuple[str, ...] = GPU_DEVICE_FILES) -> int:
    """``resources.gpu`` of the rules that run a network (train, encode, decode).

    ``--resources gpu=1`` lets one such job hold the GPU at a time. On a machine with
    no GPU that cap would only serialise them: every train / encode / decode job would
    wait for the one before it while the other cores idle (on 2 cores the embedded
    default's eight trainings took ~19 of its 27 minutes one after the other). So a
    local run asks for a GPU slot only where a GPU driver is present; a cluster run
    (``local=False``: the submitting process, or the job inside a cluster allocation)
    always does, because the jobs' nodes are not this machine. Checked without
    importing PyTorch (seconds), from the driver's device files; ``CUDA_VISIBLE_DEVICES``
    set to ``""`` or ``-1`` hides the GPUs, as for PyTorch.

    Parameters
    ----------
    local
        Whether the jobs run on this machine (Snakemake's local executor).
    device_files
        Files whose presence means a GPU driver (:data:`GPU_DEVICE_FILES`).

    Returns
    -------
    int
        1 or 0.
    """
    if not local:
        return 1
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return 0
    return int(any(os.path.exists(f) for f in device_files))


def job_device(gpus: int | None, job: str = "") -> str:
    """Torch device of a job: ``"cuda"`` when the job was given a GPU (its
    ``resources.gpu`` >= 1) and CUDA is present, else ``"cpu"``; logged.

    The one place rules train, encode and decode (and their shard jobs) decide this.
    ``snakemake --resources gpu=0`` scales GPU jobs down to ``gpu=0``: they then run on
    the CPU even on a machine with a GPU. A job given a GPU that PyTorch cannot use
    falls back to the CPU with a warning - or fails, when a scheduler allocated a GPU to
    it (``SLURM_JOB_GPUS`` or ``CUDA_VISIBLE_DEVICES`` set): a paper-size job would
    otherwise spend its whole time limit on the CPU.
    """
    import torch  # 1-2 s to import: only the jobs that run a network call this

    name = job or "job"
    asked = int(gpus or 0) >= 1
    if asked and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
        allocated = os.environ.get("SLURM_JOB_GPUS") or (visible not in ("", "-1") and visible)
        build = torch.version.cuda or "none, a CPU-only wheel"
        why = f"PyTorch {torch.__version__} (CUDA build: {build}) sees no usable GPU"
        if allocated and os.environ.get(GPU_FALLBACK_ENV) != "cpu":
            raise RuntimeError(
                f"{name}: the scheduler allocated GPU(s) {allocated} to this job, but {why}. Install "
                f"a CUDA build of PyTorch that matches the node's driver, or set "
                f"{GPU_FALLBACK_ENV}=cpu to run on the CPU anyway")
        log.warning("%s: asked for a GPU, but %s; running on the CPU", name, why)
    device = "cuda" if asked and torch.cuda.is_available() else "cpu"
    log.info("%s: torch device %s (job resources gpu=%s)", name, device, int(gpus or 0))
    return device
