"""Config schema: defaults, and errors that name the offending key."""

from __future__ import annotations

import copy

import pytest
import yaml

from conftest import REPO
from latentebsd.config import ConfigError, load_config, validate_config


@pytest.fixture
def default_config() -> dict:
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def test_default_and_paper_configs_are_valid():
    config = load_config(REPO / "config" / "config.yaml")
    assert config["preprocess"]["mask"]["method"] == "auto"
    paper = load_config(REPO / "config" / "paper.yaml")
    assert paper["preprocess"]["binning"] == 4
    assert paper["sample"]["patterns_per_scan"] == 16000


def test_defaults_are_filled(default_config):
    del default_config["preprocess"]["chunk_size"]
    del default_config["preprocess"]["mask"]
    validate_config(default_config)
    assert default_config["preprocess"]["chunk_size"] == 1024
    assert default_config["preprocess"]["mask"] == {"method": "auto", "threshold": 0.15, "radius": 1.0}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["preprocess"].update(binnig=4), r"config key preprocess\.binnig: unknown key"),
        (lambda c: c.update(sampel={}), r"config key sampel: unknown key"),
        (lambda c: c["preprocess"].update(binning="four"), r"preprocess\.binning: 'four' is not of type 'integer'"),
        (lambda c: c["preprocess"].update(rescale="global"), r"preprocess\.rescale: 'global' is not one of"),
        (lambda c: c["scans"]["am"]["simulate"].update(map_shape=[3]), r"scans\.am\.simulate\.map_shape"),
        (lambda c: c["sample"].update(val_fraction=1.5), r"sample\.val_fraction: 1\.5"),
    ],
)
def test_bad_keys_are_named(default_config, edit, message):
    config = copy.deepcopy(default_config)
    edit(config)
    with pytest.raises(ConfigError, match=message):
        validate_config(config)


def test_user_scan_needs_exactly_one_source_and_a_pc(default_config):
    default_config["scans"]["mine"] = {"path": "x.up2", "simulate": {"microstructure": "am", "map_shape": [2, 2]}}
    with pytest.raises(ConfigError, match=r"scans\.mine: give exactly one of"):
        validate_config(default_config)
    default_config["scans"]["mine"] = {"path": "x.up2"}
    with pytest.raises(ConfigError, match=r"scans\.mine\.pc: your own scans need the pattern centre"):
        validate_config(default_config)


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scans: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)
