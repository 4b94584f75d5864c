"""Pattern files: chunked reading of any scan kikuchipy reads, and UP2 writing.

Reading never loads a whole scan: EDAX UP1/UP2 files are read in row-major chunks
straight from disk (after their header has been checked against the file size), and
every other format goes through ``kikuchipy.load(lazy=True)`` whose dask array is
sliced one chunk at a time. UP2 files are written with PyEBSDIndex's ``UPFile``
(version-3 header) one chunk at a time, to a temporary name renamed on success.

Besides the patterns, a reader reports what the file itself stores about the scan
(:attr:`PatternReader.stored_geometry`, :attr:`PatternReader.static_background`,
:attr:`PatternReader.step_um`), so that a user's scan needs in the config only what its
file lacks. kikuchipy fills every detector it reads with defaults (PC 0.5, 0.5, 0.5,
sample tilt 70 or 0, tilt 0) where a file is silent, so a value counts as stored only
where the format is known to store it (:data:`STORED_GEOMETRY`) and the file has it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from latentebsd.io.atomic import atomic_path

log = logging.getLogger(__name__)

UP_SUFFIXES = {".up1": np.uint8, ".up2": np.uint16}

#: Geometry that each kikuchipy reader (plugin name) takes from the file: item ->
#: the ``original_metadata`` key whose presence shows that the file holds it, or
#: ``True`` where the format always holds it. ``pc`` is in Bruker convention (kikuchipy
#: converts), ``camera_tilt`` is kikuchipy's detector ``tilt``. Read from kikuchipy 0.13's
#: readers; formats not listed (Oxford ``.ebsp``, image directories) store no geometry,
#: and UP1/UP2 (read here, not by kikuchipy) only the step (UP2).
STORED_GEOMETRY: dict[str, dict[str, str | bool]] = {
    "kikuchipy_h5ebsd": {"pc": "pcx", "sample_tilt": "sample_tilt",
                         "camera_tilt": "elevation_angle"},
    "edax_h5ebsd": {"pc": "Pattern Center Calibration", "sample_tilt": "Sample Tilt",
                    "camera_tilt": "Camera Elevation Angle"},
    # PCX / PCY / DD sit in the data group, not in the header kikuchipy keeps
    "bruker_h5ebsd": {"pc": True, "sample_tilt": "SampleTilt", "camera_tilt": "CameraTilt"},
    "oxford_h5ebsd": {"pc": True, "sample_tilt": "Tilt Angle",
                      "camera_tilt": "Detector Orientation Euler"},
    # EMsoft's EBSD name list has the PC and the detector tilt, not the sample tilt
    "emsoft_ebsd": {"pc": True, "camera_tilt": True},
    # NORDIF's Setting.txt has the tilts and the step, not the PC
    "nordif": {"sample_tilt": "nordif_header", "camera_tilt": "nordif_header"},
}
#: The PC kikuchipy gives a detector when the file has none (Bruker convention).
KIKUCHIPY_PLACEHOLDER_PC = (0.5, 0.5, 0.5)
#: Navigation-axis units kikuchipy may report, in micrometres (others, e.g. EMsoft's
#: ``px``, are no step size).
_UNITS_UM = {"um": 1.0, "µm": 1.0, "μm": 1.0, "micron": 1.0, "microns": 1.0, "nm": 1e-3,
             "mm": 1e3}
_UP_HEADER_V3_BYTES = 42
#: Intensity range that decoded (and re-encoded) UP2 files map onto 0..65535: the
#: decoder's tanh range, the same for every scan and variant.
UP2_RANGE = (-1.0, 1.0)


class PatternFileError(ValueError):
    """A pattern file is missing, truncated, corrupt or inconsistent with its config."""


class PatternReader:
    """Chunked, read-only access to the patterns of one scan.

    Parameters
    ----------
    path
        A file ``kikuchipy.load`` reads (UP1/UP2, h5ebsd, H5OINA, NORDIF, ...).
    nav_shape
        ``(n_rows, n_cols)``. Required for UP1 (no map shape in the file); for other
        formats, if given, it must agree with the file.

    Attributes
    ----------
    n_patterns, pattern_shape, map_shape, dtype, step_um
        What the file holds. ``step_um`` is ``None`` when the file does not say (or
        gives the map axes in other units than a length, as EMsoft's ``px``).
    file_format
        The reader's name: ``edax_binary`` for UP1/UP2, else the kikuchipy reader
        (``kikuchipy_h5ebsd``, ``edax_h5ebsd``, ``nordif``, ...; ``None`` if unknown).
    stored_geometry
        What the file stores of the detector geometry: any of ``pc`` (Bruker
        convention, ``(3,)`` or one row per pattern ``(n_patterns, 3)``),
        ``sample_tilt`` and ``camera_tilt`` (degrees), only where the file holds them
        (:data:`STORED_GEOMETRY`; kikuchipy's placeholder PC does not count).
    static_background
        The background pattern the file stores (kikuchipy's ``static_background``:
        NORDIF, kikuchipy / Bruker / Oxford h5ebsd), as an array, or ``None``. Its
        shape is not checked here.
    """

    def __init__(self, path: str | os.PathLike, nav_shape: tuple[int, int] | None = None):
        self.path = Path(path)
        if not self.path.is_file():
            raise PatternFileError(f"{self.path}: pattern file not found")
        self.step_um: float | None = None
        self.file_format: str | None = None
        self.stored_geometry: dict[str, Any] = {}
        self.static_background: np.ndarray | None = None
        #: SEM working distance (mm) where the file states one (kikuchipy's metadata)
        self.working_distance_mm: float | None = None
        suffix = self.path.suffix.lower()
        if suffix in UP_SUFFIXES:
            self._open_up(UP_SUFFIXES[suffix], nav_shape)
        else:
            self._open_kikuchipy(nav_shape)
        if self.n_patterns == 0:
            raise PatternFileError(f"{self.path}: holds no patterns")

    # -- EDAX UP1/UP2 ---------------------------------------------------------------
    def _open_up(self, dtype: type, nav_shape: tuple[int, int] | None) -> None:
        size = self.path.stat().st_size
        if size < 16:
            raise PatternFileError(f"{self.path}: {size} bytes is too short for a UP header")
        with open(self.path, "rb") as f:
            version = int(np.fromfile(f, np.uint32, 1)[0])
            width, height, offset = (int(v) for v in np.fromfile(f, np.uint32, 3))
            n_cols = n_rows = 0
            if version >= 3:
                if size < _UP_HEADER_V3_BYTES:
                    raise PatternFileError(f"{self.path}: truncated version-{version} UP header")
                f.read(1)  # extra-patterns flag
                n_cols, n_rows = (int(v) for v in np.fromfile(f, np.uint32, 2))
                hexflag = int(np.fromfile(f, np.uint8, 1)[0])
                x_step, _ = (float(v) for v in np.fromfile(f, np.float64, 2))
                if hexflag:
                    raise PatternFileError(
                        f"{self.path}: hexagonal-grid scan; only square grids are supported"
                    )
                self.step_um = x_step if x_step > 0 else None
        if version not in (1, 3, 4, 5) or not (0 < width <= 4096 and 0 < height <= 4096):
            raise PatternFileError(
                f"{self.path}: not a valid UP file (version {version}, pattern "
                f"{width} x {height}); expected version 1 or >= 3 and a pattern size <= 4096"
            )
        if offset < 16 or offset > size:
            raise PatternFileError(f"{self.path}: corrupt header (data offset {offset})")
        itemsize = np.dtype(dtype).itemsize
        pattern_bytes = width * height * itemsize
        n_in_file, leftover = divmod(size - offset, pattern_bytes)
        if version >= 3 and n_rows * n_cols > 0:
            expected = n_rows * n_cols
            if n_in_file < expected:
                raise PatternFileError(
                    f"{self.path}: truncated: header says {n_rows} x {n_cols} = {expected} "
                    f"patterns of {height} x {width}, but the file holds only {n_in_file}"
                    f"{' and a partial one' if leftover else ''}"
                )
            map_shape = (n_rows, n_cols)
        else:
            if leftover:
                raise PatternFileError(
                    f"{self.path}: file size is not a whole number of {height} x {width} "
                    f"patterns ({leftover} bytes left over): truncated or wrong pattern size"
                )
            if nav_shape is None:
                raise PatternFileError(
                    f"{self.path}: UP1/version-1 files store no map shape: set nav_shape "
                    f"[n_rows, n_cols] for this scan in the config"
                )
            map_shape = (int(nav_shape[0]), int(nav_shape[1]))
            nav_shape = None  # the file cannot contradict it; the count is checked below
        if nav_shape is not None and tuple(nav_shape) != map_shape:
            raise PatternFileError(
                f"{self.path}: expected map shape {tuple(nav_shape)} (config nav_shape or "
                f"scan geometry) does not match the file's map shape {map_shape}"
            )
        n = map_shape[0] * map_shape[1]
        if n > n_in_file or (version < 3 and n != n_in_file):
            raise PatternFileError(
                f"{self.path}: map shape {map_shape} means {n} patterns, but the file holds "
                f"{n_in_file} of {height} x {width}"
            )
        self.map_shape = map_shape
        self.n_patterns = n
        self.pattern_shape = (height, width)
        self.dtype = np.dtype(dtype)
        self.file_format = "edax_binary"
        self._offset = offset
        self._dask = None

    # -- anything else kikuchipy reads -----------------------------------------------
    def _open_kikuchipy(self, nav_shape: tuple[int, int] | None) -> None:
        import kikuchipy as kp  # seconds to import: only for formats other than UP1/UP2

        try:
            signal = kp.load(self.path, lazy=True)
        except Exception as err:  # kikuchipy raises many types for unreadable files
            raise PatternFileError(f"{self.path}: kikuchipy could not read it: {err}") from err
        if isinstance(signal, list):
            raise PatternFileError(
                f"{self.path}: holds {len(signal)} scans; point the config at one"
            )
        data = signal.data
        if data.ndim not in (3, 4):
            raise PatternFileError(
                f"{self.path}: expected a map of 2D patterns, got data of shape {data.shape}"
            )
        file_map = tuple(int(v) for v in data.shape[:-2])
        file_map = file_map if len(file_map) == 2 else (1, file_map[0])
        if nav_shape is not None and tuple(nav_shape) != file_map:
            raise PatternFileError(
                f"{self.path}: expected map shape {tuple(nav_shape)} (config nav_shape or "
                f"scan geometry) does not match the file's map shape {file_map}"
            )
        self.map_shape = file_map
        self.n_patterns = file_map[0] * file_map[1]
        self.pattern_shape = (int(data.shape[-2]), int(data.shape[-1]))
        self.dtype = np.dtype(data.dtype)
        self._dask = data.reshape((self.n_patterns, *self.pattern_shape))
        self.step_um = _step_um(signal, self.path)
        self.file_format = _kikuchipy_reader_name(self.path)
        self.stored_geometry = _stored_geometry(signal, self.file_format, self.n_patterns)
        self.working_distance_mm = _working_distance(signal)
        background = getattr(signal, "static_background", None)
        if background is not None:
            self.static_background = np.asarray(background)

    def read(self, start: int, stop: int) -> np.ndarray:
        """Patterns ``start:stop`` (row-major) as an in-memory array ``(n, h, w)``."""
        if not 0 <= start <= stop <= self.n_patterns:
            raise IndexError(f"pattern range {start}:{stop} outside 0:{self.n_patterns}")
        if self._dask is not None:
            return np.asarray(self._dask[start:stop].compute())
        # Plain reads, not a memmap: mapped pages count towards the process's resident
        # memory and would make it grow with the scan.
        h, w = self.pattern_shape
        count = (stop - start) * h * w
        with open(self.path, "rb") as f:
            f.seek(self._offset + start * h * w * self.dtype.itemsize)
            data = np.fromfile(f, dtype=self.dtype, count=count)
        return data.reshape(stop - start, h, w)

    def chunks(self, chunk_size: int) -> Iterator[tuple[int, np.ndarray]]:
        """Yield ``(start, patterns)`` chunks of at most ``chunk_size`` patterns."""
        for start in range(0, self.n_patterns, chunk_size):
            yield start, self.read(start, min(start + chunk_size, self.n_patterns))


def _step_um(signal: Any, path: Path) -> float | None:
    """The map step of a kikuchipy signal in micrometres, or ``None``."""
    axes = list(getattr(signal.axes_manager, "navigation_axes", ()))
    if not axes:
        return None
    to_um = _UNITS_UM.get(str(axes[0].units).strip().lower())
    scale = float(axes[0].scale or 0.0)
    if to_um is None or scale <= 0:
        return None
    if len(axes) > 1 and not np.isclose(float(axes[1].scale), scale, rtol=1e-4):
        log.warning("%s: x step %g and y step %g %s differ; the workflow uses one step, %g",
                    path, scale, float(axes[1].scale), axes[0].units, scale)
    return scale * to_um


def _kikuchipy_reader_name(path: Path) -> str | None:
    """The kikuchipy reader that ``kikuchipy.load`` picks for ``path`` (its own choice:
    file extension, then the HDF5 footprints), or ``None``."""
    try:  # kikuchipy's plugin table is not public API: fall back to "unknown"
        import h5py
        from kikuchipy.io._io import PLUGINS, _plugin_from_footprints

        readers = [p for p in PLUGINS if path.suffix[1:].lower() in p["file_extensions"]]
        if len(readers) == 1:
            return str(readers[0]["name"])
        if len(readers) > 1 and h5py.is_hdf5(path):
            plugin = _plugin_from_footprints(str(path), plugins=readers)
            return None if plugin is None else str(plugin["name"])
    except (ImportError, AttributeError, KeyError, TypeError, OSError) as err:
        log.debug("%s: could not tell which kikuchipy reader reads it: %s", path, err)
    return None


def _working_distance(signal: Any) -> float | None:
    """The working distance (mm) kikuchipy read from the file, or ``None`` (absent, 0
    or not a number: several formats write 0 for unknown)."""
    try:
        wd = signal.metadata.get_item("Acquisition_instrument.SEM.working_distance")
        wd = float(np.asarray(wd).ravel()[0])
    except (AttributeError, TypeError, ValueError, IndexError):
        return None
    return wd if np.isfinite(wd) and wd > 0 else None


def _stored_geometry(signal: Any, file_format: str | None, n_patterns: int) -> dict[str, Any]:
    """What a kikuchipy signal's file stores of its detector (see :data:`STORED_GEOMETRY`)."""
    table = STORED_GEOMETRY.get(file_format or "", {})
    if not table:
        return {}
    try:
        original = signal.original_metadata.as_dictionary()
    except AttributeError:
        original = {}
    detector = signal.detector

    def held(item: str) -> bool:
        key = table.get(item, False)
        return key is True or (isinstance(key, str) and key in original)

    out: dict[str, Any] = {}
    if held("pc"):
        pc = np.asarray(detector.pc, dtype=np.float64).reshape(-1, 3)
        if not np.all(pc == np.asarray(KIKUCHIPY_PLACEHOLDER_PC)):
            if len(pc) == 1 or np.all(pc == pc[0]):
                out["pc"] = pc[0].copy()
            elif len(pc) == n_patterns:
                out["pc"] = pc
            else:
                log.warning("%s file: %d pattern centres for %d patterns; using their mean",
                            file_format, len(pc), n_patterns)
                out["pc"] = pc.mean(axis=0)
    if held("sample_tilt"):
        if file_format == "bruker_h5ebsd":
            # kikuchipy 0.13 looks for "Sample Tilt"; Bruker writes "SampleTilt"
            out["sample_tilt"] = float(np.asarray(original["SampleTilt"]).ravel()[0])
        else:
            out["sample_tilt"] = float(detector.sample_tilt)
    if held("camera_tilt"):
        out["camera_tilt"] = float(detector.tilt)
    return out


def write_up2(
    path: str | os.PathLike,
    chunks: Iterable[np.ndarray],
    map_shape: tuple[int, int],
    pattern_shape: tuple[int, int],
    step_um: float,
) -> Path:
    """Write 16-bit patterns to an EDAX UP2 file (version-3 header), chunk by chunk.

    Parameters
    ----------
    path
        Output ``.up2`` path; written to a temporary sibling, renamed when complete.
    chunks
        Iterable of ``uint16`` arrays ``(n_i, h, w)`` in row-major map order. The caller
        scales to ``uint16`` once for the whole scan: PyEBSDIndex's own float
        conversion rescales every chunk by its own maximum.
    map_shape
        ``(n_rows, n_cols)``; the chunks must add up to ``n_rows * n_cols`` patterns.
    pattern_shape
        ``(height, width)``.
    step_um
        Step size stored as both x and y step.

    Returns
    -------
    Path
        ``path``.
    """
    # PyEBSDIndex's import compiles/loads numba code (seconds): only writers pay it
    from pyebsdindex import ebsd_pattern

    path = Path(path)
    if path.suffix.lower() != ".up2":
        raise ValueError(f"{path}: a UP2 file name must end in .up2")
    n_rows, n_cols = (int(v) for v in map_shape)
    height, width = (int(v) for v in pattern_shape)
    n_total = n_rows * n_cols
    with atomic_path(path) as tmp:
        up = ebsd_pattern.UPFile(str(tmp))
        up.version = 3
        up.filedatatype = np.uint16
        up.patternW, up.patternH = width, height
        up.filePos = _UP_HEADER_V3_BYTES
        up.extraPatterns = 0
        up.hexflag = 0
        up.xStep = up.yStep = float(step_um)
        up.set_scan_rc((n_rows, n_cols))
        up.write_header(writeBlank=False)
        written = 0
        for chunk in chunks:
            chunk = np.asarray(chunk)
            if chunk.dtype != np.uint16:
                raise TypeError(f"UP2 chunks must be uint16, got {chunk.dtype}")
            if chunk.ndim != 3 or chunk.shape[1:] != (height, width):
                raise ValueError(
                    f"chunk of shape {chunk.shape} does not hold {height} x {width} patterns"
                )
            if written + len(chunk) > n_total:
                raise ValueError(f"more than {n_total} patterns given for a {map_shape} map")
            up.write_data(newpatterns=chunk, patStartCount=[written, len(chunk)])
            written += len(chunk)
        if written != n_total:
            raise ValueError(f"{written} patterns given for a {n_rows} x {n_cols} map")
        expected_size = _UP_HEADER_V3_BYTES + n_total * height * width * 2
        if tmp.stat().st_size != expected_size:
            raise OSError(f"{tmp}: wrote {tmp.stat().st_size} bytes, expected {expected_size}")
    return path


def to_uint16(patterns: np.ndarray, lo: float = UP2_RANGE[0], hi: float = UP2_RANGE[1]) -> np.ndarray:
    """Map ``[lo, hi]`` linearly onto the full ``uint16`` range (one scale for a scan)."""
    if hi <= lo:
        raise ValueError(f"empty intensity range [{lo}, {hi}]")
    scaled = (np.asarray(patterns, dtype=np.float64) - lo) * (65535.0 / (hi - lo))
    return np.clip(np.rint(scaled), 0, 65535).astype(np.uint16)


def from_uint16(patterns: np.ndarray, lo: float = UP2_RANGE[0],
                hi: float = UP2_RANGE[1]) -> np.ndarray:
    """Inverse of :func:`to_uint16`: ``uint16`` back to ``[lo, hi]`` float32."""
    if hi <= lo:
        raise ValueError(f"empty intensity range [{lo}, {hi}]")
    scale = (hi - lo) / 65535.0
    return (np.asarray(patterns, dtype=np.float32) * np.float32(scale) + np.float32(lo))
