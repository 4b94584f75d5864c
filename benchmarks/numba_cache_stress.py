"""Stress check of numba's on-disk cache: many processes compiling at once, cold cache.

Each round clears the cache, starts ``--procs`` processes at the same moment, each of
which runs every numba path the workflow uses (kikuchipy's pattern projection and
image quality, orix's misorientations / grain tools / IPF colours / .ang writing,
PyEBSDIndex's Hough indexing), in an order that differs between processes so that
they compile different signatures of the same functions at the same time. Then one
more process loads everything from the cache and checks the results. A crash is any
process that does not exit 0 (a segfault exits -11); the results of every process
must equal the first one's.

    python benchmarks/numba_cache_stress.py                  # guarded (latentebsd.numba_cache)
    python benchmarks/numba_cache_stress.py --unguarded      # numba as the libraries leave it

``--unguarded`` sets ``LATENTEBSD_NUMBA_GUARD=0`` and gives each round its own
``HOME`` and ``NUMBA_CACHE_DIR`` (PyEBSDIndex moves the cache to
``~/.pyebsdindex/numbacache`` when it is imported), so nothing outside the round's
folder is touched. Prints one line per round and a summary; exits 1 on any crash.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _step_simulate(work: Path) -> dict:
    from latentebsd.config import section
    from latentebsd.simulate import simulate_scan

    out = {}
    settings = section("simulation", {"pattern_shape": [60, 60]})
    for micro in ("am", "wrought"):
        up2, truth = work / f"{micro}.up2", work / f"{micro}_truth.h5"
        simulate_scan(up2, truth, micro, (3, 4), settings, seed=1, progress=False)
        out[f"simulate_{micro}_bytes"] = up2.stat().st_size
    return out


def _step_index(work: Path) -> dict:
    import kikuchipy as kp
    import numpy as np

    from latentebsd.geometry import ScanGeometry
    from latentebsd.index import image_quality, index_patterns

    s = kp.data.nickel_ebsd_small()
    s.remove_static_background(show_progressbar=False)
    s.remove_dynamic_background(show_progressbar=False)
    pats = s.data.reshape(-1, 60, 60).astype(np.float32)
    geometry = ScanGeometry(3, 3, 1.5, (60, 60), [0.425, 0.213, 0.501], sample_tilt=70.0,
                            camera_tilt=0.0)
    result = index_patterns(pats, geometry)
    return {"index_phase": result["phase"].tolist(),
            "index_quat": np.round(result["quat"], 4).tolist(),
            "iq_kp": np.round(image_quality(pats), 5).tolist()}


def _step_orix(work: Path) -> dict:
    import numpy as np

    from latentebsd.conventional import (grain_reference_orientation_deviation,
                                         kernel_average_misorientation, segment_grains)
    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.index import INDEX_DTYPE, write_ang
    from latentebsd.orientations import ipf_colors, pair_angles
    from latentebsd.plotting import ipf_key_image
    from latentebsd.simulate import random_quaternions, small_rotations

    rng = np.random.default_rng(0)
    grains = random_quaternions(rng, 3)
    q = grains[np.repeat(np.arange(3), 8)][:20]
    q = q * np.sign(q[:, :1])
    omap = q.reshape(4, 5, 4)
    kam = kernel_average_misorientation(omap, 5.0, 8)
    labels = segment_grains(omap, 5.0)
    grod = grain_reference_orientation_deviation(omap, labels)
    rgb = ipf_colors(q, direction="x")
    key = ipf_key_image("x", size=40)
    small = small_rotations(rng, np.full(5, 0.5))
    angles = pair_angles(small, np.tile([1.0, 0, 0, 0], (5, 1)))
    result = np.zeros(20, INDEX_DTYPE)
    result["quat"], result["phase"], result["nmatch"] = q, 0, 5
    write_ang(work / "orix.ang", result, ScanGeometry(4, 5, 1.0, (60, 60)))
    return {"kam": np.round(np.nan_to_num(kam), 5).tolist(), "labels": labels.tolist(),
            "grod": np.round(np.nan_to_num(grod), 4).tolist(),
            "rgb": np.round(rgb, 4).tolist(), "key_alpha": float(key[..., 3].sum()),
            "angles": np.round(angles, 4).tolist()}


STEPS = {"simulate": _step_simulate, "index": _step_index, "orix": _step_orix}


def worker(k: int, work: Path) -> None:
    """Run every step, starting at step ``k % 3``; print the results as JSON."""
    names = list(STEPS)
    order = names[k % len(names):] + names[:k % len(names)]
    work.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in order:
        results.update(STEPS[name](work))
    print("RESULT " + json.dumps(results, sort_keys=True))


def run_round(procs: int, root: Path, guarded: bool) -> dict:
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    env = dict(os.environ)
    env.pop("NUMBA_CACHE_DIR", None)
    if guarded:
        env["LATENTEBSD_NUMBA_CACHE_DIR"] = str(root / "cache")
    else:
        env["LATENTEBSD_NUMBA_GUARD"] = "0"
        env["NUMBA_CACHE_DIR"] = str(root / "cache")
        env["HOME"] = str(root / "home")
        (root / "home").mkdir()
    t0 = time.perf_counter()
    children = [subprocess.Popen([sys.executable, __file__, "--worker", str(k), str(root / f"w{k}")],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for k in range(procs)]
    outputs = [c.communicate() for c in children]
    codes = [c.returncode for c in children]
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    check = subprocess.run([sys.executable, __file__, "--worker", "0", str(root / "check")], env=env,
                           capture_output=True, text=True)
    warm = time.perf_counter() - t1
    codes.append(check.returncode)
    outputs.append((check.stdout, check.stderr))
    results = [next((line[7:] for line in out.splitlines() if line.startswith("RESULT ")), None)
               for out, _ in outputs]
    ok_results = [r for r in results if r is not None]
    mismatched = sum(r != ok_results[0] for r in ok_results) if ok_results else 0
    failures = [(i, code, err.strip().splitlines()[-1:] if err else "")
                for i, (code, (_, err)) in enumerate(zip(codes, outputs)) if code != 0]
    return {"codes": codes, "crashes": sum(c != 0 for c in codes), "mismatched": mismatched,
            "cold_wall_s": round(wall, 1), "warm_check_s": round(warm, 1), "failures": failures}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--worker", nargs=2, metavar=("K", "DIR"), help=argparse.SUPPRESS)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--procs", type=int, default=4)
    parser.add_argument("--unguarded", action="store_true",
                        help="leave numba's cache as kikuchipy/orix/PyEBSDIndex set it")
    parser.add_argument("--root", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = parser.parse_args()
    if args.worker:
        worker(int(args.worker[0]), Path(args.worker[1]))
        return 0
    root = args.root or Path(tempfile.mkdtemp(prefix="numba-stress-"))
    mode = "unguarded" if args.unguarded else "guarded"
    total_crashes = total_mismatch = 0
    print(f"numba cache stress, {mode}: {args.rounds} rounds x {args.procs} processes "
          f"+ 1 warm check, {os.cpu_count()} CPUs")
    for r in range(1, args.rounds + 1):
        res = run_round(args.procs, root / f"round{r}", not args.unguarded)
        total_crashes += res["crashes"]
        total_mismatch += res["mismatched"]
        print(f"round {r}: exit codes {res['codes']}, crashes {res['crashes']}, "
              f"results differing {res['mismatched']}, cold {res['cold_wall_s']} s, "
              f"warm check {res['warm_check_s']} s" + (f", failures {res['failures']}"
                                                       if res["failures"] else ""), flush=True)
    print(f"total: {total_crashes} crashes, {total_mismatch} differing results in "
          f"{args.rounds * (args.procs + 1)} processes ({mode})")
    return 1 if total_crashes or total_mismatch else 0


if __name__ == "__main__":
    sys.exit(main())
