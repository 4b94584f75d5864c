"""Peak memory and throughput of the streamed stages versus scan size.

Builds big scans cheaply by tiling the patterns of one simulated scan (``--tile-from``,
default: a fresh 32 x 32 simulated AM scan of ``--pattern-size`` square patterns) into a
UP2 file of N patterns, then runs preprocess, encode, decode and index on it, each stage in
a fresh subprocess, and prints per stage the patterns, wall time, patterns/s and peak
resident memory (the child's own ``ru_maxrss``, see :data:`LAUNCHER`). Not a test: the
numbers depend on the machine.

Stages and the settings they run with (the workflow's defaults):

- ``preprocess``: ``preprocess_scan`` of the raw UP2 (``--binning``, chunk 1024).
- ``encode``: ``encode_scan`` (chunk 2048, batch 512, CPU, ``--threads``) with an
  *untrained* VAE, d = 128, ``base_channels: 8``, ``init: he`` (the demo's model; the
  weights do not change the cost), writing the NetCDF cube and the ImageJ TIFF as rule
  ``encode`` does.
- ``decode``: ``load_model`` + ``decode_scan`` of that cube to a UP2 (chunk 1024,
  batch 256).
- ``index``: ``index_scan`` of the preprocessed scan (``source="original"``, default
  ``evaluation`` settings, numba with ``--threads`` threads), writing the HDF5 and ``.ang``.
  Scans above ``--index-max`` patterns are indexed as one shard of
  ``--index-max // n_cols`` map rows (a middle one), as a sharded cluster job would:
  ``index_scan(..., rows=(r0, r1))`` on the full-scan files where ``index_scan`` takes
  ``rows``, else on a file holding only those rows (made untimed; the stage label says so).

A stage that a requested stage needs (e.g. ``preprocess`` for ``--stages index``) runs and
is printed too. Each size's files are deleted once it is done (1M patterns of 60 x 60 take
~7.2 GB as UP2 and ~14.4 GB preprocessed), the raw and decoded UP2s as soon as they are
used. The recorded run (benchmarks/RESULTS.md; ~27 min on 2 CPU cores, ~23 GB of disk at
its peak)::

    python benchmarks/memory_scaling.py --sizes 10000 100000 1000000 \\
        --workdir /tmp/latentebsd-bench-mem

A quick look (default sizes, a few minutes)::

    python benchmarks/memory_scaling.py

The preprocessing rows of RESULTS.md recorded before the other stages were added:
``--sizes 3072 30720 --stages preprocess --pattern-size 120 --binning 2``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

STAGES = ("preprocess", "encode", "decode", "index")
#: What each stage reads that an earlier stage writes.
NEEDS = {"preprocess": (), "encode": ("preprocess",), "decode": ("preprocess", "encode"),
         "index": ("preprocess",)}

#: Run in every child before the stage code: ``a`` holds the paths and options, ``done``
#: writes the stage's own timing (the library call only, no imports) for the parent.
PROLOGUE = """
import json, sys, time
a = json.loads(sys.argv[1])
def done(t0, n):
    with open(a["result"], "w") as f:
        json.dump({"seconds": time.perf_counter() - t0, "patterns": int(n)}, f)
"""

STAGE_CODE = {
    "preprocess": """
import h5py
from latentebsd.config import section
from latentebsd.geometry import ScanGeometry
from latentebsd.preprocess import preprocess_scan
with h5py.File(a["geometry"], "r") as f:
    g = ScanGeometry.from_h5(f["geometry"])
t0 = time.perf_counter()
preprocess_scan(a["up2"], a["preprocessed"], g,
                section("preprocess", {"binning": a["binning"], "chunk_size": 1024}), progress=False)
done(t0, g.n_patterns)
""",
    "encode": """
from latentebsd.config import section
from latentebsd.encode import encode_scan
t0 = time.perf_counter()
s = encode_scan(a["preprocessed"], a["weights"], a["cube"], a["cube_tif"],
                settings=section("maps", {"chunk_size": 2048, "batch_size": 512}),
                device="cpu", threads=a["threads"], progress=False)
done(t0, s["n_patterns"])
""",
    "decode": """
