"""Decode -> UP2 -> Hough re-index -> per-pattern metrics -> Table 1 (latentebsd.decode,
.index, .metrics, .table1).

One small simulated scan (6 x 8 points, 60 x 60 patterns) is simulated, preprocessed
and indexed once per module; an identity "decoder" (latent = the pattern's pixels)
sends it through the real decode / UP2 / index chain.
"""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from latentebsd.config import ConfigError, section
from latentebsd.decode import decode_scan
from latentebsd.index import image_quality, index_scan, pattern_sharpness, sharpness
from latentebsd.io.cube import write_cube
from latentebsd.io.index import read_index
from latentebsd.io.metrics import METRICS, read_metrics
from latentebsd.io.patterns import UP2_RANGE, from_uint16, to_uint16
from latentebsd.io.preprocessed import read_screen
from latentebsd.metrics import pattern_metrics, run_metrics_rule
from latentebsd.orientations import pair_angles as misorientation_deg
from latentebsd.table1 import PAPER_TABLE1, run_table_rule, table1, table1_markdown

MAP = (6, 8)
SHAPE = (60, 60)
EVALUATION = section("evaluation")


class IdentityDecoder(torch.nn.Module):
    """Latent vector = the pattern's pixels; decoding reshapes them back."""

    def __init__(self, shape: tuple[int, int]) -> None:
        super().__init__()
        self.pattern_shape = shape
        self.latent_dim = shape[0] * shape[1]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return z.reshape(len(z), 1, *self.pattern_shape)


def write_latent_cube(path, mean: np.ndarray, step_um: float = 0.5) -> None:
    """A latent cube in the encode stage's format (``(feature, y, x)``)."""
    write_cube(path, mean, step_um=step_um, scan="s", variant="identity", data_reduction_factor=1.0)


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    """A preprocessed simulated scan, indexed once: paths and arrays."""
    from latentebsd.io.truth import read_truth
    from latentebsd.preprocess import preprocess_scan
    from latentebsd.simulate import simulate_scan

    d = tmp_path_factory.mktemp("evaluate")
    # an ideal detector: with the calibrated band blur, 16-bit quantisation moved one of
    # 181 counted Fourier coefficients of a softer pattern across the sharpness threshold
    # (ratio 0.9945, measured), and these tests pin the decode path to quantisation level
    simulate_scan(d / "s.up2", d / "s_truth.h5", "wrought", MAP,
                  section("simulation", {"pattern_shape": list(SHAPE), "chunk_size": 48,
                                         "wrought": {"grain_size": 4.0},
                                         "imperfections": {"pc_jitter": 0.0, "band_blur": 0.0}}),
                  3, progress=False)
    _, geometry, _ = read_truth(d / "s_truth.h5")
    preprocess_scan(d / "s.up2", d / "s.h5", geometry, section("preprocess", {"binning": 1}),
                    progress=False)
    original = index_scan(d / "s.h5", d / "s.h5", d / "orig.h5", d / "orig.ang", EVALUATION,
                          "original", progress=False)
    with h5py.File(d / "s.h5", "r") as f:
        patterns = f["patterns"][()]
    return {"dir": d, "pre": d / "s.h5", "orig_h5": d / "orig.h5", "orig_ang": d / "orig.ang",
            "original": original, "patterns": patterns}


@pytest.fixture(scope="module")
def decoded(scan):
    """The scan through an identity decoder: latent cube -> UP2 -> index."""
    d = scan["dir"]
    geometry, mask, _ = read_screen(scan["pre"])
    cube = scan["patterns"].reshape(*MAP, -1).transpose(2, 0, 1)
    write_latent_cube(d / "identity.nc", cube)
    # chunk_size 20 -> blocks of 2 map rows: several blocks, the last one partial
    decode_scan(d / "identity.nc", IdentityDecoder(SHAPE), d / "identity.up2", geometry, mask,
                section("evaluation", {"chunk_size": 20, "decode_batch_size": 7}), progress=False)
    arrays = index_scan(d / "identity.up2", scan["pre"], d / "identity.h5", None, EVALUATION,
                        "identity", progress=False)
    return {"up2": d / "identity.up2", "h5": d / "identity.h5", "arrays": arrays,
            "mask": mask, "geometry": geometry}


