"""Write requirements-lock.txt and the pinned pip list of envs/latentebsd.yaml from the
environment that runs now (one that passes the tests): ``pip freeze`` restricted to the
dependency closure of ``latentebsd[test,slurm]``, torch without its local build label
(``+cpu``), so that the pin takes the CPU or the CUDA wheel alike.

    python .ci/lock.py            # rewrite both files
    python .ci/lock.py --check    # exit 1 if they differ from what is installed
"""

from __future__ import annotations

import sys
from pathlib import Path

from latentebsd.wheelhouse import PROJECT, installed_closure

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements-lock.txt"
ENV = ROOT / "workflow" / "envs" / "latentebsd.yaml"
#: The lock covers the tests and the SLURM plugin; the conda environment of the rules
#: only the package's own dependencies.
EXTRAS = ("test", "slurm")
BEGIN, END = "      # --- pins: python .ci/lock.py ---", "      # --- end of pins ---"


def closure(extras: tuple[str, ...] = EXTRAS) -> dict[str, str]:
    """name -> installed version (local build label dropped) of every distribution
    latentebsd[extras] needs: the wheelhouse builder's walk
    (:func:`latentebsd.wheelhouse.installed_closure`), less the project itself."""
    return {name: version.split("+")[0]
            for name, version in sorted(installed_closure(extras=extras).items()) if name != PROJECT}


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
