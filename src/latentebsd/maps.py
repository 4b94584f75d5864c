"""Latent feature maps: ranking, figures, ground-truth matching and segmentation.

Everything here reads the latent cubes written by :mod:`latentebsd.encode`
(``results/latent/{variant}/{scan}.nc``, HDF5-chunked by map rows) and holds at most
about ``maps.memory_mb`` of it: ranking statistics, montage thumbnails and clustering
stream row blocks in one pass each; single maps (top-k figures, Fig. 9) are read
feature by feature; ground-truth matching, which needs whole maps for its ranks, goes
feature group by feature group (:func:`latentebsd.encode.iter_feature_groups`).

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

Ground-truth matching (scans with simulated truth)
--------------------------------------------------
For each microstructure class (:data:`TRUTH_CLASSES`) the best latent feature and how
well it matches: the per-pixel ROC-AUC of the feature (``max(AUC, 1 - AUC)``: a latent
axis has no preferred sign) or of its Sobel gradient magnitude (``AUC``: boundaries
are edges in a map, so only *high* gradient on the truth counts) against the binary
truth mask; for the continuous ``dislocation_density``, ``|Spearman|`` of the value or
Spearman of the gradient magnitude. The better representation is reported, with
``median_score`` (the median over all features) as the baseline to read it against:
a class that changes every pattern (blurred bands at cell walls) lifts every feature.
``rotation_domains`` are boundaries between domains of one grain that touch no twin.

Segmentation (beyond the paper)
-------------------------------
k-means (or a diagonal Gaussian mixture) on the latent mean vectors, fitted on a
seeded random subset of valid pixels and then applied to every pixel in row blocks;
clusters are numbered by decreasing size.

Figures (matplotlib, PNG)
-------------------------
Montage of all d maps sorted by rank, single-map figures of the top-k features,
Fig. 8 (reconstructions vs d), Fig. 9 (the cell map per d), Fig. 10 (best / worst /
random reconstructions vs beta), ground-truth match panels and segmentation maps.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from latentebsd.encode import (
    cube_attrs,
    iter_feature_groups,
    iter_row_blocks,
    read_features,
    read_latents_at,
    read_valid,
)
from latentebsd.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- settings

#: Defaults of the ``maps`` config section; a config overrides any of them.
DEFAULT_MAPS_SETTINGS: dict[str, Any] = {
    "chunk_size": 2048,          # patterns encoded per block (whole map rows); bounds memory
    "batch_size": 512,           # patterns per encoder forward pass
    "memory_mb": 512,            # memory budget for feature groups / row blocks read from a cube
    "rank_by": "score",          # score | moran_i | std
    "moran_neighbours": 4,       # 4 (rook) or 8 (queen) neighbours in Moran's I
    "percentiles": [1.0, 99.0],  # robust colour range of every map, percent
    "top_k": 5,                  # single-map figures for the top-k ranked features
    "montage_tile_px": 160,      # maps with a longer side are block-averaged in the montage
    "segmentation": {
        "method": "kmeans",      # kmeans | gmm (diagonal covariance)
        "n_clusters": 6,         # k
        "sample_size": 100000,   # pixels (seeded subset) the clustering is fitted on
    },
    "figure_pattern": None,      # Fig. 8 pattern index (row-major); null = median L2 of the largest-d VAE
    "figure_sample_size": 2048,  # seeded subset for the Fig. 8 median and Fig. 10 best/worst; null = all
    "beta_variants": ["vae128", "betavae15", "betavae50"],  # Fig. 10 rows; missing ones are skipped
    "n_random": 4,               # Fig. 10 patterns decoded from N(0, I) latents per variant
}
RANK_KEYS = ("score", "moran_i", "std")
SEGMENTATION_METHODS = ("kmeans", "gmm")


def _fail(key: str, expected: str, value: Any) -> None:
    raise ValueError(f"config key maps.{key}: expected {expected}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def resolve_maps_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults (:data:`DEFAULT_MAPS_SETTINGS`) overridden by the ``maps`` config section.

    Raises
    ------
    ValueError
        Naming ``maps.<key>`` for an unknown key or a bad value.
    """
    cfg = copy.deepcopy(DEFAULT_MAPS_SETTINGS)
    for key, value in dict(settings or {}).items():
        if key not in cfg:
            raise ValueError(f"config key maps.{key}: unknown key (allowed: {', '.join(sorted(cfg))})")
        if key == "segmentation":
            if not isinstance(value, Mapping):
                _fail(key, "a mapping", value)
            for sub, sub_value in value.items():
                if sub not in cfg["segmentation"]:
                    raise ValueError(f"config key maps.segmentation.{sub}: unknown key (allowed: "
                                     f"{', '.join(sorted(cfg['segmentation']))})")
                cfg["segmentation"][sub] = sub_value
        else:
            cfg[key] = value
    for key in ("chunk_size", "batch_size", "top_k", "montage_tile_px"):
        if not _is_int(cfg[key]) or cfg[key] < 1:
            _fail(key, "an integer >= 1", cfg[key])
    if not _is_int(cfg["n_random"]) or cfg["n_random"] < 0:
        _fail("n_random", "an integer >= 0", cfg["n_random"])
    if not isinstance(cfg["memory_mb"], (int, float)) or isinstance(cfg["memory_mb"], bool) \
            or not cfg["memory_mb"] > 0:
        _fail("memory_mb", "a number > 0", cfg["memory_mb"])
    if cfg["rank_by"] not in RANK_KEYS:
        _fail("rank_by", f"one of {RANK_KEYS}", cfg["rank_by"])
    if cfg["moran_neighbours"] not in (4, 8) or isinstance(cfg["moran_neighbours"], bool):
        _fail("moran_neighbours", "4 or 8", cfg["moran_neighbours"])
    p = cfg["percentiles"]
    if (not isinstance(p, (list, tuple)) or len(p) != 2
            or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)
            or not 0 <= p[0] < p[1] <= 100):
        _fail("percentiles", "[low, high] with 0 <= low < high <= 100", p)
    cfg["percentiles"] = [float(v) for v in p]
    for key in ("figure_pattern", "figure_sample_size"):
        v = cfg[key]
        if v is not None and (not _is_int(v) or v < (0 if key == "figure_pattern" else 1)):
            _fail(key, "null or an integer >= " + ("0" if key == "figure_pattern" else "1"), v)
    bv = cfg["beta_variants"]
    if not isinstance(bv, (list, tuple)) or not all(isinstance(v, str) for v in bv):
        _fail("beta_variants", "a list of variant names", bv)
    cfg["beta_variants"] = list(bv)
    seg = cfg["segmentation"]
    if seg["method"] not in SEGMENTATION_METHODS:
        _fail("segmentation.method", f"one of {SEGMENTATION_METHODS}", seg["method"])
    if not _is_int(seg["n_clusters"]) or seg["n_clusters"] < 2:
        _fail("segmentation.n_clusters", "an integer >= 2", seg["n_clusters"])
    if not _is_int(seg["sample_size"]) or seg["sample_size"] < seg["n_clusters"]:
        _fail("segmentation.sample_size", "an integer >= n_clusters", seg["sample_size"])
    return cfg


