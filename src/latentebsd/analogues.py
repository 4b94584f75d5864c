"""Stage ``latent_analogues``: latent analogues of KAM and GROD (beyond the paper).

KAM and GROD measure how an orientation varies around a point and within its grain;
the same questions asked of the latent vector (cited idea: kernel / domain latent-vector
spreads as analogues of KAM and GOS, arXiv 2606.09611, no public code):

- **latent KAM** (kernel latent spread): the mean distance of a point's latent mean
  vector to those of its 4 (or 8) neighbours *in the same grain*;
- **latent GROD** (grain-referenced latent deviation): the distance of a point's latent
  vector to its grain's mean latent vector.

Units that make features comparable: every feature is first standardised over the
scan's valid points (zero mean, unit standard deviation; a constant feature
contributes nothing), and distances are root-mean-square over the d features, so the
maps of models with different d share a scale. Grains are those of the conventional
maps (:func:`latentebsd.conventional.segment_grains`); points outside grains are NaN.
The cube is read feature group by feature group (:func:`latentebsd.io.cube.iter_feature_groups`):
memory is a few maps per feature of a group, whatever d.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

from latentebsd.grid import neighbour_pairs
from latentebsd.io.analogues import write_analogues
from latentebsd.io.conventional import read_conventional
from latentebsd.io.cube import budget_bytes, check_map_shape, iter_feature_groups
from latentebsd.plotting import panel_size, pyplot, robust_limits, save_figure, show_map

log = logging.getLogger(__name__)



def standardised(maps: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``(g, R, C)`` maps with each map's valid values at zero mean and unit standard
    deviation (a constant map becomes 0); invalid pixels 0."""
    x = np.asarray(maps, dtype=np.float64)
    v = np.asarray(valid, bool)
    on = x[:, v]
    mean = on.mean(axis=1)
    std = on.std(axis=1)
    std[std == 0] = np.inf
    return np.where(v, (x - mean[:, None, None]) / std[:, None, None], 0.0)


def latent_analogue_maps(groups: Any, grain_id: np.ndarray, valid: np.ndarray,
                         neighbours: int = 8) -> dict[str, np.ndarray]:
    """Latent KAM and GROD from feature groups ``(g, R, C)`` (module docstring).

    Parameters
    ----------
    groups
        Iterable of ``(g, R, C)`` arrays that together hold all d features.
    grain_id
        ``(R, C)`` grain labels, -1 outside grains.
    valid
        ``(R, C)`` bool, points with a valid pattern.
    neighbours
        4 or 8.

    Returns
    -------
    dict
        ``latent_kam``, ``latent_grod``: ``(R, C)`` float64, NaN outside grains (KAM: also
        where no neighbour is in the same grain).
    """
    grain = np.asarray(grain_id)
    inside = np.asarray(valid, bool) & (grain >= 0)
    pairs = neighbour_pairs(neighbours)
    same = [inside[a] & inside[b] & (grain[a] == grain[b]) for a, b in pairs]
    pair_sq = [np.zeros(s.shape) for s in same]
    grod_sq = np.zeros(grain.shape)
    labels = np.where(inside, grain, 0).ravel()
    n_grains = int(labels.max()) + 1 if inside.any() else 1
    count = np.bincount(labels[inside.ravel()], minlength=n_grains)
    d = 0
    for block in groups:
        z = standardised(block, valid)
        d += len(z)
        for k, (a, b) in enumerate(pairs):
            pair_sq[k] += ((z[(slice(None), *a)] - z[(slice(None), *b)]) ** 2).sum(axis=0)
        flat = z.reshape(len(z), -1)
        sums = np.stack([np.bincount(labels[inside.ravel()], f[inside.ravel()], n_grains) for f in flat])
        mean = sums / np.maximum(count, 1)
        grod_sq += ((flat - mean[:, labels]) ** 2).sum(axis=0).reshape(grain.shape)
    if d == 0:
        raise ValueError("no latent features")
    total = np.zeros(grain.shape)
    n = np.zeros(grain.shape)
    for (a, b), s, sq in zip(pairs, same, pair_sq):
        dist = np.sqrt(sq / d)
        for side in (a, b):  # a pair counts for both of its points
            total[side] += np.where(s, dist, 0.0)
            n[side] += s
    kam = np.where(inside & (n > 0), total / np.maximum(n, 1), np.nan)
    grod = np.where(inside, np.sqrt(grod_sq / d), np.nan)
    return {"latent_kam": kam, "latent_grod": grod}


def run_analogue_rule(cube_path: str, conventional_path: str, out_h5: str, out_png: str,
                      neighbours: int, memory_mb: float, scan: str, variant: str,
                      dpi: int = 150) -> dict[str, np.ndarray]:
    """What rule ``latent_analogues`` runs: one scan x variant -> maps (HDF5) and a figure
    of latent KAM / GROD beside KAM / GROD."""
    maps, geometry = read_conventional(conventional_path)
    attrs = check_map_shape(cube_path, geometry.map_shape, str(conventional_path))
    groups = (g for _, (g,) in iter_feature_groups(cube_path, budget_bytes(memory_mb, 8.0)))
    out = latent_analogue_maps(groups, maps["grain_id"], maps["valid"], neighbours)
    write_analogues(out_h5, out, geometry,
                    {"scan": scan, "variant": variant, "neighbours": neighbours,
                     "latent_dim": attrs["latent_dim"],
                     "units": "root-mean-square difference of standardised latent features"})
    plot_analogues(out, maps, geometry.step_um, out_png,
                   f"{scan}: latent KAM / GROD of {variant} (d = {attrs['latent_dim']}) beside KAM / GROD",
                   dpi)
    log.info("%s / %s: median latent KAM %.3f, latent GROD %.3f", scan, variant,
             np.nanmedian(out["latent_kam"]), np.nanmedian(out["latent_grod"]))
    return out


def plot_analogues(analogues: Mapping[str, np.ndarray], maps: Mapping[str, np.ndarray],
                   step_um: float, path: str | os.PathLike, title: str, dpi: int) -> None:
    """Latent KAM and GROD beside KAM and GROD, same scale bar, robust colour ranges."""
    plt = pyplot()
    panels = [(analogues["latent_kam"], "latent KAM", "RMS std. units"),
              (maps["kam_deg"], "KAM", "deg"),
              (analogues["latent_grod"], "latent GROD", "RMS std. units"),
              (maps["grod_deg"], "GROD", "deg")]
    w, h = panel_size(maps["valid"].shape)
    fig, axes = plt.subplots(1, 4, figsize=((w + 0.6) * 4, h + 0.8))
    for ax, (data, name, label) in zip(axes, panels):
        show_map(ax, data, step_um, name, "viridis", (0.0, max(robust_limits(data, 0, 99)[1], 1e-6)),
                 label)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    save_figure(fig, path, dpi, tight=True)
