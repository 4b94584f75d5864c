"""Peak memory and throughput of the streamed stages versus scan size.

Builds big scans cheaply by tiling the patterns of one simulated scan (``--tile-from``,
default: a fresh 16 x 16 simulated AM scan) into a UP2 file of N patterns, then runs each
stage in a fresh subprocess and prints its peak resident memory (ru_maxrss) and
patterns/s. Not a test: numbers depend on the machine.

    python benchmarks/memory_scaling.py --sizes 3072 30720 --stages preprocess
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

STAGE_CODE = {
    "preprocess": """
from latentebsd.preprocess import preprocess_scan
from latentebsd.geometry import ScanGeometry
import h5py, sys
with h5py.File(sys.argv[2]) as f:
    g = ScanGeometry.from_h5(f["geometry"])
preprocess_scan(sys.argv[1], sys.argv[3], g, binning=2, chunk_size=1024, progress=False)
""",
}


def make_big_scan(n: int, work: Path, tile_from: Path | None) -> tuple[Path, Path]:
    """A UP2 of ``n`` patterns (tiled from a small simulated scan) and its geometry file."""
    import h5py

    import latentebsd  # noqa: F401
    from latentebsd.geometry import ScanGeometry
    from latentebsd.io import PatternReader, write_up2
    from latentebsd.simulate import DEFAULT_SIMULATION_SETTINGS, simulate_scan

    if tile_from is None:
        tile_from = work / "tile.up2"
        if not tile_from.exists():
            simulate_scan(tile_from, work / "tile_truth.h5", "am", (16, 16),
                          DEFAULT_SIMULATION_SETTINGS, seed=1, progress=False)
    tile = PatternReader(tile_from).read(0, PatternReader(tile_from).n_patterns)
    n_cols = 1000 if n >= 100_000 else 64
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[3072, 30720])
    parser.add_argument("--stages", nargs="+", default=list(STAGE_CODE), choices=list(STAGE_CODE))
    parser.add_argument("--tile-from", type=Path, default=None)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="latentebsd-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for n in sorted(args.sizes):
        up2, geometry_path = make_big_scan(n, work, args.tile_from)
        for stage in args.stages:
            # each size/stage in its own child so ru_maxrss is that child's peak only
            code = (f"import subprocess,sys,resource,time,json;t=time.perf_counter();"
                    f"subprocess.run([sys.executable,'-c',{STAGE_CODE[stage]!r},{str(up2)!r},"
                    f"{str(geometry_path)!r},{str(work / 'out.h5')!r}],check=True);"
                    f"print(json.dumps([time.perf_counter()-t,"
                    f"resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss/1024]))")
            out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                                 text=True).stdout
            seconds, peak_mb = json.loads(out.strip().splitlines()[-1])
            rows.append((stage, n, up2.stat().st_size / 2**20, seconds, peak_mb))
            print(f"{stage:<11} {n:>9} patterns  file {rows[-1][2]:8.0f} MB  "
                  f"{seconds:7.1f} s  {n / seconds:8.0f} patterns/s  peak RSS {peak_mb:7.0f} MB",
                  flush=True)
        up2.unlink()


if __name__ == "__main__":
    main()
