"""Users' own scans, as kikuchipy reads them: one end-to-end run per file format.

Every format kikuchipy reads goes through the functions the rules call - preprocess
(``run_preprocess_rule``) -> encode (``encode_scan``, an untrained model) -> decode
(``run_decode_rule``) -> index (``run_index_rule``, the preprocessed and the decoded
patterns) - as a user's scan configured with no more than its file lacks, on a file
kikuchipy ships under ``kikuchipy/data/`` or writes itself (nothing is downloaded). A
format whose shipped file cannot run end to end asserts the clear error the workflow
gives instead.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import save_untrained_model
from latentebsd.config import section
from latentebsd.decode import run_decode_rule
from latentebsd.encode import encode_scan
from latentebsd.index import run_index_rule
from latentebsd.io.cube import cube_attrs
from latentebsd.io.index import is_indexed, read_ang_geometry, read_index
from latentebsd.io.patterns import PatternFileError, PatternReader
from latentebsd.io.preprocessed import PreprocessedScan
from latentebsd.preprocess import geometry_from_config, run_preprocess_rule

kp = pytest.importorskip("kikuchipy")
DATA = Path(kp.__file__).parent / "data"
#: The Bruker PC of kikuchipy's real Ni map (kikuchipy.data.nickel_ebsd_small), for
#: formats that store none ...
NI_PC = [0.425, 0.213, 0.501]
#: ... as a config gives it: with its convention (a format's own would read it as TSL, ...)
BRUKER_PC = {"pc": NI_PC, "pc_convention": "bruker"}
D = 4  # latent features of the untrained model
EVALUATION = section("evaluation")
MAPS = section("maps")


def shipped(relative: str) -> Path:
    path = DATA / relative
    if not path.is_file():
        pytest.skip(f"kikuchipy {kp.__version__} does not ship {relative}")
    return path


def sha(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def file_pc(path: Path) -> np.ndarray:
    """The detector PC kikuchipy reads from ``path`` (Bruker), ``(n, 3)``."""
    return np.asarray(kp.load(path, lazy=True).detector.pc, dtype=float).reshape(-1, 3)


def run_scan(tmp: Path, name: str, path: Path, scan_cfg: dict, **preprocess) -> dict:
    """``path`` as the user's scan ``name`` through preprocess, encode, decode, index
    (outputs under ``tmp / "out"``)."""
    tmp = tmp / "out"
    tmp.mkdir(exist_ok=True)
    before = sha(path)
    scan_cfg = {"path": str(path), **scan_cfg}
    pre = run_preprocess_rule(name, str(path), None, str(tmp / f"{name}.h5"), scan_cfg,
                              section("preprocess", preprocess))
    assert sha(path) == before  # the raw file is only read
    with PreprocessedScan(pre) as scan:
        geometry, attrs, patterns = scan.geometry, scan.attrs, scan.read(0, scan.n_patterns)
    weights = save_untrained_model(tmp / f"{name}.pt", D, geometry.pattern_shape)
    cube = tmp / f"{name}.nc"
    encode_scan(pre, weights, cube, scan=name, variant="untrained", settings=MAPS,
                progress=False)
    decoded = tmp / f"{name}_decoded.up2"
    run_decode_rule(str(weights), str(cube), str(pre), str(decoded), EVALUATION)
    run_index_rule(str(pre), str(pre), str(tmp / f"{name}_orig.h5"),
                   str(tmp / f"{name}_orig.ang"), EVALUATION, "original")
    run_index_rule(str(decoded), str(pre), str(tmp / f"{name}_dec.h5"), None, EVALUATION,
                   "untrained")
    original, _, _ = read_index(tmp / f"{name}_orig.h5")
    from_decoded, _, _ = read_index(tmp / f"{name}_dec.h5")
    return {"pre": pre, "geometry": geometry, "attrs": attrs, "patterns": patterns,
            "cube": cube_attrs(cube), "decoded": PatternReader(decoded), "original": original,
            "from_decoded": from_decoded, "ang": tmp / f"{name}_orig.ang"}


def check_pipeline(run: dict, map_shape: tuple[int, int], pattern_shape: tuple[int, int],
                   step_um: float) -> None:
    """What every end-to-end run must show: the file's map and step at every stage, the
    patterns in [-1, 1], one latent vector, one decoded pattern and one index result
    per scan point."""
    g, n = run["geometry"], map_shape[0] * map_shape[1]
    assert g.map_shape == map_shape and g.pattern_shape == pattern_shape
    assert g.step_um == pytest.approx(step_um)
    pats = run["patterns"]
    assert pats.shape == (n, *pattern_shape) and np.isfinite(pats).all()
    assert pats.min() >= -1 - 1e-6 and pats.max() <= 1 + 1e-6 and pats.std() > 0.05
    cube = run["cube"]
    assert (cube["latent_dim"], cube["n_rows"], cube["n_cols"]) == (D, *map_shape)
    assert cube["step_um"] == pytest.approx(step_um)
    dec = run["decoded"]
    assert dec.map_shape == map_shape and dec.pattern_shape == pattern_shape
    assert dec.step_um == pytest.approx(step_um)
    for result in (run["original"], run["from_decoded"]):
        assert result["quat"].shape == (n, 4) and np.isfinite(result["quat"]).all()
        assert len(result["phase"]) == n and np.isfinite(result["iq_kp"]).all()


# -- kikuchipy h5ebsd ------------------------------------------------------------------
def test_kikuchipy_h5ebsd_real_ni_map_with_the_files_geometry_and_background(tmp_path):
    """kikuchipy's real 3 x 3 Ni map (its shipped h5ebsd, nickel_ebsd_small): no PC, tilt
    or step in the config. The geometry is the file's - one PC per pattern, equal to
    the header's pcx/pcy/pcz (Bruker) - the static background is the file's, and the
    workflow's Hough indexing finds the orientations the file stores (kikuchipy's
    dictionary indexing) for all 9 patterns."""
    path = shipped("kikuchipy_h5ebsd/patterns.h5")
    run = run_scan(tmp_path, "ni", path, {"binning": 1, "background": "static"})
    check_pipeline(run, (3, 3), (60, 60), 1.5)
    g = run["geometry"]
    with h5py.File(path) as f:
        header = f["Scan 1/EBSD/Header"]
        header_pc = np.stack([header[k][()].ravel() for k in ("pcx", "pcy", "pcz")], axis=1)
        static = header["static_background"][()]
    np.testing.assert_allclose(g.pc, header_pc)
    np.testing.assert_allclose(g.pc, file_pc(path))
    assert (g.sample_tilt, g.camera_tilt) == (70.0, 0.0)
    assert run["attrs"]["background"] == "static" and run["attrs"]["binning"] == 1
    with h5py.File(run["pre"]) as f:
        np.testing.assert_array_equal(f["background"][()], static.astype(np.float32))

    from latentebsd.orientations import pair_angles

    assert is_indexed(run["original"], EVALUATION["min_nmatch"]).all()
    stored = kp.data.nickel_ebsd_small().xmap.rotations.data
    assert np.all(pair_angles(run["original"]["quat"], stored) < 2.0)


def test_h5ebsd_written_by_kikuchipy_and_config_wins_over_the_file(tmp_path, caplog):
    """An h5ebsd file kikuchipy writes with its own detector (one PC, tilts 68 / 8, step
    2 um) gives the workflow exactly that geometry; a value in the config wins over the
    file's, key by key, and the log says where each came from."""
    s = kp.data.nickel_ebsd_small()
    s.detector.pc = [0.44, 0.22, 0.55]
    s.detector.sample_tilt, s.detector.tilt = 68.0, 8.0
    for axis in s.axes_manager.navigation_axes:
        axis.scale = 2.0
    path = tmp_path / "written.h5"
    s.save(path)

    with caplog.at_level(logging.INFO, logger="latentebsd.preprocess"):
        run = run_scan(tmp_path, "written", path, {"background": "static"}, binning=2)
    check_pipeline(run, (3, 3), (30, 30), 2.0)
    g = run["geometry"]
    np.testing.assert_allclose(g.pc, [0.44, 0.22, 0.55])
    assert (g.sample_tilt, g.camera_tilt) == (68.0, 8.0)
    assert run["attrs"]["binning"] == 2
    assert "from the file (kikuchipy_h5ebsd)" in caplog.text

    caplog.clear()
    reader = PatternReader(path)
    cfg = {"pc": [0.5, 0.7, 0.6], "pc_convention": "tsl", "sample_tilt": 70.0, "step_um": 0.5}
    with caplog.at_level(logging.INFO, logger="latentebsd.preprocess"):
        mixed = geometry_from_config("written", cfg, reader)
    from latentebsd.geometry import pc_to_bruker

    np.testing.assert_allclose(mixed.pc, pc_to_bruker(np.array(cfg["pc"]), "tsl", (60, 60)))
    assert (mixed.sample_tilt, mixed.camera_tilt, mixed.step_um) == (70.0, 8.0, 0.5)
    assert "from config (tsl)" in caplog.text and "camera tilt 8 from the file" in caplog.text


