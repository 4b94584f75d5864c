"""Sharded scans: row-block planning, and shard jobs + gathers giving exactly the files
of the whole-scan jobs (encode, decode, index, metrics) on a simulated scan."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tifffile
import xarray as xr

from conftest import save_untrained_model
from latentebsd.config import section
from latentebsd.decode import gather_up2, run_decode_rule
from latentebsd.encode import gather_latent, run_encode_rule
from latentebsd.index import gather_index, run_index_rule
from latentebsd.io.index import read_index
from latentebsd.io.metrics import read_metrics
from latentebsd.metrics import gather_metrics, run_metrics_rule
from latentebsd.plan import scan_regex, shard_plan
from latentebsd.shards import aligned_shard_rows, stage_block_rows

MAP, SHAPE, D = (7, 6), (60, 60), 8
# 1-row encode blocks, 2-row decode / index blocks -> shards must be multiples of 2 rows
MAPS = section("maps", {"chunk_size": 6, "batch_size": 5})
# min_nmatch 3: the untrained model's decoded patterns show few bands, and these tests
# need some of them indexed to compare shards with whole scans on non-trivial values
EVALUATION = section("evaluation", {"chunk_size": 12, "decode_batch_size": 5, "min_nmatch": 3})
CONFIG = {"maps": MAPS, "evaluation": EVALUATION}


# -- planning ---------------------------------------------------------------------------
def test_shard_rows_tile_the_map_on_block_boundaries():
    assert aligned_shard_rows(7, 6, None) == [(0, 7)]
    assert aligned_shard_rows(7, 6, 42) == [(0, 7)]  # not more than shard_patterns: whole
    assert aligned_shard_rows(7, 6, 12, 2) == [(0, 2), (2, 4), (4, 6), (6, 7)]
    assert aligned_shard_rows(7, 6, 18, 2) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # 3 rows -> 2
    assert aligned_shard_rows(7, 6, 5, 2) == [(0, 2), (2, 4), (4, 6), (6, 7)]  # never < a block
    assert aligned_shard_rows(1000, 1000, 250_000, 1) == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    assert stage_block_rows(CONFIG, 6) == 2
    assert stage_block_rows({"maps": {"chunk_size": 2048}, "evaluation": {"chunk_size": 1024}}, 64) == 32


def test_shard_plan_from_config(tiny_scan, tmp_path):
    scans = {
        "big": {"simulate": {"microstructure": "am", "map_shape": [7, 6]}},
        "small": {"simulate": {"microstructure": "am", "map_shape": [2, 6]}},
        "file": {"path": str(tiny_scan["path"])},  # 5 x 7, shape from the UP2 header
        "later": {"path": str(tmp_path / "not_yet.up2")},  # shape unknown: not sharded
    }
    plan = shard_plan({**CONFIG, "scans": scans, "shard_patterns": 12}, list(scans))
    assert plan == {"big": [(0, 2), (2, 4), (4, 6), (6, 7)],
                    "file": [(r, r + 1) for r in range(5)]}  # 12 // 7 columns = 1 row
    assert shard_plan({**CONFIG, "scans": scans, "shard_patterns": None}, list(scans)) == {}
    assert scan_regex([]) and not __import__("re").fullmatch(scan_regex([]), "")
    assert __import__("re").fullmatch(scan_regex(["a.b", "c"]), "a.b")


# -- whole scan vs shards + gather --------------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The same simulated scan through the whole-scan rule functions and through 4 shard
    jobs per stage plus the gathers."""
    from latentebsd.io.truth import read_truth
    from latentebsd.preprocess import preprocess_scan
    from latentebsd.simulate import simulate_scan

    d = tmp_path_factory.mktemp("shards")
    simulate_scan(d / "s.up2", d / "s_truth.h5", "am", MAP,
                  section("simulation", {"pattern_shape": list(SHAPE), "chunk_size": 16,
                                         "pc_drift": 0.05}), 5, progress=False)
    _, geometry, _ = read_truth(d / "s_truth.h5")
    assert geometry.pc.ndim == 2  # per-pattern PCs: shards must pick their own rows' PCs
    pre = preprocess_scan(d / "s.up2", d / "s.h5", geometry, section("preprocess", {"binning": 1}),
                          progress=False)
    weights = save_untrained_model(d / "w.pt", D, SHAPE)
    common = {"scan": "s", "variant": "v", "gpus": 0, "threads": 1}

    whole = d / "whole"
    whole.mkdir()
    run_encode_rule(pre, weights, whole / "s.nc", whole / "s.tif", whole / "s.json",
                    settings=MAPS, **common)
    run_decode_rule(weights, whole / "s.nc", pre, whole / "s.up2", EVALUATION)
    run_index_rule(pre, pre, whole / "orig.h5", whole / "orig.ang", EVALUATION, "original")
    run_index_rule(whole / "s.up2", pre, whole / "dec.h5", whole / "dec.ang", EVALUATION, "v")
    run_metrics_rule(whole / "orig.h5", whole / "dec.h5", whole / "m.h5", EVALUATION, "v", "s")

    rows = aligned_shard_rows(*MAP, 12, stage_block_rows(CONFIG, MAP[1]))
    assert len(rows) == 4
    sh = d / "sharded"
    sh.mkdir()
    k = range(len(rows))
    for i, r in enumerate(rows):
        run_encode_rule(pre, weights, sh / f"s{i}.nc", None, sh / f"s{i}.json", settings=MAPS,
                        rows=r, **common)
    gather_latent([sh / f"s{i}.nc" for i in k], [sh / f"s{i}.json" for i in k],
                  sh / "s.nc", sh / "s.tif", sh / "s.json")
    for i, r in enumerate(rows):
        run_decode_rule(weights, sh / "s.nc", pre, sh / f"s{i}.up2", EVALUATION, rows=r)
    gather_up2([sh / f"s{i}.up2" for i in k], pre, sh / "s.up2")
    for source, patterns in (("original", pre), ("v", sh / "s.up2")):
        for i, r in enumerate(rows):
            run_index_rule(patterns, pre, sh / f"{source}{i}.h5", None, EVALUATION, source, rows=r)
        gather_index([sh / f"{source}{i}.h5" for i in k], pre, sh / f"{source}.h5",
                     sh / f"{source}.ang")
    for i, r in enumerate(rows):
        run_metrics_rule(sh / "original.h5", sh / "v.h5", sh / f"m{i}.h5", EVALUATION, "v", "s",
                         rows=r)
    gather_metrics([sh / f"m{i}.h5" for i in reversed(k)], pre, sh / "m.h5")  # any order
    return {"whole": whole, "sharded": sh, "pre": pre}


