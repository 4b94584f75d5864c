"""Encode stage: the latent cube equals a direct encoder call, whatever the chunking,
and round-trips through NetCDF (xarray) and ImageJ TIFF (tifffile)."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import tifffile
import xarray as xr

from conftest import band_patterns, save_untrained_model
from latentebsd.config import section
from latentebsd.encode import data_reduction, encode_scan, summarize_reductions
from latentebsd.geometry import ScanGeometry
from latentebsd.io.cube import (
    cube_attrs,
    cube_chunk_rows,
    cube_writer,
    iter_feature_groups,
    iter_latent_blocks,
    iter_row_blocks,
    read_latents_at,
    write_cube,
)
from latentebsd.io.patterns import write_up2
from latentebsd.io.weights import load_model
from latentebsd.models import encode_patterns
from latentebsd.preprocess import preprocess_scan
from latentebsd.shards import rows_per_block

MAP, RAW, STEP, D = (6, 9), (32, 32), 0.5, 8


def maps(chunk_size: int, batch_size: int) -> dict:
    """The ``maps`` section with the encode stage's block and batch sizes."""
    return section("maps", {"chunk_size": chunk_size, "batch_size": batch_size})


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict:
    """A preprocessed 6 x 9 scan of 32 x 32 patterns (binned from 32 x 32 raw, factor 1)
    with one blank-flagged pattern, and a d = 8 model."""
    tmp = tmp_path_factory.mktemp("encode")
    raw = band_patterns(MAP[0] * MAP[1], RAW, seed=3)
    raw[7] = 1000  # a blank pattern: flagged invalid, still encoded
    up2 = write_up2(tmp / "s.up2", [raw[:20], raw[20:]], MAP, RAW, STEP)
    geometry = ScanGeometry(*MAP, step_um=STEP, pattern_shape=RAW, pc=[0.5, 0.45, 0.6])
    pre = preprocess_scan(up2, tmp / "s.h5", geometry,
                          section("preprocess", {"binning": 1, "blank_patterns": "flag"}), progress=False)
    weights = save_untrained_model(tmp / "w.pt", D, RAW)
    cube = tmp / "cube.nc"
    summary = encode_scan(pre, weights, cube, tmp / "cube.tif", tmp / "cube.json", scan="s",
                          variant="v8", settings=maps(MAP[1] * 2, 5), progress=False)
    return {"tmp": tmp, "pre": pre, "weights": weights, "cube": cube, "summary": summary}


def direct(scan: dict) -> tuple[np.ndarray, np.ndarray]:
    encoder, _, _ = load_model(scan["weights"])
    with h5py.File(scan["pre"], "r") as f:
        return encode_patterns(encoder, f["patterns"][()], 1024, "cpu", f["mask"][()])


def test_cube_equals_direct_encoder_call(scan):
    mean, logvar = direct(scan)
    ds = xr.open_dataset(scan["cube"])
    assert ds["latent_mean"].dims == ("feature", "y", "x")
    assert ds["latent_mean"].shape == (D, *MAP) and ds["latent_mean"].dtype == np.float32
    # pattern i sits at (row, col) = divmod(i, n_cols)
    expect = mean.reshape(*MAP, D).transpose(2, 0, 1)
    np.testing.assert_allclose(ds["latent_mean"].values, expect, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ds["latent_logvar"].values, logvar.reshape(*MAP, D).transpose(2, 0, 1),
                               rtol=1e-5, atol=1e-6)
    assert ds["latent_mean"].values[:, 1, 2] == pytest.approx(mean[1 * MAP[1] + 2], abs=1e-6)
    assert ds["valid"].values.sum() == MAP[0] * MAP[1] - 1 and ds["valid"].values[0, 7] == 0
    ds.close()


def test_coordinates_and_attrs_in_micrometres(scan):
    ds = xr.open_dataset(scan["cube"])
    np.testing.assert_array_equal(ds["feature"].values, np.arange(D))
    np.testing.assert_allclose(ds["y"].values, np.arange(MAP[0]) * STEP)
    np.testing.assert_allclose(ds["x"].values, np.arange(MAP[1]) * STEP)
    assert ds["x"].attrs["units"] == "um" and ds["y"].attrs["units"] == "um"
    assert ds.attrs["scan"] == "s" and ds.attrs["variant"] == "v8"
    assert int(ds.attrs["latent_dim"]) == D and float(ds.attrs["step_um"]) == STEP
    # raw 32 x 32 uint16 = 2048 bytes per pattern, 8 float32 latents = 32 bytes
    assert float(ds.attrs["data_reduction_factor"]) == pytest.approx(64.0)
    ds.close()
    summary = json.loads((scan["tmp"] / "cube.json").read_text())
    assert summary["data_reduction_factor"] == pytest.approx(64.0)
    assert summary["n_patterns"] == 54 and summary["n_valid"] == 53 and summary["latent_dim"] == D


def test_cube_is_chunked_by_map_rows(scan):
    with h5py.File(scan["cube"], "r") as f:
        assert f["latent_mean"].chunks == (D, cube_chunk_rows(D, *MAP), MAP[1])
    assert cube_chunk_rows(256, 1000, 1000) == 2  # ~2 MiB chunks for a 1M-pattern map
    assert rows_per_block(1000, 4096) == 4 and rows_per_block(5000, 4096) == 1