# -- NORDIF ----------------------------------------------------------------------------
def test_nordif_dat_needs_a_pc_and_uses_its_static_background(tmp_path):
    """NORDIF's Setting.txt has the tilts and step but no PC: without scans.<name>.pc the
    workflow stops naming that key (and writes nothing); with it the scan runs with the
    file's tilts, step and static background (the background acquisition pattern), and
    indexes all 9 real Ni patterns."""
    path = shipped("nordif/Pattern.dat")
    out = tmp_path / "nordif.h5"
    with pytest.raises(PatternFileError,
                       match=r"config key scans\.nordif\.pc: .*\(nordif\) stores no pattern centre"):
        run_preprocess_rule("nordif", str(path), None, str(out), {"path": str(path)},
                            section("preprocess", {"binning": 1}))
    assert not out.exists()

    run = run_scan(tmp_path, "nordif", path, {**BRUKER_PC, "background": "static"}, binning=1)
    check_pipeline(run, (3, 3), (60, 60), 1.5)
    g = run["geometry"]
    np.testing.assert_allclose(g.pc, NI_PC)
    assert (g.sample_tilt, g.camera_tilt) == (70.0, 0.0)
    # the file's working distance and the PC (EDAX convention) reach the .ang header
    assert g.working_distance_mm == pytest.approx(24.7)
    header = read_ang_geometry(run["ang"])
    assert header["WorkingDistance"] == pytest.approx(24.7)
    tsl = [header["x-star"], header["y-star"], header["z-star"]]
    np.testing.assert_allclose(
        kp.detectors.EBSDDetector(shape=g.pattern_shape, pc=tsl, convention="tsl").pc.reshape(3),
        NI_PC, atol=2e-6)
    with h5py.File(run["pre"]) as f:
        np.testing.assert_array_equal(
            f["background"][()],
            np.asarray(kp.load(path, lazy=True).static_background, np.float32))
    assert is_indexed(run["original"], EVALUATION["min_nmatch"]).all()