# -- settings --------------------------------------------------------------------------
def test_settings_defaults_and_errors_name_the_key():
    cfg = EVALUATION
    assert cfg["hough"]["nTheta"] == 180 and cfg["min_nmatch"] == 5 and cfg["controls"]["patterns"] == 512
    assert cfg["sharpness"] == {"part": "real", "divisor": 2500.0, "intensity": "up2"}
    cfg = section("evaluation", {"kam": {"neighbours": 8}, "panel_region": [0, 4, 2, 6]})
    assert cfg["kam"] == {"threshold_deg": 5.0, "neighbours": 8}
    for bad, key in [({"bogus": 1}, "evaluation.bogus"),
                     ({"kam": {"radius": 2}}, "evaluation.kam.radius"),
                     ({"kam": {"neighbours": 6}}, "evaluation.kam.neighbours"),
                     ({"hough": {"vendor": "EDAX"}}, "evaluation.hough.vendor"),
                     ({"sharpness": {"part": "imag"}}, "evaluation.sharpness.part"),
                     ({"sharpness": {"intensity": "raw"}}, "evaluation.sharpness.intensity"),
                     ({"agree_deg": 0}, "evaluation.agree_deg"),
                     ({"quantiles": [0.1, 1.5]}, "evaluation.quantiles.1"),
                     ({"panel_region": [4, 2, 0, 3]}, "evaluation.panel_region"),
                     ({"chunk_size": 0}, "evaluation.chunk_size")]:
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            section("evaluation", bad)


# -- per-pattern quality -----------------------------------------------------------------
def test_sharpness_falls_when_a_pattern_is_blurred(scan):
    from scipy.ndimage import gaussian_filter

    p = scan["patterns"][:4].astype(np.float64)
    blurred = np.stack([gaussian_filter(x, 1.5) for x in p])
    for part in ("real", "abs"):
        s, sb = sharpness(p, part), sharpness(blurred, part)
        assert np.all(sb < 0.8 * s), (part, s, sb)
        # a threshold relative to max|F| makes it independent of the intensity scale
        np.testing.assert_allclose(sharpness(3.0 * p, part), s)
    # as the workflow measures it: on the UP2 intensity scale (p + 1)
    up2 = EVALUATION["sharpness"]
    assert np.all(pattern_sharpness(blurred, up2) < 0.8 * pattern_sharpness(p, up2))
    np.testing.assert_allclose(pattern_sharpness(p, up2), sharpness(p + 1.0))
    np.testing.assert_allclose(pattern_sharpness(p, {**up2, "intensity": "signed"}), sharpness(p))
    # (Krieger Lassen IQ is no blur measure: smoothing away noise raises it)
    assert sharpness(np.zeros(SHAPE)) == 0.0
    assert np.isnan(image_quality(np.ones((1, *SHAPE)))[0])
    # a blank disc after the 16-bit round trip: constant up to float32 rounding, which
    # kikuchipy normalises to zeros and then divides by (CI's ZeroDivisionError)
    level = np.float32(from_uint16(to_uint16(np.float32([0.1234567]), *UP2_RANGE))[0])
    flat = np.full((2, *SHAPE), level, dtype=np.float32)
    flat[1, 0, 0] = np.nextafter(level, np.float32(1))
    assert np.isnan(image_quality(flat)).all()


def test_paper_sharpness_definition_by_hand():
    rng = np.random.default_rng(0)
    p = rng.normal(size=(8, 10))
    f = np.fft.fftshift(np.fft.fft2(p).real)
    expected = np.count_nonzero(f > np.abs(f).max() / 2500) / p.size
    assert sharpness(p) == pytest.approx(expected)
    f_abs = np.abs(np.fft.fft2(p))
    assert sharpness(p, "abs", 10) == pytest.approx(np.count_nonzero(f_abs > f_abs.max() / 10) / p.size)


