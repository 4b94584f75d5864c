"""Seed replicates (models.replicates), per-seed verdicts, the Sigma3 / orientation
baseline maps and the novelty's spatial blocks."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from latentebsd.config import validate_config
from latentebsd.findings import findings_markdown
from latentebsd.replicates import (
    combine_verdicts,
    replicate_name,
    split_name,
    training_seed,
)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def default():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


# ----------------------------------------------------------------------------- plan
def test_plan_expands_replicates_with_their_own_names_and_seeds(default):
    from latentebsd.plan import make_plan

    config = copy.deepcopy(default)
    config["models"]["replicates"] = {"seeds": 3, "variants": ["vae16", "vae128"]}
    plan = make_plan(validate_config(config))
    reps = ["vae16@seed1", "vae128@seed1", "vae16@seed2", "vae128@seed2"]
    assert list(plan.replicates) == reps
    assert plan.models == [*plan.variants, *reps]
    assert plan.variants == list(default["models"]["variants"])  # figures, Table 1: unchanged
    assert plan.model_specs["vae128@seed2"] == plan.specs["vae128"]
    assert plan.seed_groups == {0: {"vae16": "vae16", "vae128": "vae128"},
                                1: {"vae16": "vae16@seed1", "vae128": "vae128@seed1"},
                                2: {"vae16": "vae16@seed2", "vae128": "vae128@seed2"}}
    assert plan.index_sources == ["original", *plan.variants, *reps]
    assert plan.detection_cubes[-4:] == reps and "vae16@seed1" not in plan.cube_sources
    seeds = {m: training_seed(42, m) for m in ["vae16", "vae128", *reps]}
    assert seeds["vae16"] == seeds["vae128"] == 42  # seed 0: as before replicates
    assert seeds["vae16@seed1"] == seeds["vae128@seed1"] != seeds["vae16@seed2"] != 42
    assert split_name("vae16@seed2") == ("vae16", 2) and replicate_name("vae16", 0) == "vae16"


def test_one_seed_means_no_replicates_and_unknown_variants_are_skipped(default):
    from latentebsd.plan import make_plan

    config = copy.deepcopy(default)
    config["models"]["replicates"] = {"seeds": 1}
    plan = make_plan(validate_config(config))
    assert plan.replicates == {} and plan.models == plan.variants
    assert plan.seed_groups == {0: {v: v for v in plan.variants}}  # [] = every variant
    trimmed = copy.deepcopy(default)  # a config that drops vae128 keeps the default's list
    trimmed["models"]["variants"] = {"vae16": {"loss": "vae", "latent_dim": 16}}
    trimmed["models"]["replicates"] = {"seeds": 2, "variants": ["vae16", "vae128"]}
    assert list(make_plan(validate_config(trimmed)).replicates) == ["vae16@seed1"]


# ----------------------------------------------------------------------------- verdicts
def test_combine_verdicts_agree_disagree_one_seed():
    assert combine_verdicts({0: "holds", 1: "holds", 2: "holds"}) == "holds"
    assert combine_verdicts({0: "holds", 1: "does not hold"}) == (
        "inconclusive (seeds disagree: seed 0 holds, seed 1 does not hold)")
    assert combine_verdicts({0: "beats"}) == "one seed: beats"
    assert combine_verdicts({}) == "n/a"


def _table(indexed16, indexed128):
    """Two-row Table 1 of vae16 / vae128 with ``Indexed`` and flat medians."""
    rows = []
    for name, d, ind in (("vae16", 16, indexed16), ("vae128", 128, indexed128)):
        rows.append({"variant": name, "Loss": "VAE", "d": d, "loss": "vae", "beta": 1.0,
                     "Indexed": ind, "ci_ratio_q50": 1.0, "iq_pq_ratio_q50": 1.0,
                     "sharpness_ratio_q50": 0.5, "misorientation_deg_q50": 0.1})
    return pd.DataFrame(rows)


def test_trend_holds_only_if_every_seed_agrees():
    from latentebsd.table1 import seed_table, seed_trend_verdicts

    groups = {0: {"vae16": "vae16", "vae128": "vae128"},
              1: {"vae16": "vae16@seed1", "vae128": "vae128@seed1"}}
    agree = seed_trend_verdicts({0: _table(90.0, 99.0), 1: _table(91.0, 98.0)})
    row = agree.set_index("trend").loc["more latent dimensions -> more patterns indexed"]
    assert row["verdict"] == "holds" and row["agreed"] and row["n_seeds"] == 2
    assert "VAE-16: 90" in row["seed0_values"] and "VAE-128: 98" in row["seed1_values"]
    flip = seed_trend_verdicts({0: _table(90.0, 99.0), 1: _table(99.0, 90.0)})
    row = flip.set_index("trend").loc["more latent dimensions -> more patterns indexed"]
    assert row["verdict"].startswith("inconclusive (seeds disagree: seed 0 holds, seed 1 does not")
    one = seed_trend_verdicts({0: _table(90.0, 99.0)})
    assert one.set_index("trend").loc["more latent dimensions -> more patterns indexed",
                                      "verdict"] == "one seed: holds"
    table = seed_table({0: _table(90.0, 99.0), 1: _table(91.0, 98.0)}, groups)
    spread = table[table["seed"] == "spread"].set_index("variant")
    assert list(table["model"][:4]) == ["vae16", "vae128", "vae16@seed1", "vae128@seed1"]
    assert spread.loc["vae16", "Indexed_min"] == 90.0 and spread.loc["vae16", "Indexed_max"] == 91.0
    md = findings_markdown(flip, table, None, groups)
    assert "Inconclusive: the seeds disagree" in md and "vae16: indexed 90.0 - 91.0 %" in md


def _detection(latent_by_model, conventional=0.7):
    """Whole-fold probe scores of ``conventional`` and of each model on 4 folds."""
    rows = []
    for method, score in {"conventional": conventional, **latent_by_model}.items():
        for fold in range(4):
            rows.append({"scan": "wrought", "class": "twins", "kind": "mask", "metric": "roc_auc",
                         "method": method, "family": "latent", "fold": fold, "level": -1,
                         "mode": "probe", "chosen": "", "score": score + 0.01 * fold})
    return pd.DataFrame(rows)


def test_detection_verdict_needs_every_seed():
    from latentebsd.benchmark import seed_detection_verdicts

    groups = {0: {"vae16": "vae16"}, 1: {"vae16": "vae16@seed1"}}
    both = seed_detection_verdicts(_detection({"vae16": 0.9, "vae16@seed1": 0.85}), groups)
    assert both.loc[0, "verdict"] == "beats" and both.loc[0, "agreed"]
    assert both.loc[0, "seed1_chosen"] == "vae16@seed1"
    split = seed_detection_verdicts(_detection({"vae16": 0.9, "vae16@seed1": 0.5}), groups)
    assert split.loc[0, "verdict"] == "inconclusive (seeds disagree: seed 0 beats, seed 1 loses)"
    one = seed_detection_verdicts(_detection({"vae16": 0.9}), {0: {"vae16": "vae16"}})
    assert one.loc[0, "verdict"] == "one seed: beats"
    md = findings_markdown(None, None, both, groups)
    assert "wrought / twins: latent maps (vae16) beat conventional EBSD" in md


# ----------------------------------------------------------------------------- twins
def _twin_map():
    """4 x 6 map: a parent grain (cols 0-2), its Sigma3 twin (cols 3-4, 60 deg about
    [1-11] in the crystal frame, 2 deg off), and a random grain (col 5)."""
    from orix.quaternion import Orientation, Rotation, symmetry

    parent = Orientation(Rotation.from_axes_angles([1, 2, 3], 40, degrees=True).data,
                         symmetry=symmetry.Oh)
    twin = Rotation.from_axes_angles([1, -1, 1], 62, degrees=True) * parent
    other = Rotation.from_axes_angles([3, -1, 1], 35, degrees=True) * parent
    q = np.zeros((4, 6, 4))
    q[:, :3], q[:, 3:5], q[:, 5] = parent.data, twin.data, other.data
    return q


def test_sigma3_map_marks_the_twin_boundary_and_not_a_random_one():
    from orix.quaternion import symmetry

    from latentebsd.conventional import sigma3_boundary, orientation_boundary

    q = _twin_map()
    s3 = sigma3_boundary(q)
    assert (s3[:, 2] > 0).all() and (s3[:, 3] > 0).all()  # both sides of the twin boundary
    assert np.allclose(s3[:, [0, 1]], 0) and np.allclose(s3[:, 5], 0)  # grain interior, random
    assert np.allclose(s3[:, 4], 0)  # twin / random-grain boundary is not Sigma3
    assert np.isclose(s3[1, 2], 1 / 4) and np.isclose(s3[0, 2], 1 / 3)  # 1 of 4 (3) neighbours
    assert (orientation_boundary(q)[:, 4] > 10).all()  # a boundary, but not a twin
    # a hexagonal phase has no Sigma3 <111> twin; an unindexed point has no value
    assert np.allclose(sigma3_boundary(q, symmetries=[symmetry.D6h]), 0)
    mask = np.ones((4, 6), bool)
    mask[0, 0] = False
    assert np.isnan(sigma3_boundary(q, mask)[0, 0])


def test_rodrigues_maps_match_orix():
    from orix.quaternion import Orientation, symmetry

    from latentebsd.orientations import rodrigues_components

    q = Orientation.random(50, symmetry=symmetry.Oh).data
    phase = np.r_[np.zeros(25, int), np.ones(25, int)]
    indexed = np.ones(50, bool)
    indexed[3] = False
    got = rodrigues_components(q, indexed, phase, [symmetry.Oh, symmetry.D6h])
    for k, sym in enumerate((symmetry.Oh, symmetry.D6h)):
        o = Orientation(q[phase == k], symmetry=sym).reduce()
        want = o.to_rodrigues().data
        sel = indexed[phase == k]
        assert np.allclose(got[phase == k][sel], want[sel])
    assert np.isnan(got[3]).all()
    # in the fundamental zone: the cubic Rodrigues vectors are short (|r| <= tan(62.8 deg / 2))
    assert np.nanmax(np.linalg.norm(got[:25], axis=1)) <= np.tan(np.radians(62.8 / 2)) + 1e-6


def test_conventional_stack_holds_twin_and_orientation_maps():
    from latentebsd.io.conventional import DESCRIPTORS, conventional_stack

    shape = (3, 4)
    maps = {k: np.full(shape, i, float) for i, k in enumerate(DESCRIPTORS)}
    maps["rodrigues"] = np.dstack([np.full(shape, 10.0), np.full(shape, 11.0), np.full(shape, 12.0)])
    maps["ipf_rgb"] = np.zeros((*shape, 3))
    names, stack = conventional_stack(maps)
    assert "sigma3" in names and names[-6:] == ["rodrigues_1", "rodrigues_2", "rodrigues_3",
                                                "ipf_r", "ipf_g", "ipf_b"]
    assert stack.shape == (len(DESCRIPTORS) + 6, *shape) and stack[len(DESCRIPTORS) + 2, 0, 0] == 12


# ----------------------------------------------------------------------------- novelty
def test_novelty_folds_are_small_spatial_blocks():
    from latentebsd.config import section
    from latentebsd.novelty import novelty_folds

    settings = section("benchmark")
    assert list(settings["novelty_fold_grid"]) == [6, 8]
    folds = novelty_folds((48, 96), settings)
    assert set(np.unique(folds)) == set(range(48)) | {-1}
    for f in range(48):  # each fold one contiguous 8 x 12 block, less its guard
        rr, cc = np.nonzero(folds == f)
        assert rr.max() - rr.min() < 8 and cc.max() - cc.min() < 12
        assert (folds[rr.min():rr.max() + 1, cc.min():cc.max() + 1] == f).all()
    from latentebsd.benchmark import spatial_folds

    tiny = spatial_folds((3, 3), settings["fold_grid"], settings["guard"])  # its skip, as before
    assert (novelty_folds((3, 3), settings) == tiny).all()
    assert set(np.unique(novelty_folds((10, 12), settings))) == {-1, 0, 1}  # small: 1 x 2
    assert novelty_folds((24, 48), settings).max() == 4 * 8 - 1  # quick's am: 4 x 8 blocks


def test_grain_contrast_is_explained_with_blocked_folds():
    """A map that is one value per grain (12 columnar grains) is what an orientation map
    shows: with small blocks the training-fold grain means explain it."""
    from latentebsd.benchmark import spatial_folds
    from latentebsd.novelty import explained_r2

    rng = np.random.default_rng(0)
    grain = np.repeat(np.arange(12), 8)[None].repeat(48, 0)  # 48 x 96, 12 columns of grains
    y = rng.normal(size=12)[grain] + 0.05 * rng.normal(size=grain.shape)
    x = rng.normal(size=(grain.size, 3))
    fine = spatial_folds(grain.shape, (6, 8), 1).ravel()
    coarse = spatial_folds(grain.shape, (1, 2), 1).ravel()  # a half's grains never trained on
    keep_f, keep_c = fine >= 0, coarse >= 0
    r2_fine = explained_r2(y.reshape(-1, 1)[keep_f], x[keep_f], grain.ravel()[keep_f], fine[keep_f])
    r2_coarse = explained_r2(y.reshape(-1, 1)[keep_c], x[keep_c], grain.ravel()[keep_c],
                             coarse[keep_c])
    assert r2_fine[0] > 0.95 and r2_coarse[0] < 0.5
