"""Stage ``saliency``: which part of the detector does a latent feature read? (Occlusion.)

The paper names occlusion / Grad-CAM as future work. For a feature, the patterns of the
points where its map is highest are encoded again with a square patch of the detector
blanked (set to 0, the value off the screen) at every position of a grid; the
feature's mean absolute change over those points, per patch position, is its
occlusion map, drawn over the mean of those patterns. A feature that reads one band
lights up that band; one that reads the pattern's overall contrast lights up
everywhere. Features: the top-ranked (spatial structure) and the most novel
(:mod:`latentebsd.novelty`) of one variant per scan.
"""

from __future__ import annotations

import logging
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from latentebsd.io.cube import read_features
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.io.saliency import write_saliency
from latentebsd.plotting import pyplot, save_figure

log = logging.getLogger(__name__)


def patch_grid(shape: Sequence[int], patch: int, stride: int) -> list[tuple[int, int]]:
    """Top-left corners of the patches, covering the pattern edge to edge."""
    h, w = int(shape[0]), int(shape[1])
    rows = sorted({*range(0, max(h - patch, 0) + 1, stride), max(h - patch, 0)})
    cols = sorted({*range(0, max(w - patch, 0) + 1, stride), max(w - patch, 0)})
    return [(r, c) for r in rows for c in cols]


def occlusion_maps(encode: Callable[[np.ndarray], np.ndarray], patterns: np.ndarray,
                   features: Sequence[int], patch: int, stride: int) -> np.ndarray:
    """Per feature, the mean absolute change of its latent mean when each patch is
    blanked, spread back onto the pixels the patch covers: ``(len(features), h, w)``.

    Parameters
    ----------
    encode
        ``(n, h, w)`` patterns -> ``(n, d)`` latent means.
    patterns
        ``(n, h, w)`` patterns of the points to average over (one set for all features,
        or use one call per feature).
    features
        Latent feature indices.
    patch, stride
        Patch side and step, in pixels.
    """
    patterns = np.asarray(patterns, np.float32)
    n, h, w = patterns.shape
    base = encode(patterns)[:, list(features)]
    total = np.zeros((len(features), h, w))
    cover = np.zeros((h, w))
    for r, c in patch_grid((h, w), patch, stride):
        blanked = patterns.copy()
        blanked[:, r:r + patch, c:c + patch] = 0.0
        change = np.abs(encode(blanked)[:, list(features)] - base).mean(axis=0)
        total[:, r:r + patch, c:c + patch] += change[:, None, None]
        cover[r:r + patch, c:c + patch] += 1
    return total / np.maximum(cover, 1)


def choose_features(ranking: pd.DataFrame, novelty: pd.DataFrame, variant: str, n: int) -> list[tuple[int, str]]:
    """``(feature, why)``: the ``n`` top-ranked and the ``n`` most novel (no repeats)."""
    chosen: list[tuple[int, str]] = []
    for f in ranking["feature"].astype(int).head(n):
        chosen.append((f, "top ranked"))
    rows = novelty[novelty["variant"] == variant]
    if "novelty" in rows and not np.isfinite(rows["novelty"].to_numpy(float)).any():
        log.warning("%s: no novelty computed (map too small, see the novelty log): no 'most "
                    "novel' features, only the top-ranked", variant)
        rows = rows.iloc[:0]
    for f in rows["feature"].astype(int):
        if len([c for c in chosen if c[1] == "most novel"]) >= n:
            break
        if f not in [c[0] for c in chosen]:
            chosen.append((f, "most novel"))
    return chosen


