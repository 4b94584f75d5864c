"""Calibration of the simulated orientation scatter against a real scan (issue 25).

    python benchmarks/calibration.py [--map 24 24] [--sweep] [--out calib.json]

The statistic is the **within-grain neighbour misorientation of the workflow's Hough
index** (PyEBSDIndex with the study's ``evaluation.hough`` settings, 60 x 60 patterns):
the misorientation of every pair of 4-neighbours that lie in one grain. Within a
grain of a recrystallised (real) or ideal (simulated ``wrought``) microstructure the
true neighbour misorientation is ~0, so this is the index's orientation noise.

Real reference: kikuchipy's shipped 3 x 3 recrystallised Ni map
(``kikuchipy.data.nickel_ebsd_small``, NORDIF, 60 x 60 patterns, nothing downloaded),
through the workflow's own preprocessing (its file's static background, no binning) and
index, twice:

- with the one (mean) PC of the file - the reference the defaults are calibrated to:
  the workflow indexes a simulated scan with a smooth, *modelled* PC per point, so
  the scatter the simulator must produce is what a real scan shows under one smooth PC
  model, not under a PC refined pattern by pattern;
- with the file's per-pattern PCs (kikuchipy's per-pattern fits), for comparison: they
  carry their own fit scatter, which adds to the neighbour misorientation.

Real pairs count as within-grain when their misorientation is below ``--grain-deg``
(the 3 x 3 map lies in one grain). Simulated: a small ``wrought`` scan (``--map``, with
grain_size 6 so a mean background over a few hundred points is band-free, as on the
study's 48 x 64 maps), simulated with the config's ``simulation`` settings, binned 2
(120 -> 60) and mean-background-corrected by the workflow's preprocessing; within-grain
pairs share a ground-truth ``domain_id`` and neither point is in a scratch.

Besides the scatter, the table gives the index's pattern-quality statistics (median
``pq`` - PyEBSDIndex's pattern quality, ``cm`` - its confidence metric, ``fit`` - its
band-fit error, and the share indexed with >= ``min_nmatch`` bands), so a calibration
that fixes the scatter by ruining the patterns shows.

``--sweep`` first measures each imperfection alone (ideal detector + that one) and then
the calibrated default, as in benchmarks/RESULTS.md.
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

import latentebsd  # noqa: F401  (owns numba's cache before kikuchipy loads)
from latentebsd import config

ROOT = Path(__file__).resolve().parents[1]


def neighbour_pairs(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Row-major indices ``(a, b)`` of every horizontal and vertical 4-neighbour pair."""
    idx = np.arange(shape[0] * shape[1]).reshape(shape)
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    return a, b


def scatter_stats(result: dict, shape: tuple[int, int], min_nmatch: int,
                  same: np.ndarray | None = None, grain_deg: float = 5.0) -> dict:
    """Within-grain neighbour misorientation and quality statistics of one index result.

    ``same``: per pair, whether both points lie in one grain (ground truth); ``None``:
    pairs below ``grain_deg`` count (a real scan).
    """
    from latentebsd.orientations import pair_angles

    a, b = neighbour_pairs(shape)
    indexed = np.asarray(result["nmatch"]) >= min_nmatch
    ok = indexed[a] & indexed[b]
    ang = pair_angles(result["quat"][a], result["quat"][b])
    keep = ok & ((ang < grain_deg) if same is None else same)
    ang = ang[keep]
    out = {"n_points": int(len(indexed)), "n_pairs": int(keep.sum()),
           "indexed": float(indexed.mean())}
    if ang.size:
        out.update(median=float(np.median(ang)), p10=float(np.quantile(ang, 0.1)),
                   p90=float(np.quantile(ang, 0.9)), min=float(ang.min()), max=float(ang.max()))
    for key in ("pq", "cm", "fit"):
        out[key] = float(np.median(np.asarray(result[key])[indexed])) if indexed.any() else np.nan
    return out


