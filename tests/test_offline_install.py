"""Offline install (issue 21.5): the wheelhouse of what a node lacks, and a non-editable
install from it, without an index, that runs a config-reading job."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np
import pytest
import yaml
from packaging.specifiers import SpecifierSet

from conftest import REPO, band_patterns
from latentebsd import wheelhouse
from latentebsd.io.patterns import write_up2


def test_closure_holds_the_project_dependencies_at_their_installed_versions() -> None:
    closure = wheelhouse.installed_closure("latentebsd", python_version="3.12")
    for name in ("snakemake", "kikuchipy", "orix", "pyebsdindex", "torch", "jsonschema",
                 "dask", "pulp"):  # direct ones and dependencies of dependencies
        assert closure[name] == metadata.version(name), name
    # numba comes through kikuchipy / PyEBSDIndex, not from our own list
    assert "numba" in closure and "numba" not in metadata.requires("latentebsd")[0]


def test_what_is_packed_leaves_out_the_node_torch_and_cuda() -> None:
    needed = {"torch": "2.13.0", "nvidia-cudnn-cu12": "9", "triton": "3", "numpy": "2.1",
              "kikuchipy": "0.13.1", "latentebsd": "0.1.0"}
    assert wheelhouse.to_pack(needed, have={"NumPy"}) == {"kikuchipy": "0.13.1"}


def test_a_node_version_outside_a_required_range_is_packed() -> None:
    """The H200 image's packaging 26.3 against Snakemake's packaging<26 (seen on the
    first GPU run): pip can only install from the wheelhouse if it holds a packaging
    in range; a node version in range is left to the node."""
    needed = {"packaging": "25.0", "snakemake": "9.27.1", "numpy": "2.1.0"}
    wanted = {"packaging": [SpecifierSet("<26,>=24.0"), SpecifierSet(">=20")],
              "numpy": [SpecifierSet(">=1.23")]}
    node = {"packaging": "26.3", "numpy": "2.5.2", "snakemake": None}
    assert wheelhouse.to_pack(needed, node, wanted) == {"packaging": "25.0"}
    node["packaging"] = "24.2"
    assert wheelhouse.to_pack(needed, node, wanted) == {}
    # the real closure asks exactly that of packaging (the conflict the node had)
    closure = wheelhouse.required_specifiers("latentebsd", python_version="3.12")
    assert not all(spec.contains("26.3") for spec in closure["packaging"])


def test_node_list_and_pins_are_read_and_a_loose_pin_is_named(tmp_path: Path) -> None:
    freeze = tmp_path / "node.txt"
    freeze.write_text("numpy==2.1.0\n# comment\nTorch @ file:///wheels/torch.whl\n-e git+x#egg=y\n"
                      "scikit_learn==1.5\n")
    assert wheelhouse.read_node(freeze) == {"numpy": "2.1.0", "torch": None, "scikit-learn": "1.5"}
    pins = _write(tmp_path, "a==1\nB_c==2.0 ; python_version>'3'\n")
    assert wheelhouse.read_pins(pins) == {"a": "1", "b-c": "2.0"}
    with pytest.raises(ValueError, match=r"loose\.txt:2: expected name==version"):
        wheelhouse.read_pins(_write(tmp_path, "a==1\nkikuchipy>=0.11\n", "loose.txt"))


def _write(folder: Path, text: str, name: str = "pins.txt") -> Path:
    (folder / name).write_text(text)
    return folder / name


def test_platform_tags_name_the_manylinux_generations() -> None:
    tags = wheelhouse.platform_tags("x86_64")
    assert tags[:3] == ["manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64"]


@pytest.mark.slow
def test_non_editable_install_from_the_wheelhouse_runs_a_job(tmp_path: Path) -> None:
    """The project's wheel from ``latentebsd.wheelhouse.build`` (everything else already
    on this "node"), installed with ``--no-index`` into a fresh virtual environment, runs
    the workflow's preprocess job, whose library code reads the config schema - the job
    that failed when the schema lived only beside the source tree."""
    have = {dist.metadata["Name"] for dist in metadata.distributions()}
    summary = wheelhouse.build(tmp_path / "wh", f"{sys.version_info[0]}.{sys.version_info[1]}",
                               have=have - {"latentebsd"})
    assert summary["packed"] == {} and summary["project_wheel"].endswith(".whl")
    env = tmp_path / "env"
    venv.create(env, system_site_packages=True, with_pip=True)
    py = env / "bin" / "python"
    # the test machine has the project installed editable: ignore it, install the wheel
    install = subprocess.run([py, "-m", "pip", "install", "--no-index", "--no-deps",
                              "--ignore-installed", "--find-links", tmp_path / "wh", "latentebsd"],
                             capture_output=True, text=True)
    assert install.returncode == 0, install.stderr
    where = subprocess.run([py, "-c", "import latentebsd.config as c; print(c.DEFAULT_SCHEMA)"],
                           capture_output=True, text=True, cwd=tmp_path, check=True).stdout.strip()
    assert where.startswith(str(env)) and Path(where).is_file() and not Path(where).is_symlink()

    work = tmp_path / "work"
    work.mkdir()
    for name in ("workflow", "config", "profiles"):
        src = REPO / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
    shape, grid = (24, 24), (3, 4)
    write_up2(work / "tiny.up2", [band_patterns(12, shape)], grid, shape, 1.0)
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    config["scans"] = {"tiny": {"path": "tiny.up2", "pc": [0.5, 0.5, 0.6], "pc_convention": "bruker",
                                "sample_tilt": 70.0, "camera_tilt": 0.0, "phases": ["FCC"]}}
    config.pop("simulation")
    (work / "config" / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    clean_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    run = subprocess.run([py, "-m", "snakemake", "--cores", "1", "results/preprocessed/tiny.h5"],
                         cwd=work, capture_output=True, text=True, env=clean_env, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    with h5py.File(work / "results" / "preprocessed" / "tiny.h5") as f:
        assert f["patterns"].shape == (12, 12, 12)  # default binning 2
        assert np.isfinite(f["patterns"][:]).all()
