"""Stage ``maps``: rank, show and segment the latent feature maps of one cube.

Everything here reads a latent cube (:mod:`latentebsd.io.cube`, HDF5-chunked by map
rows) and holds at most about ``maps.memory_mb`` of it: ranking statistics, montage
thumbnails and clustering stream row blocks in one pass each; single maps (top-k
figures) are read feature by feature. Rule ``feature_maps`` (:func:`feature_maps`) also
writes the ground-truth match of simulated scans (:mod:`latentebsd.groundtruth`).

Ranking (beyond the paper)
--------------------------
A user cannot browse 256 maps, so every feature gets

- ``moran_i``: Moran's I spatial autocorrelation of its map with 4- (rook) or
  8-neighbour (queen) binary weights between valid pixels. ~0 for spatial noise,
  -> 1 for maps made of extended regions or smooth gradients;
- ``reliability``: ``Var_map(mu) / (Var_map(mu) + mean_map(exp(logvar)))``, the share
  of the feature's total variance that the input explains. A collapsed VAE unit
  (posterior = prior, the usual fate of many units at large beta) has ~0 even when its
  tiny residual variation is smooth in space;
- ``score = max(moran_i, 0) * reliability`` (the default ranking key, ``maps.rank_by``).

Segmentation (beyond the paper)
-------------------------------
k-means (or a diagonal Gaussian mixture) on the latent mean vectors, fitted on a
seeded random subset of valid pixels and then applied to every pixel in row blocks;
clusters are numbered by decreasing size.

Figures (PNG): the montage of all d maps sorted by rank, single-map figures of the
top-k features, the segmentation map.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.config import child_seed
from latentebsd.grid import neighbour_pairs
from latentebsd.groundtruth import write_truth_match
from latentebsd.io.atomic import atomic_path
from latentebsd.io.cube import (budget_bytes, cube_attrs, iter_row_blocks, read_features,
                                read_latents_at, read_valid)
from latentebsd.plotting import (add_scale_bar, colormap, map_extent, masked, nice_length,
                                 placeholder, pyplot, save_figure)

log = logging.getLogger(__name__)

RANK_KEYS = ("score", "moran_i", "std")
#: Valid pixels (seeded subset) the colour percentiles of a map are taken from.
PERCENTILE_SAMPLE = 200_000


# --------------------------------------------------------------------------- statistics


def moran_i(maps: np.ndarray, valid: np.ndarray | None = None, neighbours: int = 4) -> np.ndarray:
    """Moran's I of each map with binary 4- or 8-neighbour weights between valid pixels.

    Parameters
    ----------
    maps
        ``(g, n_rows, n_cols)`` or ``(n_rows, n_cols)``.
    valid
        ``(n_rows, n_cols)`` bool; invalid pixels take no part. ``None``: all valid.
    neighbours
        4 (rook) or 8 (queen).

    Returns
    -------
    ndarray
        ``(g,)`` (or a scalar for one map); 0 for a constant map.
    """
    if neighbours not in (4, 8):
        raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
    single = maps.ndim == 2
    x = np.asarray(maps, dtype=np.float64)[None] if single else np.asarray(maps, dtype=np.float64)
    v = np.ones(x.shape[1:], bool) if valid is None else np.asarray(valid, bool)
    n = int(v.sum())
    if n < 2:
        raise ValueError("Moran's I needs at least two valid pixels")
    mean = x[:, v].mean(axis=1)
    z = np.where(v, x - mean[:, None, None], 0.0)
    denom = np.einsum("gij,gij->g", z, z)
    num = np.zeros(len(x))
    n_pairs = 0
    for a, b in neighbour_pairs(neighbours):
        num += np.einsum("gij,gij->g", z[(slice(None), *a)], z[(slice(None), *b)])
        n_pairs += int((v[a] & v[b]).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(denom > 0, (n / max(n_pairs, 1)) * num / denom, 0.0)
    return out[0] if single else out


def feature_statistics(mean: np.ndarray, logvar: np.ndarray | None, valid: np.ndarray,
                       neighbours: int = 4, percentiles: Sequence[float] = (1.0, 99.0)
                       ) -> dict[str, np.ndarray]:
    """Ranking statistics of a group of feature maps ``(g, n_rows, n_cols)``.

    Returns
    -------
    dict
        ``moran_i``, ``std`` (over valid pixels), ``posterior_std`` (root of the mean
        posterior variance; NaN without ``logvar``), ``reliability`` (module docstring;
        1 without ``logvar``), ``score``, ``p_lo``, ``p_hi`` (colour range), each ``(g,)``.
    """
    on = mean[:, valid].astype(np.float64)
    var = on.var(axis=1)
    if logvar is not None:
        post_var = np.exp(logvar[:, valid].astype(np.float64)).mean(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            reliability = np.where(var + post_var > 0, var / (var + post_var), 0.0)
    else:
        post_var = np.full(len(mean), np.nan)
        reliability = np.ones(len(mean))
    moran = moran_i(mean, valid, neighbours)
    lo, hi = np.percentile(on, percentiles, axis=1)
    return {"moran_i": moran, "std": np.sqrt(var), "posterior_std": np.sqrt(post_var),
            "reliability": reliability, "score": np.maximum(moran, 0.0) * reliability,
            "p_lo": lo, "p_hi": hi}


def rank_table(stats: Mapping[str, np.ndarray], feature_ids: np.ndarray, rank_by: str = "score"
               ) -> pd.DataFrame:
    """Features sorted best first by ``rank_by`` (ties: lower feature id first), with ``rank`` 1..d."""
    if rank_by not in RANK_KEYS:
        raise ValueError(f"rank_by must be one of {RANK_KEYS}, got {rank_by!r}")
    frame = pd.DataFrame({"feature": np.asarray(feature_ids, int), **{k: np.asarray(v) for k, v in stats.items()}})
    frame = frame.sort_values([rank_by, "feature"], ascending=[False, True], kind="stable")
    frame.insert(0, "rank", np.arange(1, len(frame) + 1))
    return frame.reset_index(drop=True)


def block_mean(maps: np.ndarray, valid: np.ndarray, factor: int) -> np.ndarray:
    """NaN-aware ``factor x factor`` block means of ``(g, R, C)`` maps (invalid -> NaN)."""
    x = np.where(valid, maps, np.nan).astype(np.float32)
    if factor <= 1:
        return x
    g, r, c = x.shape
    rp, cp = -(-r // factor) * factor, -(-c // factor) * factor
    padded = np.full((g, rp, cp), np.nan, np.float32)
    padded[:, :r, :c] = x
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks stay NaN
        return np.nanmean(padded.reshape(g, rp // factor, factor, cp // factor, factor), axis=(2, 4))


class SpatialAccumulator:
    """Moran's I, variance and posterior variance of d maps, fed block of rows by block.

    Keeps float64 sums per feature (shifted by the first block's mean, so that a large
    offset cannot cancel the variance) plus the last row of the previous block for the
    neighbour pairs that straddle two blocks: the result equals :func:`moran_i` and
    :func:`feature_statistics` on the whole maps, with one pass over the cube.
    """

    def __init__(self, d: int, neighbours: int = 4) -> None:
        if neighbours not in (4, 8):
            raise ValueError(f"neighbours must be 4 or 8, got {neighbours}")
        self.neighbours = neighbours
        self.shift: np.ndarray | None = None
        self.n = 0
        self.w = 0
        z = np.zeros(d)
        self.sx, self.sxx, self.sxy, self.spair, self.post = z.copy(), z.copy(), z.copy(), z.copy(), z.copy()
        self.prev: tuple[np.ndarray, np.ndarray] | None = None

    def _pairs(self, xa: np.ndarray, xb: np.ndarray, va: np.ndarray, vb: np.ndarray) -> None:
        pv = (va & vb).ravel()
        g = len(xa)
        xa, xb = xa.reshape(g, -1), xb.reshape(g, -1)
        self.sxy += np.einsum("gi,gi->g", xa, xb)  # x is 0 at invalid pixels
        self.spair += (xa + xb) @ pv.astype(np.float64)
        self.w += int(pv.sum())

    def add(self, mean: np.ndarray, logvar: np.ndarray | None, valid: np.ndarray) -> None:
        """The next rows: ``mean``/``logvar`` ``(d, rows, n_cols)``, ``valid`` ``(rows, n_cols)``."""
        v = np.asarray(valid, bool)
        x = mean.astype(np.float64)
        if self.shift is None:
            self.shift = x[:, v].mean(axis=1) if v.any() else np.zeros(len(x))
        x = np.where(v, x - self.shift[:, None, None], 0.0)
        self.n += int(v.sum())
        self.sx += x.sum(axis=(1, 2))
        self.sxx += np.einsum("gij,gij->g", x, x)
        if logvar is not None:
            self.post += np.where(v, np.exp(logvar.astype(np.float64)), 0.0).sum(axis=(1, 2))
        for a, b in neighbour_pairs(self.neighbours):
            self._pairs(x[(slice(None), *a)], x[(slice(None), *b)], v[a], v[b])
        if self.prev is not None:  # pairs between the previous block's last row and this first row
            px, pv = self.prev
            self._pairs(px, x[:, 0], pv, v[0])
            if self.neighbours == 8:
                self._pairs(px[:, :-1], x[:, 0, 1:], pv[:-1], v[0, 1:])
                self._pairs(px[:, 1:], x[:, 0, :-1], pv[1:], v[0, :-1])
        self.prev = (x[:, -1].copy(), v[-1].copy())

    def result(self, with_logvar: bool = True) -> dict[str, np.ndarray]:
        """``moran_i``, ``std``, ``posterior_std``, ``reliability``, ``score`` per feature."""
        if self.n < 2:
            raise ValueError("Moran's I needs at least two valid pixels")
        m = self.sx / self.n
        ss = np.maximum(self.sxx - self.n * m * m, 0.0)  # sum of squared deviations
        num = self.sxy - m * self.spair + m * m * self.w
        with np.errstate(invalid="ignore", divide="ignore"):
            moran = np.where(ss > 1e-300, (self.n / max(self.w, 1)) * num / ss, 0.0)
            var = ss / self.n
            post = self.post / self.n if with_logvar else np.full(len(m), np.nan)
            rel = np.where(var + post > 0, var / (var + post), 0.0) if with_logvar else np.ones(len(m))
        return {"moran_i": moran, "std": np.sqrt(var), "posterior_std": np.sqrt(post),
                "reliability": rel, "score": np.maximum(moran, 0.0) * rel}


def rank_cube(cube_path: str | os.PathLike, settings: Mapping[str, Any] | None = None,
              seed: int = 0, progress: bool = True) -> tuple[pd.DataFrame, np.ndarray]:
    """Rank every feature of a cube in one streamed pass; also make montage thumbnails.

    Parameters
    ----------
    cube_path
        Latent cube.
    settings
        The ``maps`` config section (neighbours, percentiles, rank key, memory, tile size).
    seed
        Seeds the pixel subset (:data:`PERCENTILE_SAMPLE`) the colour percentiles come from;
        maps with fewer valid pixels use all of them.

    Returns
    -------
    ranking, thumbnails
        The :func:`rank_table`; ``(d, r, c)`` block-averaged maps (NaN = invalid),
        indexed by feature id, at most ``maps.montage_tile_px`` on a side.
    """
    cfg = config.section("maps") if settings is None else settings
    valid = read_valid(cube_path)
    if valid.sum() < 2:
        raise ValueError(f"{cube_path}: fewer than two valid pixels; nothing to map")
    n_rows, n_cols = valid.shape
    factor = max(1, math.ceil(max(valid.shape) / cfg["montage_tile_px"]))
    sample = sample_valid_indices(valid, PERCENTILE_SAMPLE, seed)
    sample_rows = sample // n_cols
    with h5py.File(cube_path, "r") as f:
        mean_ds, logvar_ds = f["latent_mean"], f.get("latent_logvar")
        d = mean_ds.shape[0]
        acc = SpatialAccumulator(d, cfg["moran_neighbours"])
        values = np.empty((d, len(sample)), np.float32)
        thumbs = np.full((d, -(-n_rows // factor), -(-n_cols // factor)), np.nan, np.float32)
        # whole thumbnail rows per block; mean + logvar and float64 work copies
        rows = max(1, budget_bytes(cfg["memory_mb"], 4.0) // (8 * d * n_cols))
        rows = max(factor, rows - rows % factor)
        for r0 in tqdm(range(0, n_rows, rows), desc=f"rank {Path(cube_path).name}", unit="block",
                       disable=not progress):
            r1 = min(n_rows, r0 + rows)
            mean = mean_ds[:, r0:r1, :]
            logvar = logvar_ds[:, r0:r1, :] if logvar_ds is not None else None
            v = valid[r0:r1]
            acc.add(mean, logvar, v)
            thumbs[:, r0 // factor:r0 // factor + -(-(r1 - r0) // factor)] = block_mean(mean, v, factor)
            sel = np.flatnonzero((sample_rows >= r0) & (sample_rows < r1))
            values[:, sel] = mean.reshape(d, -1)[:, sample[sel] - r0 * n_cols]
    stats = acc.result(with_logvar=logvar_ds is not None)
    stats["p_lo"], stats["p_hi"] = np.percentile(values, cfg["percentiles"], axis=1)
    return rank_table(stats, np.arange(d), cfg["rank_by"]), thumbs


# --------------------------------------------------------------------------- figures


def montage_image(thumbnails: np.ndarray, ranking: pd.DataFrame, ncols: int, gap: int = 2,
                  band: int = 0, cmap: str = "viridis") -> np.ndarray:
    """RGB mosaic of the maps in ranking order, each coloured with its own ``p_lo..p_hi``.

    One image instead of d axes: matplotlib draws 256 axes in ~10 s, one image in ~0.1 s.
    ``band`` white pixel rows above every tile row leave room for labels.
    """
    import matplotlib

    cmap_ = colormap(cmap)
    nrows = math.ceil(len(ranking) / ncols)
    tr, tc = thumbnails.shape[1:]
    pitch_r, pitch_c = tr + band + gap, tc + gap
    out = np.ones((nrows * pitch_r, ncols * pitch_c - gap, 4), np.float32)
    for i, row in enumerate(ranking.itertuples(index=False)):
        lo, hi = float(row.p_lo), float(row.p_hi)
        norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-12, clip=True)
        tile = cmap_(norm(masked(thumbnails[int(row.feature)])))
        r, c = divmod(i, ncols)
        r0 = r * pitch_r + band
        out[r0:r0 + tr, c * pitch_c:c * pitch_c + tc] = tile
    return out[..., :3]


def plot_montage(thumbnails: np.ndarray, ranking: pd.DataFrame, step_um: float,
                 full_shape: tuple[int, int], out_path: str | os.PathLike, title: str = "") -> None:
    """All d maps sorted by rank, each with its own robust colour range; scale bar on tile 1."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    d = len(ranking)
    r, c = full_shape
    tr, tc = thumbnails.shape[1:]
    gap = max(1, round(0.04 * max(tr, tc)))
    band = max(3, round(0.2 * tr))
    ncols = max(1, math.ceil(math.sqrt(d * r / c)))
    mosaic = montage_image(thumbnails, ranking, ncols, gap, band)
    tile_in = 1.3  # inches per tile
    fig_w = ncols * tile_in
    fig_h = mosaic.shape[0] / mosaic.shape[1] * fig_w + 0.45
    fig = plt.figure(figsize=(fig_w, fig_h))
    ax = fig.add_axes((0.0, 0.0, 1.0, 1 - 0.45 / fig_h))
    ax.imshow(mosaic, interpolation="nearest", aspect="auto")
    ax.set_axis_off()
    for i, row in enumerate(ranking.itertuples(index=False)):
        rr, cc = divmod(i, ncols)
        ax.text(cc * (tc + gap), rr * (tr + band + gap) + band - 0.5, f"#{int(row.rank)}  f{int(row.feature)}",
                fontsize=6, ha="left", va="bottom")
    # scale bar on the first tile, in thumbnail pixels (each is step * r / tr um)
    px_um = step_um * r / tr
    length = nice_length(tc * px_um)
    bar_px = length / px_um
    y_bar = band + 0.9 * tr
    ax.add_patch(Rectangle((0.05 * tc, y_bar), bar_px, max(1.0, 0.04 * tr), color="white", ec="black", lw=0.5))
    ax.text(0.05 * tc + bar_px / 2, y_bar - 0.02 * tr, f"{length:g} µm", color="white", fontsize=6,
            ha="center", va="bottom")
    fig.suptitle(title or "latent feature maps, ranked", fontsize=9, y=1 - 0.06 / fig_h, va="top")
    save_figure(fig, out_path, dpi=120)