# -- identity ----------------------------------------------------------------------------
def test_identity_metrics_are_exactly_one(scan):
    a = scan["original"]
    # 48 patterns of a few grains: their mean (the background) keeps some of their
    # bands, so not every pattern shows 5 clear bands
    assert a["indexed"].mean() > 0.8
    m = pattern_metrics(a, a)
    assert np.array_equal(m["indexed"], a["indexed"])
    for key in ("ci_ratio", "iq_pq_ratio", "iq_kp_ratio", "sharpness_ratio"):
        finite = m[key][np.isfinite(m[key])]
        assert finite.size > 0.9 * len(finite) and np.all(finite == 1.0), key
    assert np.nanmax(m["misorientation_deg"]) < 1e-3


def test_identity_decoder_through_up2_and_indexing(scan, decoded):
    a, b = scan["original"], decoded["arrays"]
    m = pattern_metrics(a, b)
    ok = m["indexed_original"]
    # 16-bit quantisation is the only difference: everything indexed stays indexed
    assert m["indexed"][ok].all()
    for key in ("ci_ratio", "iq_pq_ratio", "iq_kp_ratio"):
        np.testing.assert_allclose(m[key][ok], 1.0, atol=2e-3, err_msg=key)
    # sharpness counts Fourier coefficients of the screen window: quantisation may move
    # one across the threshold (1 of the few hundred counted in this small window)
    np.testing.assert_allclose(m["sharpness_ratio"][ok], 1.0, atol=5e-3, err_msg="sharpness_ratio")
    # quantisation may flip an ambiguous 3-band solution; the rest agree to < 0.01 deg
    assert np.mean(m["misorientation_deg"][ok] < 0.01) >= 0.95


def test_decoded_up2_round_trip(scan, decoded):
    import kikuchipy as kp
    from pyebsdindex import ebsd_pattern

    mask = decoded["mask"]
    expected = to_uint16(np.where(mask, scan["patterns"], 0.0), *UP2_RANGE)
    s = kp.load(decoded["up2"])
    assert s.data.shape == (*MAP, *SHAPE) and s.data.dtype == np.uint16
    np.testing.assert_array_equal(s.data.reshape(-1, *SHAPE), expected)
    assert s.axes_manager.navigation_axes[0].scale == pytest.approx(0.5)
    f = ebsd_pattern.get_pattern_file_obj(str(decoded["up2"]))
    f.read_header()
    assert (f.nRows, f.nCols) == MAP
    pats, _ = f.read_data(patStartCount=[0, MAP[0] * MAP[1]], returnArrayOnly=True)
    np.testing.assert_array_equal(pats, expected)
    back = from_uint16(expected)
    assert np.abs(back - np.where(mask, scan["patterns"], 0.0)).max() <= 1.0 / 65535 + 1e-6


def test_decode_rejects_a_mismatched_cube(scan, decoded, tmp_path):
    cube = np.zeros((SHAPE[0] * SHAPE[1], 3, 8), np.float32)
    write_latent_cube(tmp_path / "small.nc", cube)
    with pytest.raises(ValueError, match="does not match"):
        decode_scan(tmp_path / "small.nc", IdentityDecoder(SHAPE), tmp_path / "x.up2",
                    decoded["geometry"], decoded["mask"], progress=False)
    assert not (tmp_path / "x.up2").exists()


def test_index_outputs_h5_and_ang(scan):
    import orix.io

    arrays, geometry, attrs = read_index(scan["orig_h5"])
    assert attrs["source"] == "original" and geometry.map_shape == MAP
    for key in ("quat", "pq", "cm", "fit", "nmatch", "phase", "iq_kp", "sharpness", "valid"):
        assert len(arrays[key]) == MAP[0] * MAP[1], key
    xmap = orix.io.load(scan["orig_ang"])
    assert xmap.shape == MAP
    ok = arrays["indexed"]
    ang = xmap.rotations.data.reshape(-1, 4)
    # .ang stores Euler angles with 5 decimals in radians
    assert np.all(misorientation_deg(ang[ok], arrays["quat"][ok]) < 0.01)
    assert np.all(xmap.prop["ci"][~ok] == -1)


