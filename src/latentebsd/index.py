"""Stage ``index_scan``: Hough-index a scan's patterns with PyEBSDIndex and measure their quality.

The preprocessed patterns and every model's decoded ones are indexed the same way
(CPU numba path, the scan's phases - :mod:`latentebsd.phases`, FCC Ni by default - one
PC per pattern, the screen mask as ``patternmask``); the
same pass measures kikuchipy's Krieger Lassen image quality and the FFT sharpness of
each pattern, inside the screen's inscribed square (:func:`screen_window`). Output: :mod:`latentebsd.io.index` (``.h5`` + ``.ang``). A sharded scan's
blocks are indexed by ``index_shard`` jobs and joined by :func:`gather_index`.

Conventions (checked in ``tests/test_simulate.py``):

- PCs are kept in Bruker convention (:class:`~latentebsd.geometry.ScanGeometry`) and
  converted to EDAX TSL with kikuchipy's :meth:`EBSDDetector.pc_tsl`, which matches
  what PyEBSDIndex's ``vendor="EDAX"`` expects (``x*`` of the width, ``y*`` from the
  bottom, ``z*`` times ``min(h, w)`` in pixels), also for non-square patterns.
- ``camElev`` is kikuchipy's detector ``tilt``; ``sampleTilt`` the sample tilt.
- PyEBSDIndex's ``index_pats`` accepts one PC per pattern (``PC`` of shape
  ``(n, 3)``; its ``radon2pole`` converts bands to plane normals pattern by pattern),
  so a drifting PC is handled exactly, with no grouping error.
- The quaternions it returns (vendor ``EDAX`` or ``KIKUCHIPY``: the same sample
  frame) are orix orientations as they are, no inverse: the rotations that kikuchipy's
  ``get_patterns`` simulated are recovered to ~0.05 deg.

Quality (definitions: docs/metrics.md)
--------------------------------------
- ``sharpness``: ``F = fftshift(Re(FFT2(p)))``, ``M = max|F|``, sharpness =
  ``count(F > M / divisor) / (H * W)``; ``evaluation.sharpness.part`` = ``real``
  (default) or ``abs`` (``|FFT2|``), ``divisor`` default 2500, ``intensity`` = ``up2``
  (default: the masked pattern on the 16-bit UP2 scale, ``p + 1``, which the paper
  measured) or ``signed`` (the zero-mean ``[-1, 1]`` pattern); see
  :func:`pattern_sharpness`.
- ``iq_kp``: kikuchipy's Krieger Lassen image quality (:func:`image_quality`).

The first indexing call in a fresh numba cache compiles for ~90 s; the workflow's
cache guard (:mod:`latentebsd.numba_cache`) makes other processes wait for that one
compilation and then load it.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.geometry import ScanGeometry
from latentebsd.io.index import (INDEX_DTYPE, QUALITY_FIELDS, as_result, is_indexed, read_index,
                                 write_ang, write_index)
from latentebsd.io.patterns import UP2_RANGE, PatternReader, from_uint16
from latentebsd.io.preprocessed import PreprocessedScan, read_screen
from latentebsd.phases import (NICKEL, PhaseSpec, band_indexer, phase_from_config, phases_of,
                               spec_from_dict, to_json)
from latentebsd.shards import (check_covers, concatenate, first_rows, h5_first_row, row_range,
                               rows_per_block)

log = logging.getLogger(__name__)


#: How the schema's ``evaluation.hough`` defaults translate the paper's OIM settings:
#:
#: - theta step 1 deg -> ``nTheta=180`` (180 deg / 180 bins).
#: - rho fraction 85 % -> ``rhoMaskFrac=0.075`` with ``nRho=90``: PyEBSDIndex blanks
#:   ``int(nRho * rhoMaskFrac)`` rho bins at each end, keeping ``1 - 2 * 6 / 90`` = 87 %
#:   of rho (0.085 would keep 84 %; 87 % is the closer of the two).
#: - min peak distance 10 -> ``tSigma = rSigma = 2``: the Radon peak search takes a
#:   peak only where it is the maximum of a ``2 * ksz + 1`` window, ``ksz = max(int(4 *
#:   sigma), 5)`` made odd = 9, i.e. 19 bins: peaks at least ~9-10 bins (deg) apart.
#: - min peak magnitude 5 -> no PyEBSDIndex argument (it keeps the ``nBands`` strongest
#:   local maxima); ``nBands=9`` is the number of bands OIM typically keeps.
PAPER_HOUGH_MAPPING: dict[str, str] = {
    "theta step 1 deg": "nTheta=180",
    "rho fraction 85 %": "nRho=90, rhoMaskFrac=0.075 (87 % of rho kept)",
    "min peak distance 10": "tSigma=rSigma=2 (19-bin local-maximum window)",
    "min peak magnitude 5": "no equivalent; nBands=9 strongest peaks",
}


def _check_shape(pattern_shape: Sequence[int]) -> tuple[int, int]:
    h, w = (int(v) for v in pattern_shape)
    if h < 1 or w < 1:
        raise ValueError(f"pattern_shape must be two positive integers, got {pattern_shape}")
    return h, w


def pc_tsl(pc_bruker: np.ndarray, pattern_shape: Sequence[int]) -> np.ndarray:
    """Bruker PC(s) ``(3,)`` or ``(n, 3)`` -> EDAX TSL PC(s) of the same shape."""
    # kikuchipy's detector module takes seconds to import: only indexing needs it
    from kikuchipy.detectors import EBSDDetector

    pc = np.asarray(pc_bruker, dtype=np.float64)
    det = EBSDDetector(shape=_check_shape(pattern_shape), pc=np.atleast_2d(pc))
    out = det.pc_tsl().reshape(-1, 3)
    return out[0] if pc.ndim == 1 else out


def resolve_phases(phases: Sequence[PhaseSpec | str | Mapping[str, Any]] | None,
                   key: str = "phases") -> list[PhaseSpec]:
    """:class:`PhaseSpec` objects of ``phases`` (specs or config entries, e.g. ``"BCC"``);
    ``None``: FCC nickel (:data:`latentebsd.phases.NICKEL`)."""
    if phases is None:
        return [NICKEL]
    specs = [p if isinstance(p, PhaseSpec) else phase_from_config(p, f"{key}.{i}")
             for i, p in enumerate(phases)]
    if not specs:
        raise ValueError(f"{key}: no phase to index with")
    return specs


def build_indexer(geometry: ScanGeometry, pattern_shape: Sequence[int] | None = None,
                  phase_list: Sequence[PhaseSpec | str | Mapping[str, Any]] | None = None,
                  **hough: Any):
    """A PyEBSDIndex ``EBSDIndexer`` for this scan's geometry.

    Parameters
    ----------
    geometry
        Scan geometry; its mean PC becomes the indexer's default PC (per-pattern PCs
        are passed at indexing time by :func:`index_patterns`).
    pattern_shape
        ``(h, w)`` of the patterns to index, if not ``geometry.pattern_shape`` (e.g.
        after binning; PC fractions do not change).
    phase_list
        The scan's phases (:class:`~latentebsd.phases.PhaseSpec` or config entries such
        as ``"BCC"``; :func:`resolve_phases`); ``None``: FCC nickel. PyEBSDIndex's
        ``phase`` of a result indexes this list.
    **hough
        ``EBSDIndexer`` arguments: the ``evaluation.hough`` settings (the schema's
        defaults for those not given; :data:`PAPER_HOUGH_MAPPING`) and any other
        (e.g. ``patternmask``).

    Returns
    -------
    pyebsdindex.ebsd_index.EBSDIndexer
    """
    # PyEBSDIndex's import loads its numba code (seconds): only indexing jobs pay it
    from pyebsdindex.ebsd_index import EBSDIndexer

    shape = _check_shape(pattern_shape if pattern_shape is not None else geometry.pattern_shape)
    for key in ("vendor", "PC", "sampleTilt", "camElev", "patDim", "phaselist"):
        if key in hough:
            raise ValueError(f"build_indexer: {key!r} comes from the geometry; do not pass it")
    params = {**config.section("evaluation")["hough"], **hough}
    return EBSDIndexer(
        phaselist=[band_indexer(p) for p in resolve_phases(phase_list)], vendor="EDAX",
        PC=pc_tsl(geometry.mean_pc(), shape),
        sampleTilt=geometry.sample_tilt, camElev=geometry.camera_tilt, patDim=shape,
        **params,
    )


def index_patterns(patterns: np.ndarray, geometry: ScanGeometry, start: int = 0,
                   indexer: Any = None, mask: np.ndarray | None = None,
                   chunk_size: int = 512, points: np.ndarray | None = None) -> np.ndarray:
    """Hough-index in-memory patterns, each with its own (drifting) PC.

    Parameters
    ----------
    patterns
        ``(n, h, w)`` (or one ``(h, w)``) patterns: scan patterns ``start:start + n``
        in row-major order (any real dtype; converted to float32 chunk by chunk).
    geometry
        Scan geometry; ``geometry.pc_of(start, start + n)`` gives the PCs.
    start
        Index of the first pattern in the scan.
    indexer
        From :func:`build_indexer`; built for ``patterns``' shape when ``None``.
    mask
        ``(h, w)`` bool, True on pixels to use (the phosphor screen), passed to
        PyEBSDIndex as ``patternmask``. Only when ``indexer`` is ``None`` (an indexer's
        Radon plan is set up with its mask).
    chunk_size
        Patterns per PyEBSDIndex call.
    points
        Instead of ``start``: the scan index of every pattern (any order), whose PCs
        they are indexed with (the quality controls' sampled points).

    Returns
    -------
    numpy.ndarray
        Structured array ``(n,)`` of :data:`INDEX_DTYPE`: ``quat`` (orix convention),
        ``pq`` (mean Radon peak height, EDAX-IQ-like), ``iq``, ``cm`` (confidence
        metric 0-1), ``fit`` (deg), ``nmatch``, ``phase`` (-1: not indexed).
    """
    pats = np.asarray(patterns)
    if pats.ndim == 2:
        pats = pats[None]
    if pats.ndim != 3:
        raise ValueError(f"patterns must be (n, h, w), got shape {pats.shape}")
    n = len(pats)
    if points is not None:
        points = np.asarray(points, dtype=np.int64)
        if points.shape != (n,) or (n and (points.min() < 0 or points.max() >= geometry.n_patterns)):
            raise ValueError(f"points must be {n} indices into the scan's {geometry.n_patterns} "
                             f"patterns, got shape {points.shape}")
    elif start < 0 or start + n > geometry.n_patterns:
        raise ValueError(f"patterns {start}:{start + n} outside the scan's "
                         f"{geometry.n_patterns} patterns")
    shape = pats.shape[1:]
    if indexer is None:
        kwargs = {} if mask is None else {"patternmask": _check_mask(mask, shape)}
        indexer = build_indexer(geometry, shape, **kwargs)
    elif mask is not None:
        raise ValueError("index_patterns: pass mask to build_indexer(patternmask=...) when "
                         "giving an indexer")
    if tuple(indexer.bandDetectPlan.patDim) != tuple(shape):
        raise ValueError(f"indexer was built for {tuple(indexer.bandDetectPlan.patDim)} "
                         f"patterns, got {tuple(shape)}")
    if points is None:
        pcs = pc_tsl(geometry.pc_of(start, start + n), shape)
    else:
        pcs = pc_tsl(geometry.pc_of(0, geometry.n_patterns)[points], shape)
    out = np.zeros(n, INDEX_DTYPE)
    for a in range(0, n, chunk_size):
        b = min(a + chunk_size, n)
        data, *_ = indexer.index_pats(patsin=pats[a:b].astype(np.float32), PC=pcs[a:b],
                                      chunksize=chunk_size)
        best = data[-1]
        for name in INDEX_DTYPE.names:
            out[name][a:b] = best[name]
    return out


def _check_mask(mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask must have the pattern shape {tuple(shape)}, got {mask.shape}")
    return mask.astype(bool)


# --------------------------------------------------------------------------------------
# Pattern quality
# --------------------------------------------------------------------------------------
def screen_window(mask: np.ndarray) -> tuple[slice, slice]:
    """The largest square of pixels that all lie on the screen, centred on the screen:
    ``(rows, cols)`` slices. Pattern quality is measured inside it only.

    Why: outside the phosphor disc the workflow leaves pixels at 0, so a full-frame
    measure sees the disc's edge - a step all round the pattern - before any band. On the
    full 60 x 60 frame a featureless disc scored a sharpness ratio of 0.82 and a
    Krieger-Lassen IQ ratio of 1.15 against real-looking patterns, as high as trained
    models (``benchmarks/quality_controls.py``). The inscribed square holds no edge and
    ~64 % of the screen's pixels; it is the closest open analogue of the paper's
    measures, which were defined for patterns that fill the frame (the Stinville
    group's sharpness, EDAX's IQ). A mask that covers the whole frame gives the frame.

    Raises
    ------
    ValueError
        If ``mask`` has no screen pixel.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2 or not m.any():
        raise ValueError(f"screen mask {m.shape} has no screen pixel")
    ys, xs = np.nonzero(m)
    cy, cx = ys.mean(), xs.mean()
    h, w = m.shape
    for side in range(min(h, w), 0, -1):
        y0 = int(np.clip(round(cy - (side - 1) / 2), 0, h - side))
        x0 = int(np.clip(round(cx - (side - 1) / 2), 0, w - side))
        if m[y0:y0 + side, x0:x0 + side].all():
            return slice(y0, y0 + side), slice(x0, x0 + side)
    raise AssertionError("unreachable: one screen pixel is a 1 x 1 window")  # pragma: no cover


def sharpness(patterns: np.ndarray, part: str = "real", divisor: float = 2500.0) -> np.ndarray:
    """FFT-threshold sharpness of each pattern (Wang et al. 2023, Mater. Charact. 197,
    112673, as Calvat et al. 2025 use it; docs/metrics.md).

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


def pattern_quality(patterns: np.ndarray, window: tuple[slice, slice],
                    sharpness_settings: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """:data:`QUALITY_FIELDS` of ``(n, h, w)`` masked patterns, inside ``window``
    (:func:`screen_window`): what the index stage stores beside PyEBSDIndex's fields."""
    inner = np.asarray(patterns)[:, window[0], window[1]]
    return {"iq_kp": image_quality(inner), "sharpness": pattern_sharpness(inner, sharpness_settings)}


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

    Constant patterns (no structure to normalise) get NaN: in float32 a constant window's
    standard deviation can come out as rounding noise (~1e-8) rather than 0, and
    kikuchipy then divides by a zero spectrum (``ZeroDivisionError`` inside numba).
    """
    # kikuchipy's pattern module takes seconds to import: only indexing needs it
    from kikuchipy.pattern import fft_frequency_vectors, get_image_quality

    p = np.asarray(patterns, dtype=np.float32)
    p = p[None] if p.ndim == 2 else p
    h, w = p.shape[1:]
    freq = fft_frequency_vectors((h, w))
    inertia_max = float(np.sum(freq) / (h * w))  # what kikuchipy computes per call
    out = np.full(len(p), np.nan)
    for i, pattern in enumerate(p):
        # float64 spread against the pattern's own scale: rounding noise is not structure
        scale = max(float(np.abs(pattern).max()), 1e-30)
        if float(np.ptp(pattern.astype(np.float64))) <= 1e-6 * scale:
            continue
        try:
            out[i] = get_image_quality(pattern, normalize=True, frequency_vectors=freq,
                                       inertia_max=inertia_max)
        except ZeroDivisionError:  # normalised to all zeros: nothing to measure
            pass
    return out


# --------------------------------------------------------------------------------------
# The stage
# --------------------------------------------------------------------------------------
def iter_pattern_chunks(path: str | os.PathLike, geometry: ScanGeometry, chunk_size: int,
                        rows: tuple[int, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, float32 patterns on the [-1, 1] scale)``, a block of whole map rows
    (about ``chunk_size`` patterns) at a time.

    ``path`` is a preprocessed scan (``.h5``: dataset ``patterns``) or a decoded one
    (``.up2``, converted with :func:`latentebsd.io.patterns.from_uint16`), holding ``geometry``'s whole map.
    ``rows`` = ``(first_row, stop_row)`` limits it to a shard; blocks are counted from
    row 0 either way, so a shard sees the same blocks as the whole scan.
    """
    path = Path(path)
    n_cols, n = geometry.n_cols, geometry.n_patterns
    first_row, stop_row = row_range(rows, geometry.n_rows)
    step = rows_per_block(n_cols, chunk_size)
    if path.suffix.lower() in (".h5", ".hdf5"):
        with PreprocessedScan(path) as scan:
            if scan.n_patterns != n:
                raise ValueError(f"{path}: {scan.n_patterns} patterns, the map has {n}")
            for r0 in range(first_row, stop_row, step):
                a, b = r0 * n_cols, min(r0 + step, stop_row) * n_cols
                yield a, scan.read(a, b)
    elif path.suffix.lower() == ".up2":
        reader = PatternReader(path)
        if reader.n_patterns != n:
            raise ValueError(f"{path}: {reader.n_patterns} patterns, the map has {n}")
        for r0 in range(first_row, stop_row, step):
            a, b = r0 * n_cols, min(r0 + step, stop_row) * n_cols
            yield a, from_uint16(reader.read(a, b))
    else:
        raise ValueError(f"{path}: expected a preprocessed .h5 or a decoded .up2 file")


def index_scan(pattern_path: str | os.PathLike, preprocessed_path: str | os.PathLike,
               out_h5: str | os.PathLike, out_ang: str | os.PathLike | None,
               settings: Mapping[str, Any] | None = None, source: str = "",
               progress: bool = True, rows: tuple[int, int] | None = None,
               phases: Sequence[PhaseSpec | str | Mapping[str, Any]] | None = None,
               ) -> dict[str, np.ndarray]:
    """Hough-index a scan's patterns and measure their quality, streaming through it.

    Parameters
    ----------
    pattern_path
        The preprocessed scan (``.h5``) or a decoded one (``.up2``), same map.
    preprocessed_path
        The preprocessed scan: geometry (PC per pattern, tilts), screen mask, valid flags.
    out_h5
        Output (:mod:`latentebsd.io.index`).
    out_ang
        Output ``.ang`` (orix), or ``None``.
    settings
        The validated ``evaluation`` config section (``None``: the schema's defaults).
    source
        ``original`` or the variant name, stored as an attribute.
    progress
        Show a tqdm bar.
    rows
        Map rows ``(first_row, stop_row)`` to index (a shard, :mod:`latentebsd.shards`);
        the output then holds only those rows, with attrs ``first_row`` and
        ``shard_n_rows``. ``None``: the whole map.
    phases
        The scan's phases (:func:`resolve_phases`; ``None``: FCC nickel), recorded as
        attribute ``phases`` (:func:`latentebsd.phases.to_json`) for every stage
        downstream.

    Returns
    -------
    dict
        The arrays written to ``out_h5``.
    """
    cfg = config.section("evaluation") if settings is None else settings
    specs = resolve_phases(phases)
    geometry, mask, valid = read_screen(preprocessed_path)
    first_row, stop_row = row_range(rows, geometry.n_rows)
    out_geometry = geometry.row_block(first_row, stop_row)
    offset, n = first_row * geometry.n_cols, out_geometry.n_patterns
    indexer = build_indexer(geometry, phase_list=specs, patternmask=mask, **cfg["hough"])
    result = np.zeros(n, INDEX_DTYPE)
    quality = {key: np.full(n, np.nan) for key in QUALITY_FIELDS}
    sharp = cfg["sharpness"]
    window = screen_window(mask)
    rows_w, cols_w = window
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
        for key, values in pattern_quality(patterns, window, sharp).items():
            quality[key][a:b] = values
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
        "quality_window": json.dumps([rows_w.start, rows_w.stop, cols_w.start, cols_w.stop]),
        "phases": to_json(specs),
    }
    if rows is not None:
        attrs.update(first_row=first_row, shard_n_rows=stop_row - first_row)
    write_index(out_h5, arrays, out_geometry, attrs)
    if out_ang is not None:
        write_ang(out_ang, result, out_geometry, indexed, specs)
    log.info("%s: %d / %d patterns indexed (nmatch >= %d)", pattern_path, indexed.sum(), n,
             cfg["min_nmatch"])
    if len(specs) > 1:
        log.info("phases: %s", "; ".join(
            f"{s.name} {np.count_nonzero(indexed & (result['phase'] == i))}"
            for i, s in enumerate(specs)))
    return arrays


