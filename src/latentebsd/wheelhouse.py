"""Offline install: a wheelhouse of what a compute node lacks, built where PyPI is reachable.

GPU and HPC compute nodes often have no internet. This module builds, on a machine
that has PyPI, a folder of wheels holding the project and every dependency the node
does not already have, for the node's Python version and platform; the node then
installs from that folder alone (``pip install --no-index``). The node's own PyTorch
(a CUDA build matched to its driver) stays: ``torch`` and NVIDIA's CUDA wheels are
never put in the wheelhouse.

What goes in
------------
The dependency closure of ``latentebsd`` (with the extras asked for) as installed in
*this* environment, pinned to the versions installed here - the versions this
environment's tests ran with - or the pinned lines of a requirements / lock file
(``--requirements``). Environment markers are evaluated for the target Python
version. Minus every distribution the node already has (``--have``: the output of
``python -m pip list --format=freeze`` on the node) and minus :data:`NODE_PROVIDED`.
Binary wheels come from ``pip download --only-binary=:all: --no-deps`` for the
target (``--python-version``, ``--platform``, several manylinux tags); a package that
PyPI has only as a source distribution is built into a wheel here (``pip wheel
--no-deps``; pure-Python packages only, which is what such packages are). The
project's own wheel is built from the checkout, so the node installs it non-editable
(its config schema ships inside the package).

Usage (where PyPI is reachable, from a checkout)::

    # on the node, once:  python3 -m pip list --format=freeze > node.txt
    PYTHONPATH=src python -m latentebsd.wheelhouse --out wheelhouse \\
        --python-version 3.12 --have node.txt

On the node (no index), with the Python environment that holds the node's PyTorch
(its virtual or conda environment activated)::

    python3 -m pip install --no-index --find-links wheelhouse latentebsd

pip keeps every distribution the node has (its torch, numpy, ...) where it satisfies
the project's requirements and installs only what the wheelhouse adds. To keep the
project apart from a *system* Python's torch: ``python3 -m venv
--system-site-packages ~/latentebsd-env`` and that environment's ``pip`` (a venv made
from another venv does not see the first one's packages). ``wheelhouse/INSTALL.txt``
repeats this with the versions it holds.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import subprocess
import sys
import sysconfig
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name

PROJECT = "latentebsd"
#: Never packed: the node's own PyTorch (built for its CUDA driver) and the CUDA
#: libraries and compiler that come with it.
NODE_PROVIDED = re.compile(r"^(torch|triton|nvidia-.*|pytorch-triton.*|cuda-.*)$")
#: manylinux tags a current Linux node accepts (pip matches any of them).
MANYLINUX = ("manylinux2014", "manylinux_2_17", "manylinux_2_28", "manylinux_2_34")


def target_environment(python_version: str) -> dict[str, str]:
    """Environment-marker values of this machine with the Python version set to the
    target's (``"3.12"``)."""
    env = default_environment()
    major_minor = ".".join(python_version.split(".")[:2])
    env.update(python_version=major_minor,
               python_full_version=python_version if python_version.count(".") == 2
               else f"{major_minor}.0")
    return env


def installed_closure(project: str = PROJECT, extras: Sequence[str] = (),
                      python_version: str | None = None) -> dict[str, str]:
    """``{canonical name: version}`` of ``project`` and every distribution it needs,
    as installed in this environment, markers evaluated for ``python_version``.

    Raises
    ------
    LookupError
        Naming a required distribution that is not installed here (its version cannot
        be pinned from this environment; give ``--requirements`` instead).
    """
    return _walk(project, extras, python_version)[0]


def required_specifiers(project: str = PROJECT, extras: Sequence[str] = (),
                        python_version: str | None = None) -> dict[str, list[SpecifierSet]]:
    """``{canonical name: [version ranges]}``: what the distributions of the closure of
    ``project`` ask of each other (``snakemake`` asks ``packaging<26,>=24``)."""
    return _walk(project, extras, python_version)[1]