def test_pc_convention_is_required_unless_the_file_format_defines_it():
    """A config PC without ``pc_convention``: a NORDIF file defines no convention, so
    the error names ``scans.<name>.pc_convention`` (no silent Bruker default); an EDAX
    UP1 file defines TSL / EDAX, so the PC is read in it (the config's key still wins)."""
    nordif = PatternReader(shipped("nordif/Pattern.dat"))
    with pytest.raises(PatternFileError,
                       match=r"config key scans\.mine\.pc_convention: .*\(nordif\) defines none"):
        geometry_from_config("mine", {"pc": NI_PC}, nordif)

    up1 = PatternReader(shipped("edax_binary/edax_binary.up1"), nav_shape=(3, 3))
    cfg = {"pc": NI_PC, "step_um": 1.5, "sample_tilt": 70, "camera_tilt": 0}
    from latentebsd.geometry import pc_to_bruker

    g = geometry_from_config("up", cfg, up1)
    np.testing.assert_allclose(g.pc, pc_to_bruker(np.array(NI_PC), "tsl", up1.pattern_shape))
    g = geometry_from_config("up", {**cfg, "pc_convention": "bruker"}, up1)
    np.testing.assert_allclose(g.pc, NI_PC)


# -- EDAX ------------------------------------------------------------------------------
def test_edax_h5ebsd_placeholder_pc_is_an_error_and_the_config_pc_wins(tmp_path, caplog):
    """kikuchipy's EDAX h5ebsd dummy stores a zero pattern centre (TSL 0, 0, 0 -> Bruker
    0, 1, 0): not a PC indexing can use, so the workflow names scans.<name>.pc. With the
    PC in the config the scan runs, keeping the file's sample tilt (75.7) and step; it
    has no static background (a clear error), and its 9-point mean background warns."""
    path = shipped("edax_h5ebsd/patterns.h5")
    np.testing.assert_allclose(file_pc(path), [[0.0, 1.0, 0.0]])
    with pytest.raises(PatternFileError,
                       match=r"config key scans\.edax\.pc: .*PCz.*must be > 0.*set scans\.edax\.pc"):
        run_preprocess_rule("edax", str(path), None, str(tmp_path / "x.h5"), {"path": str(path)},
                            section("preprocess", {"binning": 1}))
    with pytest.raises(PatternFileError, match=r"config key scans\.edax\.background: static, "
                                               r"but .*\(edax_h5ebsd\) stores no static background"):
        run_preprocess_rule("edax", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path), **BRUKER_PC, "background": "static"},
                            section("preprocess", {"binning": 1}))
    assert not (tmp_path / "x.h5").exists()

    with caplog.at_level(logging.WARNING, logger="latentebsd.preprocess"):
        run = run_scan(tmp_path, "edax", path, BRUKER_PC, binning=1)
    assert "preprocess.background = mean on a map of only 9 patterns" in caplog.text
    check_pipeline(run, (3, 3), (60, 60), 1.5)
    g = run["geometry"]
    np.testing.assert_allclose(g.pc, NI_PC)
    assert g.sample_tilt == pytest.approx(75.7, abs=1e-4) and g.camera_tilt == 0.0
    assert run["attrs"]["background"] == "mean"


