"""Glue between Snakemake and the library: logging for rule scripts, scan inputs."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path


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


def scan_source(scans: dict, name: str) -> dict[str, str]:
    """Input files of a scan's preprocessing: the pattern file and, for a simulated scan,
    the ground-truth file that carries its geometry."""
    scan = scans[name]
    if "simulate" in scan:
        return {"patterns": f"results/simulated/{name}.up2",
                "geometry": f"results/simulated/{name}_truth.h5"}
    return {"patterns": scan["path"]}


def scan_seed(config: dict, name: str) -> int:
    """Seed of a simulated scan: its own ``simulate.seed`` if set, else one derived from
    the global seed and the scan name (stable when other scans are added or removed)."""
    import zlib

    spec = config["scans"][name]["simulate"]
    if "seed" in spec:
        return int(spec["seed"])
    return (int(config["seed"]) * 1_000_003 + zlib.crc32(name.encode())) % 2**32


def job_device(gpus: int | None) -> str:
    """Torch device of a job: ``"cuda"`` when the job was given a GPU (its
    ``resources.gpu`` >= 1) and CUDA is present, else ``"cpu"``.

    The one place rules train, encode and decode (and their shard jobs) decide this.
    ``snakemake --resources gpu=0`` scales GPU jobs down to ``gpu=0``: they then run on
    the CPU even on a machine with a GPU.
    """
    import torch

    return "cuda" if int(gpus or 0) >= 1 and torch.cuda.is_available() else "cpu"
