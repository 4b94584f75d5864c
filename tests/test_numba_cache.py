"""The guard of numba's on-disk cache (latentebsd.numba_cache), on a toy cached function.

The toy module has one ``cache=True`` function with several signatures; processes are
real (numba's cache is per process), the cache folder is the test's own.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import pytest

TOY = '''
import numba
import numpy as np

@numba.njit(cache=True)
def scaled_sum(x, k):
    total = x.dtype.type(0)
    for v in x.ravel():
        total += v * k
    return total

ARGS = {
    "i64": (np.arange(10, dtype=np.int64), 3),
    "f64": (np.linspace(0, 1, 11), 2.5),
    "f32": (np.linspace(0, 1, 7).astype(np.float32), np.float32(1.5)),
    "c128": (np.arange(4) + 1j, 2.0),
    "i32_2d": (np.arange(12, dtype=np.int32).reshape(3, 4), 2),
}
'''

RUN = '''
import sys, time
sys.path.insert(0, {toy_dir!r})
import latentebsd  # installs the guard unless LATENTEBSD_NUMBA_GUARD=0
start = float(sys.argv[1])
while time.time() < start:
    time.sleep(0.005)
import toy
for name in sys.argv[2:]:
    x, k = toy.ARGS[name]
    got = toy.scaled_sum(x, k)
    expect = (x.ravel() * k).sum()
    print(name, repr(got), repr(expect), got == expect or abs(got - expect) < 1e-4 * (1 + abs(expect)))
'''


def run(tmp_path: Path, names: list[str], guard: bool = True, start: float = 0.0,
        wait: bool = True):
    toy_dir = tmp_path / "toy"
    toy_dir.mkdir(exist_ok=True)
    (toy_dir / "toy.py").write_text(TOY)
    script = tmp_path / "run.py"
    script.write_text(RUN.format(toy_dir=str(toy_dir)))
    env = dict(os.environ, LATENTEBSD_NUMBA_CACHE_DIR=str(tmp_path / "cache"),
               NUMBA_CACHE_DIR=str(tmp_path / "cache"))
    env["LATENTEBSD_NUMBA_GUARD"] = "1" if guard else "0"
    proc = subprocess.Popen([sys.executable, str(script), str(start), *names], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    return proc.communicate(timeout=300) + (proc.returncode,) if wait else proc


def index_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "cache").rglob("toy.scaled_sum-*.nbi"))


def test_the_cache_goes_to_the_configured_folder_and_nowhere_else(tmp_path):
    out, err, code = run(tmp_path, ["i64", "f64"])
    assert code == 0, err
    assert out.count("True") == 2, out
    assert len(index_files(tmp_path)) == 1
    assert not list((tmp_path / "toy").rglob("*.nbi")), "cache written beside the source"


def test_a_corrupt_entry_is_recompiled_not_executed(tmp_path):
    """The outcome of the race (an index entry that points at another signature's
    code), made on purpose: the guarded process detects it and recompiles; the
    unguarded one runs the wrong machine code (crash or wrong result)."""
    out, err, code = run(tmp_path, ["i64", "f64"])
    assert code == 0, err
    (index,) = index_files(tmp_path)
    with open(index, "rb") as f:
        version = pickle.load(f)
        stamp, overloads = pickle.loads(f.read())
    assert len(set(overloads.values())) == 2
    keys = list(overloads)
    # swap the two data files: each signature now maps to the other one's code
    swapped = {keys[0]: overloads[keys[1]], keys[1]: overloads[keys[0]]}
    with open(index, "wb") as f:
        pickle.dump(version, f, protocol=-1)
        f.write(pickle.dumps((stamp, swapped), protocol=-1))
    snapshot = {p: p.read_bytes() for p in (tmp_path / "cache").rglob("*.nb*")}

    out, err, code = run(tmp_path, ["i64", "f64"])
    assert code == 0, err
    assert out.count("True") == 2, out
    assert "holds code for" in err  # logged as corrupt, then recompiled
    out, err, code = run(tmp_path, ["i64", "f64"])  # and the cache is sound again
    assert code == 0 and out.count("True") == 2 and "holds code for" not in err, out + err

    for path, data in snapshot.items():  # the control: the same corrupt cache, unguarded
        path.write_bytes(data)
    out, err, code = run(tmp_path, ["i64", "f64"], guard=False)
    assert code != 0 or out.count("True") < 2, "an unguarded numba ran the swapped code " \
        "correctly: the corruption this test makes is not what the guard is for"


def test_processes_compiling_different_signatures_at_once_leave_a_sound_cache(tmp_path):
    names = ["i64", "f64", "f32", "c128", "i32_2d"]
    start = time.time() + 3.0  # all five start compiling at the same moment
    procs = [run(tmp_path, names[k:] + names[:k], start=start, wait=False) for k in range(len(names))]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    for out, err, code in results:
        assert code == 0, err
        assert out.count("True") == len(names), out
    (index,) = index_files(tmp_path)
    with open(index, "rb") as f:
        pickle.load(f)
        _, overloads = pickle.loads(f.read())
    assert len(overloads) == len(names)
    assert len(set(overloads.values())) == len(names), "two signatures share a data file"
    out, err, code = run(tmp_path, names)  # a fresh process loads every signature
    assert code == 0 and out.count("True") == len(names), out + err
    assert "recompiling" not in err, err


@pytest.mark.parametrize("slurm", [False, True])
def test_cache_dir_default_is_per_user_and_node_local_in_slurm(monkeypatch, slurm):
    from latentebsd.numba_cache import cache_dir

    monkeypatch.delenv("LATENTEBSD_NUMBA_CACHE_DIR", raising=False)
    if slurm:
        monkeypatch.setenv("SLURM_JOB_ID", "123")
        monkeypatch.setenv("TMPDIR", "/local/scratch")
        assert cache_dir() == Path("/local/scratch") / f"latentebsd-numba-{os.getuid()}"
    else:
        monkeypatch.delenv("SLURM_JOB_ID", raising=False)
        assert cache_dir() == Path.home() / ".cache" / "latentebsd" / "numba"


@pytest.mark.slow
def test_the_stress_benchmark_worker_runs_every_numba_path(tmp_path):
    """benchmarks/numba_cache_stress.py's worker (one process, every step: simulation,
    PyEBSDIndex, orix) runs against today's library, so the stress check cannot rot."""
    import json

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "numba_cache_stress.py"
    proc = subprocess.run([sys.executable, str(script), "--worker", "1", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(next(line for line in proc.stdout.splitlines()
                             if line.startswith("RESULT "))[len("RESULT "):])
    assert result["simulate_am_bytes"] > 0 and result["simulate_wrought_bytes"] > 0
    assert len(result["index_phase"]) == 9 and result["key_alpha"] > 0
