"""Preprocessing (paper, "Data preprocessing"), streamed in chunks.

Per scan, in this order:

1. background = mean raw pattern over the whole map, subtracted from every pattern;
2. binning by an integer factor (block mean; paper: 4, 480 -> 120);
3. rescaling to [-1, 1] - per pattern (default: each pattern's own min/max over the
   screen, as MATLAB's ``rescale`` does pattern by pattern) or per scan (one min/max for
   the whole map, which keeps relative intensity between patterns);
4. the dark region outside the circular phosphor screen is found once per scan from the
   mean pattern, stored as a boolean mask (True = on screen) and set to 0 in the output.

The scan is read twice (mean, then patterns), three times for per-scan rescaling, one
chunk at a time, so memory does not grow with the number of patterns. Output is one
chunked HDF5 file per scan, written under a temporary name and renamed when complete.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.geometry import ScanGeometry, pc_to_bruker
from latentebsd.io.patterns import PatternFileError, PatternReader
from latentebsd.io.preprocessed import preprocessed_writer
from latentebsd.io.truth import read_truth_geometry

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class MaskSettings:
    """How the on-screen region is found (config ``preprocess.mask``).

    Attributes
    ----------
    method
        ``auto``: pixels whose mean intensity exceeds ``threshold`` of the mean
        pattern's range (largest connected region, holes filled); falls back to no
        mask when nothing is dark (square-cropped detectors). ``circle``: a centred
        disc of radius ``radius`` x half the smaller pattern side. ``none``: all pixels.
    threshold
        Fraction of the mean pattern's intensity range for ``auto``.
    radius
        Disc radius for ``circle``, as a fraction of half the smaller pattern side.
    """

    method: str
    threshold: float
    radius: float


def bin_patterns(patterns: np.ndarray, factor: int) -> np.ndarray:
    """Block-mean binning of ``(n, h, w)`` patterns by ``factor`` along both axes."""
    if factor == 1:
        return patterns
    n, h, w = patterns.shape
    if h % factor or w % factor:
        raise ValueError(
            f"config key preprocess.binning: {factor} does not divide the pattern size "
            f"{h} x {w}"
        )
    return patterns.reshape(n, h // factor, factor, w // factor, factor).mean(axis=(2, 4))


def detector_mask(mean_pattern: np.ndarray, settings: MaskSettings) -> np.ndarray:
    """Boolean on-screen mask ``(h, w)`` of a scan, from its mean raw pattern."""
    h, w = mean_pattern.shape
    if settings.method == "none":
        return np.ones((h, w), dtype=bool)
    if settings.method == "circle":
        yy, xx = np.mgrid[:h, :w]
        r = settings.radius * min(h, w) / 2
        return (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 <= r**2
    lo, hi = float(mean_pattern.min()), float(mean_pattern.max())
    if hi <= lo:
        return np.ones((h, w), dtype=bool)
    bright = mean_pattern > lo + settings.threshold * (hi - lo)
    labels, n = ndimage.label(bright)
    if n == 0:
        return np.ones((h, w), dtype=bool)
    sizes = ndimage.sum_labels(bright, labels, index=np.arange(1, n + 1))
    screen = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    # A square-cropped detector has no dark border: only a few dim pixels fall below
    # the threshold, and masking them would just punch holes in the loss.
    if screen.mean() > 0.97:
        return np.ones((h, w), dtype=bool)
    return screen


def bin_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """A binned pixel is on screen only if all its source pixels are."""
    if factor == 1:
        return mask.copy()
    h, w = mask.shape
    return mask.reshape(h // factor, factor, w // factor, factor).all(axis=(1, 3))


def rescale_to_unit_range(
    patterns: np.ndarray, mask: np.ndarray, lo: np.ndarray | float | None = None,
    hi: np.ndarray | float | None = None,
) -> np.ndarray:
    """Map on-screen values linearly to [-1, 1]; off-screen pixels become 0.

    Parameters
    ----------
    patterns
        ``(n, h, w)`` float patterns.
    mask
        ``(h, w)`` on-screen mask.
    lo, hi
        The values that map to -1 and 1: scalars (per scan) or ``None`` for each
        pattern's own on-screen min/max (per pattern).
    """
    on = patterns[:, mask]
    if lo is None or hi is None:
        lo = on.min(axis=1)
        hi = on.max(axis=1)
    lo = np.asarray(lo, dtype=np.float64).reshape(-1, 1)
    span = np.asarray(hi, dtype=np.float64).reshape(-1, 1) - lo
    span[span == 0] = 1.0  # a constant pattern maps to -1 rather than NaN
    out = np.zeros(patterns.shape, dtype=np.float32)
    out[:, mask] = (2.0 * (on - lo) / span - 1.0).astype(np.float32)
    return out


def blank_pattern_indices(patterns: np.ndarray) -> np.ndarray:
    """Indices (within the chunk) of constant patterns: no signal to learn from."""
    flat = patterns.reshape(len(patterns), -1)
    return np.flatnonzero(flat.min(axis=1) == flat.max(axis=1))


def scan_background(reader: PatternReader, chunk_size: int, blank_patterns: str = "error",
                    progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Mean raw pattern over the scan, and the per-pattern validity flags.

    Also checks every pattern: NaN/inf values are an error; constant patterns are an
    error when ``blank_patterns == "error"`` and are flagged invalid (and left out of
    the mean) when it is ``"flag"``.
    """
    total = np.zeros(reader.pattern_shape, dtype=np.float64)
    valid = np.ones(reader.n_patterns, dtype=bool)
    bar = tqdm(total=reader.n_patterns, desc=f"background {reader.path.name}",
               unit="pat", disable=not progress)
    for start, raw in reader.chunks(chunk_size):
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            bad = start + np.flatnonzero(~np.isfinite(raw.reshape(len(raw), -1)).all(axis=1))
            raise PatternFileError(
                f"{reader.path}: {len(bad)} pattern(s) contain NaN or inf values "
                f"(first at index {bad[0]}); expected finite intensities"
            )
        blank = blank_pattern_indices(raw)
        if len(blank):
            valid[start + blank] = False
        total += raw.sum(axis=0, dtype=np.float64)
        if len(blank):
            total -= raw[blank].sum(axis=0, dtype=np.float64)
        bar.update(len(raw))
    bar.close()
    bad = np.flatnonzero(~valid)
    if len(bad) and blank_patterns == "error":
        raise PatternFileError(
            f"{reader.path}: {len(bad)} constant (blank or all-zero) pattern(s), first at "
            f"indices {bad[:5].tolist()}; expected Kikuchi patterns. Set "
            f"preprocess.blank_patterns: flag to skip them"
        )
    if not valid.any():
        raise PatternFileError(f"{reader.path}: every pattern is constant; nothing to learn")
    return total / valid.sum(), valid