import torch
torch.set_num_threads(a["threads"])
from latentebsd.config import section
from latentebsd.decode import decode_scan
from latentebsd.io.preprocessed import read_screen
from latentebsd.io.weights import load_model
t0 = time.perf_counter()
_, decoder, _ = load_model(a["weights"], device="cpu")
geometry, mask, _ = read_screen(a["preprocessed"])
decode_scan(a["cube"], decoder, a["decoded"], geometry, mask,
            section("evaluation", {"chunk_size": 1024, "decode_batch_size": 256}),
            device="cpu", progress=False)
done(t0, geometry.n_patterns)
""",
    "index": """
import numba
numba.set_num_threads(max(1, min(a["threads"], numba.config.NUMBA_NUM_THREADS)))
from latentebsd.index import index_scan
rows = {"rows": tuple(a["rows"])} if a.get("rows") else {}
t0 = time.perf_counter()
index_scan(a["index_patterns"], a["index_preprocessed"], a["index_h5"], a["index_ang"],
           settings=None, source="original", progress=False, **rows)
done(t0, a["index_n"])
""",
}


def make_tile(work: Path, pattern_size: int) -> Path:
    """A 32 x 32 simulated AM scan of ``pattern_size`` square patterns (cached in ``work``)."""
    from latentebsd.config import section
    from latentebsd.simulate import simulate_scan

    tile = work / f"tile_{pattern_size}.up2"
    if not tile.exists():
        settings = section("simulation", {"pattern_shape": [pattern_size, pattern_size]})
        simulate_scan(tile, work / f"tile_{pattern_size}_truth.h5", "am", (32, 32), settings,
                      seed=1, progress=False)
    return tile


def short(n: int) -> str:
    """1000000 -> '1M', 100000 -> '100k', 2500 -> '2500'."""
    for div, unit in ((1_000_000, "M"), (1000, "k")):
        if n % div == 0:
            return f"{n // div}{unit}"
    return str(n)


def map_cols(n: int) -> int:
    """Map width: 1000 columns from 100k patterns (a realistic map), else small."""
    if n >= 100_000 and n % 1000 == 0:
        return 1000
    return 100 if n % 100 == 0 else 64


def make_big_scan(n: int, work: Path, tile_from: Path) -> tuple[Path, Path]:
    """A UP2 of ``n`` patterns (rounded up to whole map rows), tiled from ``tile_from``,
    and its geometry file."""
    import h5py

    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.patterns import PatternReader, write_up2

    reader = PatternReader(tile_from)
    tile = reader.read(0, reader.n_patterns)
    n_cols = map_cols(n)
    n_rows = -(-n // n_cols)
    total = n_rows * n_cols

    def chunks():
        for start in range(0, total, 4096):
            idx = np.arange(start, min(start + 4096, total)) % len(tile)
            yield tile[idx]

    up2 = work / f"big_{total}.up2"
    write_up2(up2, chunks(), (n_rows, n_cols), tile.shape[1:], 1.0)
    geometry_path = work / f"big_{total}_geometry.h5"
    with h5py.File(geometry_path, "w") as f:
        ScanGeometry(n_rows, n_cols, 1.0, tile.shape[1:], pc=[0.5, 0.3, 0.6],
                     camera_tilt=5.0).to_h5(f.create_group("geometry"))
    return up2, geometry_path


def make_weights(path: Path, pattern_shape: tuple[int, int], latent_dim: int = 128) -> Path:
    """An untrained demo VAE (d = ``latent_dim``, ``base_channels: 8``, ``init: he``), saved
    by the training stage's own writer (``io.weights.save_weights``)."""
    import torch

    from latentebsd.config import section
    from latentebsd.io.weights import load_model, save_weights
    from latentebsd.models import build_model

    variant = {"loss": "vae", "latent_dim": latent_dim}
    cfg = section("training", {"base_channels": 8, "init": "he"})
    torch.manual_seed(0)
    model = build_model(variant, pattern_shape, float(cfg["width_factor"]),
                        projection_dim=int(cfg["contrastive"]["projection_dim"]),
                        init=cfg["init"], base_channels=int(cfg["base_channels"]),
                        min_channels=int(cfg["min_channels"]))
    meta = {"variant": variant, "latent_dim": latent_dim, "beta": 1.0,
            "pattern_shape": list(pattern_shape),
            "width_factor": 4.0 * int(cfg["base_channels"]) / latent_dim,
            "projection_dim": int(cfg["contrastive"]["projection_dim"]), "training": cfg,
            "seed": 0, "epochs_trained": 0, "note": "untrained (benchmark)"}
    save_weights(path, model, meta)
    load_model(path)  # round trip: fails here, not in a timed stage
    return path