def test_gathered_latent_cube_equals_the_whole_scan_cube(runs):
    w, s = runs["whole"], runs["sharded"]
    with xr.open_dataset(w / "s.nc") as a, xr.open_dataset(s / "s.nc") as b:
        for name in ("latent_mean", "latent_logvar", "valid", "x", "y"):
            assert np.array_equal(a[name].values, b[name].values), name
        assert b.attrs["n_rows"] == MAP[0] and "first_row" not in b.attrs
    assert np.array_equal(tifffile.imread(w / "s.tif"), tifffile.imread(s / "s.tif"))
    one, gathered = json.loads((w / "s.json").read_text()), json.loads((s / "s.json").read_text())
    assert gathered["n_shards"] == 4
    for key in ("n_patterns", "n_valid", "n_rows", "data_reduction_factor", "latent_bytes_total"):
        assert gathered[key] == one[key], key


def test_gathered_decoded_up2_is_byte_identical(runs):
    assert (runs["whole"] / "s.up2").read_bytes() == (runs["sharded"] / "s.up2").read_bytes()


@pytest.mark.parametrize("source, whole_name", [("original", "orig"), ("v", "dec")])
def test_gathered_index_equals_the_whole_scan_index(runs, source, whole_name):
    a, geometry_a, attrs_a = read_index(runs["whole"] / f"{whole_name}.h5")
    b, geometry_b, attrs_b = read_index(runs["sharded"] / f"{source}.h5")
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True), key
    assert np.array_equal(geometry_a.pc, geometry_b.pc) and geometry_a.map_shape == MAP
    assert attrs_a["n_indexed"] == attrs_b["n_indexed"] > 0
    ang_a = (runs["whole"] / f"{whole_name}.ang").read_text().splitlines()
    ang_b = (runs["sharded"] / f"{source}.ang").read_text().splitlines()
    assert [x for x in ang_a if not x.startswith("#")] == [x for x in ang_b if not x.startswith("#")]


def test_gathered_metrics_equal_the_whole_scan_metrics(runs):
    a, _ = read_metrics(runs["whole"] / "m.h5")
    b, attrs = read_metrics(runs["sharded"] / "m.h5")
    assert a.keys() == b.keys() and "first_row" not in attrs
    for key in a:
        assert np.array_equal(a[key], b[key], equal_nan=True), key
    assert np.nanmax(a["misorientation_deg"]) >= 0  # some pattern was indexed in both


def test_gather_names_a_missing_or_foreign_shard(runs, tmp_path):
    s = runs["sharded"]
    with pytest.raises(ValueError, match=r"m2\.h5: shard starts at map row 4, expected 2"):
        gather_metrics([s / "m0.h5", s / "m2.h5", s / "m3.h5"], runs["pre"], tmp_path / "m.h5")
    with pytest.raises(ValueError, match="shards cover map rows 0:6, the scan has 7"):
        gather_index([s / f"original{i}.h5" for i in range(3)], runs["pre"], tmp_path / "i.h5", None)
    with pytest.raises(ValueError, match="not a shard file"):
        gather_index([runs["whole"] / "orig.h5"], runs["pre"], tmp_path / "i.h5", None)
    with pytest.raises(ValueError, match="shards hold 36 patterns"):
        gather_up2([s / f"s{i}.up2" for i in range(3)], runs["pre"], tmp_path / "x.up2")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_row_range_checks_the_rows_against_the_map():
    from latentebsd.shards import row_range

    assert row_range(None, 7) == (0, 7) and row_range([2, 4], 7) == (2, 4)
    for bad in ([4, 4], [5, 8], [-1, 2]):
        with pytest.raises(ValueError, match="outside the map's 0:7"):
            row_range(bad, 7)
