"""Glue between Snakemake and the library: the working directory of a run, the log of a
rule job, its GPU slot and its torch device."""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

log = logging.getLogger(__name__)

_claim: IO | None = None  # held open (and locked) for the life of the Snakemake process


def claim_workdir(workdir: str | os.PathLike = ".", main: bool = True) -> bool:
    """Take the run lock of ``workdir`` for this Snakemake process; when no other live
    run holds it, clear the Snakemake locks a killed run left behind.

    A run killed with SIGKILL (a closed laptop lid, a cluster's time limit, ``kill -9``)
    leaves Snakemake's locks under ``.snakemake/locks`` - the next run would refuse to
    start until ``--unlock`` - and the temporary ``.<name>.partial.<ext>`` files of the
    outputs it was writing (:func:`clear_partials`). The kernel releases this ``flock``
    when the holder dies, so getting it proves that nobody is running here: the stale
    locks are removed (and reported), and the README command simply runs again. A
    second, concurrent Snakemake (a dry run in another terminal) does not get the lock
    and touches nothing.

    ``main``: whether this is the top-level process of a run of latentebsd's own
    Snakefile. Anything else - Snakemake inside a job (``--mode subprocess`` locally,
    ``--mode remote`` in a cluster job, where ``flock`` may be local to the node and
    prove nothing about the other nodes), or a host workflow that uses latentebsd as a
    ``module`` (its directory, its locks) - takes no lock and touches nothing. Returns
    whether it got the lock.
    """
    global _claim
    if not main:
        return False
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
    for path in locks:
        path.unlink(missing_ok=True)
    if locks:
        print(f"latentebsd: removed {len(locks)} Snakemake lock(s) a killed run left",
              file=sys.stderr)
    return True


def clear_partials(workdir: str | os.PathLike = ".", local: bool = True) -> int:
    """Delete the half-written ``results/**/.<name>.partial<suffix>`` files a killed
    run left, once this process holds the run lock (:func:`claim_workdir`) and its jobs
    run on this machine (``local``: Snakemake's local executor). Called when the run
    starts its jobs (``onstart``), because only then is the executor known: the jobs of
    a killed cluster run may still be running on their nodes, writing theirs, and are
    left alone. Returns the number of files removed."""
    if _claim is None or not local:
        return 0
    results = Path(workdir) / "results"
    # the names io.atomic.atomic_path writes under: .<stem>.partial<suffix>
    partials = sorted(results.rglob(".*.partial*")) if results.is_dir() else []
    for path in partials:
        path.unlink(missing_ok=True)
    if partials:
        print(f"latentebsd: removed {len(partials)} half-written file(s) a killed run left "
              f"under {results}", file=sys.stderr)
    return len(partials)


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


#: Replaces :data:`GPU_DEVICE_FILES` (``:``-separated paths): lets a test show a
#: Snakemake run a GPU driver on a machine without one.
GPU_DEVICE_FILES_ENV = "LATENTEBSD_GPU_DEVICE_FILES"


