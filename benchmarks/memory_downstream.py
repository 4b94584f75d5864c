"""Peak memory of the per-scan jobs after indexing, versus scan size.

``memory_scaling.py`` covers the pattern-streaming stages (preprocess, encode, decode,
index). This covers every other per-scan job a big scan runs: the gathers of a sharded
scan, per-pattern metrics (whole and one shard), conventional maps (IPF, KAM, grains,
GROD; the figures), Fig 11, the latent-feature ranking / montage / segmentation and the
Fig 5/6 panels. Their inputs are per-pattern arrays, not patterns, so they are made by
tiling the real outputs of one small run (a 32 x 32 simulated AM scan, indexed - also
standing in for the decoded set, so that every point gets a misorientation; an untrained
d = 128 demo model's latent cube) to N points. Each job runs in a fresh
interpreter (``memory_scaling.run_code``), which reports its own peak resident memory. Not a
test: the numbers depend on the machine.

The recorded run (benchmarks/RESULTS.md)::

    python benchmarks/memory_downstream.py --sizes 10000 100000 1000000

A quick look (default sizes, ~2 min)::

    python benchmarks/memory_downstream.py
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from memory_scaling import make_tile, make_weights, map_cols, run_code  # noqa: E402

#: The library call of each job, run after ``memory_scaling.PROLOGUE`` (``a`` holds the
#: paths, ``done`` reports the call's own time).
JOB_CODE = {
    "gather_latent (4 shards)": """
from latentebsd.encode import gather_latent
t0 = time.perf_counter()
gather_latent(a["cube_shards"], a["summary_shards"], a["out_nc"], a["out_tif"], a["out_json"])
done(t0, a["n"])
""",
    "gather_decoded (4 shards)": """
from latentebsd.decode import gather_up2
t0 = time.perf_counter()
gather_up2(a["up2_shards"], a["pre"], a["out_up2"])
done(t0, a["n"])
""",
    "gather_index (4 shards)": """
from latentebsd.index import gather_index
t0 = time.perf_counter()
gather_index(a["index_shards"], a["pre"], a["out_h5"], a["out_ang"])
done(t0, a["n"])
""",
    "evaluate_metrics": """
from latentebsd.metrics import run_metrics_rule
t0 = time.perf_counter()
run_metrics_rule(a["orig"], a["dec"], a["out_h5"], None, "v", "s")
done(t0, a["n"])
""",
    "metrics_shard (1/4)": """
