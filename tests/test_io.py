"""UP2 writing and chunked reading, checked against kikuchipy's and PyEBSDIndex's readers."""

from __future__ import annotations

import numpy as np
import pytest
from pyebsdindex import ebsd_pattern

from latentebsd.io.patterns import PatternFileError, PatternReader, to_uint16, write_up2


def test_up2_round_trip_through_kikuchipy_and_pyebsdindex(tiny_scan):
    import kikuchipy as kp

    patterns, path = tiny_scan["patterns"], tiny_scan["path"]
    signal = kp.load(path)
    assert signal.data.shape == (5, 7, 24, 24)
    np.testing.assert_array_equal(signal.data.reshape(35, 24, 24), patterns)
    assert signal.axes_manager["x"].scale == pytest.approx(0.5)

    up = ebsd_pattern.get_pattern_file_obj(str(path))
    up.read_header()
    assert (int(up.nRows), int(up.nCols)) == (5, 7)
    data = up.read_data(patStartCount=[0, -1], returnArrayOnly=True)
    data = data[0] if isinstance(data, tuple) else data
    np.testing.assert_array_equal(data, patterns)


def test_reader_chunks_equal_whole_file(tiny_scan):
    reader = PatternReader(tiny_scan["path"])
    assert reader.map_shape == (5, 7) and reader.pattern_shape == (24, 24)
    assert reader.step_um == pytest.approx(0.5)
    got = np.concatenate([chunk for _, chunk in reader.chunks(4)])
    np.testing.assert_array_equal(got, tiny_scan["patterns"])


def test_reader_reads_h5ebsd_lazily(tmp_path, tiny_scan):
    import kikuchipy as kp

    kp.signals.EBSD(tiny_scan["patterns"].reshape(5, 7, 24, 24)).save(tmp_path / "s.h5")
    reader = PatternReader(tmp_path / "s.h5")
    assert reader.map_shape == (5, 7)
    np.testing.assert_array_equal(reader.read(3, 11), tiny_scan["patterns"][3:11])


def test_write_up2_rejects_wrong_count_and_leaves_nothing(tmp_path):
    pats = np.zeros((5, 8, 8), np.uint16)
    with pytest.raises(ValueError, match="5 patterns given for a 2 x 3 map"):
        write_up2(tmp_path / "x.up2", [pats], (2, 3), (8, 8), 1.0)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(TypeError, match="uint16"):
        write_up2(tmp_path / "x.up2", [pats.astype(np.float32)], (1, 5), (8, 8), 1.0)
    assert list(tmp_path.iterdir()) == []


def test_missing_file_is_named(tmp_path):
    with pytest.raises(PatternFileError, match=r"nope\.up2: pattern file not found"):
        PatternReader(tmp_path / "nope.up2")


def test_truncated_up2_is_reported(tmp_path, tiny_scan):
    data = tiny_scan["path"].read_bytes()
    cut = tmp_path / "cut.up2"
    cut.write_bytes(data[: len(data) - 24 * 24 * 2 * 3 - 100])
    with pytest.raises(PatternFileError, match=r"cut\.up2: truncated: header says 5 x 7 = 35"):
        PatternReader(cut)


def test_corrupt_up2_header_is_reported(tmp_path):
    bad = tmp_path / "bad.up2"
    bad.write_bytes(np.array([7, 0, 0, 42], np.uint32).tobytes() + b"\0" * 200)
    with pytest.raises(PatternFileError, match=r"bad\.up2: not a valid UP file"):
        PatternReader(bad)


def test_map_shape_that_does_not_match_pattern_count(tiny_scan):
    with pytest.raises(PatternFileError, match=r"expected map shape \(6, 7\).*\(5, 7\)"):
        PatternReader(tiny_scan["path"], nav_shape=(6, 7))


def test_up1_needs_nav_shape_and_checks_count(tmp_path):
    pats = np.arange(6 * 4 * 4, dtype=np.uint8).reshape(6, 4, 4)
    path = tmp_path / "old.up1"
    path.write_bytes(np.array([1, 4, 4, 16], np.uint32).tobytes() + pats.tobytes())
    with pytest.raises(PatternFileError, match="set nav_shape"):
        PatternReader(path)
    with pytest.raises(PatternFileError, match=r"map shape \(2, 2\) means 4 patterns.*holds 6"):
        PatternReader(path, nav_shape=(2, 2))
    np.testing.assert_array_equal(PatternReader(path, nav_shape=(2, 3)).read(0, 6), pats)


def test_to_uint16_uses_one_scale():
    x = np.array([[[0.0, 0.5]], [[0.25, 1.0]]])
    np.testing.assert_array_equal(to_uint16(x, 0.0, 1.0).ravel(), [0, 32768, 16384, 65535])


@pytest.mark.parametrize("map_shape", [(3, 4), (1, 5)])
def test_ang_header_holds_the_pattern_centre_in_edax_convention(tmp_path, map_shape):
    """The ``.ang`` header states the scan's PC in EDAX / TSL convention (not orix's
    zeros) and the working distance when given; orix still reads the file, and the
    header's PC converted back by kikuchipy is the scan's Bruker PC (a non-square
    detector, where TSL's y* is not simply 1 - PCy)."""
    import orix.io
    from kikuchipy.detectors import EBSDDetector

    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.index import INDEX_DTYPE, read_ang_geometry, write_ang

    n = map_shape[0] * map_shape[1]
    result = np.zeros(n, dtype=INDEX_DTYPE)
    result["quat"] = [1.0, 0.0, 0.0, 0.0]
    result["nmatch"], result["cm"], result["pq"] = 7, 0.5, 100.0
    bruker = np.array([0.42, 0.21, 0.50])
    geometry = ScanGeometry(*map_shape, 1.5, (60, 80), bruker)
    path = tmp_path / "scan.ang"
    write_ang(path, result, geometry, np.ones(n, bool), working_distance_mm=15.2)

    header = read_ang_geometry(path)
    tsl = [header["x-star"], header["y-star"], header["z-star"]]
    assert min(tsl) > 0 and header["WorkingDistance"] == pytest.approx(15.2)
    back = EBSDDetector(shape=(60, 80), pc=tsl, convention="tsl").pc.reshape(3)
    np.testing.assert_allclose(back, bruker, atol=2e-6)
    xmap = orix.io.load(path)
    assert xmap.size == n and xmap.phases_in_data.size == 1  # orix: (1, 5) reads as (5,)

    write_ang(path, result, geometry)  # working distance unknown: orix's 0 stays
    assert read_ang_geometry(path)["WorkingDistance"] == 0.0
