"""Do the workflow's pattern-quality measures see bands, or the screen's edge?

Simulates a small scan of the embedded default (``am``, the default's detector and
noise), preprocesses it as the default does (binning 2: 60 x 60), and measures every
quality value Table 1 is built from - PyEBSDIndex's ``cm`` (CI), ``pq`` (Hough IQ),
``nmatch`` and ``fit``, the FFT sharpness and kikuchipy's Krieger-Lassen IQ - for the
preprocessed patterns and for controls that hold no bands, or only blurred ones:

- ``blank disc``: every on-screen pixel the mean of the scan's patterns on the screen,
  off-screen 0 (as the workflow leaves it): a decoder that learnt nothing;
- ``mean pattern``: the scan's mean preprocessed pattern, rescaled like the others;
- ``noise disc``: white noise on the screen, rescaled to [-1, 1];
- ``blurred``: each pattern blurred (Gaussian, sigma 2 px) and re-masked.

Each sharpness / Krieger-Lassen value is computed on the full frame (the code before
issue 24) and on the screen window (``latentebsd.index.screen_window``). Prints one
table of medians and one of the ratios control / original (the Table 1 ratios), and
the indexed fraction under several criteria.

    python benchmarks/quality_controls.py [--rows 16 --cols 24]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np

try:
    import latentebsd  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from scipy.ndimage import gaussian_filter  # noqa: E402

from latentebsd import config  # noqa: E402
from latentebsd.index import build_indexer, image_quality, index_patterns, pattern_sharpness  # noqa: E402
from latentebsd.io.preprocessed import PreprocessedScan  # noqa: E402
from latentebsd.io.truth import read_truth_geometry  # noqa: E402
from latentebsd.preprocess import preprocess_scan  # noqa: E402
from latentebsd.simulate import simulate_scan  # noqa: E402


def _window(mask: np.ndarray) -> tuple[slice, slice]:
    from latentebsd.index import screen_window

    return screen_window(mask)


def controls(patterns: np.ndarray, mask: np.ndarray, seed: int = 0) -> dict[str, np.ndarray]:
    """The control pattern sets of the module docstring, each (n, h, w) float32."""
    n = len(patterns)
    rng = np.random.default_rng(seed)
    flat = np.where(mask, patterns[:, mask].mean(), 0.0).astype(np.float32)
    mean = patterns.mean(axis=0)
    on = mean[mask]
    mean = np.where(mask, 2 * (mean - on.min()) / (on.max() - on.min()) - 1, 0.0).astype(np.float32)
    noise = np.where(mask, rng.uniform(-1, 1, patterns.shape), 0.0).astype(np.float32)
    blurred = np.stack([gaussian_filter(p, 2.0) for p in patterns])
    blurred = np.where(mask, blurred, 0.0).astype(np.float32)
    return {"original": patterns, "blank disc": np.repeat(flat[None], n, 0),
            "mean pattern": np.repeat(mean[None], n, 0), "noise disc": noise, "blurred": blurred}


def measure(sets: dict[str, np.ndarray], geometry, mask: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    indexer = build_indexer(geometry, patternmask=mask, **config.section("evaluation")["hough"])
    sharp = config.section("evaluation")["sharpness"]
    win = _window(mask)
    out = {}
    for name, pats in sets.items():
        res = index_patterns(pats, geometry, indexer=indexer)
        inner = pats[:, win[0], win[1]]
        out[name] = {
            "cm": res["cm"], "pq": res["pq"], "nmatch": res["nmatch"].astype(float),
            "fit": res["fit"], "phase": res["phase"].astype(float),
            "sharpness (frame)": pattern_sharpness(pats, sharp),
            "sharpness (window)": pattern_sharpness(inner, sharp),
            "KL IQ (frame)": image_quality(pats),
            "KL IQ (window)": image_quality(inner),
        }
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=16)
    ap.add_argument("--cols", type=int, default=24)
    ap.add_argument("--binning", type=int, default=2)
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sim = config.section("simulation")
        simulate_scan(tmp / "am.up2", tmp / "am_truth.h5", "am", (args.rows, args.cols), sim, seed=1,
                      progress=False)
        pre = preprocess_scan(tmp / "am.up2", tmp / "am.h5", read_truth_geometry(tmp / "am_truth.h5"),
                              config.section("preprocess", {"binning": args.binning}), progress=False)
        with PreprocessedScan(pre) as scan:
            patterns, mask, geometry = scan.read(0, scan.n_patterns), scan.mask, scan.geometry
    win = _window(mask)
    print(f"{len(patterns)} patterns of {patterns.shape[1:]} px, screen window rows "
          f"{win[0].start}:{win[0].stop}, cols {win[1].start}:{win[1].stop}")
    values = measure(controls(patterns, mask), geometry, mask)
    keys = list(values["original"])
    print("\nmedians\n| set | " + " | ".join(keys) + " |\n|" + "---|" * (len(keys) + 1))
    for name, v in values.items():
        print(f"| {name} | " + " | ".join(f"{np.nanmedian(v[k]):.3g}" for k in keys) + " |")
    ratio_keys = ["cm", "pq", "sharpness (frame)", "sharpness (window)", "KL IQ (frame)", "KL IQ (window)"]
    print("\nmedian ratio control / original, pattern by pattern\n| set | " + " | ".join(ratio_keys)
          + " |\n|" + "---|" * (len(ratio_keys) + 1))
    o = values["original"]
    for name, v in values.items():
        cells = []
        for k in ratio_keys:
            ok = np.isfinite(o[k]) & (o[k] > 1e-12) & np.isfinite(v[k])
            cells.append(f"{np.median(v[k][ok] / o[k][ok]):.3g}" if ok.any() else "n/a")
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nindexed fraction under criteria\n| set | phase >= 0 | nmatch >= 3 | nmatch >= 5 | "
          "nmatch >= 5 and fit <= 2 deg | cm >= 0.1 |\n|---|---|---|---|---|---|")
    for name, v in values.items():
        found = v["phase"] >= 0
        crit = [found, found & (v["nmatch"] >= 3), found & (v["nmatch"] >= 5),
                found & (v["nmatch"] >= 5) & (v["fit"] <= 2.0), found & (v["cm"] >= 0.1)]
        print(f"| {name} | " + " | ".join(f"{100 * c.mean():.1f} %" for c in crit) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