def run_saliency_rule(preprocessed: str, weights: str, cube: str, ranking_csv: str, novelty_csv: str,
                      out_h5: str, out_png: str, settings: Mapping[str, Any], scan: str, variant: str,
                      threads: int = 1, dpi: int = 150) -> list[tuple[int, str]]:
    """What rule ``saliency`` runs: occlusion maps of the chosen features of one scan."""
    import torch  # 1-2 s to import: only this stage of the benchmark needs it

    from latentebsd.io.weights import load_model
    from latentebsd.models import encode_patterns

    torch.set_num_threads(max(1, int(threads)))
    encoder, _, _ = load_model(weights)
    chosen = choose_features(pd.read_csv(ranking_csv), pd.read_csv(novelty_csv), variant,
                             int(settings["saliency_features"]))
    features = [f for f, _ in chosen]
    maps = read_features(cube, features)
    with PreprocessedScan(preprocessed) as source:
        mask, valid = source.mask, source.valid
        h, w = source.pattern_shape
        patch = max(2, round(settings["saliency_patch"] * min(h, w)))
        stride = max(1, patch // 2)
        def encode(x: np.ndarray) -> np.ndarray:
            return encode_patterns(encoder, x, 512, "cpu", mask)[0]

        out, means = [], []
        for k, f in enumerate(features):
            values = np.where(valid, maps[k].ravel(), -np.inf)
            n = min(int(settings["saliency_points"]), int(valid.sum()))
            idx = np.sort(np.argsort(-values, kind="stable")[:n])
            pats = np.where(mask, source.read_at(idx), 0.0)
            out.append(occlusion_maps(encode, pats, [f], patch, stride)[0])
            means.append(pats.mean(axis=0))
    points = min(int(settings["saliency_points"]), int(valid.sum()))
    if points < int(settings["saliency_points"]):
        log.warning("%s: only %d valid points, fewer than benchmark.saliency_points = %d: each "
                    "occlusion map averages all of them", scan, points, int(settings["saliency_points"]))
    write_saliency(out_h5, {"occlusion": np.stack(out), "mean_pattern": np.stack(means),
                            "features": np.asarray(features), "mask": mask},
                   {"scan": scan, "variant": variant, "patch": patch, "stride": stride,
                    "why": [why for _, why in chosen], "points": points})
    plot_saliency(np.stack(out), np.stack(means), mask, chosen, out_png,
                  f"{scan}: occlusion maps of {variant} features (patch {patch} px, the "
                  f"{points} points where each feature is highest"
                  + ("" if points == int(settings["saliency_points"]) else
                     f": all the map has, of {int(settings['saliency_points'])} asked") + ")", dpi)
    log.info("%s / %s: occlusion maps of %s", scan, variant, chosen)
    return chosen


def plot_saliency(occlusion: np.ndarray, means: np.ndarray, mask: np.ndarray,
                  chosen: Sequence[tuple[int, str]], path: str | os.PathLike, title: str,
                  dpi: int = 150) -> None:
    """Each feature's occlusion map over the mean pattern of its points, with a colour
    bar per panel (each feature has its own latent scale, so one shared bar would flatten
    all but the most sensitive one).

    The panels are patterns, not maps: their axes are detector pixels (no micrometre
    scale bar); the colour is the mean absolute change of the feature's latent mean when
    the patch over that pixel is blanked (:func:`occlusion_maps`), in latent units.
    """
    plt = pyplot()
    n = len(chosen)
    fig, axes = plt.subplots(1, n, figsize=(2.9 * n, 3.1), squeeze=False)
    for ax, occ, mean, (f, why) in zip(axes[0], occlusion, means, chosen):
        ax.imshow(np.ma.array(mean, mask=~mask), cmap="gray")
        shown = np.ma.array(occ, mask=~mask)
        im = ax.imshow(shown, cmap="inferno", alpha=0.55, vmin=0.0,
                       vmax=max(float(shown.max()) if shown.count() else 0.0, 1e-12))
        cb = fig.colorbar(im, ax=ax, fraction=0.046, pad=0.03)
        cb.solids.set_alpha(1.0)  # the bar in full colour, not at the overlay's alpha
        cb.set_label(f"|Δ f{f}| when blanked", fontsize=7)
        cb.ax.tick_params(labelsize=6)
        ax.set_title(f"f{f} ({why})", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(textwrap.fill(title, int(2.9 * n * 12)), fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi, tight=True)
