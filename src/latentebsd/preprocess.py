"""Preprocessing (paper, "Data preprocessing"), streamed in chunks.

Per scan, in this order:

1. background subtracted from every pattern at full resolution (``preprocess.background``,
   per scan ``scans.<name>.background``): ``mean`` (the paper's: the mean raw pattern
   over the whole map), ``static`` (the background pattern the file itself stores,
   kikuchipy's ``static_background``) or ``none``;
2. binning by an integer factor (block mean; ``preprocess.binning``, per scan
   ``scans.<name>.binning``; paper: 4, 480 -> 120);
3. rescaling to [-1, 1] - per pattern (default: each pattern's own min/max over the
   screen, as MATLAB's ``rescale`` does pattern by pattern) or per scan (one min/max for
   the whole map, which keeps relative intensity between patterns);
4. the dark region outside the circular phosphor screen is found once per scan from the
   mean pattern, stored as a boolean mask (True = on screen) and set to 0 in the output.

The scan is read twice (mean, then patterns), three times for per-scan rescaling, one
chunk at a time, so memory does not grow with the number of patterns. Output is one
chunked HDF5 file per scan, written under a temporary name and renamed when complete;
the raw file is only read.

A user's scan takes its geometry (pattern centre, tilts, step) from the config where the
config gives it, else from what the file stores (:func:`geometry_from_config`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.geometry import ScanGeometry, pc_to_bruker
from latentebsd.io.patterns import PatternFileError, PatternReader
from latentebsd.io.preprocessed import preprocessed_writer
from latentebsd.io.truth import read_truth_geometry

log = logging.getLogger(__name__)

#: Background choices (config ``preprocess.background`` / ``scans.<name>.background``).
BACKGROUNDS = ("mean", "static", "none")
#: Below this many patterns a mean background gets a warning. The mean pattern is a
#: smooth background only when it averages many different orientations: band contrast
#: left in it falls roughly as 1 / sqrt(number of distinct orientations), and a small
#: map covers few grains. On kikuchipy's real 3 x 3 Ni map (9 patterns, 4 orientations)
#: the mean keeps clear bands and subtracting it cost Hough indexing 3 of 9 patterns. A
#: ~32 x 32 map (1000 patterns) spans tens of grains even at a coarse step; the paper's
#: maps have ~900,000. The number is a rule of thumb, not a measured threshold.
MEAN_BACKGROUND_MIN_PATTERNS = 1000
#: The ``scans.<name>`` keys that override the ``preprocess`` section for one scan.
SCAN_OVERRIDES = ("binning", "background")


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


#: What each tilt is, for the error that names it when neither config nor file gives it.
TILT_MEANING = {
    "sample_tilt": "the sample tilt in degrees (70 on most EBSD setups, but not all)",
    "camera_tilt": "the detector tilt in degrees (OIM's camera elevation, kikuchipy's "
                   "detector tilt; 0 on some detectors, 5-10 on many)",
}


def _check_pc(scan_name: str, pc: np.ndarray, where: str, n_patterns: int) -> np.ndarray:
    """A Bruker PC that indexing can use: finite, ``(3,)`` or ``(n, 3)``, PCz > 0."""
    if pc.shape not in ((3,), (n_patterns, 3)):
        raise PatternFileError(
            f"config key scans.{scan_name}.pc: the pattern centre from {where} has shape "
            f"{pc.shape}; expected [x, y, z] or one per pattern ({n_patterns}, 3)")
    if not np.isfinite(pc).all() or np.any(pc[..., 2] <= 0):
        raise PatternFileError(
            f"config key scans.{scan_name}.pc: the pattern centre from {where} "
            f"({np.round(pc.reshape(-1, 3)[0], 4).tolist()} in Bruker convention"
            f"{', first pattern' if pc.ndim == 2 else ''}) is no calibrated pattern centre "
            f"(PCz, the detector distance, must be > 0); set scans.{scan_name}.pc "
            f"[x, y, z] and pc_convention")
    return pc


#: The pattern-centre convention each file format defines (kikuchipy's reader name, or
#: ``edax_binary`` for UP1/UP2): a PC in ``scans.<name>.pc`` for a scan in such a file is
#: taken in it unless ``scans.<name>.pc_convention`` says otherwise. An EDAX user copies
#: the PC from OIM (TSL / EDAX convention), a Bruker user from Esprit, and so on.
#: Formats not listed (NORDIF ``.dat``, image directories, unknown files) define none:
#: there ``pc_convention`` is required, since a PC read in the wrong convention moves the
#: pattern centre by up to half the screen and every orientation with it.
FORMAT_PC_CONVENTION: dict[str, str] = {
    "edax_binary": "tsl",
    "edax_h5ebsd": "tsl",
    "bruker_h5ebsd": "bruker",
    "kikuchipy_h5ebsd": "bruker",
    "oxford_h5ebsd": "oxford",
    "oxford_binary": "oxford",
    "emsoft_ebsd": "emsoft",
}


def config_pc_convention(scan_name: str, scan_cfg: dict, file_format: str | None) -> str:
    """The convention of the PC in ``scans.<name>.pc``: the config's
    ``pc_convention``, else the one the file format defines
    (:data:`FORMAT_PC_CONVENTION`).

    Raises
    ------
    PatternFileError
        Naming ``scans.<name>.pc_convention`` when the config gives none and the format
        defines none (a silent default would read e.g. a TSL PC as Bruker's).
    """
    if scan_cfg.get("pc_convention") is not None:
        return str(scan_cfg["pc_convention"])
    inferred = FORMAT_PC_CONVENTION.get(file_format or "")
    if inferred is None:
        raise PatternFileError(
            f"config key scans.{scan_name}.pc_convention: scans.{scan_name}.pc is given but "
            f"its convention is not, and the file format ({file_format or 'unknown format'}) "
            f"defines none; set scans.{scan_name}.pc_convention to one of bruker, tsl/edax, "
            f"oxford, emsoft (the convention the PC was measured in)")
    return inferred


def geometry_from_config(scan_name: str, scan_cfg: dict, reader: PatternReader) -> ScanGeometry:
    """Geometry of a user's scan: the config's values where it gives them, else the file's.

    Map shape and pattern size always come from the file. The pattern centre, the
    sample and detector tilts and the step come from ``scans.<name>`` when the config
    sets them (a config value always wins), else from what the file stores
    (:attr:`PatternReader.stored_geometry`, :attr:`PatternReader.step_um`; a file's PC
    is already in Bruker convention). Where each value came from is logged. No value
    is guessed: a tilt off by a few degrees turns every orientation by about as much,
    and nothing downstream would notice.

    Raises
    ------
    PatternFileError
        Naming ``scans.<name>.pc`` (or ``.step_um``, ``.sample_tilt``,
        ``.camera_tilt``) when neither the config nor the file has it, or when the
        file's PC is a placeholder that indexing cannot use (PCz = 0).
    """
    stored, fmt = reader.stored_geometry, reader.file_format or "unknown format"
    in_file = f"the file ({fmt})"
    origin: dict[str, str] = {}

    if "step_um" in scan_cfg:
        step, origin["step_um"] = float(scan_cfg["step_um"]), "config"
    elif reader.step_um is not None:
        step, origin["step_um"] = float(reader.step_um), in_file
    else:
        raise PatternFileError(
            f"{reader.path}: the file ({fmt}) stores no step size in micrometres: set "
            f"config key scans.{scan_name}.step_um"
        )

    if "pc" in scan_cfg:
        convention = config_pc_convention(scan_name, scan_cfg, reader.file_format)
        pc = pc_to_bruker(np.asarray(scan_cfg["pc"], dtype=float), convention,
                          reader.pattern_shape)
        origin["pc"] = f"config ({convention})"
    elif "pc" in stored:
        pc = np.asarray(stored["pc"], dtype=float)
        origin["pc"] = in_file + (", one per pattern" if pc.ndim == 2 else "")
    else:
        raise PatternFileError(
            f"config key scans.{scan_name}.pc: {reader.path} ({fmt}) stores no pattern "
            f"centre and the config gives none; set scans.{scan_name}.pc [x, y, z] (and "
            f"pc_convention) for indexing"
        )
    pc = _check_pc(scan_name, pc, "the config" if "pc" in scan_cfg else str(reader.path),
                   reader.n_patterns)

    tilts = {}
    for key in ("sample_tilt", "camera_tilt"):
        if key in scan_cfg:
            tilts[key], origin[key] = float(scan_cfg[key]), "config"
        elif key in stored:
            tilts[key], origin[key] = float(stored[key]), in_file
        else:
            raise PatternFileError(
                f"config key scans.{scan_name}.{key}: {reader.path} ({fmt}) stores no "
                f"{key.replace('_', ' ')} and the config gives none; set "
                f"scans.{scan_name}.{key} to {TILT_MEANING[key]}. A wrong value turns "
                f"every orientation by about as much, without any other sign")

    log.info("scan %s geometry: %s", scan_name, "; ".join([
        f"step {step:g} um from {origin['step_um']}",
        f"PC {np.round(pc.reshape(-1, 3).mean(axis=0), 4).tolist()} (Bruker"
        f"{', mean' if pc.ndim == 2 else ''}) from {origin['pc']}",
        f"sample tilt {tilts['sample_tilt']:g} from {origin['sample_tilt']}",
        f"camera tilt {tilts['camera_tilt']:g} from {origin['camera_tilt']}",
    ]))
    return ScanGeometry(
        n_rows=reader.map_shape[0], n_cols=reader.map_shape[1], step_um=step,
        pattern_shape=reader.pattern_shape, pc=pc, **tilts,
        working_distance_mm=getattr(reader, "working_distance_mm", None),
    )


def scan_settings(scan_name: str, scan_cfg: Mapping[str, Any],
                  settings: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The ``preprocess`` settings of one scan: ``settings`` with the scan's own
    ``binning`` / ``background`` where ``scans.<name>`` sets them.

    Returns
    -------
    settings, keys
        The settings, and for ``binning`` and ``background`` the config key that set
        them (``scans.<name>.binning`` or ``preprocess.binning``, ...), for errors;
        ``scan_background`` is the scan's own background key, for hints.
    """
    out = dict(settings)
    keys = {"scan_background": f"scans.{scan_name}.background"}
    for key in SCAN_OVERRIDES:
        if key in scan_cfg:
            out[key], keys[key] = scan_cfg[key], f"scans.{scan_name}.{key}"
        else:
            keys[key] = f"preprocess.{key}"
    return out, keys


def choose_background(method: str, reader: PatternReader, mean_pattern: np.ndarray,
                      key: str = "preprocess.background",
                      scan_key: str | None = None) -> np.ndarray:
    """The full-resolution background ``(H, W)`` float64 that ``method`` subtracts.

    Parameters
    ----------
    method
        ``mean`` (``mean_pattern``), ``static`` (the file's own background pattern) or
        ``none`` (zeros).
    reader
        The scan's reader (its ``static_background``).
    mean_pattern
        The scan's mean raw pattern (:func:`scan_background`).
    key
        The config key that chose ``method``, named in errors.
    scan_key
        The scan's own key (``scans.<name>.background``), suggested in the small-map
        warning; ``None``: ``key``.

    Raises
    ------
    PatternFileError
        ``static`` when the file stores no background, or one that is not one finite
        pattern of the scan's pattern shape.
    """
    if method not in BACKGROUNDS:
        raise ValueError(f"config key {key}: {method!r} is not one of {list(BACKGROUNDS)}")
    if method == "mean":
        if reader.n_patterns < MEAN_BACKGROUND_MIN_PATTERNS:
            hint = (f" The file stores a static background: set {scan_key or key}: static."
                    if reader.static_background is not None else "")
            log.warning(
                "%s: %s = mean on a map of only %d patterns (< %d): the mean pattern still "
                "holds Kikuchi bands of the few grains it averages, and subtracting it can "
                "cost indexing.%s", reader.path, key, reader.n_patterns,
                MEAN_BACKGROUND_MIN_PATTERNS, hint)
        return mean_pattern
    if method == "none":
        return np.zeros(reader.pattern_shape, dtype=np.float64)
    static = reader.static_background
    if static is None:
        fmt = reader.file_format or "unknown format"
        raise PatternFileError(
            f"config key {key}: static, but {reader.path} ({fmt}) stores no static "
            f"background pattern; use mean or none")
    static = np.asarray(static)
    if static.shape != reader.pattern_shape:
        raise PatternFileError(
            f"config key {key}: static, but the background pattern {reader.path} stores is "
            f"{' x '.join(map(str, static.shape))} and its patterns are "
            f"{reader.pattern_shape[0]} x {reader.pattern_shape[1]}; use mean or none")
    static = static.astype(np.float64)
    if not np.isfinite(static).all():
        raise PatternFileError(
            f"config key {key}: static, but the background pattern {reader.path} stores "
            f"holds NaN or inf values; use mean or none")
    return static


def preprocess_scan(
    pattern_path: str | os.PathLike,
    out_path: str | os.PathLike,
    geometry: ScanGeometry,
    settings: dict | None = None,
    progress: bool = True,
    config_keys: Mapping[str, str] | None = None,
) -> Path:
    """Preprocess one scan into a chunked HDF5 file.

    Parameters
    ----------
    pattern_path
        The raw scan (any format :class:`~latentebsd.io.patterns.PatternReader` reads).
        Only read.
    out_path
        Output HDF5: ``patterns`` (n, h, w) float32 in [-1, 1], ``mask`` (h, w) bool,
        ``valid`` (n,) bool, ``background`` (H, W) float32 (the background subtracted,
        full resolution; zeros for ``none``), attribute ``background`` (the method),
        and group ``geometry`` (:class:`~latentebsd.geometry.ScanGeometry` of the binned
        patterns); see :mod:`latentebsd.io.preprocessed`.
    geometry
        Geometry of the raw scan; its map shape must match the file.
    settings
        The validated ``preprocess`` config section (``None``: the schema's defaults),
        with a scan's own overrides applied (:func:`scan_settings`): ``background``
        (``mean``, ``static`` or ``none``: :func:`choose_background`),
        ``binning`` (divides both pattern sides), ``rescale`` (``per_pattern`` or
        ``per_scan``, module docstring), ``mask`` (:class:`MaskSettings`),
        ``blank_patterns`` (``error``, or ``flag``: constant patterns are then marked
        invalid, written as zeros and left out of the background and of training
        samples), ``chunk_size`` (patterns per chunk; peak memory is a few chunks).
    progress
        Show tqdm progress bars.
    config_keys
        The config key that set ``binning`` and ``background`` (e.g.
        ``scans.<name>.binning``), named in errors (default ``preprocess.<key>``), and
        ``scan_background``, the scan's own key that warnings suggest
        (:func:`scan_settings`).
    """
    cfg = config.section("preprocess") if settings is None else settings
    binning, rescale, chunk_size = cfg["binning"], cfg["rescale"], cfg["chunk_size"]
    blank_patterns, background_method = cfg["blank_patterns"], cfg["background"]
    keys = {"binning": "preprocess.binning", "background": "preprocess.background",
            **dict(config_keys or {})}
    mask = MaskSettings(**cfg["mask"])
    if Path(out_path).resolve() == Path(pattern_path).resolve():
        raise ValueError(f"{out_path}: the preprocessed output would replace the raw scan it "
                         f"is made from; raw input is never overwritten")
    reader = PatternReader(pattern_path, nav_shape=geometry.map_shape)
    if reader.pattern_shape != geometry.pattern_shape:
        raise PatternFileError(
            f"{reader.path}: patterns are {reader.pattern_shape}, the scan geometry expects "
            f"{geometry.pattern_shape}"
        )
    h, w = reader.pattern_shape
    if h % binning or w % binning:
        raise ValueError(
            f"config key {keys['binning']}: {binning} does not divide the pattern size "
            f"{h} x {w} of {reader.path}"
        )

    mean_pattern, valid = scan_background(reader, chunk_size, blank_patterns, progress)
    background = choose_background(background_method, reader, mean_pattern,
                                   keys["background"], keys.get("scan_background"))
    # the screen shows in the mean raw pattern whatever background is subtracted
    screen = detector_mask(mean_pattern, mask)
    screen_binned = bin_mask(screen, binning)
    if not screen_binned.any():
        raise ValueError(
            f"{reader.path}: the detector mask leaves no pixel after binning by {binning}; "
            f"check preprocess.mask"
        )
    binned_geometry = geometry.binned(binning)
    n, hb, wb = reader.n_patterns, h // binning, w // binning
    log.info("%s: %d patterns %dx%d -> %dx%d (%s = %d), %s background (%s), %.1f %% of "
             "pixels on screen", reader.path, n, h, w, hb, wb, keys["binning"], binning,
             background_method, keys["background"], 100 * screen_binned.mean())

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
            "background": background_method, "rescale": rescale, "mask_method": mask.method, "n_invalid": int((~valid).sum()),
            "raw_pattern_shape": (h, w), "raw_dtype": str(reader.dtype),
        })
    return Path(out_path)


def run_preprocess_rule(scan_name: str, pattern_path: str, geometry_path: str | None,
                        out_path: str, scan_cfg: dict, settings: dict | None) -> Path:
    """Preprocess one configured scan (what rule ``preprocess`` runs).

    The geometry comes from ``geometry_path`` (a simulated scan's ground-truth file)
    when given, else from the scan's config entry and its pattern file
    (:func:`geometry_from_config`). ``settings`` is the validated ``preprocess``
    section (``None``: the schema's defaults); the scan's own ``binning`` and
    ``background`` override it (:func:`scan_settings`).
    """
    settings = config.section("preprocess") if settings is None else settings
    settings, keys = scan_settings(scan_name, scan_cfg, settings)
    if geometry_path:
        geometry = read_truth_geometry(geometry_path)
    else:
        reader = PatternReader(pattern_path, nav_shape=scan_cfg.get("nav_shape"))
        geometry = geometry_from_config(scan_name, scan_cfg, reader)
    return preprocess_scan(pattern_path, out_path, geometry, settings, config_keys=keys)