# -- a known rotation --------------------------------------------------------------------
def test_known_rotation_gives_that_misorientation(tmp_path):
    from orix.quaternion import Rotation

    from latentebsd.geometry import ScanGeometry
    from latentebsd.index import build_indexer, index_patterns
    from latentebsd.simulate import project_patterns, screen_mask

    settings = section("simulation", {"pattern_shape": list(SHAPE)})
    g = Rotation.from_axes_angles([1, 2, 3], 35, degrees=True)
    turn = Rotation.from_axes_angles([2, -1, 1], 3.0, degrees=True)
    q = np.concatenate([g.data, (turn * g).data])
    pc = np.array([0.5, 0.3, 0.6])
    geometry = ScanGeometry(1, 2, 1.0, SHAPE, pc, settings["sample_tilt"], settings["camera_tilt"])
    p = project_patterns(q, np.tile(pc, (2, 1)), settings)
    mask = screen_mask(SHAPE, 0.95)
    p = np.where(mask, p / np.abs(p[:, mask]).max(), 0).astype(np.float32)
    r = index_patterns(p, geometry, indexer=build_indexer(geometry, patternmask=mask))
    fields = {k: r[k] for k in r.dtype.names}
    fields["iq_kp"], fields["sharpness"] = image_quality(p), sharpness(p)
    first = {k: v[:1] for k, v in fields.items()}
    second = {k: v[1:] for k, v in fields.items()}
    m = pattern_metrics(first, second)
    assert m["indexed"].all() and m["indexed_original"].all()
    assert m["misorientation_deg"][0] == pytest.approx(3.0, abs=0.3)
    assert pattern_metrics(first, first)["misorientation_deg"][0] == pytest.approx(0.0, abs=1e-4)


# -- Table 1 ---------------------------------------------------------------------------
def _fake_metrics(n: int, value: float, indexed: float, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    m = {k: np.full(n, value) for k in METRICS}
    m["misorientation_deg"] = rng.uniform(0, 1, n)
    m["indexed"] = np.arange(n) < indexed * n
    m["indexed_original"] = np.ones(n, bool)
    m["valid"] = np.ones(n, bool)
    m["valid"][-1] = False  # left out of everything
    m["ci_ratio"][0] = np.nan  # undefined ratio: not a quantile input
    return m


def test_table1_pools_scans_and_shows_the_paper():
    variants = {"vae16": {"loss": "vae", "latent_dim": 16},
                "betavae50": {"loss": "beta_vae", "latent_dim": 128, "beta": 50},
                "vae8": {"loss": "vae", "latent_dim": 8}}
    metrics = {"vae16": [_fake_metrics(11, 0.5, 0.5), _fake_metrics(11, 0.5, 1.0, 1)],
               "betavae50": [_fake_metrics(11, 2.0, 1.0)],
               "vae8": [_fake_metrics(11, 1.0, 1.0)]}
    frame = table1(metrics, variants)
    assert list(frame["variant"]) == ["original", "vae16", "betavae50", "vae8"]
    row = frame.set_index("variant").loc["vae16"]
    assert row["n_patterns"] == 20 and row["Indexed"] == 80.0
    assert row["Indexed and agreeing"] == 80.0  # misorientations all < 1 deg
    assert table1(metrics, variants, section("evaluation", {"agree_deg": 0.5})).set_index("variant").loc[
        "vae16", "Indexed and agreeing"] < 60.0
    assert row["CI ratio (PyEBSDIndex cm)"] == "0.50/0.50/0.50" and row["ci_ratio_n"] == 18
    assert row["Paper indexed"] == "95.3 %"
    assert row["Paper CI ratio (PyEBSDIndex cm)"] == PAPER_TABLE1[("vae", 16, 1.0)]["ci_ratio"]
    beta = frame.set_index("variant").loc["betavae50"]
    assert beta["Loss"] == "beta-VAE (50)" and beta["Paper indexed"] == "39.2 %"
    assert frame.set_index("variant").loc["vae8"]["Paper indexed"] == ""
    md = table1_markdown(frame)
    assert "| VAE | 16 | ours | 80.0 % |" in md and "0.00/0.06/0.42" in md
    assert "M / 2500" in md
    with pytest.raises(ValueError, match="not in models.variants"):
        table1({"other": metrics["vae16"]}, variants)


def test_metrics_and_table_rules_on_real_index_files(scan, decoded, tmp_path):
    out = tmp_path / "m.h5"
    run_metrics_rule(str(scan["orig_h5"]), str(decoded["h5"]), str(out), EVALUATION, "identity", "s")
    m, attrs = read_metrics(out)
    assert attrs["variant"] == "identity" and len(m["row"]) == MAP[0] * MAP[1]
    frame = run_table_rule({"identity": [str(out)]},
                           {"identity": {"loss": "vae", "latent_dim": SHAPE[0] * SHAPE[1]}}, EVALUATION,
                           str(tmp_path / "t.csv"), str(tmp_path / "t.md"), str(tmp_path / "t.html"))
    row = frame.set_index("variant").loc["identity"]
    assert row["Indexed"] >= 80.0  # the originals' share (see test_identity_metrics_are_exactly_one)
    assert row["IQ ratio (PyEBSDIndex pq)"] == "1.00/1.00/1.00"
    assert "<table>" in (tmp_path / "t.html").read_text()
    assert (tmp_path / "t.csv").read_text().startswith("variant,")


def test_misorientation_in_chunks_equals_one_call_and_respects_m3m():
    from orix.quaternion import Rotation

    q1, q2 = Rotation.random(50).data, Rotation.random(50).data
    whole = misorientation_deg(q1, q2, chunk_size=1000)
    assert np.allclose(misorientation_deg(q1, q2, chunk_size=7), whole, atol=1e-9)
    assert whole.max() <= 62.81  # the m-3m fundamental zone's largest angle
    # a 90 deg rotation about [001] is a symmetry of the cube: no misorientation
    quarter = np.array([[np.cos(np.pi / 4), 0, 0, np.sin(np.pi / 4)]])
    assert misorientation_deg(np.array([[1.0, 0, 0, 0]]), quarter)[0] < 1e-6
    assert misorientation_deg(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0,)


# -- quality measures on the screen, and Table 1's controls (issue 24) ------------------
def test_the_screen_window_is_the_largest_square_on_the_screen():
    from latentebsd.index import screen_window

    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 29.5) ** 2 + (xx - 29.5) ** 2 <= 28.5**2
    rows, cols = screen_window(disc)
    side = rows.stop - rows.start
    assert side == cols.stop - cols.start and disc[rows, cols].all()
    # one pixel more on each side would leave the screen: 2 r / sqrt 2 = 40.3
    assert side == 40 and not disc[rows.start - 1:rows.stop + 1, cols.start - 1:cols.stop + 1].all()
    assert screen_window(np.ones((12, 20), bool)) == (slice(0, 12), slice(4, 16))
    with pytest.raises(ValueError, match="no screen pixel"):
        screen_window(np.zeros((5, 5), bool))