def test_edax_up1_needs_nav_shape_step_and_tilts_then_runs(tmp_path):
    """UP1 stores neither the map shape, the step nor the tilts: each missing key is
    named; with nav_shape, step_um, pc and both tilts in the config the shipped 3 x 3
    file runs end to end."""
    path = shipped("edax_binary/edax_binary.up1")
    with pytest.raises(PatternFileError, match=r"store no map shape: set nav_shape"):
        run_preprocess_rule("up1", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path), **BRUKER_PC}, section("preprocess", {"binning": 1}))
    with pytest.raises(PatternFileError, match=r"stores no step size .*scans\.up1\.step_um"):
        run_preprocess_rule("up1", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path), **BRUKER_PC, "nav_shape": [3, 3]},
                            section("preprocess", {"binning": 1}))
    cfg = {"path": str(path), **BRUKER_PC, "nav_shape": [3, 3], "step_um": 1.5}
    with pytest.raises(PatternFileError, match=r"config key scans\.up1\.sample_tilt: .* stores "
                                               r"no sample tilt and the config gives none"):
        run_preprocess_rule("up1", str(path), None, str(tmp_path / "x.h5"), cfg,
                            section("preprocess", {"binning": 1}))
    with pytest.raises(PatternFileError, match=r"config key scans\.up1\.camera_tilt: .*"
                                               r"\(edax_binary\) stores no camera tilt"):
        run_preprocess_rule("up1", str(path), None, str(tmp_path / "x.h5"),
                            {**cfg, "sample_tilt": 70}, section("preprocess", {"binning": 1}))
    assert not (tmp_path / "x.h5").exists()
    run = run_scan(tmp_path, "up1", path, {**BRUKER_PC, "nav_shape": [3, 3], "step_um": 1.5,
                                           "sample_tilt": 70, "camera_tilt": 0}, binning=2)
    check_pipeline(run, (3, 3), (30, 30), 1.5)
    assert (run["geometry"].sample_tilt, run["geometry"].camera_tilt) == (70.0, 0.0)


def test_edax_up2_dummy_is_a_hexagonal_grid():
    """kikuchipy's UP2 dummy is a hexagonal grid: the workflow refuses it by name."""
    path = shipped("edax_binary/edax_binary.up2")
    with pytest.raises(PatternFileError, match=r"hexagonal-grid scan; only square grids"):
        PatternReader(path)