def index_file(pattern: Path, pre: Path, out: Path, evaluation: dict) -> dict:
    """The workflow's index of a preprocessed scan (rule ``index_scan``)."""
    from latentebsd.index import run_index_rule
    from latentebsd.io.index import read_index

    run_index_rule(str(pre), str(pre), str(out), None, evaluation, "original")
    return read_index(out)[0]


def real_reference(tmp: Path, preprocess: dict, evaluation: dict, grain_deg: float) -> dict:
    """The real 3 x 3 Ni map indexed with its per-pattern PCs and with one PC."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from save_nickel_small import save_nickel_small

    from latentebsd.io.patterns import PatternReader
    from latentebsd.preprocess import geometry_from_config, run_preprocess_rule

    path = save_nickel_small(tmp / "nickel_ebsd_small.h5")
    base = {"path": str(path), "binning": 1, "background": "static"}
    pcs = geometry_from_config("ni", base, PatternReader(path)).pc.reshape(-1, 3)
    out = {}
    for label, cfg in (("real, one PC", {**base, "pc": [float(v) for v in pcs.mean(axis=0)],
                                         "pc_convention": "bruker"}),
                       ("real, per-pattern PCs", base)):
        key = label.split(", ")[1].replace(" ", "_").replace("-", "_")
        pre = run_preprocess_rule("ni", str(path), None, str(tmp / f"real_{key}.h5"), cfg,
                                  preprocess)
        result = index_file(pre, pre, tmp / f"real_{key}_index.h5", evaluation)
        out[label] = scatter_stats(result, (3, 3), evaluation["min_nmatch"], None, grain_deg)
    return out


def simulated(tmp: Path, label: str, simulation: dict, preprocess: dict, evaluation: dict,
              map_shape: tuple[int, int], seed: int) -> dict:
    """Simulate a small ``wrought`` scan with ``simulation``, preprocess and index it as
    the workflow does, and measure it against its ground truth."""
    from latentebsd.io.truth import read_truth
    from latentebsd.preprocess import run_preprocess_rule
    from latentebsd.simulate import simulate_scan

    sim = copy.deepcopy(simulation)
    # small grains: a mean background over a few hundred points must be band-free
    sim["wrought"]["grain_size"] = 6.0
    up2, truth_path = tmp / f"{label}.up2", tmp / f"{label}_truth.h5"
    t0 = time.perf_counter()
    simulate_scan(up2, truth_path, "wrought", map_shape, sim, seed, progress=False)
    pre = run_preprocess_rule(label, str(up2), str(truth_path), str(tmp / f"{label}_pre.h5"),
                              {"simulate": {}}, preprocess)
    result = index_file(pre, pre, tmp / f"{label}_index.h5", evaluation)
    truth, _, _ = read_truth(truth_path)
    a, b = neighbour_pairs(map_shape)
    dom, scratch = truth["domain_id"].ravel(), truth["scratch_mask"].ravel()
    same = (dom[a] == dom[b]) & ~scratch[a] & ~scratch[b]
    out = scatter_stats(result, map_shape, evaluation["min_nmatch"], same)
    from latentebsd.orientations import pair_angles

    ok = np.asarray(result["nmatch"]) >= evaluation["min_nmatch"]
    err = pair_angles(result["quat"][ok], truth["quaternion"].reshape(-1, 4)[ok])
    out["to_truth"] = float(np.median(err)) if err.size else np.nan
    pc_err = truth["pc_error"].reshape(-1, 3)
    out["pc_error_std"] = float(pc_err.std(axis=0).mean())
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


def sweep_settings(simulation: dict) -> list[tuple[str, dict]]:
    """(label, simulation settings): the ideal detector, each imperfection alone on it,
    and the given (calibrated default) settings."""
    ideal = copy.deepcopy(simulation)
    ideal["counts"] = 300.0
    ideal["imperfections"] = {}
    one = {
        "counts 120": {"counts": 120.0},
        "band_blur 0.02": {"imperfections": {"band_blur": 0.02}},
        "pc_jitter 0.002": {"imperfections": {"pc_jitter": 0.002}},
        "pc_jitter 0.004": {"imperfections": {"pc_jitter": 0.004}},
        "pc_offset [0.01, 0.01, 0.01]": {"imperfections": {"pc_offset": [0.01, 0.01, 0.01]}},
        "pc_drift_error 0.01": {"imperfections": {"pc_drift_error": 0.01}},
        "camera_tilt_error 1": {"imperfections": {"camera_tilt_error": 1.0}},
        "radial_distortion 0.02": {"imperfections": {"radial_distortion": 0.02}},
    }
    runs = [("ideal (counts 300, no imperfections)", ideal)]
    for label, change in one.items():
        s = copy.deepcopy(ideal)
        s.update(change)
        runs.append((label, s))
    return runs


def fmt(label: str, s: dict) -> str:
    def f(key: str, digits: int = 2) -> str:
        v = s.get(key, np.nan)
        return "-" if v is None or not np.isfinite(v) else f"{v:.{digits}f}"

    return (f"| {label} | {s['n_pairs']} | {f('median')} | {f('p10')} - {f('p90')} | "
            f"{f('to_truth')} | {s['indexed']:.2f} | {f('pq', 3)} | {f('cm', 3)} | {f('fit')} |")


HEADER = ("| scan | pairs | median (deg) | 10 - 90 % (deg) | to truth (deg) | indexed | "
          "pq | cm | fit (deg) |\n|---|---|---|---|---|---|---|---|---|")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "config" / "config.yaml"))
    parser.add_argument("--map", type=int, nargs=2, default=[24, 24])
    parser.add_argument("--seed", type=int, default=None, help="default: the config's seed")
    parser.add_argument("--grain-deg", type=float, default=5.0)
    parser.add_argument("--sweep", action="store_true", help="each imperfection alone, too")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=JSON",
                        help="override simulation settings, e.g. imperfections.pc_jitter=0.003")
    parser.add_argument("--out", default=None, help="write the numbers as JSON")
    args = parser.parse_args()

    cfg = config.load_config(args.config)
    seed = cfg["seed"] if args.seed is None else args.seed
    simulation, preprocess, evaluation = cfg["simulation"], cfg["preprocess"], cfg["evaluation"]
    for item in args.set:
        key, value = item.split("=", 1)
        node = simulation
        *parents, last = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = json.loads(value)
    simulation = config.section("simulation", simulation)
    shape = tuple(args.map)
    rows = {}
    with tempfile.TemporaryDirectory(prefix="calibration-") as tmp:
        tmp = Path(tmp)
        rows.update(real_reference(tmp, preprocess, evaluation, args.grain_deg))
        runs = sweep_settings(simulation) if args.sweep else []
        runs.append((f"default (counts {simulation['counts']:g}, imperfections "
                     f"{json.dumps(simulation['imperfections'])})", simulation))
        for i, (label, settings) in enumerate(runs):
            rows[label] = simulated(tmp, f"sim{i}", settings, preprocess, evaluation, shape, seed)
            print(fmt(label, rows[label]), flush=True)
    reference = rows["real, one PC"]["median"]
    print(f"\nsimulated {shape[0]} x {shape[1]} wrought (grain_size 6), 120 x 120 binned to "
          f"60 x 60; real: kikuchipy nickel_ebsd_small 3 x 3, 60 x 60\n")
    print(HEADER)
    for label, s in rows.items():
        print(fmt(label, s))
    last = rows[runs[-1][0]]["median"]
    print(f"\ndefault / real (one PC) median: {last / reference:.2f} "
          f"(target 0.75 - 1.25)")
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=1, default=float))


if __name__ == "__main__":
    main()