def plot_feature_map(image: np.ndarray, valid: np.ndarray, step_um: float, out_path: str | os.PathLike,
                     title: str, vmin: float | None = None, vmax: float | None = None,
                     cmap: str = "viridis", cbar_label: str = "latent mean") -> None:
    """One map in um with a colour bar and a scale bar."""
    plt = pyplot()
    r, c = image.shape
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * r / c * 0.85 + 0.8), constrained_layout=True)
    im = ax.imshow(masked(image, valid), cmap=colormap(cmap), vmin=vmin, vmax=vmax,
                   extent=map_extent(image.shape, step_um), interpolation="nearest")
    add_scale_bar(ax, c * step_um)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.85)
    save_figure(fig, out_path)


# --------------------------------------------------------------------------- segmentation


def sample_valid_indices(valid: np.ndarray, size: int | None, seed: int) -> np.ndarray:
    """Sorted row-major indices of up to ``size`` valid pixels, drawn without replacement."""
    idx = np.flatnonzero(np.asarray(valid).ravel())
    if size is None or size >= len(idx):
        return idx
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(idx, size=int(size), replace=False))


def segment_cube(cube_path: str | os.PathLike, method: str = "kmeans", n_clusters: int = 6,
                 sample_size: int = 100_000, seed: int = 0, max_bytes: int = 256 * 1024**2,
                 progress: bool = True) -> tuple[np.ndarray, dict[str, Any]]:
    """Cluster the latent mean vectors of every pixel into a segmentation map.

    Parameters
    ----------
    cube_path
        Latent cube.
    method
        ``kmeans`` (scikit-learn ``KMeans``) or ``gmm`` (``GaussianMixture`` with
        diagonal covariances: full ones are d^2 per cluster).
    n_clusters
        k.
    sample_size
        Valid pixels (seeded random subset) the model is fitted on.
    seed
        Seeds the subset and the clustering.
    max_bytes
        Cube data read per row block when labelling every pixel.

    Returns
    -------
    labels, info
        ``(n_rows, n_cols)`` int16, clusters 0..k-1 by decreasing size, -1 = invalid;
        ``info`` has the fraction of pixels per cluster and the method.
    """
    # scikit-learn's import costs ~1 s: only this function needs it
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture

    if method not in ("kmeans", "gmm"):
        raise ValueError(f"method must be kmeans or gmm, got {method!r}")
    valid = read_valid(cube_path)
    idx = sample_valid_indices(valid, sample_size, seed)
    if len(idx) < n_clusters:
        raise ValueError(f"{cube_path}: {len(idx)} valid pixels cannot make {n_clusters} clusters "
                         f"(config key maps.segmentation.n_clusters)")
    train = read_latents_at(cube_path, idx, max_bytes).astype(np.float64)
    if method == "kmeans":
        # two k-means++ starts: robust enough for separated clusters, half the cost of four
        model = KMeans(n_clusters=n_clusters, n_init=2, random_state=seed).fit(train)
    else:
        model = GaussianMixture(n_components=n_clusters, covariance_type="diag", reg_covar=1e-5,
                                random_state=seed).fit(train)
    raw = np.full(valid.shape, -1, np.int32)
    for r0, r1, (block,) in tqdm(iter_row_blocks(cube_path, max_bytes), disable=not progress,
                                 desc=f"segment {Path(cube_path).name}", unit="block"):
        d = block.shape[0]
        raw[r0:r1] = model.predict(block.reshape(d, -1).T.astype(np.float64)).reshape(r1 - r0, -1)
    raw[~valid] = -1
    counts = np.bincount(raw[valid], minlength=n_clusters)
    order = np.argsort(-counts, kind="stable")
    relabel = np.empty(n_clusters, np.int32)
    relabel[order] = np.arange(n_clusters)
    labels = np.where(valid, relabel[np.clip(raw, 0, None)], -1).astype(np.int16)
    fractions = counts[order] / max(1, int(valid.sum()))
    info = {"method": method, "n_clusters": int(n_clusters), "n_fit": int(len(idx)),
            "fractions": [float(f) for f in fractions], "seed": int(seed)}
    return labels, info