def _budget(cfg: Mapping[str, Any], factor: float = 1.0) -> int:
    """Bytes of float32 cube data one step may read, leaving room for ``factor`` x work arrays."""
    return max(1, int(cfg["memory_mb"] * 1024**2 / factor))


def _seed(seed: int, *salt: str) -> int:
    """A stable child seed for one use (e.g. one scan and variant) of the global seed."""
    import zlib

    return (int(seed) * 1_000_003 + zlib.crc32("/".join(salt).encode())) % 2**32


# --------------------------------------------------------------------------- statistics


def _neighbour_pairs(neighbours: int) -> list[tuple[tuple[slice, slice], tuple[slice, slice]]]:
    """Index pairs (a, b) such that ``x[a]`` and ``x[b]`` are neighbours, each pair once."""
    s, e, a = slice(None, -1), slice(1, None), slice(None)
    pairs = [((a, s), (a, e)), ((s, a), (e, a))]
    if neighbours == 8:
        pairs += [((s, s), (e, e)), ((s, e), (e, s))]
    return pairs


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
    for a, b in _neighbour_pairs(neighbours):
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
               ) -> "pd.DataFrame":
    """Features sorted best first by ``rank_by`` (ties: lower feature id first), with ``rank`` 1..d."""
    import pandas as pd

    if rank_by not in RANK_KEYS:
        raise ValueError(f"config key maps.rank_by: expected one of {RANK_KEYS}, got {rank_by!r}")
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


#: Valid pixels (seeded subset) the colour percentiles of a map are taken from.
PERCENTILE_SAMPLE = 200_000


class SpatialAccumulator:
    """Moran's I, variance and posterior variance of d maps, fed block of rows by block.

    Keeps float64 sums per feature (shifted by the first block's mean, so that a large
    offset cannot cancel the variance) plus the last row of the previous block for the
    neighbour pairs that straddle two blocks: the result equals :func:`moran_i` and
    :func:`feature_statistics` on the whole maps, with one pass over the cube.
    """

    def __init__(self, d: int, neighbours: int = 4) -> None:
        if neighbours not in (4, 8):
            raise ValueError(f"config key maps.moran_neighbours: expected 4 or 8, got {neighbours}")
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
        for a, b in _neighbour_pairs(self.neighbours):
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
              seed: int = 0, progress: bool = True) -> tuple["pd.DataFrame", np.ndarray]:
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
    import h5py
    from tqdm import tqdm

    cfg = resolve_maps_settings(settings)
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
        rows = max(1, _budget(cfg, 4.0) // (8 * d * n_cols))
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


# --------------------------------------------------------------------------- plotting helpers


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | os.PathLike, dpi: int = 110) -> None:
    plt = _pyplot()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    plt.close(fig)


def nice_length(span: float) -> float:
    """A 1/2/5 x 10^k length close to a fifth of ``span`` (for scale bars)."""
    target = max(span / 5.0, 1e-12)
    exp = math.floor(math.log10(target))
    for m in (5, 2, 1):
        if m * 10**exp <= target * 1.5:
            return float(m * 10**exp)
    return float(10**exp)


def _extent(shape: tuple[int, int], step: float) -> list[float]:
    r, c = shape
    return [-step / 2, (c - 0.5) * step, (r - 0.5) * step, -step / 2]


def add_scale_bar(ax: Any, shape: tuple[int, int], step: float, label: bool = True,
                  color: str = "white") -> float:
    """Draw a scale bar (in um) in the lower left of an ``imshow`` with :func:`_extent`."""
    from matplotlib.patches import Rectangle

    r, c = shape
    width_um, height_um = c * step, r * step
    length = nice_length(width_um)
    x0 = -step / 2 + 0.05 * width_um
    y0 = -step / 2 + 0.93 * height_um
    thickness = max(0.02 * height_um, 0.5 * step)
    ax.add_patch(Rectangle((x0, y0 - thickness), length, thickness, color=color, ec="black", lw=0.4))
    if label:
        text = f"{length:g} µm"
        ax.text(x0 + length / 2, y0 - thickness - 0.03 * height_um, text, color=color,
                ha="center", va="bottom", fontsize=7,
                path_effects=_outline())
    return length


def _outline() -> list:
    import matplotlib.patheffects as pe

    return [pe.withStroke(linewidth=1.5, foreground="black")]


def _masked(image: np.ndarray, valid: np.ndarray | None = None) -> np.ma.MaskedArray:
    bad = ~np.isfinite(image)
    if valid is not None:
        bad |= ~valid
    return np.ma.array(image, mask=bad)


def _cmap(name: str) -> Any:
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="0.6")


# --------------------------------------------------------------------------- map figures


def montage_image(thumbnails: np.ndarray, ranking: "pd.DataFrame", ncols: int, gap: int = 2,
                  band: int = 0, cmap: str = "viridis") -> np.ndarray:
    """RGB mosaic of the maps in ranking order, each coloured with its own ``p_lo..p_hi``.

    One image instead of d axes: matplotlib draws 256 axes in ~10 s, one image in ~0.1 s.
    ``band`` white pixel rows above every tile row leave room for labels.
    """
    import matplotlib

    colormap = _cmap(cmap)
    d = len(ranking)
    tr, tc = thumbnails.shape[1:]
    nrows = math.ceil(d / ncols)
    pitch_r, pitch_c = tr + band + gap, tc + gap
    out = np.ones((nrows * pitch_r, ncols * pitch_c - gap, 4), np.float32)
    for i, row in enumerate(ranking.itertuples(index=False)):
        lo, hi = float(row.p_lo), float(row.p_hi)
        norm = matplotlib.colors.Normalize(lo, hi if hi > lo else lo + 1e-12, clip=True)
        tile = colormap(norm(_masked(thumbnails[int(row.feature)])))
        r, c = divmod(i, ncols)
        r0 = r * pitch_r + band
        out[r0:r0 + tr, c * pitch_c:c * pitch_c + tc] = tile
    return out[..., :3]