# -- Bruker, Oxford --------------------------------------------------------------------
def test_bruker_h5ebsd_geometry_and_static_background_from_the_file(tmp_path):
    """A Bruker h5ebsd file as kikuchipy's own dummy writer makes it: PC (PCX, PCY, DD),
    tilts and static background come from the file. kikuchipy 0.13 reads the sample tilt
    under the wrong name (0); the workflow reads Bruker's SampleTilt (70)."""
    from kikuchipy.data._dummy_files.bruker_h5ebsd import create_dummy_bruker_h5ebsd_file

    path = tmp_path / "bruker.h5"
    create_dummy_bruker_h5ebsd_file(path)
    run = run_scan(tmp_path, "bruker", path, {"background": "static"}, binning=1)
    check_pipeline(run, (3, 3), (60, 60), 1.5)
    g = run["geometry"]
    with h5py.File(path) as f:
        data, header = f["Scan 0/EBSD/Data"], f["Scan 0/EBSD/Header"]
        bruker_pc = np.stack([data[k][()] for k in ("PCX", "PCY", "DD")], axis=1)
        sample_tilt = float(header["SampleTilt"][()])
    np.testing.assert_allclose(g.pc, bruker_pc[0])  # one PC for the whole map
    np.testing.assert_allclose(file_pc(path), bruker_pc)
    assert g.sample_tilt == sample_tilt == 70.0
    assert kp.load(path, lazy=True).detector.sample_tilt == 0.0  # what kikuchipy says
    assert run["attrs"]["background"] == "static"


def test_oxford_h5oina_pc_converted_to_bruker(tmp_path):
    """An H5OINA file from kikuchipy's dummy writer: its Oxford PC (1, 1, 1) is Bruker
    (1, 0, 1) for square patterns, its tilts (radians, detector Euler angle) become
    69.9 / 1.5 degrees, and its processed static background is used."""
    from kikuchipy.data._dummy_files.oxford_h5ebsd import create_dummy_oxford_h5ebsd_file

    path = tmp_path / "oxford.h5oina"
    create_dummy_oxford_h5ebsd_file(path)
    run = run_scan(tmp_path, "oxford", path, {"background": "static"}, binning=1)
    check_pipeline(run, (3, 3), (60, 60), 1.5)
    g = run["geometry"]
    with h5py.File(path) as f:
        data, header = f["1/EBSD/Data"], f["1/EBSD/Header"]
        x, y, z = (data[k][0] for k in ("Pattern Center X", "Pattern Center Y", "Detector Distance"))
        sample_tilt = np.rad2deg(header["Tilt Angle"][()])
        camera_tilt = np.rad2deg(header["Detector Orientation Euler"][1]) - 90
    np.testing.assert_allclose(g.pc, [x, 1 - y, z], atol=1e-6)
    np.testing.assert_allclose(g.pc, file_pc(path)[0])
    assert g.sample_tilt == pytest.approx(sample_tilt, abs=1e-4)
    assert g.camera_tilt == pytest.approx(camera_tilt, abs=1e-4)


def test_oxford_ebsp_stores_no_geometry(tmp_path, caplog):
    """Oxford's .ebsp holds patterns and beam positions only: the step comes from the
    file, the PC and both tilts must come from the config (each named when missing), and
    static is a clear error."""
    path = shipped("oxford_binary/patterns.ebsp")
    with pytest.raises(PatternFileError, match=r"config key scans\.ebsp\.pc: .*\(oxford_binary\)"):
        run_preprocess_rule("ebsp", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path)}, section("preprocess", {"binning": 1}))
    with pytest.raises(PatternFileError, match=r"config key preprocess\.background: static, but"):
        run_preprocess_rule("ebsp", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path), **BRUKER_PC, "sample_tilt": 70, "camera_tilt": 0},
                            section("preprocess", {"binning": 1, "background": "static"}))
    with pytest.raises(PatternFileError, match=r"config key scans\.ebsp\.camera_tilt: .*"
                                               r"\(oxford_binary\) stores no camera tilt"):
        run_preprocess_rule("ebsp", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path), **BRUKER_PC, "sample_tilt": 70},
                            section("preprocess", {"binning": 1}))
    with caplog.at_level(logging.INFO, logger="latentebsd.preprocess"):
        run = run_scan(tmp_path, "ebsp", path, {**BRUKER_PC, "sample_tilt": 70,
                                                "camera_tilt": 0}, binning=1)
    check_pipeline(run, (3, 3), (60, 60), 1.5)
    assert (run["geometry"].sample_tilt, run["geometry"].camera_tilt) == (70.0, 0.0)
    assert "sample tilt 70 from config; camera tilt 0 from config" in caplog.text


