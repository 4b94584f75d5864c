"""Decode latent cubes, Hough re-index original and decoded patterns, and Table 1.

The paper judges each model by what a conventional EBSD analysis makes of its
reconstructions: every pattern is encoded, decoded, written back to UP2 and indexed
like the preprocessed original, and the two are compared pattern by pattern.

Stages (one rule each, see ``rules/evaluate.smk``)
--------------------------------------------------
1. :func:`decode_scan` - latent means (``results/latent/{variant}/{scan}.nc``, read a
   block of map rows at a time) through the decoder, off-screen pixels set to 0 as in
   the preprocessed originals, one fixed scale ``[-1, 1] -> [0, 65535]`` for all scans
   and variants, to a 16-bit UP2 with the scan's map shape and step.
2. :func:`index_scan` - stream the patterns (preprocessed HDF5 or decoded UP2, both
   back on the ``[-1, 1]`` scale), apply the preprocessed scan's screen mask (zeroed
   pixels and PyEBSDIndex ``patternmask``) and Hough-index them with PyEBSDIndex
   (FCC Ni, one PC per pattern, :data:`latentebsd.index.DEFAULT_HOUGH`; the paper's
   OIM settings and their translation are in
   :data:`latentebsd.index.PAPER_HOUGH_MAPPING`). The same pass computes kikuchipy's
   image quality and the FFT sharpness of each pattern. Output: HDF5 with every
   per-pattern field plus an ``.ang`` file.
3. :func:`pattern_metrics` - per pattern, decoded vs original.
4. :func:`table1` - 10/50/90 % quantiles pooled over all scans, beside the paper's.

Metric definitions
------------------
- Indexed: PyEBSDIndex found a solution (``phase >= 0``) that at least ``min_nmatch``
  (default 3) bands agree on. Table 1's "Indexed" column uses it; "Indexed (any
  solution)" counts every pattern with a solution (``phase >= 0``), the way OIM counts
  a point as indexed (the paper's criterion as far as it says). "Indexed and agreeing"
  also asks for a misorientation to the original below ``agree_deg`` (5 deg): a
  featureless reconstruction can still be "indexed", with a wrong orientation.
- Ratios are decoded / original for the same pattern with the same indexer and the
  same mask: CI ratio (PyEBSDIndex ``cm``, the open analogue of OIM's CI), IQ ratio
  from PyEBSDIndex ``pq`` (mean Radon peak height, the closer analogue of EDAX IQ) and
  from kikuchipy's Krieger Lassen image quality, sharpness ratio. Where the original's
  value is <= 1e-12 (e.g. ``cm`` of a pattern that was not indexed) the ratio is
  undefined (NaN) and left out of the quantiles. A decoded pattern that is not
  indexed has ``cm`` = 0 and so a CI ratio of 0.
- Misorientation: orix's m-3m symmetry-reduced angle between the decoded and the
  original orientation, for patterns indexed in both.
- Sharpness (PAPER.md): ``F = fftshift(Re(FFT2(p)))``, ``M = max|F|``, sharpness =
  ``count(F > M / divisor) / (H * W)``; ``evaluation.sharpness.part`` = ``real``
  (default) or ``abs`` (``|FFT2|``), ``divisor`` default 2500, ``intensity`` = ``up2``
  (default: the masked pattern on the 16-bit UP2 scale, ``p + 1``, which the paper
  measured) or ``signed`` (the zero-mean ``[-1, 1]`` pattern); see
  :func:`pattern_sharpness`.
- Only patterns the preprocessing marked valid enter the metrics.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

import latentebsd  # noqa: F401  (import order: PyEBSDIndex before kikuchipy/orix)
from latentebsd.geometry import ScanGeometry
from latentebsd.index import DEFAULT_HOUGH, INDEX_DTYPE, is_indexed
from latentebsd.io import PatternReader, atomic_path
from latentebsd.shards import row_range

log = logging.getLogger(__name__)

#: Fixed intensity range of the decoded UP2 files (the decoder's tanh range).
UP2_RANGE = (-1.0, 1.0)

#: Defaults of the config section ``evaluation:``; a config overrides any key.
DEFAULT_EVALUATION: dict[str, Any] = {
    "chunk_size": 1024,            # patterns read / decoded / indexed per step (memory only)
    "decode_batch_size": 256,      # decoder batch (memory only)
    "hough": dict(DEFAULT_HOUGH),  # PyEBSDIndex EBSDIndexer arguments (see index.PAPER_HOUGH_MAPPING)
    "min_nmatch": 3,               # indexed = phase >= 0 and nmatch >= this
    "quantiles": [0.1, 0.5, 0.9],  # Table 1 quantiles
    "sharpness": {"part": "real", "divisor": 2500.0, "intensity": "up2"},  # FFT sharpness variant
    "agree_deg": 5.0,              # "indexed and agreeing": misorientation to the original below this
    "kam": {"threshold_deg": 5.0, "neighbours": 4},    # KAM kernel: 4 or 8 neighbours, max angle
    "grains": {"tolerance_deg": 5.0, "min_size": 1},   # grain segmentation for GROD
    "ipf_direction": "x",          # sample direction of the IPF maps (x, y or z)
    "panel_variant": None,         # latent cube of the Fig 5/6 panels; null = vae128 if present, else the first variant
    "panel_features": 2,           # latent maps per panel (ranking order, else highest variance)
    "panel_region": None,          # [row0, row1, col0, col1] of the panels (half-open); null = whole map
    "dpi": 150,                    # figure resolution
}

_HOUGH_KEYS = ("nTheta", "nRho", "rhoMaskFrac", "tSigma", "rSigma", "nBands")


# --------------------------------------------------------------------------------------
# Settings
# --------------------------------------------------------------------------------------
def _fail(key: str, message: str) -> None:
    raise ValueError(f"config key evaluation.{key}: {message}")


def _number(key: str, value: Any, lo: float | None = None, hi: float | None = None,
            integer: bool = False, lo_open: bool = False) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(key, f"expected a number, got {value!r}")
    if integer and (not float(value).is_integer()):
        _fail(key, f"expected an integer, got {value!r}")
    if lo is not None and (value <= lo if lo_open else value < lo):
        _fail(key, f"must be {'>' if lo_open else '>='} {lo}, got {value!r}")
    if hi is not None and value > hi:
        _fail(key, f"must be <= {hi}, got {value!r}")
    return int(value) if integer else float(value)


def _merge(key: str, defaults: dict[str, Any], given: Any) -> dict[str, Any]:
    if not isinstance(given, Mapping):
        _fail(key, f"expected a mapping, got {given!r}")
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        _fail(f"{key}.{unknown[0]}", f"unknown key; known: {sorted(defaults)}")
    return {**defaults, **given}


def resolve_evaluation_settings(settings: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults (:data:`DEFAULT_EVALUATION`) overridden by the config's ``evaluation:``.

    Raises
    ------
    ValueError
        Naming ``evaluation.<key>`` for an unknown key or a bad value.
    """
    cfg = copy.deepcopy(DEFAULT_EVALUATION)
    given = dict(settings or {})
    for key, value in given.items():
        if key not in cfg:
            _fail(key, f"unknown key; known: {sorted(cfg)}")
        if isinstance(cfg[key], dict):
            cfg[key] = _merge(key, cfg[key], value)
        else:
            cfg[key] = value

    cfg["chunk_size"] = _number("chunk_size", cfg["chunk_size"], 1, integer=True)
    cfg["decode_batch_size"] = _number("decode_batch_size", cfg["decode_batch_size"], 1,
                                       integer=True)
    cfg["min_nmatch"] = _number("min_nmatch", cfg["min_nmatch"], 0, integer=True)
    cfg["dpi"] = _number("dpi", cfg["dpi"], 10, 1200, integer=True)
    cfg["panel_features"] = _number("panel_features", cfg["panel_features"], 1, 16,
                                    integer=True)

    h = cfg["hough"]
    for key in h:
        if key not in _HOUGH_KEYS:
            _fail(f"hough.{key}", f"unknown key; known: {list(_HOUGH_KEYS)}")
    for key in ("nTheta", "nRho", "nBands"):
        h[key] = _number(f"hough.{key}", h[key], 3, integer=True)
    h["rhoMaskFrac"] = _number("hough.rhoMaskFrac", h["rhoMaskFrac"], 0, 0.49)
    for key in ("tSigma", "rSigma"):
        h[key] = _number(f"hough.{key}", h[key], 0, lo_open=True)

    q = cfg["quantiles"]
    if not isinstance(q, Sequence) or isinstance(q, str) or len(q) < 1:
        _fail("quantiles", f"expected a list of numbers in [0, 1], got {q!r}")
    cfg["quantiles"] = [_number(f"quantiles[{i}]", v, 0, 1) for i, v in enumerate(q)]

    s = cfg["sharpness"]
    if s["part"] not in ("real", "abs"):
        _fail("sharpness.part", f"expected 'real' or 'abs', got {s['part']!r}")
    s["divisor"] = _number("sharpness.divisor", s["divisor"], 1)
    if s["intensity"] not in ("up2", "signed"):
        _fail("sharpness.intensity", f"expected 'up2' or 'signed', got {s['intensity']!r}")
    cfg["agree_deg"] = _number("agree_deg", cfg["agree_deg"], 0, 180, lo_open=True)

    k = cfg["kam"]
    k["threshold_deg"] = _number("kam.threshold_deg", k["threshold_deg"], 0, 180, lo_open=True)
    if k["neighbours"] not in (4, 8):
        _fail("kam.neighbours", f"expected 4 or 8, got {k['neighbours']!r}")

    g = cfg["grains"]
    g["tolerance_deg"] = _number("grains.tolerance_deg", g["tolerance_deg"], 0, 62.8,
                                 lo_open=True)
    g["min_size"] = _number("grains.min_size", g["min_size"], 1, integer=True)

    if cfg["ipf_direction"] not in ("x", "y", "z"):
        _fail("ipf_direction", f"expected x, y or z, got {cfg['ipf_direction']!r}")
    if cfg["panel_variant"] is not None and not isinstance(cfg["panel_variant"], str):
        _fail("panel_variant", f"expected a variant name or null, got {cfg['panel_variant']!r}")
    region = cfg["panel_region"]
    if region is not None:
        if (not isinstance(region, Sequence) or isinstance(region, str) or len(region) != 4
                or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in region)
                or region[1] <= region[0] or region[3] <= region[2]):
            _fail("panel_region", "expected [row0, row1, col0, col1], non-negative integers "
                  f"with row0 < row1 and col0 < col1, or null; got {region!r}")
        cfg["panel_region"] = [int(v) for v in region]
    return cfg