def run_index_rule(pattern_path: str, preprocessed_path: str, out_h5: str, out_ang: str | None,
                   settings: Mapping[str, Any] | None, source: str, threads: int = 1,
                   rows: tuple[int, int] | None = None,
                   phases: Sequence[Mapping[str, Any]] | None = None) -> None:
    """What rules ``index_scan`` and ``index_shard`` (``rows`` given, no ``.ang``) run;
    ``phases``: the scan's resolved phases (dicts of :meth:`PhaseSpec.to_dict`, as
    ``latentebsd.plan.scan_phases`` gives them; ``None``: FCC nickel)."""
    import numba  # comes with PyEBSDIndex; its threads follow the job's

    numba.set_num_threads(max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS)))
    specs = None if phases is None else [spec_from_dict(p) for p in phases]
    index_scan(pattern_path, preprocessed_path, out_h5, out_ang, settings, source, rows=rows,
               phases=specs)


def gather_index(shard_paths: Sequence[str | os.PathLike], preprocessed_path: str | os.PathLike,
                 out_h5: str | os.PathLike, out_ang: str | os.PathLike | None) -> dict[str, np.ndarray]:
    """Index shard files of ``index_shard`` -> the scan's index ``.h5`` and ``.ang`` (rule
    ``gather_index``)."""
    geometry, _, _ = read_screen(preprocessed_path)
    shards = first_rows(shard_paths, h5_first_row)
    check_covers(shards, geometry.n_rows, str(out_h5))
    arrays, attrs = concatenate(shards, lambda p: read_index(p)[::2])
    attrs["n_indexed"] = int(np.count_nonzero(arrays["indexed"]))
    write_index(out_h5, arrays, geometry, attrs)
    if out_ang is not None:
        write_ang(out_ang, as_result(arrays), geometry, arrays["indexed"], phases_of(attrs))
    log.info("gathered %d index shards into %s", len(shards), out_h5)
    return arrays