def plot_montage(thumbnails: np.ndarray, ranking: "pd.DataFrame", step_um: float,
                 full_shape: tuple[int, int], out_path: str | os.PathLike, title: str = "") -> None:
    """All d maps sorted by rank, each with its own robust colour range; scale bar on tile 1."""
    from matplotlib.patches import Rectangle

    plt = _pyplot()
    d = len(ranking)
    r, c = full_shape
    tr, tc = thumbnails.shape[1:]
    gap = max(1, round(0.04 * max(tr, tc)))
    band = max(3, round(0.2 * tr))
    ncols = max(1, math.ceil(math.sqrt(d * r / c)))
    nrows = math.ceil(d / ncols)
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
            ha="center", va="bottom", path_effects=_outline())
    fig.suptitle(title or "latent feature maps, ranked", fontsize=9, y=1 - 0.06 / fig_h, va="top")
    _save(fig, out_path, dpi=120)


def plot_feature_map(image: np.ndarray, valid: np.ndarray, step_um: float, out_path: str | os.PathLike,
                     title: str, vmin: float | None = None, vmax: float | None = None,
                     cmap: str = "viridis", cbar_label: str = "latent mean") -> None:
    """One map in um with a colour bar and a scale bar."""
    plt = _pyplot()
    r, c = image.shape
    fig, ax = plt.subplots(figsize=(6.0, 6.0 * r / c * 0.85 + 0.8), constrained_layout=True)
    im = ax.imshow(_masked(image, valid), cmap=_cmap(cmap), vmin=vmin, vmax=vmax,
                   extent=_extent(image.shape, step_um), interpolation="nearest")
    add_scale_bar(ax, image.shape, step_um)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, label=cbar_label, shrink=0.85)
    _save(fig, out_path)


