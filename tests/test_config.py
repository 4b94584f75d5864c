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
    # the paper's six maps: two mapped, four sampled for training only
    roles = [scan["role"] for scan in paper["scans"].values()]
    assert len(roles) == 6 and roles.count("both") == 2
    # the default: a training-only polycrystal beside the two mapped, graded scans
    assert config["scans"]["polycrystal"]["role"] == "train"
    assert config["scans"]["am"]["role"] == "both"  # filled from the schema
    assert config["scans"]["am"]["simulate"]["grading"]["levels"] > 1


def test_trends_overlay_changes_only_training_the_way_snakemake_merges_it(default_config):
    """`--configfile config/config.yaml config/trends.yaml`: Snakemake merges the files
    in order (its own update_config); the result is valid, and only training differs."""
    from snakemake.utils import update_config

    overlay = yaml.safe_load((REPO / "config" / "trends.yaml").read_text())
    assert set(overlay) == {"training"}
    merged = copy.deepcopy(default_config)
    update_config(merged, overlay)
    trends, default = validate_config(merged), validate_config(copy.deepcopy(default_config))
    assert {k for k in default if trends[k] != default[k]} == {"training"}
    assert trends["training"]["max_base_channels"] > default["training"]["max_base_channels"]
    assert trends["training"]["epochs"] > default["training"]["epochs"]
    assert trends["training"]["batch_size"] == default["training"]["batch_size"]  # kept


@pytest.mark.parametrize(("edit", "message"), [
    (lambda c: [s.update(role="train") for s in c["scans"].values()],
     r"config key scans: every scan has role: train"),
    (lambda c: c["scans"]["am"].update(role="test"), r"scans\.am\.role: 'test' is not one of"),
    (lambda c: c["scans"]["am"]["simulate"].update(grading={"weakest": 2}),
     r"scans\.am\.simulate\.grading\.weakest"),
])
def test_scan_roles_and_grading_are_checked(default_config, edit, message):
    edit(default_config)
    with pytest.raises(ConfigError, match=message):
        validate_config(default_config)


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


def test_user_scan_needs_exactly_one_source(default_config):
    default_config["scans"]["mine"] = {"path": "x.up2", "simulate": {"microstructure": "am", "map_shape": [2, 2]}}
    with pytest.raises(ConfigError, match=r"scans\.mine: give exactly one of"):
        validate_config(default_config)
    # without pc: the file's (checked at preprocessing, tests/test_user_scans.py)
    default_config["scans"]["mine"] = {"path": "x.up2", "phases": ["FCC"]}
    validate_config(default_config)
    assert "sample_tilt" not in default_config["scans"]["mine"]  # no default over the file's


def test_per_scan_binning_and_background_keys(default_config):
    default_config["scans"]["mine"] = {"path": "x.h5", "binning": 1, "background": "static",
                                       "phases": ["FCC"]}
    validate_config(default_config)
    assert default_config["preprocess"]["background"] == "mean"  # the paper's default
    bad = copy.deepcopy(default_config)
    bad["scans"]["mine"]["background"] = "rolling"
    with pytest.raises(ConfigError, match=r"scans\.mine\.background: 'rolling' is not one of"):
        validate_config(bad)
    bad = copy.deepcopy(default_config)
    bad["scans"]["mine"]["binning"] = 0
    with pytest.raises(ConfigError, match=r"scans\.mine\.binning: 0 is less than the minimum"):
        validate_config(bad)
    # a simulated scan's UP2 has no static background
    bad = copy.deepcopy(default_config)
    bad["scans"]["am"]["background"] = "static"
    with pytest.raises(ConfigError, match=r"scans\.am\.background: static, but scan am is simulated"):
        validate_config(bad)
    bad = copy.deepcopy(default_config)
    bad["preprocess"]["background"] = "static"
    with pytest.raises(ConfigError, match=r"config key preprocess\.background: static, but scan "
                                          r"wrought is simulated"):
        validate_config(bad)


def test_two_detector_example_is_valid():
    config = load_config(REPO / "config" / "examples" / "two_detectors.yaml")
    real, simulated = (config["scans"][k] for k in ("ni_nordif", "ni_sim120"))
    assert real["binning"] == 1 and real["background"] == "static" and "pc" not in real
    assert config["preprocess"]["binning"] == 2 and "binning" not in simulated
    assert config["simulation"]["pattern_shape"] == [120, 120]


def test_config_file_errors_name_the_file(tmp_path):
    with pytest.raises(ConfigError, match=r"nope\.yaml: config file not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("scans: [unclosed\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: not valid YAML"):
        load_config(bad)


def test_readme_own_scan_block_alone_is_a_valid_config():
    """The YAML block under the README's "Your own scans" is a complete config: loaded
    exactly as written there, it validates (``scans`` and ``models``, the rest
    defaulted) - a new user's first ``--configfile`` does not fail on a missing key."""
    text = (REPO / "README.md").read_text()
    section_text = text[text.index("## Your own scans"):]
    block = section_text[section_text.index("```yaml\n") + len("```yaml\n"):]
    block = block[:block.index("```")]
    config = validate_config(yaml.safe_load(block))
    scan = config["scans"]["in718_wrought"]
    assert scan["pc_convention"] == "tsl" and scan["phases"] == ["FCC"]
    assert config["models"]["variants"]


def test_config_readme_is_generated_from_the_current_schema():
    """config/README.md (the catalog's configuration page) is what
    ``python -m latentebsd.config_readme`` writes from workflow/schemas/config.schema.yaml."""
    from latentebsd.config_readme import render

    assert (REPO / "config" / "README.md").read_text() == render(REPO / "workflow" / "schemas" / "config.schema.yaml"), (
        "config/README.md is out of date: python -m latentebsd.config_readme > config/README.md")
    text = render(REPO / "workflow" / "schemas" / "config.schema.yaml")
    for key in ("`seed`", "`scans.<scan>.path`", "`models.variants.<name>.latent_dim`",
                "`training.epochs`", "`evaluation.hough.nBands`"):
        assert key in text, key