from latentebsd.metrics import run_metrics_rule
t0 = time.perf_counter()
run_metrics_rule(a["orig"], a["dec"], a["out_h5"], None, "v", "s", rows=tuple(a["rows"]))
done(t0, a["n"] // 4)
""",
    "gather_metrics (4 shards)": """
from latentebsd.metrics import gather_metrics
t0 = time.perf_counter()
gather_metrics(a["metric_shards"], a["pre"], a["out_h5"])
done(t0, a["n"])
""",
    "conventional_maps": """
from latentebsd.conventional import run_conventional_rule
t0 = time.perf_counter()
run_conventional_rule(a["orig"], a["conventional"], a["out_png"], a["out_png2"], None, "s")
done(t0, a["n"])
""",
    "decoded_maps (Fig 11)": """
from latentebsd.figures import run_fig11_rule
t0 = time.perf_counter()
run_fig11_rule({"original": a["orig"], "v": a["dec"]},
               {"v": {"loss": "vae", "latent_dim": 128}}, a["out_png"], None, "s")
done(t0, a["n"])
""",
    "feature_maps (d = 128)": """
from latentebsd.maps import feature_maps
t0 = time.perf_counter()
feature_maps(a["cube"], a["out_csv"], a["out_png"], [a["out_png2"]], a["out_npy"],
             a["out_png3"], None, seed=0, truth_csv=a["out_csv2"], truth_png=a["out_png4"],
             progress=False)
done(t0, a["n"])
""",
    "latent_panels (Figs 5/6)": """
from latentebsd.figures import run_latent_panel_rule
t0 = time.perf_counter()
run_latent_panel_rule(a["cube"], a["conventional"], a["out_png"], None, "s", "v")
done(t0, a["n"])
""",
}


def small_run(work: Path, pattern_size: int) -> dict[str, Path]:
    """Preprocess and index a 32 x 32 simulated scan and encode it with an untrained model:
    the per-point outputs that get tiled."""
    from latentebsd.config import section
    from latentebsd.encode import encode_scan
    from latentebsd.index import index_scan
    from latentebsd.io.truth import read_truth
    from latentebsd.preprocess import preprocess_scan

    tile = make_tile(work, pattern_size)
    _, geometry, _ = read_truth(tile.with_name(f"{tile.stem}_truth.h5"))
    out = {name: work / f"small_{name}" for name in ("pre.h5", "cube.nc", "orig.h5")}
    preprocess_scan(tile, out["pre.h5"], geometry, section("preprocess", {"binning": 1}), progress=False)
    weights = make_weights(work / "small_weights.pt", geometry.pattern_shape)
    encode_scan(out["pre.h5"], weights, out["cube.nc"], progress=False)
    index_scan(out["pre.h5"], out["pre.h5"], out["orig.h5"], None, source="original", progress=False)
    return out


def tiled_inputs(small: dict[str, Path], n: int, work: Path) -> dict:
    """The small run's outputs tiled to an ``n``-point map: index files, their 4 shard
    files, metric shards, a skeleton preprocessed file (geometry, mask, valid) and the
    latent cube."""
    import h5py

    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.cube import write_cube
    from latentebsd.io.index import read_index, write_index
    from latentebsd.io.patterns import UP2_RANGE, to_uint16, write_up2
    from latentebsd.metrics import run_metrics_rule
    from latentebsd.shards import aligned_shard_rows

    n_cols = map_cols(n)
    n_rows = -(-n // n_cols)
    total = n_rows * n_cols
    stem = work / f"n{total}"
    geometry = ScanGeometry(n_rows, n_cols, 1.0, (60, 60), pc=[0.5, 0.3, 0.6], camera_tilt=5.0)
    with h5py.File(small["pre.h5"], "r") as f:
        mask = f["mask"][()]
    pre = Path(f"{stem}_pre.h5")
    with h5py.File(pre, "w") as f:  # what read_screen needs; no patterns to read
        f.create_dataset("patterns", shape=(total, *mask.shape), dtype=np.float32)
        f["mask"] = mask
        f["valid"] = np.ones(total, bool)
        geometry.to_h5(f.create_group("geometry"))
    rows = aligned_shard_rows(n_rows, n_cols, -(-total // 4))
    files = {"n": total, "pre": str(pre), "rows": list(rows[0])}
    for source in ("orig", "dec"):
        # "decoded" = the original's results: every point indexed in both, so the
        # metrics compute a misorientation everywhere (the untrained model's decoded
        # patterns hardly index, which would leave that work out)
        arrays, _, attrs = read_index(small["orig.h5"])
        big = {k: np.resize(v, (total, *v.shape[1:])) for k, v in arrays.items()}
        write_index(f"{stem}_{source}.h5", big, geometry, attrs)
        files[source] = f"{stem}_{source}.h5"
        if source == "orig":
            files["index_shards"] = []
            for k, (r0, r1) in enumerate(rows):
                part = slice(r0 * n_cols, r1 * n_cols)
                path = f"{stem}_orig_shard{k}.h5"
                write_index(path, {key: v[part] for key, v in big.items()},
                            geometry.row_block(r0, r1),
                            {**attrs, "first_row": r0, "shard_n_rows": r1 - r0})
                files["index_shards"].append(path)
    files["metric_shards"] = []
    for k, r in enumerate(rows):
        path = f"{stem}_metrics_shard{k}.h5"
        run_metrics_rule(files["orig"], files["dec"], path, None, "v", "s", rows=r)
        files["metric_shards"].append(path)
    with h5py.File(small["cube.nc"], "r") as f:
        mean = f["latent_mean"][()].reshape(f["latent_mean"].shape[0], -1)
    d = mean.shape[0]
    idx = np.arange(total) % mean.shape[1]
    cube = mean[:, idx].reshape(d, n_rows, n_cols)
    write_cube(f"{stem}_cube.nc", cube, step_um=1.0, scan="s", variant="v")
    files["cube_shards"], files["summary_shards"] = [], []
    for k, (r0, r1) in enumerate(rows):  # what encode_shard writes
        files["cube_shards"].append(str(write_cube(
            f"{stem}_cube_shard{k}.nc", cube[:, r0:r1], step_um=1.0, scan="s", variant="v",
            first_row=r0, scan_n_rows=n_rows, n_rows=r1 - r0)))
        n_k = (r1 - r0) * n_cols
        files["summary_shards"].append(f"{stem}_cube_shard{k}.json")
        Path(files["summary_shards"][-1]).write_text(json.dumps({
            "n_patterns": n_k, "n_valid": n_k, "raw_bytes_total": 7200 * n_k,
            "latent_bytes_total": 4 * d * n_k, "encode_seconds": 1.0}))
    del cube
    files["up2_shards"] = []
    with h5py.File(small["pre.h5"], "r") as f:  # what decode_shard writes: uint16 patterns
        tile = to_uint16(f["patterns"][()], *UP2_RANGE)
    for k, (r0, r1) in enumerate(rows):
        def chunks(a=r0 * n_cols, b=r1 * n_cols):
            for start in range(a, b, 4096):
                yield tile[np.arange(start, min(start + 4096, b)) % len(tile)]
        files["up2_shards"].append(str(write_up2(f"{stem}_dec_shard{k}.up2", chunks(),
                                                 (r1 - r0, n_cols), tile.shape[1:], 1.0)))
    files["cube"] = f"{stem}_cube.nc"
    files["conventional"] = f"{stem}_conventional.h5"
    for key, ext in (("out_h5", "h5"), ("out_ang", "ang"), ("out_nc", "nc"), ("out_tif", "tif"),
                     ("out_json", "json"), ("out_up2", "up2"), ("out_png", "png"), ("out_png2", "png"),
                     ("out_png3", "png"), ("out_png4", "png"), ("out_csv", "csv"),
                     ("out_csv2", "csv"), ("out_npy", "npy")):
        files[key] = f"{stem}_{key}.{ext}"
    files["result"] = f"{stem}_result.json"
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 30_000])
    parser.add_argument("--jobs", nargs="+", default=list(JOB_CODE), choices=list(JOB_CODE))
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="latentebsd-bench-down-"))
    work.mkdir(parents=True, exist_ok=True)
    small = small_run(work, 60)
    jobs = [j for j in JOB_CODE if j in args.jobs]
    if "latent_panels (Figs 5/6)" in jobs and "conventional_maps" not in jobs:
        jobs.insert(0, "conventional_maps")  # the panels read its output
    table = []
    print(f"{'job':<28} {'points':>9} {'wall s':>8} {'call s':>8} {'peak RSS MB':>11}", flush=True)
    for n in sorted(args.sizes):
        files = tiled_inputs(small, n, work)
        for job in jobs:
            wall, call, points, peak = run_code(JOB_CODE[job], files)
            table.append((job, points, wall, call, peak))
            print(f"{job:<28} {points:>9} {wall:8.1f} {call:8.1f} {peak:11.0f}", flush=True)
        for path in work.glob(f"n{files['n']}_*"):
            path.unlink()
    print("\n| job | points | wall s (call s) | peak RSS MB |\n|---|---|---|---|")
    for job, points, wall, call, peak in table:
        print(f"| {job} | {points:,} | {wall:.1f} ({call:.1f}) | {peak:,.0f} |")


if __name__ == "__main__":
    start = time.monotonic()
    main()
    print(f"\ntotal {time.monotonic() - start:.0f} s")