def test_a_blank_disc_scores_far_below_the_patterns_on_every_band_measure(scan, decoded, tmp_path):
    """The controls are measured like decoded patterns; a blank disc scores near 0 on
    sharpness and on the Hough IQ (pq), indexes nowhere, and the identity decoder (a
    perfect model) and a blurring decoder both score above it."""
    from scipy.ndimage import gaussian_filter

    from latentebsd.controls import control_patterns, quality_controls
    from latentebsd.index import pattern_quality, screen_window
    from latentebsd.io.controls import read_controls
    from latentebsd.io.preprocessed import PreprocessedScan

    out = tmp_path / "controls.h5"
    quality_controls(scan["pre"], scan["orig_h5"], out, section("evaluation", {"controls": {"patterns": 20}}),
                     seed=1, scan_name="s")
    controls, attrs = read_controls(out)
    assert set(controls) == {"blank_disc", "mean_pattern"} and attrs["scan"] == "s"
    blank = controls["blank_disc"]
    assert len(blank["points"]) == 20 and len(set(blank["points"])) == 20
    assert not blank["indexed"].any()
    assert np.nanmedian(blank["sharpness_ratio"]) < 0.2
    assert np.nanmedian(np.nan_to_num(blank["iq_pq_ratio"], nan=0.0)) < 0.2
    # a perfect model and a blurring one, pattern by pattern at the same points
    perfect = pattern_metrics(scan["original"], decoded["arrays"])
    pts = blank["points"]
    assert np.nanmedian(perfect["sharpness_ratio"][pts]) > 0.9
    _, mask, _ = read_screen(scan["pre"])
    blurred = np.where(mask, np.stack([gaussian_filter(p, 1.0) for p in scan["patterns"][pts]]), 0.0)
    q = pattern_quality(blurred, screen_window(mask), EVALUATION["sharpness"])
    ratio = q["sharpness"] / scan["original"]["sharpness"][pts]
    assert np.median(ratio) > 5 * max(np.nanmedian(blank["sharpness_ratio"]), 0.01)
    with PreprocessedScan(scan["pre"]) as s:
        pats = control_patterns(s)
    on = pats["blank_disc"][mask]
    assert np.ptp(on) < 1e-4 and not pats["blank_disc"][~mask].any()
    assert pats["mean_pattern"][mask].min() == pytest.approx(-1.0, abs=1e-4)
    assert pats["mean_pattern"][mask].max() == pytest.approx(1.0, abs=1e-4)