def index_takes_rows() -> bool:
    """Whether the installed ``index_scan`` has the ``rows`` keyword (asked in a fresh
    interpreter: the source may change while a long run waits)."""
    code = ("import inspect, latentebsd.index as e;"
            "print('rows' in inspect.signature(e.index_scan).parameters)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return out.returncode == 0 and out.stdout.strip() == "True"


def write_row_subset(preprocessed: Path, out: Path, r0: int, r1: int) -> Path:
    """A preprocessed-scan file holding only map rows ``r0:r1`` of ``preprocessed``."""
    import h5py

    from latentebsd.geometry import ScanGeometry

    with h5py.File(preprocessed, "r") as src, h5py.File(out, "w") as dst:
        geometry = ScanGeometry.from_h5(src["geometry"])
        n_cols = geometry.n_cols
        i0, i1 = r0 * n_cols, r1 * n_cols
        patterns = src["patterns"]
        dset = dst.create_dataset("patterns", shape=(i1 - i0, *patterns.shape[1:]),
                                  dtype=patterns.dtype, chunks=patterns.chunks)
        for start in range(i0, i1, 8192):
            stop = min(start + 8192, i1)
            dset[start - i0:stop - i0] = patterns[start:stop]
        for key in src:
            if key not in ("patterns", "valid", "geometry"):
                src.copy(src[key], dst, key)
        dst.create_dataset("valid", data=src["valid"][i0:i1])
        geometry.row_block(r0, r1).to_h5(dst.create_group("geometry"))
        dst.attrs.update(dict(src.attrs))
    return out


#: Starts the stage and reports its peak RSS. The stage must not be started by the
#: benchmark process itself: Linux carries the pre-exec memory high-water mark of a
#: forked (or vforked) child into its ru_maxrss, i.e. this process's own peak (hundreds
#: of MB after simulating the tile). Started from this small interpreter instead, the
#: stage's ru_maxrss is its own.
LAUNCHER = """
import resource, subprocess, sys
code = subprocess.call(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))
sys.exit(code)
"""


def run_code(code: str, args: dict) -> tuple[float, float, int, float]:
    """Run stage ``code`` (after :data:`PROLOGUE`) in a fresh interpreter: (wall s of the
    process, s of the library call, patterns, peak RSS MB of that process alone)."""
    rss_path = Path(args["result"]).with_suffix(".rss")
    t = time.perf_counter()
    exit_code = subprocess.call([sys.executable, "-c", LAUNCHER, str(rss_path), sys.executable,
                                 "-c", PROLOGUE + code, json.dumps(args)])
    wall = time.perf_counter() - t
    if exit_code != 0:
        raise RuntimeError(f"stage failed (exit {exit_code}):\n{code}")
    result = json.loads(Path(args["result"]).read_text())
    return wall, result["seconds"], result["patterns"], int(rss_path.read_text()) / 1024


def run_stage(stage: str, args: dict) -> tuple[float, float, int, float]:
    """:func:`run_code` of one of :data:`STAGE_CODE`."""
    return run_code(STAGE_CODE[stage], args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3072, 30720],
                        help="patterns per scan (rounded up to whole map rows)")
    parser.add_argument("--stages", nargs="+", default=list(STAGES), choices=STAGES)
    parser.add_argument("--tile-from", type=Path, default=None,
                        help="UP2 whose patterns are tiled (default: simulate one)")
    parser.add_argument("--pattern-size", type=int, default=60,
                        help="side of the simulated tile's patterns (default 60)")
    parser.add_argument("--binning", type=int, default=1)
    parser.add_argument("--threads", type=int, default=2, help="torch / numba threads")
    parser.add_argument("--index-max", type=int, default=100_000,
                        help="bigger scans are indexed as one shard of this many patterns")
    parser.add_argument("--wait-for-rows", type=float, default=0.0, metavar="MIN",
                        help="before indexing a shard, wait up to MIN minutes (polling every "
                             "5 min) for index_scan to take rows= before using a row subset")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="latentebsd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    stages = [s for s in STAGES if s in args.stages or any(
        s in NEEDS[r] for r in args.stages)]
    tile_from = args.tile_from or make_tile(work, args.pattern_size)
    t_start = time.monotonic()
    table = []
    print(f"{'stage':<52} {'patterns':>9} {'wall s':>8} {'call s':>8} {'patterns/s':>10} "
          f"{'peak RSS MB':>11}", flush=True)
    for n in sorted(args.sizes):
        up2, geometry_path = make_big_scan(n, work, tile_from)
        total = int(up2.stem.split("_")[1])
        stem = work / f"big_{total}"
        files = {
            "up2": str(up2), "geometry": str(geometry_path), "binning": args.binning,
            "threads": args.threads, "preprocessed": f"{stem}_pre.h5",
            "cube": f"{stem}_latent.nc", "cube_tif": f"{stem}_latent.tif",
            "decoded": f"{stem}_decoded.up2",
            "index_h5": f"{stem}_index.h5", "index_ang": f"{stem}_index.ang",
            "result": f"{stem}_result.json",
        }
        for stage in stages:
            label = stage
            if stage == "encode" and not Path(files.get("weights", "")).is_file():
                from latentebsd.io.preprocessed import read_geometry as read_preprocessed_geometry

                shape = read_preprocessed_geometry(files["preprocessed"]).pattern_shape
                files["weights"] = str(make_weights(work / f"weights_{shape[0]}x{shape[1]}.pt",
                                                    shape))
            if stage == "index":
                files.update(index_patterns=files["preprocessed"],
                             index_preprocessed=files["preprocessed"], index_n=total, rows=None)
                if total > args.index_max:
                    n_cols = map_cols(n)
                    shard = max(1, args.index_max // n_cols)
                    r0 = (total // n_cols // shard // 2) * shard
                    r1 = r0 + shard
                    files["index_n"] = shard * n_cols
                    deadline = time.monotonic() + 60 * args.wait_for_rows
                    while not index_takes_rows() and time.monotonic() < deadline:
                        print(f"  index_scan has no rows= yet; waiting (until "
                              f"{args.wait_for_rows:.0f} min)", flush=True)
                        time.sleep(min(300.0, max(1.0, deadline - time.monotonic())))
                    if index_takes_rows():
                        files["rows"] = [r0, r1]
                        label = (f"index (one {short(shard * n_cols)} shard of the "
                                 f"{short(total)} scan, rows {r0}:{r1})")
                    else:
                        subset = write_row_subset(Path(files["preprocessed"]),
                                                  Path(f"{stem}_rows{r0}-{r1}.h5"), r0, r1)
                        files.update(index_patterns=str(subset), index_preprocessed=str(subset))
                        label = (f"index (rows {r0}:{r1} of the {short(total)} scan "
                                 f"copied to a {short(shard * n_cols)} file)")
            wall, call, patterns, peak = run_stage(stage, files)
            table.append((label, patterns, wall, call, patterns / call, peak))
            print(f"{label:<52} {patterns:>9} {wall:8.1f} {call:8.1f} {patterns / call:10.0f} "
                  f"{peak:11.0f}", flush=True)
            if stage == "preprocess":
                up2.unlink()
            if stage == "decode":
                Path(files["decoded"]).unlink()
        up2.unlink(missing_ok=True)
        for path in work.glob(f"big_{total}_*"):
            path.unlink()
    print(f"\ntotal {time.monotonic() - t_start:.0f} s\n")
    print("| stage | patterns | wall s | patterns/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    for label, patterns, wall, call, rate, peak in table:
        print(f"| {label} | {patterns:,} | {wall:.1f} ({call:.1f}) | {rate:,.0f} | {peak:,.0f} |")


if __name__ == "__main__":
    main()