# -- EMsoft ----------------------------------------------------------------------------
def test_emsoft_single_pattern_pc_from_the_name_list(tmp_path):
    """EMsoft's test file: one simulated 480 x 640 Ni pattern. The map axes are in
    pixels, so scans.<name>.step_um is required (named); the PC is EMsoft's (xpc, ypc,
    L) converted to Bruker, checked here against the conversion written out, and the
    detector tilt is the name list's thetac. Binned by 8 to 60 x 80, no background (a
    one-pattern mean would be the pattern itself)."""
    path = shipped("emsoft_ebsd/EBSD_TEST_Ni.h5")
    with pytest.raises(PatternFileError, match=r"\(emsoft_ebsd\) stores no step size .*"
                                               r"scans\.emsoft\.step_um"):
        run_preprocess_rule("emsoft", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path)}, section("preprocess", {"binning": 8}))
    with pytest.raises(PatternFileError, match=r"config key scans\.emsoft\.sample_tilt: .*"
                                               r"\(emsoft_ebsd\) stores no sample tilt"):
        run_preprocess_rule("emsoft", str(path), None, str(tmp_path / "x.h5"),
                            {"path": str(path), "step_um": 1.0}, section("preprocess", {"binning": 8}))
    run = run_scan(tmp_path, "emsoft", path, {"step_um": 1.0, "background": "none",
                                              "sample_tilt": 70}, binning=8)
    check_pipeline(run, (1, 1), (60, 80), 1.0)
    assert run["attrs"]["background"] == "none"
    g = run["geometry"]
    with h5py.File(path) as f:
        nml = f["NMLparameters/EBSDNameList"]
        xpc, ypc, L, delta, thetac = (float(nml[k][()][0]) for k in ("xpc", "ypc", "L", "delta", "thetac"))
    ny, nx = 480, 640
    np.testing.assert_allclose(g.pc, [0.5 - xpc / nx, 0.5 - ypc / ny, L / (ny * delta)], rtol=1e-6)
    np.testing.assert_allclose(g.pc, file_pc(path)[0])
    assert g.camera_tilt == pytest.approx(thetac) and g.sample_tilt == 70.0
    # a one-point map's .ang (orix alone cannot write it): one point, a 1 x 1 header
    ang = (tmp_path / "out" / "emsoft_orig.ang").read_text().splitlines()
    assert [line for line in ang if not line.startswith("#")] and \
        len([line for line in ang if not line.startswith("#")]) == 1
    assert "# NCOLS_ODD: 1" in ang and "# NROWS: 1" in ang


@pytest.mark.parametrize("map_shape", [(1, 2), (3, 1), (2, 3)])
def test_ang_of_one_row_or_one_column_maps(tmp_path, map_shape):
    """orix writes maps of one row or column wrongly (or fails); write_ang pads and
    trims them so the .ang holds every point once, in order, with the map's shape."""
    from orix.quaternion import Rotation

    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.index import INDEX_DTYPE, write_ang

    n = map_shape[0] * map_shape[1]
    result = np.zeros(n, INDEX_DTYPE)
    result["quat"] = Rotation.from_axes_angles([0, 0, 1], np.linspace(0.1, 0.5, n)).data
    result["nmatch"], result["cm"] = 5, np.linspace(0.1, 0.9, n)
    write_ang(tmp_path / "m.ang", result, ScanGeometry(*map_shape, 1.0, (60, 60)))
    lines = (tmp_path / "m.ang").read_text().splitlines()
    data = np.array([line.split() for line in lines if not line.startswith("#")], float)
    assert f"# NCOLS_ODD: {map_shape[1]}" in lines and f"# NROWS: {map_shape[0]}" in lines
    rows, cols = np.divmod(np.arange(n), map_shape[1])
    np.testing.assert_allclose(data[:, 3], cols * 1.0)  # x
    np.testing.assert_allclose(data[:, 4], rows * 1.0)  # y
    np.testing.assert_allclose(data[:, 6], result["cm"], atol=1e-4)  # CI, in point order