def gpu_driver(device_files: tuple[str, ...] | None = None) -> bool:
    """Whether this machine shows a GPU driver (its device files, default
    :data:`GPU_DEVICE_FILES` or ``$LATENTEBSD_GPU_DEVICE_FILES``), without importing
    PyTorch; ``CUDA_VISIBLE_DEVICES`` set to ``""`` or ``-1`` hides the GPUs, as for
    PyTorch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) in ("", "-1"):
        return False
    if device_files is None:
        given = os.environ.get(GPU_DEVICE_FILES_ENV)
        device_files = tuple(given.split(":")) if given else GPU_DEVICE_FILES
    return any(os.path.exists(f) for f in device_files)


def gpu_request(local: bool) -> int:
    """``resources.gpu`` of the rules that run a network (train, encode, decode): a GPU
    of its own for the job, which the scheduler must give it.

    On a cluster (``local=False``: the submitting process, or the job inside a cluster
    allocation) every such job asks for one (SLURM: ``--gpus=1``). A local run never
    does: on a machine without a GPU a slot would only serialise these jobs under the
    README's ``--resources gpu=1`` (on 2 cores the default's eight trainings took ~19 of
    its 27 minutes one after the other), and on a GPU workstation they share the one GPU
    instead (:func:`gpu_share`), several at a time. Returns 1 or 0.
    """
    return 0 if local else 1


def gpu_share(local: bool, forced_cpu: bool = False,
              device_files: tuple[str, ...] | None = None) -> int:
    """``resources.gpu_shared`` of train / encode / decode: 1 where the job runs on this
    machine's GPU beside other jobs, else 0.

    That is a local run (``local``) on a machine with a GPU driver (:func:`gpu_driver`),
    unless the user asked for the CPU with ``--resources gpu=0`` (``forced_cpu``). How
    many such jobs hold the GPU at once is decided inside the jobs
    (:func:`gpu_admission`), from the GPU's memory, because Snakemake cannot count a
    resource the README's command does not declare. Returns 1 or 0.
    """
    return int(local and not forced_cpu and gpu_driver(device_files))


#: GPU memory one shared job may need (GiB): the default's models need < 1, Table 2
#: models at batch 256 2.7 (bf16) - 8.8 (fp32 eager, vae256), encode / decode a few.
GPU_JOB_GIB = 6.0
#: Overrides the number of jobs that share one GPU (:func:`gpu_admission`).
GPU_JOBS_ENV = "LATENTEBSD_GPU_JOBS"
_admission: IO | None = None  # the held slot file of this process


def gpu_jobs(total_bytes: int) -> int:
    """How many shared jobs one GPU of ``total_bytes`` memory runs at once:
    ``$LATENTEBSD_GPU_JOBS`` if set, else one per :data:`GPU_JOB_GIB` GiB (at least 1):
    23 on a 141 GB H200, 3 on a 24 GB card, 1 on an 8 GB one."""
    given = os.environ.get(GPU_JOBS_ENV)
    if given:
        try:
            n = int(given)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"{GPU_JOBS_ENV}={given!r}: expected a whole number >= 1")
        return n
    return max(1, int(total_bytes / 2**30 // GPU_JOB_GIB))


def gpu_admission(n_slots: int, name: str = "job", poll_s: float = 0.5,
                  lock_dir: str | os.PathLike | None = None) -> int:
    """Wait for one of ``n_slots`` GPU slots of this machine and hold it until the
    process ends; returns the slot number.

    A slot is an exclusive ``flock`` on ``<lock_dir>/slot-<k>.lock`` (default: a folder
    of this user's under the system temporary directory): the kernel releases it when
    the job ends or is killed, so a killed job never keeps a slot.
    """
    global _admission
    if _admission is not None:
        return int(Path(_admission.name).stem.split("-")[1])
    folder = Path(lock_dir or Path(os.environ.get("TMPDIR", "/tmp")) / f"latentebsd-gpu-{os.getuid()}")
    folder.mkdir(parents=True, exist_ok=True)
    waited = False
    while True:
        for k in range(n_slots):
            f = open(folder / f"slot-{k}.lock", "a")
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue
            _admission = f
            if waited:
                log.info("%s: got GPU slot %d of %d", name, k, n_slots)
            return k
        if not waited:
            log.info("%s: waiting for one of the %d GPU slots (%s)", name, n_slots, GPU_JOBS_ENV)
            waited = True
        time.sleep(poll_s)


def job_device(gpus: int | None, job: str = "", shared: int | None = 0) -> str:
    """Torch device of a job: ``"cuda"`` when the job was given a GPU (its
    ``resources.gpu`` >= 1) or shares this machine's (``resources.gpu_shared`` >= 1, see
    :func:`gpu_share`) and CUDA is present, else ``"cpu"``; logged. A shared job first
    waits for a GPU slot (:func:`gpu_admission`).

    The one place rules train, encode and decode (and their shard jobs) decide this.
    ``snakemake --resources gpu=0`` scales GPU jobs down to ``gpu=0`` and shares nothing:
    they then run on the CPU even on a machine with a GPU. A job given a GPU that
    PyTorch cannot use falls back to the CPU with a warning - or fails, when a scheduler
    allocated a GPU to it (``SLURM_JOB_GPUS`` or ``CUDA_VISIBLE_DEVICES`` set): a
    paper-size job would otherwise spend its whole time limit on the CPU.
    """
    import torch  # 1-2 s to import: only the jobs that run a network call this

    name = job or "job"
    asked = int(gpus or 0) >= 1 or int(shared or 0) >= 1
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
    if device == "cuda" and int(shared or 0) >= 1 and int(gpus or 0) < 1:
        gpu_admission(gpu_jobs(torch.cuda.get_device_properties(0).total_memory), name)
    log.info("%s: torch device %s (job resources gpu=%s, gpu_shared=%s)", name, device,
             int(gpus or 0), int(shared or 0))
    return device