def _placeholder(out_path: str | os.PathLike, text: str) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4, 1.5))
    ax.set_axis_off()
    ax.text(0.5, 0.5, text, ha="center", va="center", fontsize=9, wrap=True)
    _save(fig, out_path, dpi=80)


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
    from sklearn.cluster import KMeans
    from sklearn.mixture import GaussianMixture
    from tqdm import tqdm

    if method not in SEGMENTATION_METHODS:
        raise ValueError(f"config key maps.segmentation.method: expected one of "
                         f"{SEGMENTATION_METHODS}, got {method!r}")
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

    plt = _pyplot()
    k = len(fractions)
    base = plt.get_cmap("tab10" if k <= 10 else "tab20")
    colors = [base(i % base.N) for i in range(k)]
    cmap = ListedColormap(colors).with_extremes(bad="0.6")
    r, c = labels.shape
    fig, ax = plt.subplots(figsize=(6.8, 6.0 * r / c * 0.85 + 0.8), constrained_layout=True)
    ax.imshow(np.ma.array(labels, mask=labels < 0), cmap=cmap, vmin=-0.5, vmax=k - 0.5,
              extent=_extent(labels.shape, step_um), interpolation="nearest")
    add_scale_bar(ax, labels.shape, step_um)
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title, fontsize=9)
    handles = [Patch(color=colors[i], label=f"{i}: {100 * f:.1f} %") for i, f in enumerate(fractions)]
    ax.legend(handles=handles, loc="center left", bbox_to_anchor=(1.01, 0.5), fontsize=7,
              title="cluster", title_fontsize=7, frameon=False)
    _save(fig, out_path)


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
) -> "pd.DataFrame":
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
        The ``maps`` config section.
    seed
        Global seed; the segmentation seed derives from it, the scan and the variant.
    truth_path
        Simulated ground truth of the scan (:func:`latentebsd.simulate.read_truth`), if any.
    truth_csv, truth_png
        Outputs of :func:`write_truth_match` (skipped when ``truth_csv`` is None).

    Returns
    -------
    DataFrame
        The ranking.
    """
    cfg = resolve_maps_settings(settings)
    attrs = cube_attrs(cube_path)
    scan, variant, step = str(attrs.get("scan", "")), str(attrs.get("variant", "")), attrs["step_um"]
    label = f"{variant} · {scan} (d = {attrs['latent_dim']})"
    ranking, thumbs = rank_cube(cube_path, cfg, _seed(seed, "percentiles", scan, variant), progress)
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
            _placeholder(path, f"{label}: no feature of rank {i + 1}")
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
                                _seed(seed, "segment", scan, variant), _budget(cfg, 2.0), progress)
    with atomic_path(segmentation_npy) as tmp:
        with open(tmp, "wb") as f:
            np.save(f, labels)
    plot_segmentation(labels, step, segmentation_png,
                      f"{label}: {seg['method']} segmentation, k = {seg['n_clusters']}", info["fractions"])
    if truth_csv is not None:
        write_truth_match(cube_path, truth_path, ranking, truth_csv, truth_png, cfg)
    log.info("%s: top-5 features %s", label, ranking["feature"].head(5).tolist())
    return ranking


# --------------------------------------------------------------------------- ground truth


#: class -> (truth field, kind). ``domain_boundaries`` is derived (see :func:`truth_targets`).
TRUTH_CLASSES: dict[str, tuple[str, str]] = {
    "grain_boundaries": ("grain_boundary_mask", "mask"),
    "twins": ("twin_mask", "mask"),
    "dislocation_cells": ("cell_wall_mask", "mask"),
    "dislocation_density": ("dislocation_density", "continuous"),
    "particles": ("particle_mask", "mask"),
    "scratch": ("scratch_mask", "mask"),
    "rotation_domains": ("domain_boundaries", "mask"),
}


def domain_boundaries(domain_id: np.ndarray, grain_id: np.ndarray,
                      twin_mask: np.ndarray | None = None) -> np.ndarray:
    """Points with a 4-neighbour in another rotation domain of the *same* grain.

    Boundaries that touch a twin lamella (twin / parent and twin / twin) are left out:
    they belong to the ``twins`` class, and in a wrought map lamellae are the only
    domains.
    """
    out = np.zeros(domain_id.shape, bool)
    tw = np.zeros(domain_id.shape, bool) if twin_mask is None else np.asarray(twin_mask, bool)
    for a, b in _neighbour_pairs(4):
        edge = (domain_id[a] != domain_id[b]) & (grain_id[a] == grain_id[b]) & ~tw[a] & ~tw[b]
        out[a] |= edge
        out[b] |= edge
    return out


def truth_targets(truth: Mapping[str, np.ndarray]) -> dict[str, tuple[str, str, np.ndarray]]:
    """``class -> (truth field, kind, (n_rows, n_cols) array)`` for the classes the truth has."""
    out = {}
    for name, (field, kind) in TRUTH_CLASSES.items():
        if field == "domain_boundaries":
            if "domain_id" not in truth or "grain_id" not in truth:
                continue
            array = domain_boundaries(truth["domain_id"], truth["grain_id"], truth.get("twin_mask"))
        elif field in truth:
            array = np.asarray(truth[field])
        else:
            continue
        out[name] = (field, kind, array.astype(bool) if kind == "mask" else array.astype(np.float64))
    return out


def gradient_magnitude(maps: np.ndarray) -> np.ndarray:
    """Sobel gradient magnitude of each ``(g, R, C)`` map (per pixel step)."""
    from scipy import ndimage

    x = np.asarray(maps, dtype=np.float32)
    gy = ndimage.sobel(x, axis=-2, mode="nearest")
    gx = ndimage.sobel(x, axis=-1, mode="nearest")
    return np.hypot(gx, gy) / 8.0


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis, ties sharing their average rank (like
    ``scipy.stats.rankdata``, whose import alone costs ~1.5 s per rule job)."""
    x = np.asarray(x)
    flat = x.reshape(-1, x.shape[-1])
    g, n = flat.shape
    order = np.argsort(flat, axis=1, kind="stable")
    sorted_x = np.take_along_axis(flat, order, axis=1)
    starts = np.ones((g, n), bool)
    starts[:, 1:] = sorted_x[:, 1:] != sorted_x[:, :-1]
    ends = np.ones((g, n), bool)
    ends[:, :-1] = starts[:, 1:]
    pos = np.broadcast_to(np.arange(n), (g, n))
    first = np.maximum.accumulate(np.where(starts, pos, 0), axis=1)
    last = np.minimum.accumulate(np.where(ends, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    ranks = np.empty((g, n), np.float64)
    np.put_along_axis(ranks, order, (first + last) / 2.0 + 1.0, axis=1)
    return ranks.reshape(x.shape)


def _auc_from_ranks(ranks: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row's scores (as ranks) for the boolean ``positive`` labels."""
    n1 = int(positive.sum())
    n0 = positive.size - n1
    u = ranks[:, positive].sum(axis=1) - n1 * (n1 + 1) / 2.0
    return u / (n1 * n0)


def _spearman_from_ranks(ranks: np.ndarray, target_ranks: np.ndarray) -> np.ndarray:
    a = ranks - ranks.mean(axis=1, keepdims=True)
    b = target_ranks - target_ranks.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (a @ b) / (np.sqrt((a * a).sum(axis=1)) * np.sqrt((b * b).sum()))
    return np.nan_to_num(r)


def match_scores(maps: np.ndarray, targets: Mapping[str, tuple[str, str, np.ndarray]],
                 valid: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Match score of every map against every present target, for value and gradient.

    Returns
    -------
    dict
        ``class -> {"value": (g,), "gradient": (g,)}``; scores in [0, 1] (module docstring).
    """
    v = np.asarray(valid, bool)
    value_ranks = average_ranks(maps[:, v])
    grad_ranks = average_ranks(gradient_magnitude(maps)[:, v])
    out = {}
    for name, (_, kind, array) in targets.items():
        t = array[v]
        if kind == "mask":
            if t.all() or not t.any():
                continue
            auc = _auc_from_ranks(value_ranks, t)
            out[name] = {"value": np.maximum(auc, 1.0 - auc), "gradient": _auc_from_ranks(grad_ranks, t)}
        else:
            if np.ptp(t) == 0:
                continue
            tr = average_ranks(t)
            out[name] = {"value": np.abs(_spearman_from_ranks(value_ranks, tr)),
                         "gradient": _spearman_from_ranks(grad_ranks, tr)}
    return out


def match_truth(cube_path: str | os.PathLike, truth: Mapping[str, np.ndarray],
                settings: Mapping[str, Any] | None = None, ranking: "pd.DataFrame | None" = None,
                ) -> tuple["pd.DataFrame", dict[str, np.ndarray]]:
    """For each ground-truth class, the latent feature that matches it best.

    Parameters
    ----------
    cube_path
        Latent cube of one scan x variant.
    truth
        ``name -> (n_rows, n_cols)`` arrays (:func:`latentebsd.simulate.read_truth`).
    settings
        The ``maps`` config section (memory budget).
    ranking
        The feature ranking, to report the best feature's spatial-structure rank.

    Returns
    -------
    table, best_maps
        One row per class in :data:`TRUTH_CLASSES` (``present`` False where the scan has
        no such feature); ``best_maps``: class -> the matched representation's map.
    """
    import pandas as pd

    cfg = resolve_maps_settings(settings)
    attrs = cube_attrs(cube_path)
    valid = read_valid(cube_path)
    targets = truth_targets(truth)
    for name, (field, _, array) in targets.items():
        if array.shape != valid.shape:
            raise ValueError(f"ground truth {field} has shape {array.shape}, the cube "
                             f"{cube_path} maps {valid.shape}")
    scores: dict[str, dict[str, list[np.ndarray]]] = {}
    ids = [np.zeros(0, np.int64)]
    # value, gradient and two float64 rank arrays per map
    for fids, (mean,) in iter_feature_groups(cube_path, _budget(cfg, 7.0)) if targets else ():
        ids.append(fids)
        for cls, reps in match_scores(mean, targets, valid).items():
            for rep, s in reps.items():
                scores.setdefault(cls, {}).setdefault(rep, []).append(s)
    ids = np.concatenate(ids)
    rank_of = {} if ranking is None else dict(zip(ranking["feature"].astype(int), ranking["rank"].astype(int)))
    rows, best = [], {}
    for cls, (field, kind) in TRUTH_CLASSES.items():
        row = {"scan": attrs.get("scan", ""), "variant": attrs.get("variant", ""),
               "latent_dim": attrs["latent_dim"], "class": cls, "truth_field": field, "kind": kind,
               "metric": "roc_auc" if kind == "mask" else "abs_spearman"}
        present = cls in scores
        target = targets.get(cls)
        row["present"] = present
        row["n_positive"] = int(target[2][valid].sum()) if target is not None and kind == "mask" else np.nan
        if present:
            value = np.concatenate(scores[cls]["value"])
            grad = np.concatenate(scores[cls]["gradient"])
            per_feature = np.maximum(value, grad)
            order = np.argsort(-per_feature, kind="stable")
            i, j = order[0], order[1] if len(order) > 1 else order[0]
            rep = "value" if value[i] >= grad[i] else "gradient"
            row.update({
                "best_feature": int(ids[i]), "representation": rep, "score": float(per_feature[i]),
                "value_score": float(value[i]), "gradient_score": float(grad[i]),
                "spatial_rank": rank_of.get(int(ids[i]), np.nan),
                "runner_up_feature": int(ids[j]), "runner_up_score": float(per_feature[j]),
                "median_score": float(np.median(per_feature)),
            })
            fmap = read_features(cube_path, [int(ids[i])])
            best[cls] = fmap[0] if rep == "value" else gradient_magnitude(fmap)[0]
        rows.append(row)
    return pd.DataFrame(rows), best


def plot_truth_match(table: "pd.DataFrame", best_maps: Mapping[str, np.ndarray],
                     truth: Mapping[str, np.ndarray], valid: np.ndarray, step_um: float,
                     out_path: str | os.PathLike, title: str) -> None:
    """Truth (top) and the best-matching latent map (bottom) for each present class."""
    plt = _pyplot()
    targets = truth_targets(truth)
    present = table[table["present"].astype(bool)]
    if present.empty:
        _placeholder(out_path, f"{title}: no ground-truth class present")
        return
    n = len(present)
    r, c = valid.shape
    w = 2.6
    fig, axes = plt.subplots(2, n, figsize=(n * w, 2 * w * r / c + 1.2), squeeze=False,
                             constrained_layout=True)
    extent = _extent(valid.shape, step_um)
    for k, (_, row) in enumerate(present.iterrows()):
        cls = row["class"]
        truth_map = targets[cls][2]
        ax = axes[0, k]
        ax.imshow(_masked(truth_map.astype(float), valid), cmap=_cmap("gray" if row["kind"] == "mask" else "magma"),
                  extent=extent, interpolation="nearest")
        ax.set_title(f"truth: {cls}", fontsize=8)
        ax = axes[1, k]
        image = best_maps[cls]
        lo, hi = np.percentile(image[valid], [1, 99])
        ax.imshow(_masked(image, valid), cmap=_cmap("viridis"), vmin=lo, vmax=max(hi, lo + 1e-12),
                  extent=extent, interpolation="nearest")
        what = "" if row["representation"] == "value" else " |grad|"
        rank = row["spatial_rank"]
        ax.set_title(f"f{int(row['best_feature'])}{what}: {row['metric']} {row['score']:.3f}\n"
                     f"(spatial rank {int(rank) if rank == rank else '-'})", fontsize=7)
        for ax in axes[:, k]:
            ax.set_xticks([])
            ax.set_yticks([])
        if k == 0:
            add_scale_bar(axes[1, 0], valid.shape, step_um)
    fig.suptitle(title, fontsize=10)
    _save(fig, out_path)


def write_truth_match(cube_path: str | os.PathLike, truth_path: str | os.PathLike | None,
                      ranking: "pd.DataFrame | str | os.PathLike | None", out_csv: str | os.PathLike,
                      out_png: str | os.PathLike, settings: Mapping[str, Any] | None = None
                      ) -> "pd.DataFrame":
    """:func:`match_truth` against a ground-truth file, written as CSV and figure.

    Without ``truth_path`` (a scan with no simulated truth) every class is written as
    ``present = False`` and the figure says so.
    """
    import pandas as pd

    from latentebsd.simulate import read_truth

    truth = read_truth(truth_path)[0] if truth_path else {}
    if ranking is not None and not isinstance(ranking, pd.DataFrame):
        ranking = pd.read_csv(ranking)
    table, best = match_truth(cube_path, truth, settings, ranking)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    attrs = cube_attrs(cube_path)
    label = f"{attrs.get('variant', '')} · {attrs.get('scan', '')}"
    if not truth:
        _placeholder(out_png, f"{label}: no ground truth for this scan")
    else:
        plot_truth_match(table, best, truth, read_valid(cube_path), attrs["step_um"], out_png,
                         f"{label}: best latent map per ground-truth class")
    return table


def summarize_truth_matches(csvs: Sequence[str | os.PathLike], out_long: str | os.PathLike,
                            out_wide: str | os.PathLike) -> "pd.DataFrame":
    """One table over variants: long (every row) and wide (scan x class rows, variant columns
    of ``score (feature)``)."""
    import pandas as pd

    frames = [pd.read_csv(p) for p in csvs]
    long = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    with atomic_path(out_long) as tmp:
        long.to_csv(tmp, index=False, float_format="%.6g")
    wide = pd.DataFrame()
    if not long.empty:
        present = long[long["present"].astype(bool)].copy()
        present["cell"] = [f"{s:.3f} (f{int(f)})" for s, f in zip(present["score"], present["best_feature"])]
        wide = present.pivot_table(index=["scan", "class", "metric"], columns="variant", values="cell",
                                   aggfunc="first")
        order = list(dict.fromkeys(long["variant"]))
        wide = wide[[v for v in order if v in wide.columns]].reset_index()
    with atomic_path(out_wide) as tmp:
        wide.to_csv(tmp, index=False)
    return long


# --------------------------------------------------------------------------- reconstructions


def _masked_l2(recon: np.ndarray, target: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Per-pattern sum of squared differences on the screen (as the training loss)."""
    diff = np.where(mask, recon.astype(np.float64) - target.astype(np.float64), 0.0)
    return (diff**2).sum(axis=(1, 2))


def _read_patterns(preprocessed: str | os.PathLike, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Patterns at sorted ``indices``, the screen mask and the ``(n_rows, n_cols)`` valid map."""
    import h5py

    with h5py.File(preprocessed, "r") as f:
        mask, valid = f["mask"][()], f["valid"][()]
        n_rows, n_cols = int(f["geometry"].attrs["n_rows"]), int(f["geometry"].attrs["n_cols"])
        pats = f["patterns"][np.asarray(indices, np.int64)] if len(indices) else np.zeros((0, *mask.shape))
    return np.asarray(pats, np.float32), mask, valid.reshape(n_rows, n_cols)


def _reconstruct(weights: str | os.PathLike, cube: str | os.PathLike, indices: np.ndarray,
                 mask: np.ndarray, max_bytes: int) -> np.ndarray:
    """Decoded latent means of the patterns at ``indices`` (zero off the screen)."""
    from latentebsd.models import decode_latents
    from latentebsd.train import load_model

    _, decoder, _ = load_model(weights)
    z = read_latents_at(cube, indices, max_bytes)
    return np.where(mask, decode_latents(decoder, z, batch_size=256), 0.0).astype(np.float32)


def _show_pattern(ax: Any, image: np.ndarray, mask: np.ndarray, title: str, vmin: float, vmax: float,
                  cmap: str = "gray") -> Any:
    im = ax.imshow(np.ma.array(image, mask=~mask), cmap=_cmap(cmap), vmin=vmin, vmax=vmax,
                   interpolation="nearest")
    ax.set_title(title, fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    return im


def figure_dimensionality(preprocessed: str | os.PathLike, cubes: Mapping[str, str | os.PathLike],
                          weights: Mapping[str, str | os.PathLike], latent_dims: Mapping[str, int],
                          out_png: str | os.PathLike, out_csv: str | os.PathLike, scan: str = "",
                          settings: Mapping[str, Any] | None = None, seed: int = 0) -> "pd.DataFrame":
    """Fig. 8: one pattern reconstructed by every VAE d, differences to the input and
    between successive d.

    The pattern is ``maps.figure_pattern`` if set, else the one with the median masked
    L2 under the largest-d VAE among a seeded subset of ``maps.figure_sample_size``
    valid patterns. Row A: reconstruction - input; row B: input and reconstructions;
    row C: reconstruction(d_i+1) - reconstruction(d_i). Rows A and C each share one
    symmetric colour scale.
    """
    import pandas as pd

    cfg = resolve_maps_settings(settings)
    names = sorted(cubes, key=lambda v: latent_dims[v])
    if not names:
        raise ValueError("Fig. 8 needs at least one VAE variant")
    _, mask, valid = _read_patterns(preprocessed, np.zeros(0, np.int64))
    budget = _budget(cfg)
    if cfg["figure_pattern"] is not None:
        index = int(cfg["figure_pattern"])
        if not 0 <= index < valid.size:
            raise ValueError(f"config key maps.figure_pattern: {index} outside 0..{valid.size - 1} "
                             f"for scan {scan}")
        how = "maps.figure_pattern"
    else:
        sample = sample_valid_indices(valid, cfg["figure_sample_size"], _seed(seed, "fig8", scan))
        ref = names[-1]
        pats, _, _ = _read_patterns(preprocessed, sample)
        l2 = _masked_l2(_reconstruct(weights[ref], cubes[ref], sample, mask, budget), pats, mask)
        index = int(sample[np.argsort(l2, kind="stable")[len(l2) // 2]])
        how = f"median L2 of {ref} over {len(sample)} patterns"
    (pattern,), _, _ = _read_patterns(preprocessed, np.array([index]))
    recons = {v: _reconstruct(weights[v], cubes[v], np.array([index]), mask, budget)[0] for v in names}
    l2s = {v: float(_masked_l2(recons[v][None], pattern[None], mask)[0]) for v in names}
    row, col = divmod(index, valid.shape[1])

    plt = _pyplot()
    n = len(names)
    fig, axes = plt.subplots(3, n + 1, figsize=(2.1 * (n + 1), 6.9), squeeze=False, constrained_layout=True)
    diffs = [recons[v] - pattern for v in names]
    succ = [recons[b] - recons[a] for a, b in zip(names[:-1], names[1:])]
    lim_a = max(float(np.abs(np.where(mask, x, 0)).max()) for x in diffs) or 1.0
    lim_c = max([float(np.abs(np.where(mask, x, 0)).max()) for x in succ] or [1.0]) or 1.0
    for ax in axes.flat:
        ax.set_axis_off()
    axes[1, 0].set_axis_on()
    _show_pattern(axes[1, 0], pattern, mask, f"input #{index}\n(row {row}, col {col})", -1, 1)
    for k, v in enumerate(names, start=1):
        for r in (0, 1):
            axes[r, k].set_axis_on()
        im_a = _show_pattern(axes[0, k], diffs[k - 1], mask, f"A.{k} d={latent_dims[v]}: recon - input",
                             -lim_a, lim_a, "RdBu_r")
        _show_pattern(axes[1, k], recons[v], mask, f"B.{k} d={latent_dims[v]}, L2 {l2s[v]:.1f}", -1, 1)
    for k, (a, b) in enumerate(zip(names[:-1], names[1:]), start=1):
        axes[2, k].set_axis_on()
        im_c = _show_pattern(axes[2, k], succ[k - 1], mask,
                             f"C.{k} d={latent_dims[b]} - d={latent_dims[a]}", -lim_c, lim_c, "RdBu_r")
    fig.colorbar(im_a, ax=axes[0, :].tolist(), shrink=0.8, label="difference")
    if succ:
        fig.colorbar(im_c, ax=axes[2, :].tolist(), shrink=0.8, label="difference")
    fig.suptitle(f"Fig. 8 · {scan}: reconstruction vs latent dimension\n(pattern chosen by {how})",
                 fontsize=9)
    _save(fig, out_png)
    table = pd.DataFrame({"scan": scan, "variant": names, "latent_dim": [latent_dims[v] for v in names],
                          "pattern_index": index, "row": row, "col": col,
                          "masked_l2": [l2s[v] for v in names], "selected_by": how})
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def figure_beta(preprocessed: str | os.PathLike, cubes: Mapping[str, str | os.PathLike],
                weights: Mapping[str, str | os.PathLike], variants: Mapping[str, Mapping[str, Any]],
                out_png: str | os.PathLike, out_csv: str | os.PathLike, scan: str = "",
                settings: Mapping[str, Any] | None = None, seed: int = 0) -> "pd.DataFrame":
    """Fig. 10: best and worst reconstructions (masked L2) and patterns decoded from
    random N(0, I) latents, one row per variant (``maps.beta_variants`` order).

    Best / worst are taken over a seeded subset of ``maps.figure_sample_size`` valid
    patterns (all when null); the random latents are seeded per variant from
    ``seed`` and ``d``, so variants of equal d decode the same draws.
    """
    import pandas as pd

    from latentebsd.models import decode_latents
    from latentebsd.train import load_model

    cfg = resolve_maps_settings(settings)
    names = [v for v in cfg["beta_variants"] if v in cubes]
    if not names:
        raise ValueError("Fig. 10 needs at least one of maps.beta_variants among the model variants")
    _, mask, valid = _read_patterns(preprocessed, np.zeros(0, np.int64))
    sample = sample_valid_indices(valid, cfg["figure_sample_size"], _seed(seed, "fig10", scan))
    pats, _, _ = _read_patterns(preprocessed, sample)
    n_cols = valid.shape[1]
    budget = _budget(cfg)
    n_rand = cfg["n_random"]
    plt = _pyplot()
    fig, axes = plt.subplots(len(names), 4 + n_rand, figsize=(1.9 * (4 + n_rand), 2.2 * len(names) + 0.6),
                             squeeze=False, constrained_layout=True)
    rows = []
    for r, v in enumerate(names):
        spec = variants.get(v, {})
        beta = float(spec.get("beta", 1.0))
        recon = _reconstruct(weights[v], cubes[v], sample, mask, budget)
        l2 = _masked_l2(recon, pats, mask)
        order = np.argsort(l2, kind="stable")
        best, worst = int(order[0]), int(order[-1])
        _, decoder, meta = load_model(weights[v])
        d = int(meta.get("latent_dim", decoder.latent_dim))
        z = np.random.default_rng(_seed(seed, "fig10-random", str(d))).standard_normal((n_rand, d))
        rand = np.where(mask, decode_latents(decoder, z.astype(np.float32)), 0.0) if n_rand else []
        label = f"{v} (β={beta:g}, d={d})"
        panels = [(pats[best], f"best: input #{int(sample[best])}"),
                  (recon[best], f"best: recon, L2 {l2[best]:.1f}"),
                  (pats[worst], f"worst: input #{int(sample[worst])}"),
                  (recon[worst], f"worst: recon, L2 {l2[worst]:.1f}")]
        panels += [(rand[i], f"z ~ N(0, I) #{i + 1}") for i in range(n_rand)]
        for k, (image, title) in enumerate(panels):
            _show_pattern(axes[r, k], image, mask, title, -1, 1)
        axes[r, 0].set_ylabel(label, fontsize=8)
        for kind, i in (("best", best), ("worst", worst)):
            row_i, col_i = divmod(int(sample[i]), n_cols)
            rows.append({"scan": scan, "variant": v, "beta": beta, "latent_dim": d, "kind": kind,
                         "pattern_index": int(sample[i]), "row": row_i, "col": col_i,
                         "masked_l2": float(l2[i]), "median_l2": float(np.median(l2)),
                         "n_sample": len(sample)})
    fig.suptitle(f"Fig. 10 · {scan}: best / worst reconstructions (masked L2 over {len(sample)} "
                 f"patterns)\nand patterns decoded from random N(0, I) latents", fontsize=9)
    _save(fig, out_png)
    table = pd.DataFrame(rows)
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def select_cell_features(rankings: Mapping[str, str | os.PathLike],
                         truth_matches: Mapping[str, str | os.PathLike] | None = None
                         ) -> "pd.DataFrame":
    """Fig. 9's choice per variant: the best ground-truth match to the dislocation-cell
    walls when the truth has cells, else the top spatial-structure rank.

    Returns
    -------
    DataFrame
        ``variant, feature, representation, selected_by, score``.
    """
    import pandas as pd

    rows = []
    for v, ranking_csv in rankings.items():
        row = None
        if truth_matches and v in truth_matches:
            table = pd.read_csv(truth_matches[v])
            hit = table[(table["class"] == "dislocation_cells") & table["present"].astype(bool)]
            if len(hit):
                h = hit.iloc[0]
                row = {"variant": v, "feature": int(h["best_feature"]), "representation": h["representation"],
                       "selected_by": "ground truth: ROC-AUC vs cell_wall_mask", "score": float(h["score"])}
        if row is None:
            top = pd.read_csv(ranking_csv).iloc[0]
            row = {"variant": v, "feature": int(top["feature"]), "representation": "value",
                   "selected_by": "top spatial-structure rank", "score": float(top["score"])}
        rows.append(row)
    return pd.DataFrame(rows)


def figure_cells(cubes: Mapping[str, str | os.PathLike], rankings: Mapping[str, str | os.PathLike],
                 latent_dims: Mapping[str, int], out_png: str | os.PathLike, out_csv: str | os.PathLike,
                 truth_matches: Mapping[str, str | os.PathLike] | None = None, scan: str = "",
                 settings: Mapping[str, Any] | None = None) -> "pd.DataFrame":
    """Fig. 9: for each VAE d, the map that best shows the dislocation cells (see
    :func:`select_cell_features`), side by side with its colour bar."""
    cfg = resolve_maps_settings(settings)
    names = sorted(cubes, key=lambda v: latent_dims[v])
    choice = select_cell_features({v: rankings[v] for v in names}, truth_matches).set_index("variant")
    plt = _pyplot()
    n = len(names)
    valid = read_valid(cubes[names[0]])
    r, c = valid.shape
    w = 3.2
    fig, axes = plt.subplots(1, n, figsize=(w * n, w * r / c + 1.3), squeeze=False, constrained_layout=True)
    lo_p, hi_p = cfg["percentiles"]
    for k, v in enumerate(names):
        ch = choice.loc[v]
        image = read_features(cubes[v], [int(ch["feature"])])
        if ch["representation"] == "gradient":
            image = gradient_magnitude(image)
        image = image[0]
        step = cube_attrs(cubes[v])["step_um"]
        lo, hi = np.percentile(image[valid], [lo_p, hi_p])
        ax = axes[0, k]
        im = ax.imshow(_masked(image, valid), cmap=_cmap("viridis"), vmin=lo, vmax=max(hi, lo + 1e-12),
                       extent=_extent(valid.shape, step), interpolation="nearest")
        add_scale_bar(ax, valid.shape, step)
        ax.set_xticks([])
        ax.set_yticks([])
        what = " |grad|" if ch["representation"] == "gradient" else ""
        how = ("cell-wall ROC-AUC" if ch["selected_by"].startswith("ground truth")
               else "top spatial rank, score")
        ax.set_title(f"{chr(65 + k)}: d={latent_dims[v]}, feature {int(ch['feature'])}{what}\n"
                     f"{how} {ch['score']:.3f}", fontsize=8)
        fig.colorbar(im, ax=ax, shrink=0.7)
    fig.suptitle(f"Fig. 9 · {scan}: the latent map that best shows the dislocation cells, per d", fontsize=10)
    _save(fig, out_png)
    table = choice.reset_index()
    table.insert(0, "scan", scan)
    table.insert(2, "latent_dim", [latent_dims[v] for v in table["variant"]])
    with atomic_path(out_csv) as tmp:
        table.to_csv(tmp, index=False, float_format="%.6g")
    return table


def top_features_report(results: str | os.PathLike = "results", variant: str = "vae128", k: int = 5) -> str:
    """Plain text: the top-k ranked features of ``variant`` per scan and its best
    ground-truth match per class, read from a finished run's ``results/maps``."""
    import pandas as pd

    root = Path(results) / "maps" / variant
    lines = []
    for path in sorted(root.glob("*/ranking.csv")):
        top = pd.read_csv(path).head(k)
        lines.append(f"{path.parent.name} / {variant}: top-{k} features " + ", ".join(
            f"f{int(r.feature)} (Moran's I {r.moran_i:.2f}, reliability {r.reliability:.2f})"
            for r in top.itertuples()))
    for path in sorted(root.glob("*/truth_match.csv")):
        frame = pd.read_csv(path)
        for _, r in frame[frame["present"].astype(bool)].iterrows():
            rank = "-" if pd.isna(r["spatial_rank"]) else int(r["spatial_rank"])
            lines.append(f"{path.parent.name} / {variant}: {r['class']:<20} -> f{int(r['best_feature'])} "
                         f"({r['representation']}) {r['metric']} {r['score']:.3f} "
                         f"[median over features {r['median_score']:.3f}, spatial rank {rank}]")
    if not lines:
        raise FileNotFoundError(f"no rankings under {root}: run the workflow first")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m latentebsd.maps [--variant vae128] [--results results] [-k 5]``: print
    :func:`top_features_report`."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--variant", default="vae128")
    parser.add_argument("--results", default="results")
    parser.add_argument("-k", type=int, default=5)
    args = parser.parse_args(argv)
    print(top_features_report(args.results, args.variant, args.k))


# --------------------------------------------------------------------------- workflow wiring


def workflow_plan(config: Mapping[str, Any], scans: Sequence[str], variants: Sequence[str]) -> dict[str, Any]:
    """What the encode / maps rules make for a (validated) workflow config.

    Returns
    -------
    dict
        ``settings`` (resolved ``maps``), ``vae_variants`` (loss ``vae``, by d: the
        Fig. 8 / 9 series), ``latent_dims``, ``beta_variants`` (``maps.beta_variants``
        that exist), ``truth_scans`` (simulated, with ground truth), ``cell_scans``
        (Fig. 9: simulated ``am`` scans and all real scans), ``top`` (file stems of the
        top-k figures), ``scans``, ``variants``.
    """
    settings = resolve_maps_settings(config.get("maps") or {})
    specs = config["models"]["variants"]
    scan_cfg = config["scans"]
    vae = sorted((v for v in variants if specs[v].get("loss") == "vae"), key=lambda v: int(specs[v]["latent_dim"]))
    return {
        "settings": settings,
        "scans": list(scans),
        "variants": list(variants),
        "specs": {v: dict(specs[v]) for v in variants},
        "vae_variants": vae,
        "latent_dims": {v: int(specs[v]["latent_dim"]) for v in variants},
        "beta_variants": [v for v in settings["beta_variants"] if v in variants],
        "truth_scans": [s for s in scans if "simulate" in scan_cfg[s]],
        "cell_scans": [s for s in scans
                       if "simulate" not in scan_cfg[s] or scan_cfg[s]["simulate"].get("microstructure") == "am"],
        "top": [f"top{r:02d}" for r in range(1, settings["top_k"] + 1)],
    }


def maps_targets_for(plan: Mapping[str, Any]) -> list[str]:
    """Every final output of the encode and maps stages for a :func:`workflow_plan`."""
    out = []
    for v in plan["variants"]:
        for s in plan["scans"]:
            out += [f"results/latent/{v}/{s}.nc", f"results/latent/{v}/{s}.tif"]
            out += [f"results/maps/{v}/{s}/{name}" for name in
                    ("ranking.csv", "montage.png", "segmentation.npy", "segmentation.png",
                     *(f"{t}.png" for t in plan["top"]))]
            if s in plan["truth_scans"]:
                out += [f"results/maps/{v}/{s}/truth_match.csv", f"results/maps/{v}/{s}/truth_match.png"]
    out.append("results/latent/summary.csv")
    if plan["truth_scans"] and plan["variants"]:
        out += ["results/maps/truth_match_summary.csv", "results/maps/truth_match_summary_wide.csv"]
    if plan["vae_variants"]:
        out += [f"results/maps/figures/fig8_dimensionality_{s}.png" for s in plan["scans"]]
        out += [f"results/maps/figures/fig9_cells_{s}.png" for s in plan["cell_scans"]]
    if plan["beta_variants"]:
        out += [f"results/maps/figures/fig10_beta_{s}.png" for s in plan["scans"]]
    return out


def feature_maps_inputs(scan: str, variant: str, plan: Mapping[str, Any]) -> dict[str, str]:
    """Inputs of rule ``feature_maps``: the cube, and the ground truth where the scan has one."""
    inputs = {"cube": f"results/latent/{variant}/{scan}.nc"}
    if scan in plan["truth_scans"]:
        inputs["truth"] = f"results/simulated/{scan}_truth.h5"
    return inputs


def figure_inputs(scan: str, variants: Sequence[str]) -> dict[str, Any]:
    """Inputs of Figs 8 / 10 for one scan: preprocessed patterns, cubes and weights."""
    return {
        "preprocessed": f"results/preprocessed/{scan}.h5",
        "cubes": [f"results/latent/{v}/{scan}.nc" for v in variants],
        "weights": [f"results/models/{v}/weights.pt" for v in variants],
    }


def cell_figure_inputs(scan: str, plan: Mapping[str, Any]) -> dict[str, Any]:
    """Inputs of Fig. 9 for one scan: cubes and rankings, and truth matches where there is truth."""
    vae = plan["vae_variants"]
    inputs: dict[str, Any] = {
        "cubes": [f"results/latent/{v}/{scan}.nc" for v in vae],
        "rankings": [f"results/maps/{v}/{scan}/ranking.csv" for v in vae],
    }
    if scan in plan["truth_scans"]:
        inputs["truth_matches"] = [f"results/maps/{v}/{scan}/truth_match.csv" for v in vae]
    return inputs


if __name__ == "__main__":
    main()