def test_emsoft_dummy_of_blank_10_pixel_patterns_is_refused(tmp_path):
    """EMsoft's other dummy holds ten 10 x 10 patterns in one row, all zero: it cannot
    run end to end. Preprocessing names the blank patterns (and writes nothing), with
    blank_patterns: flag it says that nothing is left, and a 10 x 10 scan would be too
    small for the networks anyway (16 pixels a side at least), which the model the
    train stage builds says."""
    path = shipped("emsoft_ebsd/simulated_ebsd.h5")
    reader = PatternReader(path)
    assert reader.map_shape == (1, 10) and reader.pattern_shape == (10, 10)
    np.testing.assert_allclose(reader.stored_geometry["pc"], file_pc(path)[0])
    cfg = {"path": str(path), "step_um": 1.0, "background": "none", "sample_tilt": 70}
    with pytest.raises(PatternFileError, match=r"10 constant \(blank or all-zero\) pattern\(s\)"):
        run_preprocess_rule("tiny", str(path), None, str(tmp_path / "tiny.h5"), cfg,
                            section("preprocess", {"binning": 1}))
    with pytest.raises(PatternFileError, match=r"every pattern is constant; nothing to learn"):
        run_preprocess_rule("tiny", str(path), None, str(tmp_path / "tiny.h5"), cfg,
                            section("preprocess", {"binning": 1, "blank_patterns": "flag"}))
    assert not (tmp_path / "tiny.h5").exists()
    with pytest.raises(ValueError, match=r"pattern side 10 is too small"):
        save_untrained_model(tmp_path / "w.pt", D, (10, 10))


def test_single_pattern_h5ebsd_without_a_map_is_refused():
    """kikuchipy's patterns_nochunks.h5 holds one pattern with no map axes."""
    path = shipped("kikuchipy_h5ebsd/patterns_nochunks.h5")
    with pytest.raises(PatternFileError, match=r"expected a map of 2D patterns, got data of shape \(60, 60\)"):
        PatternReader(path)


def test_the_plan_stops_before_anything_runs_when_the_pc_or_a_tilt_is_missing(tmp_path):
    """The DAG is not even built for a user's scan whose file and config both lack the
    pattern centre or the camera tilt, or whose file has no static background that the
    config asks for: the same errors, naming the key, as rule preprocess."""
    import yaml

    from conftest import REPO
    from latentebsd.config import validate_config
    from latentebsd.plan import make_plan

    base = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    nordif, ebsp = shipped("nordif/Pattern.dat"), shipped("oxford_binary/patterns.ebsp")
    tilts = {"sample_tilt": 70, "camera_tilt": 0}
    for scans, message in (
            ({"mine": {"path": str(nordif), "phases": ["FCC"]}},
             r"config key scans\.mine\.pc: .* stores no pattern centre"),
            ({"mine": {"path": str(ebsp), **BRUKER_PC, "phases": ["FCC"], "sample_tilt": 70}},
             r"config key scans\.mine\.camera_tilt: .* stores no camera tilt"),
            ({"mine": {"path": str(ebsp), **BRUKER_PC, "background": "static", **tilts,
                       "phases": ["FCC"]}},
             r"config key scans\.mine\.background: static, but .* stores no static background")):
        config = validate_config({**base, "scans": scans})
        with pytest.raises(PatternFileError, match=message):
            make_plan(config)
    config = validate_config({**base, "scans": {"mine": {"path": str(nordif), **BRUKER_PC,
                                                          "background": "static",
                                                          "phases": ["FCC"]}}})
    assert make_plan(config).scans == ["mine"]