def test_table1_shows_control_rows_and_the_originals_absolute_values(scan, decoded, tmp_path):
    from latentebsd.controls import quality_controls

    out = tmp_path / "m.h5"
    run_metrics_rule(str(scan["orig_h5"]), str(decoded["h5"]), str(out), EVALUATION, "identity", "s")
    ctrl = tmp_path / "c.h5"
    quality_controls(scan["pre"], scan["orig_h5"], ctrl, section("evaluation", {"controls": {"patterns": 16}}))
    frame = run_table_rule({"identity": [str(out)]},
                           {"identity": {"loss": "vae", "latent_dim": SHAPE[0] * SHAPE[1]}}, EVALUATION,
                           str(tmp_path / "t.csv"), str(tmp_path / "t.md"), str(tmp_path / "t.html"),
                           control_paths=[str(ctrl)], original_paths=[str(scan["orig_h5"])])
    assert list(frame["variant"]) == ["original", "control_blank_disc", "control_mean_pattern", "identity"]
    rows = frame.set_index("variant")
    assert rows.loc["control_blank_disc", "Indexed"] == 0.0
    assert rows.loc["identity", "sharpness_ratio_q50"] > 5 * max(rows.loc["control_blank_disc", "sharpness_ratio_q50"], 0.01)
    assert rows.loc["original", "Original IQ (PyEBSDIndex pq)"].count("/") == 2
    md = (tmp_path / "t.md").read_text()
    assert "| Control: blank disc |  | control | 0.0 % |" in md
    assert "| Loss | d | Source (ours / paper) | Indexed | Indexed and agreeing | CI ratio (PyEBSDIndex cm) | IQ ratio (PyEBSDIndex pq) |" in md
    assert "Originals (preprocessed patterns), absolute values" in md and "Krieger-Lassen" in md
    assert "Indexed (any solution)" not in md and "iq_kp_ratio_q50" in (tmp_path / "t.csv").read_text()


# -- guards on the numbers (issue 26) ----------------------------------------------------
def _measured(stack, points, geometry, mask, phases):
    """``stack`` (patterns at ``points``) measured as the index stage measures a decoded
    pattern: Hough-indexed with each point's PC, quality inside the screen window."""
    from latentebsd.index import build_indexer, index_patterns, pattern_quality, screen_window
    from latentebsd.io.index import INDEX_DTYPE

    indexer = build_indexer(geometry, phase_list=phases, patternmask=mask, **EVALUATION["hough"])
    stack = np.where(mask, stack, np.float32(0.0)).astype(np.float32)
    result = index_patterns(stack, geometry, indexer=indexer, points=points, chunk_size=64)
    quality = pattern_quality(stack, screen_window(mask), EVALUATION["sharpness"])
    return {**{f: result[f] for f in INDEX_DTYPE.names}, **quality}


