"""Write requirements-lock.txt and the pinned pip list of envs/latentebsd.yaml from the
environment that runs now (one that passes the tests): ``pip freeze`` restricted to the
dependency closure of ``latentebsd[test,slurm]``, torch without its local build label
(``+cpu``), so that the pin takes the CPU or the CUDA wheel alike.

    python .ci/lock.py            # rewrite both files
    python .ci/lock.py --check    # exit 1 if they differ from what is installed
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"
ENV = ROOT / "workflow" / "envs" / "latentebsd.yaml"
#: The lock covers the tests and the SLURM plugin; the conda environment of the rules
#: only the package's own dependencies.
EXTRAS = ("test", "slurm")
BEGIN, END = "      # --- pins: python .ci/lock.py ---", "      # --- end of pins ---"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def closure(extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """name -> installed version of every distribution latentebsd[extras] needs."""
    seen: dict[str, str] = {}

    def walk(name: str, extras: tuple[str, ...] = ()) -> None:
        key = canonical(name)
        if key in seen:
            return
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return
        seen[key] = dist.version.split("+")[0]
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or any(req.marker.evaluate({"extra": e}) for e in ("", *extras)):
                walk(req.name, tuple(req.extras))

    pyproject = (ROOT / "pyproject.toml").read_text()
    import tomllib

    project = tomllib.loads(pyproject)["project"]
    for text in project["dependencies"] + [r for e in extras
                                           for r in project["optional-dependencies"][e]]:
        walk(Requirement(text).name)
    return dict(sorted(seen.items()))


def lock_text(pins: dict[str, str]) -> str:
    head = ("# Exact versions of the dependency closure of latentebsd[test,slurm] that pass the\n"
            "# tests (python .ci/lock.py writes this file; CI installs with -c requirements-lock.txt).\n")
    return head + "".join(f"{k}=={v}\n" for k, v in pins.items())


def env_text(pins: dict[str, str]) -> str:
    text = ENV.read_text()
    start, stop = text.index(BEGIN) + len(BEGIN), text.index(END)
    lines = "".join(f"      - {k}=={v}\n" for k, v in pins.items())
    return text[:start] + "\n" + lines + text[stop:]


def main(argv: list[str]) -> int:
    wanted = {LOCK: lock_text(closure()), ENV: env_text(closure(()))}
    if "--check" in argv:
        stale = [str(p.relative_to(ROOT)) for p, t in wanted.items() if p.read_text() != t]
        if stale:
            print(f"out of date: {', '.join(stale)} (python .ci/lock.py)", file=sys.stderr)
            return 1
        return 0
    for path, text in wanted.items():
        path.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