def panel_variant(settings: Mapping[str, Any], variants: Sequence[str]) -> str:
    """The variant whose latent maps the Fig 5/6 panels show.

    ``evaluation.panel_variant`` if set (it must be a configured variant), else
    ``vae128`` (the paper's Fig 5) when configured, else the first variant.
    """
    variants = list(variants)
    if not variants:
        raise ValueError("models.variants is empty: no latent maps to show")
    chosen = settings.get("panel_variant")
    if chosen is None:
        return "vae128" if "vae128" in variants else variants[0]
    if chosen not in variants:
        raise ValueError(f"config key evaluation.panel_variant: {chosen!r} is not one of "
                         f"models.variants {variants}")
    return chosen


# --------------------------------------------------------------------------------------
# Workflow wiring (used by rules/evaluate.smk, kept here so that file holds rules only)
# --------------------------------------------------------------------------------------
def evaluation_plan(config: Mapping[str, Any], scans: Sequence[str],
                    variants: Sequence[str]) -> dict[str, Any]:
    """Resolved settings and the scans / variants / index sources of the stage.

    Raises
    ------
    ValueError
        For bad ``evaluation:`` settings or a variant named ``original`` (reserved for
        the preprocessed patterns).
    """
    settings = resolve_evaluation_settings(config.get("evaluation") or {})
    variants = list(variants)
    if "original" in variants:
        raise ValueError("models.variants: 'original' is reserved for the preprocessed "
                         "patterns; rename that variant")
    return {
        "settings": settings, "scans": list(scans), "variants": variants,
        "specs": {v: dict(config["models"]["variants"][v]) for v in variants},
        "sources": ["original", *variants],
        "panel_variant": panel_variant(settings, variants),
    }


def evaluation_targets_for(plan: Mapping[str, Any]) -> list[str]:
    """Every final output of the decode / index / evaluate stage."""
    scans, variants = plan["scans"], plan["variants"]
    out = [f"results/index/{s}/{scan}.{ext}" for s in plan["sources"] for scan in scans
           for ext in ("h5", "ang")]
    out += [f"results/evaluation/metrics/{v}/{scan}.h5" for v in variants for scan in scans]
    out += [f"results/evaluation/table1.{ext}" for ext in ("csv", "md", "html")]
    out += [f"results/evaluation/conventional/{scan}.h5" for scan in scans]
    out += [f"results/evaluation/figures/{scan}_{name}.png" for scan in scans
            for name in ("ipf", "conventional", "latent_vs_conventional", "decoded_maps")]
    return out


def index_inputs(source: str, scan: str) -> dict[str, str]:
    """Inputs of rule ``index_scan`` for one source (``original`` or a variant)."""
    inputs = {"preprocessed": f"results/preprocessed/{scan}.h5"}
    if source == "original":
        inputs["patterns"] = f"results/preprocessed/{scan}.h5"
    else:
        inputs["patterns"] = f"results/decoded/{source}/{scan}.up2"
        # Ordering only: the scan's first index job compiles PyEBSDIndex's numba cache
        # (~90 s on a cold machine) before the decoded sets start indexing in parallel.
        inputs["after"] = f"results/index/original/{scan}.h5"
    return inputs


