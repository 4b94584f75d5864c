"""A scan's phases (latentebsd.phases): config entries of every kind, their errors, the
reflectors PyEBSDIndex indexes with, and every orientation map in each phase's symmetry
(misorientation, KAM, grains, boundaries, GROD, .ang, Table 1)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import yaml

from conftest import REPO
from latentebsd.config import ConfigError, validate_config
from latentebsd.phases import (NICKEL, SIMULATED_MATERIALS, PhaseError, band_indexer,
                               default_reflectors, from_json, phase_from_config,
                               phases_from_config, to_json)

TI_CIF = """data_Ti
_symmetry_space_group_name_H-M 'P 63/m m c'
_symmetry_Int_Tables_number 194
_cell_length_a 2.9508
_cell_length_b 2.9508
_cell_length_c 4.6855
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 120
loop_
_atom_site_label
_atom_site_type_symbol
_atom_site_fract_x
_atom_site_fract_y
_atom_site_fract_z
Ti1 Ti 0.333333 0.666667 0.25
"""


@pytest.fixture
def base_config():
    return yaml.safe_load((REPO / "config" / "config.yaml").read_text())


def _families(poles) -> set[tuple[float, ...]]:
    """Plane families as symmetry-invariant keys: cubic {hkl} -> sorted |h|, |k|, |l|;
    hexagonal {hkil} -> sorted |h|, |k|, |i| and |l|."""
    out = set()
    for p in np.asarray(poles, dtype=float):
        if len(p) == 4:
            out.add((*sorted(np.abs(p[:3]).round(6)), abs(round(p[3], 6))))
        else:
            out.add(tuple(sorted(np.abs(p).round(6))))
    return out


# -- config entries -------------------------------------------------------------------
def test_every_kind_of_phase_entry_resolves(tmp_path):
    cif = tmp_path / "alpha_ti.cif"
    cif.write_text(TI_CIF)
    specs = phases_from_config([
        "bcc",
        {"type": "HCP", "name": "Zr", "lattice": [3.232, 3.232, 5.147, 90, 90, 120]},
        {"name": "ferrite", "space_group": 229, "lattice": [2.8665] * 3 + [90] * 3},
        {"name": "sigma", "space_group": 136, "lattice": [8.8, 8.8, 4.54, 90, 90, 90],
         "reflectors": [[1, 1, 0], [2, 0, 0], [2, 1, 0], [0, 0, 2]]},
        {"cif": str(cif)},
    ], "scans.x.phases")
    bcc, zr, ferrite, sigma, ti = specs
    assert (bcc.name, bcc.space_group, bcc.library) == ("BCC", 229, "BCC")
    assert zr.library == "HCP" and zr.lattice[2] == 5.147 and zr.laue_group().name == "6/mmm"
    # a space group PyEBSDIndex names takes its reflectors
    assert ferrite.library == "BCC" and ferrite.reflectors is None
    assert sigma.library is None and sigma.laue_group().name == "4/mmm"
    assert ti.name == "alpha_ti" and ti.space_group == 194 and ti.atoms
    assert from_json(to_json(specs)) == specs
    # each becomes a PyEBSDIndex phase with the reflectors it was given
    assert _families(band_indexer(sigma).polefamilies) == _families(sigma.reflectors)
    assert band_indexer(zr).phasename == "Zr"


def test_computed_reflectors_are_pyebsdindex_own_lists(tmp_path):
    """The rule for a phase with atoms (lowest-order families with |F| > 0, no two
    parallel) gives exactly PyEBSDIndex's FCC / BCC / HCP lists for Ni, alpha-Fe and
    alpha-Ti - which takes hexagonal structure factors done right (module docstring)."""
    for material, library in (("nickel", "FCC"), ("ferrite", "BCC"), ("titanium", "HCP")):
        spec = SIMULATED_MATERIALS[material]
        pyebsdindex = band_indexer(phase_from_config(library, "k")).polefamilies
        assert _families(default_reflectors(spec)) == _families(pyebsdindex), material
    cif = tmp_path / "ti.cif"
    cif.write_text(TI_CIF)
    ti = phase_from_config({"name": "Ti", "cif": str(cif)}, "k")
    assert _families(ti.reflectors) == _families(band_indexer(phase_from_config("HCP", "k")).polefamilies)
    assert (1, 1, -2, 1) not in ti.reflectors and (2, -1, -1, 1) not in ti.reflectors  # extinct


@pytest.mark.parametrize("entry, message", [
    ("FCCC", r"config key scans\.steel\.phases\.0: 'FCCC' is not a phase; expected FCC, BCC or HCP"),
    ({"type": "BCT", "name": "m"}, r"phases\.0\.type: 'BCT' is not one of PyEBSDIndex's named"),
    ({"type": "BCC", "cif": "x.cif"}, r"phases\.0: give exactly one of type"),
    ({"name": "s", "space_group": 229}, r"phases\.0\.lattice: a phase given by space group needs"),
    ({"name": "s", "space_group": 229, "lattice": [1, 2, 3, 90, 90, 90]},
     r"phases\.0\.lattice: \[1\.0, 2\.0, 3\.0, .*does not fit the cubic space group 229"),
    ({"name": "s", "space_group": 136, "lattice": [8.8, 8.8, 4.54, 90, 90, 90]},
     r"phases\.0: phase 's' \(space group 136\) has no atoms .* give reflectors"),
    ({"name": "s", "cif": "missing.cif"}, r"phases\.0\.cif: missing\.cif not found"),
])
def test_a_bad_phase_is_named_by_its_config_key(entry, message):
    with pytest.raises(PhaseError, match=message):
        phases_from_config([entry], "scans.steel.phases")


def test_config_validation_names_the_phases_key(base_config, tmp_path):
    cfg = copy.deepcopy(base_config)
    cfg["scans"]["steel"] = {"path": "steel.up2"}
    with pytest.raises(ConfigError, match=r"config key scans\.steel\.phases: required for your own "
                                          r"scan steel.*phases: \[BCC\]"):
        validate_config(cfg)
    cfg["scans"]["steel"]["phases"] = ["BCC", "FCCC"]
    with pytest.raises(ConfigError, match=r"config key scans\.steel\.phases\.1: 'FCCC' is not a phase"):
        validate_config(cfg)
    cfg["scans"]["steel"]["phases"] = ["BCC", "BCC"]
    with pytest.raises(ConfigError, match=r"scans\.steel\.phases: phase names must differ"):
        validate_config(cfg)
    cfg["scans"]["steel"]["phases"] = [{"type": "BCC", "lattice": [2.87, 2.87]}]
    with pytest.raises(ConfigError, match=r"config key scans\.steel\.phases\.0\.lattice: .* too short"):
        validate_config(cfg)
    cfg["scans"]["steel"]["phases"] = ["BCC", "FCC"]
    validate_config(cfg)
    # a training-only scan is never indexed: no phases needed
    cfg["scans"]["extra"] = {"path": "x.up2", "role": "train"}
    validate_config(cfg)
    # a simulated scan's phases are its materials'
    bad = copy.deepcopy(cfg)
    bad["scans"]["am"]["phases"] = ["FCC"]
    with pytest.raises(ConfigError, match=r"scans\.am\.phases: scan am is simulated"):
        validate_config(bad)
    bad = copy.deepcopy(cfg)
    bad["scans"]["am"]["simulate"].update(materials=["ferrite", "austenite"], fractions=[1.0])
    with pytest.raises(ConfigError, match=r"scans\.am\.simulate\.fractions: expected one probability"):
        validate_config(bad)
    bad["scans"]["am"]["simulate"]["materials"] = ["steel"]
    with pytest.raises(ConfigError, match=r"scans\.am\.simulate\.materials\.0: 'steel' is not one of"):
        validate_config(bad)


def test_the_plan_gives_each_scan_its_phases_and_stops_on_a_bad_cif(base_config, tmp_path):
    from latentebsd.plan import make_plan

    cfg = copy.deepcopy(base_config)
    cfg["scans"]["am"]["simulate"]["materials"] = ["ferrite", "austenite"]
    cfg["scans"]["steel"] = {"path": str(tmp_path / "later.up2"), "phases": ["BCC", "FCC"]}
    plan = make_plan(validate_config(cfg))
    assert [p["name"] for p in plan.phases["am"]] == ["ferrite", "austenite"]
    assert [p["name"] for p in plan.phases["wrought"]] == ["Ni"]  # the embedded default
    assert [p["library"] for p in plan.phases["steel"]] == ["BCC", "FCC"]
    cfg["scans"]["steel"]["phases"] = [{"name": "x", "cif": str(tmp_path / "none.cif")}]
    with pytest.raises(PhaseError, match=r"config key scans\.steel\.phases\.0\.cif: .*none\.cif not found"):
        make_plan(validate_config(cfg))


# -- orientation maps in each phase's symmetry ------------------------------------------
def _rot(axis, deg):
    from orix.quaternion import Rotation

    return Rotation.from_axes_angles(axis, deg, degrees=True).data.reshape(4)


def test_misorientation_uses_each_phases_symmetry_and_none_across_phases():
    from latentebsd.orientations import pair_angles, phase_pair_angles

    ti, fe = SIMULATED_MATERIALS["titanium"], SIMULATED_MATERIALS["ferrite"]
    g = _rot([1, 2, 3], 35)
    from orix.quaternion import Rotation

    turned = (Rotation(_rot([0, 0, 1], 60)) * Rotation(g)).data  # 60 deg about c / [001]
    q1, q2 = np.tile(g, (3, 1)), np.tile(turned, (3, 1))
    hexagonal = pair_angles(q1[:1], q2[:1], symmetry=ti.laue_group())[0]
    cubic = pair_angles(q1[:1], q2[:1], symmetry=fe.laue_group())[0]
    assert hexagonal == pytest.approx(0.0, abs=1e-4) and cubic == pytest.approx(30.0, abs=1e-4)
    angles = phase_pair_angles(q1, q2, [0, 1, 0], [0, 1, 1], [ti.laue_group(), fe.laue_group()])
    assert angles[0] == pytest.approx(0.0, abs=1e-4) and angles[1] == pytest.approx(30.0, abs=1e-4)
    assert np.isnan(angles[2])  # two phases: no misorientation


def test_kam_grains_boundaries_and_grod_stay_within_a_phase():
    """A 3 x 4 map of ONE orientation, columns 0-1 ferrite and 2-3 austenite: two grains
    (same orientation, other phase), KAM 0 without cross-phase neighbours, the phase
    boundary marked at PHASE_BOUNDARY_DEG, GROD 0; point (1, 1) turned 1 deg."""
    from latentebsd.conventional import (PHASE_BOUNDARY_DEG, grain_reference_orientation_deviation,
                                         kernel_average_misorientation, orientation_boundary,
                                         segment_grains)
    from orix.quaternion import Rotation

    syms = [SIMULATED_MATERIALS[m].laue_group() for m in ("ferrite", "austenite")]
    g = _rot([1, 1, 0], 20)
    q = np.tile(g, (3, 4, 1))
    q[1, 1] = (Rotation(_rot([0, 0, 1], 1.0)) * Rotation(g)).data
    phase = np.array([[0, 0, 1, 1]] * 3)
    labels = segment_grains(q, 5.0, None, 1, phase, syms)
    assert len(np.unique(labels)) == 2 and np.all(labels[:, :2] == 0) and np.all(labels[:, 2:] == 1)
    # one phase only: the same map is one grain (the control)
    assert len(np.unique(segment_grains(q, 5.0))) == 1
    kam = kernel_average_misorientation(q, 5.0, 4, None, phase, syms)
    # (0, 1): neighbours (0, 0) 0 deg and (1, 1) 1 deg; (0, 2) of the other phase left out
    assert kam[0, 1] == pytest.approx(0.5, abs=1e-4)
    assert kam[0, 2] == pytest.approx(0.0, abs=1e-6)
    bound = orientation_boundary(q, None, phase, syms)
    assert np.all(bound[:, 1] == PHASE_BOUNDARY_DEG) and np.all(bound[:, 2] == PHASE_BOUNDARY_DEG)
    assert np.all(bound[:, 3] < 1e-4) and bound[1, 0] == pytest.approx(1.0, abs=1e-4)
    grod = grain_reference_orientation_deviation(q, labels, phase, syms)
    assert np.nanmax(grod[:, 2:]) < 1e-4 and grod[1, 1] > 0.5


def test_ang_of_two_phases_opens_in_orix_with_them(tmp_path):
    import orix.io

    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.index import INDEX_DTYPE, write_ang

    phases = [SIMULATED_MATERIALS["ferrite"], SIMULATED_MATERIALS["titanium"]]
    result = np.zeros(6, INDEX_DTYPE)
    result["quat"] = np.tile(_rot([1, 2, 3], 35), (6, 1))
    result["phase"] = [0, 0, 1, 1, -1, 1]
    result["nmatch"], result["cm"] = 6, 0.5
    write_ang(tmp_path / "m.ang", result, ScanGeometry(2, 3, 1.0, (60, 60)), phases=phases)
    xmap = orix.io.load(tmp_path / "m.ang")
    names = {p.name: p for i, p in xmap.phases_in_data if i >= 0}
    assert set(names) == {"ferrite", "Ti"}
    assert names["ferrite"].point_group.laue.name == "m-3m"
    assert names["Ti"].point_group.laue.name == "6/mmm"
    assert names["Ti"].structure.lattice.abcABG()[2] == pytest.approx(4.6855, abs=1e-3)
    read = [xmap.phases[int(i)].name for i in xmap.get_map_data("phase_id").ravel()]
    assert read == ["ferrite", "ferrite", "Ti", "Ti", "not_indexed", "Ti"]
    header = [line for line in (tmp_path / "m.ang").read_text().splitlines() if line.startswith("#")]
    lattice = [line.split()[2:5] for line in header if "LatticeConstants" in line]
    assert sorted(lattice) == sorted([["2.866", "2.866", "2.866"], ["2.951", "2.951", "4.686"]])


def test_table1_counts_a_decoded_pattern_of_the_wrong_phase_as_disagreeing():
    from latentebsd.config import section
    from latentebsd.io.index import INDEX_DTYPE
    from latentebsd.metrics import pattern_metrics
    from latentebsd.table1 import table1, table1_markdown

    phases = [SIMULATED_MATERIALS["ferrite"], SIMULATED_MATERIALS["austenite"]]
    original = np.zeros(4, INDEX_DTYPE)
    original["quat"] = np.tile(_rot([1, 2, 3], 35), (4, 1))
    original["phase"], original["nmatch"], original["cm"], original["pq"] = [0, 0, 1, 1], 8, 0.5, 1.0
    decoded = original.copy()
    decoded["phase"] = [0, 1, 1, 1]  # pattern 1: decoded as austenite, the same orientation
    arrays = {}
    for name, res in (("o", original), ("d", decoded)):
        arrays[name] = {k: res[k] for k in INDEX_DTYPE.names}
        arrays[name].update(iq_kp=np.ones(4), sharpness=np.ones(4), valid=np.ones(4, bool))
    m = pattern_metrics(arrays["o"], arrays["d"], 3, phases)
    assert m["wrong_phase"].tolist() == [False, True, False, False]
    assert np.isnan(m["misorientation_deg"][1]) and np.allclose(m["misorientation_deg"][[0, 2, 3]], 0, atol=1e-4)
    variants = {"vae16": {"loss": "vae", "latent_dim": 16}}
    frame = table1({"vae16": [m]}, variants, section("evaluation"))
    row = frame[frame["variant"] == "vae16"].iloc[0]
    assert row["Indexed and agreeing"] == 75.0 and row["wrong_phase_n"] == 1
    text = table1_markdown(frame, section("evaluation"))
    assert "counts as not agreeing" in text and "wrong phase: vae16 1" in text
    # one phase (the default): the orientation of pattern 1 agrees
    zero = np.zeros(4, np.int32)
    single = pattern_metrics({**arrays["o"], "phase": zero}, {**arrays["d"], "phase": zero}, 3)
    assert not single["wrong_phase"].any() and np.isfinite(single["misorientation_deg"]).all()


def test_index_files_without_phases_are_nickel():
    from latentebsd.phases import phases_of

    assert phases_of({}) == [NICKEL]
    assert phases_of({"phases": to_json([SIMULATED_MATERIALS["titanium"]])})[0].name == "Ti"