def test_chunked_encode_equals_in_memory(scan, tmp_path):
    one_row = tmp_path / "a.nc"
    everything = tmp_path / "b.nc"
    encode_scan(scan["pre"], scan["weights"], one_row, settings=maps(1, 3), progress=False)
    encode_scan(scan["pre"], scan["weights"], everything, settings=maps(10**6, 10**4), progress=False)
    with xr.open_dataset(one_row) as a, xr.open_dataset(everything) as b:
        np.testing.assert_allclose(a["latent_mean"].values, b["latent_mean"].values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(a["latent_logvar"].values, b["latent_logvar"].values, rtol=1e-5, atol=1e-6)
    assert not list(tmp_path.glob(".*partial*"))  # temporary files were renamed


def test_tiff_round_trip(scan):
    with tifffile.TiffFile(scan["tmp"] / "cube.tif") as tif:
        assert tif.is_imagej
        assert len(tif.pages) == D
        data = tif.asarray()
        meta = tif.imagej_metadata
        x_res = tif.pages[0].tags["XResolution"].value
        assert tif.series[0].axes == "ZYX"
    assert data.dtype == np.float32 and data.shape == (D, *MAP)
    assert meta["unit"] == "um" and meta["images"] == D
    assert x_res[0] / x_res[1] == pytest.approx(1 / STEP)  # pixels per um
    with xr.open_dataset(scan["cube"]) as ds:
        np.testing.assert_array_equal(data, ds["latent_mean"].values)


def test_block_readers_agree_with_the_cube(scan):
    with xr.open_dataset(scan["cube"]) as ds:
        full = ds["latent_mean"].values
    rows = np.concatenate([b[0] for _, _, b in iter_row_blocks(scan["cube"], 4 * D * MAP[1] * 2)], axis=1)
    np.testing.assert_array_equal(rows, full)
    groups = list(iter_feature_groups(scan["cube"], 4 * MAP[0] * MAP[1] * 3))
    assert [len(ids) for ids, _ in groups] == [3, 3, 2]
    np.testing.assert_array_equal(np.concatenate([a[0] for _, a in groups]), full)
    idx = np.array([0, 10, 53])
    np.testing.assert_array_equal(read_latents_at(scan["cube"], idx, 100),
                                  full.reshape(D, -1)[:, idx].T)
    # point blocks of whole rows (2 rows of 9 from 20 points), and a shard's rows only
    blocks = list(iter_latent_blocks(scan["cube"], 20))
    assert [start for start, _ in blocks] == [0, 18, 36]
    np.testing.assert_array_equal(np.concatenate([z for _, z in blocks]), full.reshape(D, -1).T)
    shard = list(iter_latent_blocks(scan["cube"], 20, rows=(2, 5)))
    assert [start for start, _ in shard] == [18, 36]  # blocks still counted from row 0
    np.testing.assert_array_equal(np.concatenate([z for _, z in shard]),
                                  full[:, 2:5].reshape(D, -1).T)


def test_model_and_scan_mismatch_is_a_clear_error(scan, tmp_path):
    weights = save_untrained_model(tmp_path / "w.pt", D, (40, 40))
    with pytest.raises(ValueError, match="model expects"):
        encode_scan(scan["pre"], weights, tmp_path / "c.nc", progress=False)
    assert not (tmp_path / "c.nc").exists()


def test_write_cube_and_summary(tmp_path):
    mean = np.random.default_rng(0).normal(size=(3, 4, 5)).astype(np.float32)
    write_cube(tmp_path / "c.nc", mean, step_um=2.0, scan="x", variant="pca3")
    attrs = cube_attrs(tmp_path / "c.nc")
    assert attrs["latent_dim"] == 3 and attrs["step_um"] == 2.0 and attrs["variant"] == "pca3"
    red = data_reduction((480, 480), "uint16", 128)
    assert red["data_reduction_factor"] == pytest.approx(900.0)  # the paper's scans
    (tmp_path / "a.json").write_text(json.dumps({"scan": "s", "variant": "v", "latent_dim": 3,
                                                 "raw_pattern_shape": [4, 4], **red}))
    frame = summarize_reductions([tmp_path / "a.json"], tmp_path / "s.csv")
    assert frame["raw_pattern_shape"].iloc[0] == "4x4"


def test_cube_writer_writes_the_tiff_in_feature_groups_and_nothing_on_error(tmp_path):
    rng = np.random.default_rng(1)
    mean, logvar = rng.normal(size=(2, 5, 4, 6)).astype(np.float32)
    valid = np.ones((4, 6), bool)
    # 2 feature maps per TIFF group: 3 groups for d = 5
    with cube_writer(tmp_path / "c.nc", tmp_path / "c.tif", 5, 4, 6, 0.5, {"step_um": 0.5},
                     tiff_max_bytes=4 * 4 * 6 * 2) as writer:
        writer.write(0, mean[:, :3], logvar[:, :3], valid[:3])
        writer.write(3, mean[:, 3:], logvar[:, 3:], valid[3:])
    np.testing.assert_array_equal(tifffile.imread(tmp_path / "c.tif"), mean)
    with xr.open_dataset(tmp_path / "c.nc") as ds:
        np.testing.assert_array_equal(ds["latent_logvar"].values, logvar)
    with pytest.raises(RuntimeError, match="encoder failed"):
        with cube_writer(tmp_path / "d.nc", tmp_path / "d.tif", 5, 4, 6, 0.5, {}) as writer:
            writer.write(0, mean[:, :3], logvar[:, :3], valid[:3])
            raise RuntimeError("encoder failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.nc", "c.tif"]