def ranking_input(plan: Mapping[str, Any], scan: str, maps_targets: Sequence[str]) -> dict[str, str]:
    """The maps stage's feature ranking of the panel variant, when that stage makes one.

    Looks for ``results/maps/{variant}/{scan}/ranking.csv`` (or ``{scan}_ranking.csv``)
    among the maps stage's targets; without one, the panels fall back to the
    highest-variance features.
    """
    targets = set(maps_targets)
    v = plan["panel_variant"]
    for path in (f"results/maps/{v}/{scan}/ranking.csv", f"results/maps/{v}/{scan}_ranking.csv"):
        if path in targets:
            return {"ranking": path}
    return {}


# --------------------------------------------------------------------------------------
# Pattern scale and per-pattern quality
# --------------------------------------------------------------------------------------
def from_uint16(patterns: np.ndarray, lo: float = UP2_RANGE[0],
                hi: float = UP2_RANGE[1]) -> np.ndarray:
    """Inverse of :func:`latentebsd.io.to_uint16`: ``uint16`` back to ``[lo, hi]`` float32."""
    if hi <= lo:
        raise ValueError(f"empty intensity range [{lo}, {hi}]")
    scale = (hi - lo) / 65535.0
    return (np.asarray(patterns, dtype=np.float32) * np.float32(scale) + np.float32(lo))


def sharpness(patterns: np.ndarray, part: str = "real", divisor: float = 2500.0) -> np.ndarray:
    """FFT-threshold sharpness of each pattern (PAPER.md "Metric definitions").

    Parameters
    ----------
    patterns
        ``(n, h, w)`` or ``(h, w)``.
    part
        ``"real"``: ``F = Re(FFT2(p))`` (the definition we adopt); ``"abs"``:
        ``F = |FFT2(p)|``.
    divisor
        Threshold ``max|F| / divisor``.

    Returns
    -------
    numpy.ndarray
        ``(n,)`` float64 fraction of Fourier coefficients above the threshold; 0 for a
        constant-zero pattern.
    """
    p = np.asarray(patterns, dtype=np.float64)
    single = p.ndim == 2
    p = p[None] if single else p
    if p.ndim != 3:
        raise ValueError(f"patterns must be (n, h, w), got shape {p.shape}")
    if part not in ("real", "abs"):
        raise ValueError(f"sharpness part must be 'real' or 'abs', got {part!r}")
    # fftshift only moves coefficients around; a count over all of them does not need it
    spectrum = np.fft.fft2(p)
    f = spectrum.real if part == "real" else np.abs(spectrum)
    m = np.abs(f).max(axis=(1, 2))
    count = (f > (m / divisor)[:, None, None]).sum(axis=(1, 2))
    out = np.where(m > 0, count / (p.shape[1] * p.shape[2]), 0.0)
    return out[0] if single else out


def pattern_sharpness(patterns: np.ndarray, settings: Mapping[str, Any]) -> np.ndarray:
    """Sharpness of ``[-1, 1]`` patterns as the workflow measures it.

    ``settings`` is ``evaluation.sharpness``. With ``intensity: up2`` (default) the
    pattern is taken on the 16-bit UP2 intensity scale the paper measured (``p + 1``:
    non-negative, off-screen pixels mid-grey), where the DC term sets the threshold
    and blurred bands lower the count. On the zero-mean ``signed`` scale the threshold
    follows the strongest band instead, noise dominates the count and the measure
    rises where bands blur (simulated AM demo: correlation with dislocation density
    +0.23 signed vs -0.82 up2).
    """
    p = np.asarray(patterns, dtype=np.float64)
    if settings.get("intensity", "up2") == "up2":
        p = p - UP2_RANGE[0]
    return sharpness(p, settings["part"], settings["divisor"])


def image_quality(patterns: np.ndarray) -> np.ndarray:
    """kikuchipy's Krieger Lassen image quality of each pattern, ``(n,)`` float64.

    Constant patterns (no structure to normalise) get NaN.
    """
    from kikuchipy.pattern import fft_frequency_vectors, get_image_quality

    p = np.asarray(patterns, dtype=np.float32)
    p = p[None] if p.ndim == 2 else p
    h, w = p.shape[1:]
    freq = fft_frequency_vectors((h, w))
    inertia_max = float(np.sum(freq) / (h * w))  # what kikuchipy computes per call
    out = np.full(len(p), np.nan)
    for i, pattern in enumerate(p):
        if pattern.std() > 0:
            out[i] = get_image_quality(pattern, normalize=True, frequency_vectors=freq,
                                       inertia_max=inertia_max)
    return out