@pytest.fixture(scope="module")
def degraded(scan):
    """Twelve indexed points of the scan, measured three ways: the original patterns, a
    degraded decoder's (Gaussian blur, sigma 1.5 px) and the blank-disc control's."""
    from scipy.ndimage import gaussian_filter

    from latentebsd.controls import control_patterns
    from latentebsd.io.preprocessed import PreprocessedScan
    from latentebsd.phases import phases_of

    original, geometry, attrs = read_index(scan["orig_h5"])
    _, mask, _ = read_screen(scan["pre"])
    points = np.flatnonzero(original["indexed"])[:12]
    assert len(points) == 12
    reference = {k: np.asarray(v)[points] for k, v in original.items()
                 if np.ndim(v) >= 1 and len(v) == geometry.n_patterns}
    patterns = scan["patterns"][points]
    with PreprocessedScan(scan["pre"]) as s:
        blank = control_patterns(s)["blank_disc"]
    phases = phases_of(attrs)
    stacks = {"original": patterns,
              "blurred": np.stack([gaussian_filter(p.astype(np.float64), 1.5) for p in patterns]),
              "blank": np.repeat(blank[None], len(points), axis=0)}
    measured = {k: _measured(v, points, geometry, mask, phases) for k, v in stacks.items()}
    return {"points": points, "reference": reference, "measured": measured, "stacks": stacks,
            "mask": mask, "metrics": {k: pattern_metrics(reference, v) for k, v in measured.items()}}


def test_a_blurring_decoder_has_decoded_over_original_ratios_below_one(degraded):
    """Ratios are decoded / original: a decoder that blurs loses sharpness (every ratio
    < 1) and Hough peak height (median pq ratio < 1); the originals against themselves
    score 1."""
    m = degraded["metrics"]
    assert np.all(m["blurred"]["sharpness_ratio"] < 1.0), m["blurred"]["sharpness_ratio"]
    assert np.nanmedian(m["blurred"]["iq_pq_ratio"]) < 1.0
    np.testing.assert_allclose(m["original"]["sharpness_ratio"], 1.0)
    np.testing.assert_allclose(m["original"]["iq_pq_ratio"], 1.0)
    ref, blurred = degraded["reference"], degraded["measured"]["blurred"]
    np.testing.assert_allclose(m["blurred"]["sharpness_ratio"], blurred["sharpness"] / ref["sharpness"])


def test_quality_controls_rank_blank_below_blurred_below_original_on_every_band_measure(degraded):
    """Sharpness, Hough IQ (pq) and confidence (cm): blank disc < blurred < original
    (medians over the points); the blank disc indexes nowhere, the originals everywhere.
    Krieger-Lassen IQ is the documented exception (it measures smoothness: blurring
    raises it, a constant disc has none - NaN)."""
    q = degraded["measured"]
    for field in ("sharpness", "pq", "cm"):
        blank, blurred, original = (np.median(np.nan_to_num(q[k][field], nan=0.0))
                                    for k in ("blank", "blurred", "original"))
        assert blank < blurred < original or (field == "cm" and blank < blurred <= original), \
            (field, blank, blurred, original)
    m = degraded["metrics"]
    assert not m["blank"]["indexed"].any() and m["original"]["indexed"].all()
    assert np.all(q["blank"]["sharpness"] < 0.2 * q["original"]["sharpness"])
    assert np.isnan(q["blank"]["iq_kp"]).all()
    assert np.median(q["blurred"]["iq_kp"] - q["original"]["iq_kp"]) > 0


def test_the_index_stage_stores_each_patterns_own_quality(scan, degraded):
    """The sharpness and Krieger-Lassen IQ in the original's index file are those of its
    own patterns (inside the screen window), pattern by pattern - not a constant, not a
    blank disc's - and the IQ is kikuchipy's."""
    from kikuchipy.pattern import get_image_quality

    from latentebsd.index import screen_window

    stored, own = degraded["reference"], degraded["measured"]["original"]
    np.testing.assert_allclose(stored["sharpness"], own["sharpness"], rtol=1e-6)
    np.testing.assert_allclose(stored["iq_kp"], own["iq_kp"], rtol=1e-5)
    assert np.ptp(stored["iq_kp"]) > 1e-3 and np.ptp(stored["sharpness"]) > 0
    assert np.all(stored["sharpness"] > 5 * degraded["measured"]["blank"]["sharpness"])
    rows, cols = screen_window(degraded["mask"])
    inner = np.where(degraded["mask"], degraded["stacks"]["original"], 0.0)[:, rows, cols]
    kp = [get_image_quality(p.astype(np.float32), normalize=True) for p in inner]
    np.testing.assert_allclose(stored["iq_kp"], kp, rtol=1e-4)