def _walk(project: str, extras: Sequence[str],
          python_version: str | None) -> tuple[dict[str, str], dict[str, list[SpecifierSet]]]:
    env = target_environment(python_version or platform.python_version())
    found: dict[str, str] = {}
    wanted_by: dict[str, list[SpecifierSet]] = {}
    todo: list[tuple[str, frozenset[str]]] = [(project, frozenset(extras))]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        name, wanted = todo.pop()
        key = canonicalize_name(name)
        if (key, wanted) in seen:
            continue
        seen.add((key, wanted))
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            raise LookupError(f"{name} is required (by the closure of {project}) but not "
                              "installed here; install it or pass --requirements") from None
        found[key] = dist.version
        for line in dist.requires or []:
            req = Requirement(line)
            # an extra's requirement counts when that extra is wanted
            if req.marker is None or any(req.marker.evaluate({**env, "extra": e})
                                         for e in (wanted or {""})):
                todo.append((req.name, frozenset(req.extras)))
                wanted_by.setdefault(canonicalize_name(req.name), []).append(req.specifier)
    return found, wanted_by


def read_pins(path: str | Path) -> dict[str, str]:
    """``{canonical name: version}`` of the ``name==version`` lines of a requirements,
    lock or ``pip list --format=freeze`` file (comments, options, markers ignored).

    Raises
    ------
    ValueError
        Naming the file and line of a requirement that is not pinned with ``==``.
    """
    pins: dict[str, str] = {}
    for number, raw in enumerate(Path(path).read_text().splitlines(), start=1):
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line.split(";", 1)[0].strip())
        exact = [s.version for s in req.specifier if s.operator == "=="]
        if len(exact) != 1:
            raise ValueError(f"{path}:{number}: expected name==version, got {raw.strip()!r}")
        pins[canonicalize_name(req.name)] = exact[0]
    return pins


def read_node(path: str | Path) -> dict[str, str | None]:
    """``{canonical name: version}`` of a node's ``pip list --format=freeze`` / ``pip
    freeze`` file (``name==version``; ``name @ url`` has no version: ``None``; comments
    and options ignored)."""
    node: dict[str, str | None] = {}
    for raw in Path(path).read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        name, _, rest = line.partition("==")
        name = re.split(r"[<>!~ @;\[]", name, maxsplit=1)[0]
        node[canonicalize_name(name)] = rest.split(";")[0].strip() or None if rest else None
    return node


def to_pack(needed: dict[str, str], have: dict[str, str | None] | Iterable[str] = (),
            wanted_by: dict[str, list[SpecifierSet]] | None = None,
            project: str = PROJECT) -> dict[str, str]:
    """What the wheelhouse must hold: ``needed`` minus what the node has in a version
    the closure accepts (``have``: name -> version, or names alone; ``wanted_by``: the
    ranges of :func:`required_specifiers`), minus :data:`NODE_PROVIDED` and the project
    itself (built separately). A node distribution outside a range is packed, so that
    pip can replace it (the H200 image's ``packaging`` 26.3 against Snakemake's
    ``packaging<26``)."""
    node = dict(have) if isinstance(have, dict) else dict.fromkeys(have)
    node = {canonicalize_name(k): v for k, v in node.items()}
    wanted_by = wanted_by or {}

    def accepted(name: str) -> bool:
        if name not in node:
            return False
        version = node[name]
        return version is None or all(spec.contains(version, prereleases=True)
                                      for spec in wanted_by.get(name, []))

    return {name: version for name, version in sorted(needed.items())
            if not accepted(name) and not NODE_PROVIDED.match(name)
            and name != canonicalize_name(project)}


def platform_tags(arch: str | None = None) -> list[str]:
    """pip ``--platform`` tags for a Linux node of ``arch`` (default: this machine's)."""
    arch = arch or platform.machine()
    return [f"{tag}_{arch}" for tag in MANYLINUX] + [f"linux_{arch}"]


