"""Mean vs static background on real patterns: does the workflow's Hough indexing agree
with kikuchipy's standard processing?

On kikuchipy's real 3 x 3 Ni map (``kikuchipy.data.nickel_ebsd_small``, NORDIF, 60 x 60,
with the static background the detector recorded) this runs the workflow's own
preprocessing (``run_preprocess_rule``, binning 1, with ``background`` = ``mean`` and
``static``) and Hough indexing (``index_scan``, the schema's ``evaluation.hough``), and
kikuchipy's standard processing (``remove_static_background``,
``remove_dynamic_background``, ``hough_indexing`` with PyEBSDIndex through the file's
detector), and counts the patterns whose two orientations lie within ``--tolerance``
degrees (m-3m). As a second reference it compares with the orientations the file stores
(kikuchipy dictionary indexing, NCC 0.42-0.55).

    python benchmarks/static_background_agreement.py [--tolerance 2]

prints the counts (stderr) and every angle (JSON, stdout).
About a minute on 2 cores with a warm numba cache (the first PyEBSDIndex compilation
takes ~90 s more).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import tempfile
from pathlib import Path

import latentebsd  # noqa: F401  (owns numba's cache before the libraries compile)
import numpy as np


def kikuchipy_standard(hough: dict) -> np.ndarray:
    """Quaternions ``(9, 4)`` from kikuchipy's standard processing and Hough indexing
    (``hough``: ``EBSDIndexer`` arguments; empty = kikuchipy's defaults)."""
    import pyebsdindex  # noqa: F401  (before kikuchipy / orix: their numba and OpenCL set-up clash otherwise)
    import kikuchipy as kp
    from orix.crystal_map import PhaseList

    from latentebsd.io.index import nickel_phase

    s = kp.data.nickel_ebsd_small()
    s.remove_static_background()
    s.remove_dynamic_background()
    phases = PhaseList(nickel_phase("ni"))
    indexer = s.detector.get_indexer(phases, **hough)
    with contextlib.redirect_stdout(io.StringIO()):  # kikuchipy prints a summary
        xmap = s.hough_indexing(phases, indexer, verbose=0)
    return np.asarray(xmap.rotations.data, dtype=np.float64)


def stored_orientations() -> np.ndarray:
    """The orientations the file stores (kikuchipy dictionary indexing), ``(9, 4)``."""
    import kikuchipy as kp

    return np.asarray(kp.data.nickel_ebsd_small().xmap.rotations.data, dtype=np.float64)


def workflow(background: str, work: Path) -> dict[str, np.ndarray]:
    """The workflow's preprocessing with ``background`` and its Hough indexing."""
    from latentebsd.config import section
    from latentebsd.index import index_scan
    from latentebsd.preprocess import run_preprocess_rule
    from save_nickel_small import save_nickel_small

    raw = work / "ni.h5"
    if not raw.exists():
        save_nickel_small(raw)
    pre = run_preprocess_rule("ni", str(raw), None, str(work / f"pre_{background}.h5"),
                              {"path": str(raw), "background": background},
                              section("preprocess", {"binning": 1}))
    return index_scan(pre, pre, work / f"index_{background}.h5", None, None, "original",
                      progress=False)


def main(tolerance: float) -> dict:
    from latentebsd.config import section
    from latentebsd.io.index import is_indexed
    from latentebsd.orientations import pair_angles

    hough = section("evaluation")["hough"]
    reference = {
        "kikuchipy standard, workflow Hough settings": kikuchipy_standard(hough),
        "kikuchipy standard, kikuchipy's Hough defaults": kikuchipy_standard({}),
        "stored in the file (dictionary indexing)": stored_orientations(),
    }
    out: dict = {"tolerance_deg": tolerance, "hough": hough, "results": {}}
    with tempfile.TemporaryDirectory() as tmp:
        for background in ("mean", "static"):
            arrays = workflow(background, Path(tmp))
            indexed = is_indexed(arrays, section("evaluation")["min_nmatch"])
            row = {"indexed": int(indexed.sum()),
                   "not_indexed": np.flatnonzero(~indexed).tolist()}
            for name, q in reference.items():
                angles = pair_angles(arrays["quat"], q)
                # a pattern agrees only if the workflow indexed it at all
                row[name] = {"agree": int(((angles <= tolerance) & indexed).sum()),
                             "of": len(angles),
                             "angles_deg": [round(float(a), 2) for a in angles]}
            out["results"][background] = row
    return out


if __name__ == "__main__":
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tolerance", type=float, default=2.0, help="degrees")
    result = main(parser.parse_args().tolerance)
    for background, row in result["results"].items():
        print(f"{background:>6} background: {row['indexed']}/9 indexed "
              f"(not: {row['not_indexed']}); agree within "
              f"{result['tolerance_deg']:g} deg with " + "; ".join(
                  f"{name}: {v['agree']}/{v['of']}" for name, v in row.items()
                  if isinstance(v, dict)), file=sys.stderr)
    print(json.dumps(result, indent=2))