def plot_segmentation(labels: np.ndarray, step_um: float, out_path: str | os.PathLike,
                      title: str, fractions: Sequence[float]) -> None:
    """Cluster map with a qualitative colour per cluster, legend with area fractions."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    plt = pyplot()
    k = len(fractions)
    base = plt.get_cmap("tab10" if k <= 10 else "tab20")
    colors = [base(i % base.N) for i in range(k)]
    cmap = ListedColormap(colors).with_extremes(bad="0.6")
    r, c = labels.shape
    fig, ax = plt.subplots(figsize=(6.8, 6.0 * r / c * 0.85 + 0.8), constrained_layout=True)
    ax.imshow(np.ma.array(labels, mask=labels < 0), cmap=cmap, vmin=-0.5, vmax=k - 0.5,
              extent=map_extent(labels.shape, step_um), interpolation="nearest")
    add_scale_bar(ax, c * step_um)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title, fontsize=9)
    handles = [Patch(color=colors[i], label=f"{i}: {100 * f:.1f} %") for i, f in enumerate(fractions)]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
              title="cluster", title_fontsize=7, frameon=False)
    save_figure(fig, out_path)


# --------------------------------------------------------------------------- rule: feature maps


def feature_maps(
    cube_path: str | os.PathLike,
    ranking_csv: str | os.PathLike,
    montage_png: str | os.PathLike,
    top_pngs: Sequence[str | os.PathLike],
    segmentation_npy: str | os.PathLike,
    segmentation_png: str | os.PathLike,
    settings: Mapping[str, Any] | None = None,
    seed: int = 0,
    truth_path: str | os.PathLike | None = None,
    truth_csv: str | os.PathLike | None = None,
    truth_png: str | os.PathLike | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Rank a cube's features; write the ranking, montage, top-k maps, segmentation and
    (with ``truth_csv``) the ground-truth matches: what rule ``feature_maps`` runs.

    Parameters
    ----------
    cube_path
        Latent cube of one scan x variant.
    ranking_csv
        Output: one row per feature, best first (:func:`rank_table` columns).
    montage_png
        Output: all d maps sorted by rank.
    top_pngs
        Outputs: single-map figures of ranks 1, 2, ... (as many as paths given; ranks
        beyond d get a placeholder saying so).
    segmentation_npy, segmentation_png
        Outputs: ``(n_rows, n_cols)`` int16 labels (-1 = invalid) and their map.
    settings
        The validated ``maps`` config section (``None``: the schema's defaults).
    seed
        Global seed; the segmentation seed derives from it, the scan and the variant.
    truth_path
        Simulated ground truth of the scan (:mod:`latentebsd.io.truth`), if any.
    truth_csv, truth_png
        Outputs of :func:`latentebsd.groundtruth.write_truth_match` (skipped when
        ``truth_csv`` is None).

    Returns
    -------
    DataFrame
        The ranking.
    """
    cfg = config.section("maps") if settings is None else settings
    attrs = cube_attrs(cube_path)
    scan, variant, step = str(attrs.get("scan", "")), str(attrs.get("variant", "")), attrs["step_um"]
    label = f"{variant} · {scan} (d = {attrs['latent_dim']})"
    ranking, thumbs = rank_cube(cube_path, cfg, child_seed(seed, "percentiles", scan, variant), progress)
    ranking.insert(0, "scan", scan)
    ranking.insert(1, "variant", variant)
    with atomic_path(ranking_csv) as tmp:
        ranking.to_csv(tmp, index=False, float_format="%.6g")
    valid = read_valid(cube_path)
    plot_montage(thumbs, ranking, step, valid.shape, montage_png,
                 title=f"{label}: all maps by rank ({cfg['rank_by']}), colour {cfg['percentiles'][0]:g}-"
                       f"{cfg['percentiles'][1]:g} % per map")
    top = ranking.head(len(top_pngs))
    maps = read_features(cube_path, top["feature"].tolist())
    for i, path in enumerate(top_pngs):
        if i >= len(top):
            placeholder(path, f"{label}: no feature of rank {i + 1}")
            continue
        row = top.iloc[i]
        plot_feature_map(
            maps[i], valid, step, path,
            title=(f"{label}\nfeature {int(row.feature)} - rank {i + 1}: Moran's I {row.moran_i:.3f}, "
                   f"reliability {row.reliability:.3f}"),
            vmin=float(row.p_lo), vmax=float(row.p_hi), cbar_label=f"latent mean, feature {int(row.feature)}",
        )
    seg = cfg["segmentation"]
    labels, info = segment_cube(cube_path, seg["method"], seg["n_clusters"], seg["sample_size"],
                                child_seed(seed, "segment", scan, variant), budget_bytes(cfg["memory_mb"], 2.0), progress)
    with atomic_path(segmentation_npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, labels)
    plot_segmentation(labels, step, segmentation_png,
                      f"{label}: {seg['method']} segmentation, k = {seg['n_clusters']}", info["fractions"])
    if truth_csv is not None:
        write_truth_match(cube_path, truth_path, ranking, truth_csv, truth_png, cfg)
    log.info("%s: top-5 features %s", label, ranking["feature"].head(5).tolist())
    return ranking