def _has_setuptools() -> bool:
    try:
        return int(metadata.version("setuptools").split(".")[0]) >= 64
    except metadata.PackageNotFoundError:
        return False


def _pip(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def build(out: str | Path, python_version: str, have: dict[str, str | None] | Iterable[str] = (),
          requirements: str | Path | None = None, extras: Sequence[str] = (),
          arch: str | None = None, source: str | Path | None = None) -> dict[str, object]:
    """Fill ``out`` with the wheels of what a node lacks (module docstring).

    Returns
    -------
    dict
        ``packed`` (name -> version), ``built_from_source`` (names), ``project_wheel``,
        written also to ``out/wheelhouse.json``.

    Raises
    ------
    RuntimeError
        With pip's message, when a pinned version has neither a wheel for the target
        nor a buildable source distribution.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    needed, wanted_by = _walk(PROJECT, extras, python_version)
    if requirements:
        needed = read_pins(requirements)
    packed = to_pack(needed, have, wanted_by)
    wanted = [f"{name}=={version}" for name, version in packed.items()]
    target = ["--only-binary=:all:", "--no-deps", "--implementation", "cp",
              "--python-version", python_version, *(a for tag in platform_tags(arch)
                                                    for a in ("--platform", tag))]
    from_source: list[str] = []
    if wanted and _pip("download", *target, "-d", str(out), *wanted).returncode != 0:
        # one at a time, to find those without a wheel for the target
        for req in wanted:
            if _pip("download", *target, "-d", str(out), req).returncode == 0:
                continue
            built = _pip("wheel", "--no-deps", "-w", str(out), req)
            if built.returncode != 0:
                raise RuntimeError(f"{req}: no wheel for Python {python_version} on "
                                   f"{platform_tags(arch)[0]} and no source build:\n"
                                   f"{built.stderr[-2000:]}")
            from_source.append(req)
    source = Path(source) if source else Path(__file__).resolve().parents[2]
    # no build isolation where setuptools is here: no index needed for our own wheel
    own = _pip("wheel", "--no-deps", *(["--no-build-isolation"] if _has_setuptools() else []),
               "-w", str(out), str(source))
    if own.returncode != 0:
        raise RuntimeError(f"building the {PROJECT} wheel from {source} failed:\n"
                           f"{own.stderr[-2000:]}")
    wheel = sorted(out.glob(f"{PROJECT}-*.whl"))[-1].name
    summary = {"python_version": python_version, "platforms": platform_tags(arch),
               "packed": packed, "built_from_source": from_source, "project_wheel": wheel}
    (out / "wheelhouse.json").write_text(json.dumps(summary, indent=2) + "\n")
    (out / "INSTALL.txt").write_text(
        f"# {len(packed)} dependencies + {wheel}, for Python {python_version} "
        f"({platform_tags(arch)[0]}); the node's torch stays.\n"
        "# with the Python environment that holds the node's torch:\n"
        "python3 -m pip install --no-index --find-links <this folder> latentebsd\n")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m latentebsd.wheelhouse",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="wheelhouse folder to fill")
    ap.add_argument("--python-version", default=sysconfig.get_python_version(),
                    help="the node's Python, e.g. 3.12 (default: this one)")
    ap.add_argument("--arch", default=None, help="the node's machine, e.g. x86_64 (default: this one)")
    ap.add_argument("--have", default=None,
                    help="the node's `python3 -m pip list --format=freeze`: those are not packed")
    ap.add_argument("--requirements", default=None,
                    help="pinned name==version lines to pack instead of this environment's closure")
    ap.add_argument("--extra", action="append", default=[], help="project extras, e.g. slurm")
    args = ap.parse_args(argv)
    have = read_node(args.have) if args.have else {}
    summary = build(args.out, args.python_version, have, args.requirements, args.extra, args.arch)
    print(f"{args.out}: {len(summary['packed'])} dependencies "
          f"({len(summary['built_from_source'])} built from source) + {summary['project_wheel']}")
    print((Path(args.out) / "INSTALL.txt").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