def geometry_from_config(scan_name: str, scan_cfg: dict, reader: PatternReader) -> ScanGeometry:
    """Geometry of a user's scan: map shape from the file, the rest from the config."""
    step = scan_cfg.get("step_um", reader.step_um)
    if step is None:
        raise PatternFileError(
            f"{reader.path}: the file stores no step size: set config key "
            f"scans.{scan_name}.step_um"
        )
    pc = pc_to_bruker(np.asarray(scan_cfg["pc"], dtype=float),
                      scan_cfg.get("pc_convention", "bruker"), reader.pattern_shape)
    return ScanGeometry(
        n_rows=reader.map_shape[0], n_cols=reader.map_shape[1], step_um=step,
        pattern_shape=reader.pattern_shape, pc=pc,
        sample_tilt=scan_cfg.get("sample_tilt", 70.0),
        camera_tilt=scan_cfg.get("camera_tilt", 0.0),
    )


def preprocess_scan(
    pattern_path: str | os.PathLike,
    out_path: str | os.PathLike,
    geometry: ScanGeometry,
    settings: dict | None = None,
    progress: bool = True,
) -> Path:
    """Preprocess one scan into a chunked HDF5 file.

    Parameters
    ----------
    pattern_path
        The raw scan (any format :class:`~latentebsd.io.patterns.PatternReader` reads).
        Only read.
    out_path
        Output HDF5: ``patterns`` (n, h, w) float32 in [-1, 1], ``mask`` (h, w) bool,
        ``valid`` (n,) bool, ``background`` (H, W) float32 (full resolution), and group
        ``geometry`` (:class:`~latentebsd.geometry.ScanGeometry` of the binned patterns);
        see :mod:`latentebsd.io.preprocessed`.
    geometry
        Geometry of the raw scan; its map shape must match the file.
    settings
        The validated ``preprocess`` config section (``None``: the schema's defaults):
        ``binning`` (divides both pattern sides), ``rescale`` (``per_pattern`` or
        ``per_scan``, module docstring), ``mask`` (:class:`MaskSettings`),
        ``blank_patterns`` (``error``, or ``flag``: constant patterns are then marked
        invalid, written as zeros and left out of the background and of training
        samples), ``chunk_size`` (patterns per chunk; peak memory is a few chunks).
    progress
        Show tqdm progress bars.
    """
    cfg = config.section("preprocess") if settings is None else settings
    binning, rescale, chunk_size = cfg["binning"], cfg["rescale"], cfg["chunk_size"]
    blank_patterns = cfg["blank_patterns"]
    mask = MaskSettings(**cfg["mask"])
    reader = PatternReader(pattern_path, nav_shape=geometry.map_shape)
    if reader.pattern_shape != geometry.pattern_shape:
        raise PatternFileError(
            f"{reader.path}: patterns are {reader.pattern_shape}, the scan geometry expects "
            f"{geometry.pattern_shape}"
        )
    h, w = reader.pattern_shape
    if h % binning or w % binning:
        raise ValueError(
            f"config key preprocess.binning: {binning} does not divide the pattern size "
            f"{h} x {w} of {reader.path}"
        )

    background, valid = scan_background(reader, chunk_size, blank_patterns, progress)
    screen = detector_mask(background, mask)
    screen_binned = bin_mask(screen, binning)
    if not screen_binned.any():
        raise ValueError(
            f"{reader.path}: the detector mask leaves no pixel after binning by {binning}; "
            f"check preprocess.mask"
        )
    binned_geometry = geometry.binned(binning)
    n, hb, wb = reader.n_patterns, h // binning, w // binning
    log.info("%s: %d patterns %dx%d -> %dx%d, %.1f %% of pixels on screen",
             reader.path, n, h, w, hb, wb, 100 * screen_binned.mean())

    with preprocessed_writer(out_path, n, (hb, wb)) as out:
        dset = out.patterns
        lo, hi = np.inf, -np.inf
        bar = tqdm(total=n, desc=f"preprocess {reader.path.name}", unit="pat",
                   disable=not progress)
        for start, raw in reader.chunks(chunk_size):
            stop = start + len(raw)
            ok = valid[start:stop]
            binned = bin_patterns(raw.astype(np.float32) - background.astype(np.float32), binning)
            if rescale == "per_pattern":
                chunk = rescale_to_unit_range(binned, screen_binned)
            else:  # per_scan: store background-subtracted values, rescale in a third pass
                chunk = np.where(screen_binned, binned, 0).astype(np.float32)
                if ok.any():
                    lo = min(lo, float(binned[ok][:, screen_binned].min()))
                    hi = max(hi, float(binned[ok][:, screen_binned].max()))
            chunk[~ok] = 0.0
            dset[start:stop] = chunk
            bar.update(len(raw))
        bar.close()
        if rescale == "per_scan":
            for start in range(0, n, chunk_size):
                stop = min(start + chunk_size, n)
                chunk = rescale_to_unit_range(dset[start:stop], screen_binned, lo, hi)
                chunk[~valid[start:stop]] = 0.0
                dset[start:stop] = chunk
            dset.attrs["rescale_range"] = (lo, hi)
        out.finish(screen_binned, screen, valid, background, binned_geometry, {
            "source": str(Path(pattern_path).resolve()), "binning": binning,
            "rescale": rescale, "mask_method": mask.method, "n_invalid": int((~valid).sum()),
            "raw_pattern_shape": (h, w), "raw_dtype": str(reader.dtype),
        })
    return Path(out_path)


def run_preprocess_rule(scan_name: str, pattern_path: str, geometry_path: str | None,
                        out_path: str, scan_cfg: dict, settings: dict) -> Path:
    """Preprocess one configured scan (what rule ``preprocess`` runs).

    The geometry comes from ``geometry_path`` (a simulated scan's ground-truth file)
    when given, else from the scan's config entry and its pattern file.
    """
    if geometry_path:
        geometry = read_truth_geometry(geometry_path)
    else:
        reader = PatternReader(pattern_path, nav_shape=scan_cfg.get("nav_shape"))
        geometry = geometry_from_config(scan_name, scan_cfg, reader)
    return preprocess_scan(pattern_path, out_path, geometry, settings)