# --------------------------------------------------------------------------------------
# Reading inputs
# --------------------------------------------------------------------------------------
def read_screen(preprocessed_path: str | os.PathLike) -> tuple[ScanGeometry, np.ndarray, np.ndarray]:
    """Geometry, screen mask ``(h, w)`` and ``valid`` flags ``(n,)`` of a preprocessed scan."""
    path = Path(preprocessed_path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: preprocessed scan not found")
    with h5py.File(path, "r") as f:
        for key in ("patterns", "mask", "valid", "geometry"):
            if key not in f:
                raise ValueError(f"{path}: not a preprocessed scan (no {key!r})")
        geometry = ScanGeometry.from_h5(f["geometry"])
        mask = f["mask"][()].astype(bool)
        valid = f["valid"][()].astype(bool)
    if mask.shape != geometry.pattern_shape or valid.shape != (geometry.n_patterns,):
        raise ValueError(f"{path}: mask {mask.shape} / valid {valid.shape} do not fit the "
                         f"geometry ({geometry.pattern_shape}, {geometry.n_patterns} patterns)")
    return geometry, mask, valid


def iter_pattern_chunks(path: str | os.PathLike, geometry: ScanGeometry, chunk_size: int,
                        rows: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, float32 patterns on the [-1, 1] scale)``, a block of whole map rows
    (about ``chunk_size`` patterns) at a time.

    ``path`` is a preprocessed scan (``.h5``: dataset ``patterns``) or a decoded one
    (``.up2``, converted with :func:`from_uint16`), holding ``geometry``'s whole map.
    ``rows`` = ``(first_row, stop_row)`` limits it to a shard; blocks are counted from
    row 0 either way, so a shard sees the same blocks as the whole scan.
    """
    from latentebsd.encode import rows_per_block

    path = Path(path)
    n_cols, n = geometry.n_cols, geometry.n_patterns
    first_row, stop_row = row_range(rows, geometry.n_rows)
    step = rows_per_block(n_cols, chunk_size)
    if path.suffix.lower() in (".h5", ".hdf5"):
        with h5py.File(path, "r") as f:
            if "patterns" not in f:
                raise ValueError(f"{path}: no 'patterns' dataset")
            dset = f["patterns"]
            if dset.shape[0] != n:
                raise ValueError(f"{path}: {dset.shape[0]} patterns, the map has {n}")
            for r0 in range(first_row, stop_row, step):
                a, b = r0 * n_cols, min(r0 + step, stop_row) * n_cols
                yield a, np.asarray(dset[a:b], dtype=np.float32)
    elif path.suffix.lower() == ".up2":
        reader = PatternReader(path)
        if reader.n_patterns != n:
            raise ValueError(f"{path}: {reader.n_patterns} patterns, the map has {n}")
        for r0 in range(first_row, stop_row, step):
            a, b = r0 * n_cols, min(r0 + step, stop_row) * n_cols
            yield a, from_uint16(reader.read(a, b))
    else:
        raise ValueError(f"{path}: expected a preprocessed .h5 or a decoded .up2 file")


def open_latent(path: str | os.PathLike):
    """Open a latent cube (``xarray.Dataset``, lazily) and check the contract."""
    import xarray as xr

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: latent cube not found")
    ds = xr.open_dataset(path, engine="h5netcdf")
    if "latent_mean" not in ds:
        ds.close()
        raise ValueError(f"{path}: no 'latent_mean' variable")
    if ds["latent_mean"].dims != ("feature", "y", "x"):
        dims = ds["latent_mean"].dims
        ds.close()
        raise ValueError(f"{path}: latent_mean has dims {dims}, expected ('feature', 'y', 'x')")
    return ds


def iter_latent_blocks(path: str | os.PathLike, chunk_size: int,
                       rows: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, means (n, d))`` from a latent cube, a block of whole map rows
    (about ``chunk_size`` points) at a time, in row-major point order; ``rows`` =
    ``(first_row, stop_row)`` limits it to a shard (blocks still counted from row 0)."""
    from latentebsd.encode import rows_per_block

    ds = open_latent(path)
    try:
        d, n_rows, n_cols = ds["latent_mean"].shape
        first_row, stop_row = row_range(rows, n_rows)
        step = rows_per_block(n_cols, chunk_size)
        for r0 in range(first_row, stop_row, step):
            block = np.asarray(ds["latent_mean"].isel(y=slice(r0, min(r0 + step, stop_row))).values,
                               dtype=np.float32)
            yield r0 * n_cols, block.reshape(d, -1).T
    finally:
        ds.close()


# --------------------------------------------------------------------------------------
# Decode
# --------------------------------------------------------------------------------------
def decode_scan(latent_path: str | os.PathLike, decoder: Any, out_path: str | os.PathLike,
                geometry: ScanGeometry, mask: np.ndarray, chunk_size: int = 1024,
                batch_size: int = 256, device: str = "cpu", progress: bool = True,
                rows: tuple[int, int] | None = None) -> Path:
    """Decode every latent mean of a scan and write the patterns as a 16-bit UP2.

    Parameters
    ----------
    latent_path
        Latent cube (``latent_mean`` with dims ``(feature, y, x)``).
    decoder
        A :class:`latentebsd.models.Decoder` (or any module mapping ``(N, d)`` to
        ``(N, 1, h, w)`` with ``latent_dim`` and ``pattern_shape`` attributes).
    out_path
        Output ``.up2``; written to a temporary name and renamed when complete.
    geometry
        The preprocessed scan's geometry (map shape, step, pattern shape).
    mask
        ``(h, w)`` screen mask; pixels off the screen are written as 0 (mid-grey), as
        in the preprocessed patterns (the decoder was never trained on them).
    chunk_size, batch_size
        Points per latent block; patterns per decoder call.
    device
        Torch device of the decoder.
    progress
        Show a tqdm bar.
    rows
        Map rows ``(first_row, stop_row)`` to decode (a shard, :mod:`latentebsd.shards`):
        the UP2 then holds only those rows. ``None``: the whole map.
    """
    from tqdm import tqdm

    from latentebsd.io import to_uint16, write_up2
    from latentebsd.models import decode_latents

    ds = open_latent(latent_path)
    d, n_rows, n_cols = ds["latent_mean"].shape
    ds.close()
    if (n_rows, n_cols) != geometry.map_shape:
        raise ValueError(f"{latent_path}: latent map {n_rows} x {n_cols} does not match the "
                         f"preprocessed scan's {geometry.map_shape}")
    if int(getattr(decoder, "latent_dim", d)) != d:
        raise ValueError(f"{latent_path}: {d} latent features, the decoder takes "
                         f"{decoder.latent_dim}")
    shape = tuple(int(v) for v in getattr(decoder, "pattern_shape", geometry.pattern_shape))
    if shape != geometry.pattern_shape:
        raise ValueError(f"the decoder makes {shape} patterns, the scan has "
                         f"{geometry.pattern_shape}")
    mask = np.asarray(mask, dtype=bool)
    out_geometry = geometry if rows is None else geometry.row_block(*rows)

    def chunks() -> Iterator[np.ndarray]:
        bar = tqdm(total=out_geometry.n_patterns, desc=f"decode {Path(out_path).name}",
                   unit="pat", disable=not progress)
        for _, z in iter_latent_blocks(latent_path, chunk_size, rows):
            patterns = decode_latents(decoder, z, batch_size=batch_size, device=device)
            bar.update(len(z))
            yield to_uint16(np.where(mask, patterns, 0.0), *UP2_RANGE)
        bar.close()

    return write_up2(out_path, chunks(), out_geometry.map_shape, geometry.pattern_shape,
                     geometry.step_um)


def run_decode_rule(weights_path: str, latent_path: str, preprocessed_path: str, out_path: str,
                    settings: Mapping[str, Any] | None, gpu: int = 0, threads: int = 1,
                    rows: tuple[int, int] | None = None) -> Path:
    """What rules ``decode`` and ``decode_shard`` (``rows`` given) run: load a trained
    model, decode one scan (or shard) to UP2.

    CUDA is used only when ``gpu >= 1`` (the rule's ``resources.gpu``) and available.
    """
    import torch

    from latentebsd.train import load_model
    from latentebsd.workflow import job_device

    cfg = resolve_evaluation_settings(settings)
    torch.set_num_threads(max(1, int(threads)))
    device = job_device(gpu)
    _, decoder, meta = load_model(weights_path, device=device)
    geometry, mask, _ = read_screen(preprocessed_path)
    log.info("decode %s with %s (%s) on %s", latent_path, weights_path, meta.get("variant"),
             device)
    return decode_scan(latent_path, decoder, out_path, geometry, mask,
                       chunk_size=cfg["chunk_size"], batch_size=cfg["decode_batch_size"],
                       device=device, rows=rows)


# --------------------------------------------------------------------------------------
# Index
# --------------------------------------------------------------------------------------
#: Per-pattern fields of an index file besides :data:`latentebsd.index.INDEX_DTYPE`.
QUALITY_FIELDS = ("iq_kp", "sharpness")


def index_scan(pattern_path: str | os.PathLike, preprocessed_path: str | os.PathLike,
               out_h5: str | os.PathLike, out_ang: str | os.PathLike | None,
               settings: Mapping[str, Any] | None = None, source: str = "",
               progress: bool = True, rows: tuple[int, int] | None = None) -> dict[str, np.ndarray]:
    """Hough-index a scan's patterns and measure their quality, streaming through it.

    Parameters
    ----------
    pattern_path
        The preprocessed scan (``.h5``) or a decoded one (``.up2``), same map.
    preprocessed_path
        The preprocessed scan: geometry (PC per pattern, tilts), screen mask, valid flags.
    out_h5
        Output HDF5: one dataset per field of :data:`~latentebsd.index.INDEX_DTYPE`
        (``quat``, ``pq``, ``iq``, ``cm``, ``fit``, ``nmatch``, ``phase``) plus
        ``iq_kp`` (kikuchipy image quality), ``sharpness``, ``valid`` and ``indexed``;
        group ``geometry``; attrs ``source``, ``hough`` (JSON), ``min_nmatch``,
        ``sharpness`` (JSON).
    out_ang
        Output ``.ang`` (orix), or ``None``.
    settings
        ``evaluation:`` config section (resolved here).
    source
        ``original`` or the variant name, stored as an attribute.
    progress
        Show a tqdm bar.
    rows
        Map rows ``(first_row, stop_row)`` to index (a shard, :mod:`latentebsd.shards`);
        the output then holds only those rows, with attrs ``first_row`` and
        ``shard_n_rows``. ``None``: the whole map.

    Returns
    -------
    dict
        The arrays written to ``out_h5``.
    """
    from tqdm import tqdm

    from latentebsd.index import build_indexer, index_patterns, write_ang

    cfg = resolve_evaluation_settings(settings)
    geometry, mask, valid = read_screen(preprocessed_path)
    first_row, stop_row = row_range(rows, geometry.n_rows)
    out_geometry = geometry.row_block(first_row, stop_row)
    offset, n = first_row * geometry.n_cols, out_geometry.n_patterns
    indexer = build_indexer(geometry, patternmask=mask, **cfg["hough"])
    result = np.zeros(n, INDEX_DTYPE)
    quality = {key: np.full(n, np.nan) for key in QUALITY_FIELDS}
    sharp = cfg["sharpness"]
    bar = tqdm(total=n, desc=f"index {source} {Path(pattern_path).name}", unit="pat",
               disable=not progress)
    for start, patterns in iter_pattern_chunks(pattern_path, geometry, cfg["chunk_size"],
                                               (first_row, stop_row)):
        if patterns.shape[1:] != geometry.pattern_shape:
            raise ValueError(f"{pattern_path}: {patterns.shape[1:]} patterns, "
                             f"{preprocessed_path} has {geometry.pattern_shape}")
        a, b = start - offset, start - offset + len(patterns)
        patterns = np.where(mask, patterns, np.float32(0.0))
        result[a:b] = index_patterns(patterns, geometry, start=start, indexer=indexer,
                                     chunk_size=min(512, cfg["chunk_size"]))
        quality["iq_kp"][a:b] = image_quality(patterns)
        quality["sharpness"][a:b] = pattern_sharpness(patterns, sharp)
        bar.update(len(patterns))
    bar.close()

    indexed = is_indexed(result, cfg["min_nmatch"])
    arrays = {name: result[name] for name in INDEX_DTYPE.names}
    arrays.update(quality)
    arrays["valid"] = valid[offset:offset + n]
    arrays["indexed"] = indexed
    attrs = {
        "source": source, "pattern_file": str(pattern_path),
        "hough": json.dumps(cfg["hough"]), "min_nmatch": cfg["min_nmatch"],
        "sharpness": json.dumps(sharp), "n_indexed": int(indexed.sum()),
    }
    if rows is not None:
        attrs.update(first_row=first_row, shard_n_rows=stop_row - first_row)
    write_index(out_h5, arrays, out_geometry, attrs)
    if out_ang is not None:
        write_ang(out_ang, result, out_geometry, indexed)
    log.info("%s: %d / %d patterns indexed (nmatch >= %d)", pattern_path, indexed.sum(), n,
             cfg["min_nmatch"])
    return arrays


def write_index(path: str | os.PathLike, arrays: Mapping[str, np.ndarray],
                geometry: ScanGeometry, attrs: Mapping[str, Any]) -> None:
    """Write per-pattern index arrays (one dataset each) and the geometry to HDF5."""
    missing = [k for k in (*INDEX_DTYPE.names, *QUALITY_FIELDS, "valid", "indexed")
               if k not in arrays]
    if missing:
        raise ValueError(f"{path}: index arrays lack {missing}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        for key, value in arrays.items():
            value = np.asarray(value)
            if len(value) != geometry.n_patterns:
                raise ValueError(f"{path}: {key} has {len(value)} entries, the map "
                                 f"{geometry.n_patterns}")
            f.create_dataset(key, data=value, compression="gzip", compression_opts=4)
        geometry.to_h5(f.create_group("geometry"))
        f.attrs.update(dict(attrs))


def read_index(path: str | os.PathLike, rows: tuple[int, int] | None = None,
               ) -> tuple[dict[str, np.ndarray], ScanGeometry, dict[str, Any]]:
    """Read what :func:`index_scan` wrote: ``(arrays, geometry, attrs)``; with ``rows`` =
    ``(first_row, stop_row)``, only those map rows (and their geometry)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: index file not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in (*INDEX_DTYPE.names, *QUALITY_FIELDS, "valid", "indexed")
                   if k not in f]
        if missing or "geometry" not in f:
            raise ValueError(f"{path}: not an index file (missing {missing or 'geometry'})")
        geometry = ScanGeometry.from_h5(f["geometry"])
        if rows is None:
            arrays = {key: f[key][()] for key in f if isinstance(f[key], h5py.Dataset)}
        else:
            part = slice(rows[0] * geometry.n_cols, rows[1] * geometry.n_cols)
            geometry = geometry.row_block(*rows)
            arrays = {key: f[key][part] for key in f if isinstance(f[key], h5py.Dataset)}
        attrs = dict(f.attrs)
    return arrays, geometry, attrs


def run_index_rule(pattern_path: str, preprocessed_path: str, out_h5: str, out_ang: str | None,
                   settings: Mapping[str, Any] | None, source: str, threads: int = 1,
                   rows: tuple[int, int] | None = None) -> None:
    """What rules ``index_scan`` and ``index_shard`` (``rows`` given, no ``.ang``) run."""
    try:
        import numba

        numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    except ImportError:  # pragma: no cover - numba comes with PyEBSDIndex
        pass
    index_scan(pattern_path, preprocessed_path, out_h5, out_ang, settings, source, rows=rows)


# --------------------------------------------------------------------------------------
# Per-pattern metrics
# --------------------------------------------------------------------------------------
#: Per-pattern metric columns, in Table 1 order.
METRICS = ("ci_ratio", "iq_pq_ratio", "iq_kp_ratio", "misorientation_deg", "sharpness_ratio")


def _ratio(num: np.ndarray, den: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(num.shape, np.nan)
    ok = np.isfinite(num) & np.isfinite(den) & (den > eps)
    np.divide(num, den, out=out, where=ok)
    return out


def misorientation_deg(q1: np.ndarray, q2: np.ndarray, chunk_size: int | None = None) -> np.ndarray:
    """m-3m symmetry-reduced misorientation angle (deg) between orientations, pairwise
    (:func:`latentebsd.conventional.pair_angles`: in chunks, as orix needs ~1 kB of
    scratch per pair - a gigabyte for a 1M-pattern scan at once)."""
    from latentebsd.conventional import pair_angles

    return pair_angles(q1, q2, chunk_size)


def pattern_metrics(original: Mapping[str, np.ndarray], decoded: Mapping[str, np.ndarray],
                    min_nmatch: int = 3) -> dict[str, np.ndarray]:
    """Decoded vs original, pattern by pattern (see the module docstring).

    Parameters
    ----------
    original, decoded
        Index arrays of the same scan (:func:`read_index`): ``quat``, ``pq``, ``cm``,
        ``nmatch``, ``phase``, ``iq_kp``, ``sharpness``; ``original["valid"]`` if present.
    min_nmatch
        Bands a solution needs to count as indexed.

    Returns
    -------
    dict
        ``(n,)`` arrays: ``valid``, ``indexed_original``, ``indexed``, ``indexed_any``
        (decoded), and :data:`METRICS` (NaN where undefined).
    """
    n = len(original["phase"])
    if len(decoded["phase"]) != n:
        raise ValueError(f"original has {n} patterns, decoded {len(decoded['phase'])}")
    valid = np.asarray(original.get("valid", np.ones(n, bool)), dtype=bool)
    idx_o = is_indexed(original, min_nmatch)
    idx_d = is_indexed(decoded, min_nmatch)
    both = idx_o & idx_d
    mis = np.full(n, np.nan)
    mis[both] = misorientation_deg(np.asarray(original["quat"])[both],
                                   np.asarray(decoded["quat"])[both])
    return {
        "valid": valid,
        "indexed_original": idx_o,
        "indexed": idx_d,
        "indexed_any": np.asarray(decoded["phase"]) >= 0,
        "ci_ratio": _ratio(decoded["cm"], original["cm"]),
        "iq_pq_ratio": _ratio(decoded["pq"], original["pq"]),
        "iq_kp_ratio": _ratio(decoded["iq_kp"], original["iq_kp"]),
        "misorientation_deg": mis,
        "sharpness_ratio": _ratio(decoded["sharpness"], original["sharpness"]),
    }


def write_metrics(path: str | os.PathLike, metrics: Mapping[str, np.ndarray],
                  geometry: ScanGeometry, attrs: Mapping[str, Any], first_row: int = 0) -> None:
    """Write per-pattern metrics (one dataset each, plus the map ``row`` / ``col``) to
    HDF5; ``geometry`` covers the map from row ``first_row`` (a shard) or all of it."""
    n = geometry.n_patterns
    rows, cols = np.divmod(np.arange(n) + first_row * geometry.n_cols, geometry.n_cols)
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("row", data=rows.astype(np.int32), compression="gzip")
        f.create_dataset("col", data=cols.astype(np.int32), compression="gzip")
        for key, value in metrics.items():
            f.create_dataset(key, data=value, compression="gzip")
        f.attrs.update(dict(attrs))


def read_metrics(path: str | os.PathLike) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read what :func:`write_metrics` wrote: ``(arrays, attrs)``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: metrics file not found")
    with h5py.File(path, "r") as f:
        missing = [k for k in ("valid", "indexed", "indexed_any", *METRICS) if k not in f]
        if missing:
            raise ValueError(f"{path}: not a metrics file (missing {missing})")
        return {k: f[k][()] for k in f}, dict(f.attrs)


def run_metrics_rule(original_path: str, decoded_path: str, out_path: str,
                     settings: Mapping[str, Any] | None, variant: str, scan: str,
                     rows: tuple[int, int] | None = None) -> None:
    """What rules ``evaluate_metrics`` and ``metrics_shard`` (``rows`` given) run: one
    scan (or shard) x variant."""
    cfg = resolve_evaluation_settings(settings)
    original, geometry, _ = read_index(original_path, rows)
    decoded, geometry_d, _ = read_index(decoded_path, rows)
    if geometry_d.map_shape != geometry.map_shape:
        raise ValueError(f"{decoded_path}: map {geometry_d.map_shape} differs from "
                         f"{original_path}'s {geometry.map_shape}")
    metrics = pattern_metrics(original, decoded, cfg["min_nmatch"])
    attrs = {"variant": variant, "scan": scan, "min_nmatch": cfg["min_nmatch"],
             "sharpness": json.dumps(cfg["sharpness"])}
    if rows is not None:
        attrs.update(first_row=int(rows[0]), shard_n_rows=int(rows[1]) - int(rows[0]))
    write_metrics(out_path, metrics, geometry, attrs, 0 if rows is None else int(rows[0]))
    v = metrics["valid"]
    log.info("%s / %s: %.1f %% indexed, median misorientation %.3f deg", variant, scan,
             100 * metrics["indexed"][v].mean() if v.any() else float("nan"),
             np.nanmedian(metrics["misorientation_deg"][v]) if v.any() else float("nan"))


# --------------------------------------------------------------------------------------
# Table 1
# --------------------------------------------------------------------------------------
#: The paper's Table 1 (Calvat et al. 2025), keyed by (loss, latent_dim, beta).
PAPER_TABLE1: dict[tuple[str, int, float], dict[str, str]] = {
    ("vae", 16, 1.0): {"indexed": "95.3 %", "ci_ratio": "0.00/0.06/0.42",
                       "iq_ratio": "0.27/0.64/0.87", "misorientation_deg": "0.01/0.02/0.88",
                       "sharpness_ratio": "0.13/0.16/0.18"},
    ("vae", 32, 1.0): {"indexed": "98.8 %", "ci_ratio": "0.03/0.53/1.10",
                       "iq_ratio": "0.54/0.87/0.99", "misorientation_deg": "0.00/0.01/0.07",
                       "sharpness_ratio": "0.16/0.23/0.27"},
    ("vae", 64, 1.0): {"indexed": "99.9 %", "ci_ratio": "0.50/1.00/1.78",
                       "iq_ratio": "0.80/0.95/1.03", "misorientation_deg": "0.00/0.01/0.02",
                       "sharpness_ratio": "0.23/0.27/0.32"},
    ("vae", 128, 1.0): {"indexed": "100 %", "ci_ratio": "0.55/1.00/1.79",
                        "iq_ratio": "0.88/0.97/1.04", "misorientation_deg": "0.00/0.01/0.01",
                        "sharpness_ratio": "0.28/0.34/0.39"},
    ("vae", 256, 1.0): {"indexed": "100 %", "ci_ratio": "0.56/1.00/1.78",
                        "iq_ratio": "0.88/0.96/1.02", "misorientation_deg": "0.00/0.01/0.01",
                        "sharpness_ratio": "0.32/0.38/0.44"},
    ("contrastive", 128, 1.0): {"indexed": "100 %", "ci_ratio": "0.56/1.00/1.79",
                                "iq_ratio": "0.84/0.95/1.05",
                                "misorientation_deg": "0.00/0.01/0.01",
                                "sharpness_ratio": "0.27/0.33/0.38"},
    ("beta_vae", 128, 15.0): {"indexed": "76.2 %", "ci_ratio": "0.12/0.94/1.61",
                              "iq_ratio": "0.35/0.88/1.04",
                              "misorientation_deg": "0.00/0.01/0.41",
                              "sharpness_ratio": "0.11/0.26/0.38"},
    ("beta_vae", 128, 50.0): {"indexed": "39.2 %", "ci_ratio": "0.00/0.35/1.20",
                              "iq_ratio": "0.08/0.20/0.92",
                              "misorientation_deg": "0.00/0.28/0.89",
                              "sharpness_ratio": "0.05/0.09/0.29"},
}

_LOSS_LABELS = {"vae": "VAE", "contrastive": "Contrastive", "beta_vae": "beta-VAE"}

#: Table 1 columns: (our metric, header, paper key).
TABLE_COLUMNS = (
    ("ci_ratio", "CI ratio", "ci_ratio"),
    ("iq_pq_ratio", "IQ ratio (pq)", "iq_ratio"),
    ("iq_kp_ratio", "IQ ratio (kikuchipy)", None),
    ("misorientation_deg", "Misorientation (deg)", "misorientation_deg"),
    ("sharpness_ratio", "Sharpness ratio", "sharpness_ratio"),
)


def variant_key(variant: Mapping[str, Any]) -> tuple[str, int, float]:
    """``(loss, latent_dim, beta)`` of a variant config, the key of :data:`PAPER_TABLE1`."""
    loss = variant["loss"]
    beta = float(variant.get("beta", 1.0))
    return loss, int(variant["latent_dim"]), beta


def loss_label(variant: Mapping[str, Any]) -> str:
    """Table 1's "Loss" text of a variant, e.g. ``VAE`` or ``beta-VAE (15)``."""
    loss, _, beta = variant_key(variant)
    label = _LOSS_LABELS.get(loss, loss)
    return f"{label} ({beta:g})" if loss == "beta_vae" else label


def format_quantiles(values: np.ndarray, quantiles: Sequence[float], digits: int = 2) -> str:
    """``"q10/q50/q90"`` of the finite values, ``"n/a"`` when there are none."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return "n/a"
    return "/".join(f"{x:.{digits}f}" for x in np.quantile(v, list(quantiles)))


def table1(metrics_by_variant: Mapping[str, Sequence[Mapping[str, np.ndarray]]],
           variants: Mapping[str, Mapping[str, Any]], settings: Mapping[str, Any] | None = None,
           original_indexed: Sequence[np.ndarray] | None = None) -> "pd.DataFrame":
    """Table 1: one row per variant, metrics pooled over all scans, paper beside ours.

    Parameters
    ----------
    metrics_by_variant
        Variant name -> per-scan metric dicts (:func:`pattern_metrics`).
    variants
        ``models.variants`` of the config (loss, latent_dim, beta).
    settings
        ``evaluation:`` section (quantiles, sharpness variant, indexed criterion).
    original_indexed
        Per-scan ``indexed`` flags of the originals (valid patterns only), for a
        reference row; taken from the metrics when omitted.

    Returns
    -------
    pandas.DataFrame
        Columns ``variant``, ``Loss``, ``d``, ``n_patterns``, ``Indexed`` (``%``),
        ``Indexed (any solution)``, ``Indexed and agreeing`` (indexed within
        ``agree_deg`` of the original's orientation), one ``"q10/q50/q90"`` column per metric of
        :data:`TABLE_COLUMNS`, the numeric quantiles (``<metric>_q10`` ...), and the
        paper's values (``Paper ...`` columns, empty where the paper has no such model).
    """
    import pandas as pd

    cfg = resolve_evaluation_settings(settings)
    qs = cfg["quantiles"]
    rows = []
    for name, per_scan in metrics_by_variant.items():
        if name not in variants:
            raise ValueError(f"variant {name!r} is not in models.variants")
        if not per_scan:
            raise ValueError(f"no metrics for variant {name!r}")
        pooled = {k: np.concatenate([np.asarray(m[k])[np.asarray(m["valid"], bool)]
                                     for m in per_scan])
                  for k in ("indexed", "indexed_any", *METRICS)}
        n = len(pooled["indexed"])
        var = variants[name]
        key = variant_key(var)
        agree = pooled["indexed"] & (np.nan_to_num(pooled["misorientation_deg"], nan=np.inf)
                                     < cfg["agree_deg"])
        row: dict[str, Any] = {"variant": name, "Loss": loss_label(var), "d": key[1],
                               "n_patterns": n,
                               "Indexed": _percent(pooled["indexed"]),
                               "Indexed (any solution)": _percent(pooled["indexed_any"]),
                               "Indexed and agreeing": _percent(agree)}
        for metric, header, _ in TABLE_COLUMNS:
            row[header] = format_quantiles(pooled[metric], qs)
        for metric, _, _ in TABLE_COLUMNS:
            finite = pooled[metric][np.isfinite(pooled[metric])]
            for q in qs:
                row[f"{metric}_q{round(100 * q)}"] = (float(np.quantile(finite, q))
                                                     if finite.size else np.nan)
            row[f"{metric}_n"] = int(finite.size)
        paper = PAPER_TABLE1.get(key, {})
        row["Paper indexed"] = paper.get("indexed", "")
        for _, header, paper_key in TABLE_COLUMNS:
            if paper_key is not None:
                row[f"Paper {header}"] = paper.get(paper_key, "")
        rows.append(row)
    if original_indexed is None:
        first = next(iter(metrics_by_variant.values()), [])
        original_indexed = [np.asarray(m["indexed_original"])[np.asarray(m["valid"], bool)]
                            for m in first]
    frame = pd.DataFrame(rows)
    if original_indexed:
        ref = np.concatenate([np.asarray(v, bool) for v in original_indexed])
        reference = {"variant": "original", "Loss": "Original (preprocessed)", "d": "",
                     "n_patterns": len(ref), "Indexed": _percent(ref),
                     "Indexed (any solution)": "", "Indexed and agreeing": ""}
        frame = pd.concat([pd.DataFrame([reference]), frame], ignore_index=True)
    return frame


def _percent(flags: np.ndarray) -> float:
    flags = np.asarray(flags, bool)
    return round(100.0 * flags.mean(), 1) if flags.size else float("nan")


def table1_notes(settings: Mapping[str, Any] | None = None) -> list[str]:
    """The definitions a Table 1 rendering states under the table."""
    from latentebsd.index import PAPER_HOUGH_MAPPING

    cfg = resolve_evaluation_settings(settings)
    s = cfg["sharpness"]
    part = "Re(FFT2(p))" if s["part"] == "real" else "|FFT2(p)|"
    qs = "/".join(f"{round(100 * q)} %" for q in cfg["quantiles"])
    return [
        f"Quantiles {qs} of the per-pattern values, pooled over all scans (valid patterns).",
        f"Indexed: PyEBSDIndex solution with >= {cfg['min_nmatch']} matched bands; "
        "'any solution': phase >= 0 (how OIM counts indexed points); 'and agreeing': "
        f"indexed within {cfg['agree_deg']:g} deg of the original's orientation.",
        "CI ratio: PyEBSDIndex confidence metric cm, decoded / original (the paper: EDAX OIM "
        "CI). IQ ratio (pq): PyEBSDIndex mean Radon peak height (closest to EDAX IQ); "
        "IQ ratio (kikuchipy): Krieger Lassen image quality. Ratios with an original "
        "value of 0 are left out.",
        "Misorientation: m-3m angle between decoded and original orientation (orix), "
        "patterns indexed in both.",
        f"Sharpness: F = fftshift({part}), M = max|F|, count(F > M / {s['divisor']:g}) / (H W), "
        + ("on the 16-bit UP2 intensity scale (p + 1, off-screen mid-grey)."
           if s["intensity"] == "up2" else "on the masked zero-mean [-1, 1] pattern."),
        "Hough: " + "; ".join(f"{k} -> {v}" for k, v in PAPER_HOUGH_MAPPING.items())
        + f" (used: {json.dumps(cfg['hough'])}).",
        "Paper rows: Calvat et al. 2025, Table 1 (480 x 480 patterns binned to 120 x 120, "
        "EDAX OIM 8 indexing); ours: this workflow's scans and indexer.",
    ]


def table1_markdown(frame: "pd.DataFrame", settings: Mapping[str, Any] | None = None) -> str:
    """Table 1 as Markdown: an "ours" and a "paper" line per model, notes below."""
    headers = ["Loss", "d", "", "Indexed", "Indexed (any solution)", "Indexed and agreeing",
               *[h for _, h, _ in TABLE_COLUMNS]]
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    for _, row in frame.iterrows():
        ours = [str(row["Loss"]), str(row["d"]), "ours", _fmt_pct(row["Indexed"]),
                _fmt_pct(row["Indexed (any solution)"]), _fmt_pct(row["Indexed and agreeing"]),
                *[str(row.get(h, "")) if isinstance(row.get(h, ""), str) else ""
                  for _, h, _ in TABLE_COLUMNS]]
        lines.append("| " + " | ".join(ours) + " |")
        if row["variant"] != "original":
            paper = ["", "", "paper", str(row.get("Paper indexed", "")), "", "",
                     *[str(row.get(f"Paper {h}", "")) if p else "" for _, h, p in TABLE_COLUMNS]]
            lines.append("| " + " | ".join(paper) + " |")
    notes = "\n".join(f"- {n}" for n in table1_notes(settings))
    return "# Table 1: reconstruction quality seen by Hough indexing\n\n" + "\n".join(lines) \
        + "\n\n" + notes + "\n"


def _fmt_pct(value: Any) -> str:
    if isinstance(value, str) or value is None:
        return value or ""
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    return f"{value:.1f} %"


def table1_html(frame: "pd.DataFrame", settings: Mapping[str, Any] | None = None) -> str:
    """Table 1 as a self-contained HTML page (for the Snakemake report)."""
    import html

    headers = ["Loss", "d", "", "Indexed", "Indexed (any solution)", "Indexed and agreeing",
               *[h for _, h, _ in TABLE_COLUMNS]]
    body = []
    for _, row in frame.iterrows():
        cells = [row["Loss"], row["d"], "ours", _fmt_pct(row["Indexed"]),
                 _fmt_pct(row["Indexed (any solution)"]), _fmt_pct(row["Indexed and agreeing"]),
                 *[row.get(h, "") if isinstance(row.get(h, ""), str) else ""
                   for _, h, _ in TABLE_COLUMNS]]
        body.append("<tr class='ours'>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                                  for c in cells) + "</tr>")
        if row["variant"] != "original":
            cells = ["", "", "paper", row.get("Paper indexed", ""), "", "",
                     *[row.get(f"Paper {h}", "") if p else "" for _, h, p in TABLE_COLUMNS]]
            body.append("<tr class='paper'>" + "".join(f"<td>{html.escape(str(c))}</td>"
                                                       for c in cells) + "</tr>")
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in table1_notes(settings))
    return (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>Table 1</title><style>"
        "body{font-family:sans-serif;font-size:13px}table{border-collapse:collapse}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:center}"
        "tr.paper td{color:#666;font-style:italic;border-bottom:2px solid #888}"
        "th{background:#eee}</style></head><body>"
        "<h3>Table 1: reconstruction quality seen by Hough indexing (ours vs the paper)</h3>"
        "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr>"
        + "".join(body) + f"</table><ul>{notes}</ul></body></html>\n"
    )


def run_table_rule(metric_paths: Mapping[str, Sequence[str]], variants: Mapping[str, Any],
                   settings: Mapping[str, Any] | None, out_csv: str, out_md: str,
                   out_html: str) -> "pd.DataFrame":
    """What rule ``evaluate_table1`` runs: pool the per-pattern metrics into Table 1."""
    metrics = {name: [read_metrics(p)[0] for p in paths] for name, paths in metric_paths.items()}
    frame = table1(metrics, variants, settings)
    with atomic_path(out_csv) as tmp:
        frame.to_csv(tmp, index=False)
    with atomic_path(out_md) as tmp:
        tmp.write_text(table1_markdown(frame, settings))
    with atomic_path(out_html) as tmp:
        tmp.write_text(table1_html(frame, settings))
    log.info("Table 1:\n%s", table1_markdown(frame, settings))
    return frame
