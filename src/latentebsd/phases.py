"""Crystal phases of a scan: what the config names, what PyEBSDIndex indexes, what orix computes with.

A scan's phase list (config ``scans.<name>.phases``, one entry or several) is resolved
once into :class:`PhaseSpec` objects; everything downstream takes them from there: the
Hough indexer (:func:`band_indexer`: PyEBSDIndex ``tripletvote.addphase``), the
symmetry of every misorientation, KAM, GROD, grain and IPF colour
(:meth:`PhaseSpec.laue_group`, orix), and the ``.ang`` header (:func:`orix_phase`:
name, point group, lattice constants). An index file stores its scan's phases as JSON
(attribute ``phases``, :func:`to_json`), so that stages downstream of indexing read
them from their input and never from the config. Point ``i`` of an index result is of
phase ``specs[i]`` (PyEBSDIndex's ``phase`` field; -1: not indexed).

Three kinds of config entry (:func:`phase_from_config`):

- a PyEBSDIndex named phase: ``FCC``, ``BCC`` or ``HCP``, as a string, or as
  ``{type: HCP, name: Ti, lattice: [2.951, 2.951, 4.686, 90, 90, 120]}`` to name it and
  give its lattice constants (PyEBSDIndex's generic lattice otherwise: a = 1 Angstrom,
  HCP c / a = 1.63; only the angles between planes enter the indexing, so a cubic
  lattice constant changes nothing but the ``.ang`` header, whereas an HCP c / a does);
- a space group and lattice: ``{name: sigma, space_group: 136, lattice: [a, b, c,
  alpha, beta, gamma], reflectors: [[1, 1, 0], ...]}`` (Angstrom, degrees);
- a CIF file: ``{name: ferrite, cif: data/fe.cif}`` (orix / diffpy read it: space
  group, lattice and atoms).

Reflectors (PyEBSDIndex's "pole families", the plane families whose bands the
indexer matches): a named phase uses PyEBSDIndex's own lists; any phase may give
``reflectors``; otherwise they are computed from the structure (:func:`default_reflectors`:
the lowest-order plane families with a non-zero kinematical structure factor, 4 for
cubic and 8 for other crystal systems, as PyEBSDIndex's FCC / BCC / HCP lists - which
that rule reproduces exactly for Ni, alpha-Fe and alpha-Ti). A space-group entry
without atoms in space group 225, 229 or 194 takes the FCC, BCC or HCP list; in any
other space group it must give ``reflectors`` (or a CIF).

Two traps this module avoids (both found while testing alpha-Ti):

- kikuchipy's ``EBSDDetector.get_indexer`` passes an orix phase to PyEBSDIndex without
  reflectors, and PyEBSDIndex then falls back on the FCC families for *any* space
  group: a BCC phase given by space group 229 would be indexed with FCC bands.
- orix re-expresses a structure in its own frame (x || a, z || c*) keeping the
  Cartesian atom positions, which moves the fractional positions of non-cubic
  structures (alpha-Ti's 2c site became (0.577, 0.577, 1/4)), and diffsims'
  ``ReciprocalLatticeVector.calculate_structure_factor`` gives wrong hexagonal structure
  factors (|F(11-21)| > 0; pyxem/diffsims#203). :func:`orix_phase` builds the lattice
  in orix's frame to begin with, and :func:`structure_factors` uses diffsims'
  EMsoft-derived ``get_kinematical_structure_factor``, which is right.

This module imports orix, diffpy, diffsims and PyEBSDIndex only inside the functions
that need them (configuration checks stay light).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: PyEBSDIndex's named phases: space group and its generic lattice.
NAMED_PHASES: dict[str, tuple[int, tuple[float, ...]]] = {
    "FCC": (225, (1.0, 1.0, 1.0, 90.0, 90.0, 90.0)),
    "BCC": (229, (1.0, 1.0, 1.0, 90.0, 90.0, 90.0)),
    "HCP": (194, (1.0, 1.0, 1.63, 90.0, 90.0, 120.0)),
}
#: Space group -> the named phase whose reflectors a space-group entry without atoms takes.
LIBRARY_OF_SPACE_GROUP = {sg: name for name, (sg, _) in NAMED_PHASES.items()}
#: Keys of a phase given as a mapping.
ENTRY_KEYS = ("name", "type", "space_group", "lattice", "cif", "reflectors")
#: Reflector families a computed list holds: cubic / any other crystal system.
N_REFLECTORS = {"cubic": 4, "other": 8}
#: Smallest d-spacing (Angstrom) searched for reflectors.
MIN_DSPACING = 0.5
#: Relative |F| below which a plane family counts as extinct.
EXTINCT = 1e-3
#: What a config error shows as the allowed forms.
PHASE_FORMS = ("FCC, BCC or HCP (PyEBSDIndex's named phases), {type: FCC|BCC|HCP, name, "
               "lattice}, {name, space_group, lattice: [a, b, c, alpha, beta, gamma], "
               "reflectors} or {name, cif: file.cif}")


class PhaseError(ValueError):
    """A phase entry of the config is invalid (the message names the config key)."""


@dataclass(frozen=True)
class PhaseSpec:
    """One crystal phase, as indexing and orientation arithmetic need it.

    Attributes
    ----------
    name
        Phase name (maps, ``.ang`` header).
    space_group
        International space group number, 1-230.
    lattice
        ``(a, b, c, alpha, beta, gamma)``, Angstrom and degrees.
    library
        PyEBSDIndex's named phase (``FCC``, ``BCC``, ``HCP``) whose reflectors the
        indexer uses, or ``None``.
    reflectors
        Plane families ``(h, k, l)`` (or ``(h, k, i, l)`` for hexagonal) the indexer
        matches; ``None``: PyEBSDIndex's list of ``library``.
    atoms
        ``(element, x, y, z)`` (fractional) of the asymmetric unit, if known (CIF,
        simulated materials): needed only for structure factors.
    source
        Where the phase came from, for logs (``PyEBSDIndex BCC``, a CIF path, ...).
    """

    name: str
    space_group: int
    lattice: tuple[float, ...]
    library: str | None = None
    reflectors: tuple[tuple[int, ...], ...] | None = None
    atoms: tuple[tuple[str, float, float, float], ...] = field(default=())
    source: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-friendly dict (:func:`spec_from_dict` reads it back)."""
        return {"name": self.name, "space_group": int(self.space_group),
                "lattice": [float(v) for v in self.lattice], "library": self.library,
                "reflectors": None if self.reflectors is None else [list(r) for r in self.reflectors],
                "atoms": [list(a) for a in self.atoms], "source": self.source}

    def laue_group(self):
        """orix ``Symmetry``: the Laue group of the phase (Kikuchi patterns are
        centrosymmetric), the symmetry every misorientation of this phase uses."""
        return _laue_group(self)

    def describe(self) -> str:
        """``name (space group 229, m-3m, a = 2.866 ...)`` for logs and captions."""
        a, b, c, al, be, ga = self.lattice
        return (f"{self.name} (space group {self.space_group}, {self.laue_group().name}, "
                f"a b c = {a:g} {b:g} {c:g} A, {al:g} {be:g} {ga:g} deg; {self.source})")


def spec_from_dict(d: Mapping[str, Any]) -> PhaseSpec:
    """The :class:`PhaseSpec` of :meth:`PhaseSpec.to_dict`."""
    reflectors = d.get("reflectors")
    return PhaseSpec(
        name=str(d["name"]), space_group=int(d["space_group"]),
        lattice=tuple(float(v) for v in d["lattice"]), library=d.get("library"),
        reflectors=None if reflectors is None else tuple(tuple(int(v) for v in r) for r in reflectors),
        atoms=tuple((str(a[0]), float(a[1]), float(a[2]), float(a[3])) for a in d.get("atoms", ())),
        source=str(d.get("source", "")),
    )


def to_json(specs: Sequence[PhaseSpec]) -> str:
    """A phase list as JSON (the ``phases`` attribute of index files)."""
    return json.dumps([s.to_dict() for s in specs])


def from_json(text: str | bytes) -> list[PhaseSpec]:
    """The phase list of :func:`to_json`."""
    return [spec_from_dict(d) for d in json.loads(text)]


#: FCC nickel: the embedded default's phase (the paper's Ni-based superalloys), indexed
#: with PyEBSDIndex's FCC reflectors; written to ``.ang`` headers as ``Ni``, a = 3.524.
NICKEL = PhaseSpec("Ni", 225, (3.524, 3.524, 3.524, 90.0, 90.0, 90.0), "FCC", None,
                   (("Ni", 0.0, 0.0, 0.0),), "PyEBSDIndex FCC")

#: Materials the simulator can make (``scans.<name>.simulate.materials``), each indexed
#: with PyEBSDIndex's named phase of its structure. ``nickel`` is projected from the
#: dynamical master pattern that ships with kikuchipy; the others from kinematical
#: master patterns computed from these structures (:mod:`latentebsd.simulate`).
SIMULATED_MATERIALS: dict[str, PhaseSpec] = {
    "nickel": NICKEL,
    "ferrite": PhaseSpec("ferrite", 229, (2.8665, 2.8665, 2.8665, 90.0, 90.0, 90.0), "BCC",
                         None, (("Fe", 0.0, 0.0, 0.0),), "PyEBSDIndex BCC"),
    "austenite": PhaseSpec("austenite", 225, (3.595, 3.595, 3.595, 90.0, 90.0, 90.0), "FCC",
                           None, (("Fe", 0.0, 0.0, 0.0),), "PyEBSDIndex FCC"),
    "titanium": PhaseSpec("Ti", 194, (2.9508, 2.9508, 4.6855, 90.0, 90.0, 120.0), "HCP", None,
                          (("Ti", 1 / 3, 2 / 3, 0.25),), "PyEBSDIndex HCP"),
}


def phases_of(attrs: Mapping[str, Any]) -> list[PhaseSpec]:
    """The phase list an index file's attributes record; files written before phases
    were recorded hold FCC nickel (:data:`NICKEL`)."""
    text = attrs.get("phases")
    return from_json(text) if text else [NICKEL]


# --------------------------------------------------------------------------------------
# Config entries
# --------------------------------------------------------------------------------------
def _lattice(value: Any, key: str) -> tuple[float, ...]:
    try:
        lattice = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        lattice = ()
    if len(lattice) != 6 or any(v <= 0 for v in lattice) or any(v >= 180 for v in lattice[3:]):
        raise PhaseError(f"config key {key}.lattice: expected [a, b, c, alpha, beta, gamma] "
                         f"(Angstrom, degrees; all > 0, angles < 180), got {value!r}")
    return lattice


def check_entry(entry: Any, key: str) -> None:
    """The checks of one phase entry that need no file and no crystallography library
    (``latentebsd.config`` runs them at validation; :func:`phase_from_config` all)."""
    if isinstance(entry, str):
        if entry.upper() not in NAMED_PHASES:
            raise PhaseError(f"config key {key}: {entry!r} is not a phase; expected "
                             f"{PHASE_FORMS}")
        return
    if not isinstance(entry, Mapping):
        raise PhaseError(f"config key {key}: expected {PHASE_FORMS}, got {entry!r}")
    unknown = sorted(set(entry) - set(ENTRY_KEYS))
    if unknown:
        raise PhaseError(f"config key {key}.{unknown[0]}: unknown key (allowed here: "
                         f"{', '.join(ENTRY_KEYS)})")
    kinds = [k for k in ("type", "space_group", "cif") if k in entry]
    if len(kinds) != 1:
        raise PhaseError(f"config key {key}: give exactly one of type (FCC, BCC, HCP), "
                         f"space_group (with lattice) or cif, got {kinds or 'none'}")
    kind = kinds[0]
    if kind == "type" and str(entry["type"]).upper() not in NAMED_PHASES:
        raise PhaseError(f"config key {key}.type: {entry['type']!r} is not one of "
                         f"PyEBSDIndex's named phases {list(NAMED_PHASES)}")
    if kind == "space_group":
        sg = entry["space_group"]
        if isinstance(sg, bool) or not isinstance(sg, (int, np.integer)) or not 1 <= sg <= 230:
            raise PhaseError(f"config key {key}.space_group: expected an integer 1-230, got {sg!r}")
        if "lattice" not in entry:
            raise PhaseError(f"config key {key}.lattice: a phase given by space group needs "
                             f"its lattice [a, b, c, alpha, beta, gamma] (Angstrom, degrees)")
    if kind == "cif" and ("lattice" in entry or "space_group" in entry):
        raise PhaseError(f"config key {key}: a CIF file gives the lattice and space group; "
                         f"remove lattice / space_group or the cif")
    if "lattice" in entry:
        _lattice(entry["lattice"], key)
    if "reflectors" in entry:
        _reflectors(entry["reflectors"], key)


def _reflectors(value: Any, key: str) -> tuple[tuple[int, ...], ...]:
    try:
        out = tuple(tuple(int(v) for v in r) for r in value)
        ok = (len(out) >= 3 and all(len(r) in (3, 4) and any(r) for r in out)
              and all(float(v) == int(v) for r in value for v in r))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise PhaseError(f"config key {key}.reflectors: expected at least 3 plane families "
                         f"[h, k, l] (or [h, k, i, l]), integers, not all zero, got {value!r}")
    return out


def check_entries(entries: Any, key: str) -> None:
    """:func:`check_entry` for every entry of a phase list, and unique names."""
    if not isinstance(entries, (list, tuple)) or not entries:
        raise PhaseError(f"config key {key}: expected a list of one or more phases "
                         f"({PHASE_FORMS}), got {entries!r}")
    for i, entry in enumerate(entries):
        check_entry(entry, f"{key}.{i}")
    names = [_entry_name(e) for e in entries]
    dupes = sorted({n for n in names if n is not None and names.count(n) > 1})
    if dupes:
        raise PhaseError(f"config key {key}: phase names must differ, {dupes[0]!r} is given "
                         f"twice; set name: on each")


def _entry_name(entry: Any) -> str | None:
    if isinstance(entry, str):
        return entry.upper()
    if "name" in entry:
        return str(entry["name"])
    if "type" in entry:
        return str(entry["type"]).upper()
    if "cif" in entry:
        return Path(str(entry["cif"])).stem
    return None


def phase_from_config(entry: Any, key: str) -> PhaseSpec:
    """Resolve one config phase entry (module docstring) into a :class:`PhaseSpec`.

    Parameters
    ----------
    entry
        ``"FCC"`` / ``"BCC"`` / ``"HCP"`` or a mapping with ``type``, ``space_group`` +
        ``lattice`` or ``cif``, optionally ``name`` and ``reflectors``.
    key
        The config key of the entry (``scans.steel.phases.0``), named in errors.

    Raises
    ------
    PhaseError
        Naming ``key`` and what was expected.
    """
    check_entry(entry, key)
    if isinstance(entry, str):
        library = entry.upper()
        sg, lattice = NAMED_PHASES[library]
        return PhaseSpec(library, sg, lattice, library, None, (), f"PyEBSDIndex {library}")
    name = _entry_name(entry)
    reflectors = _reflectors(entry["reflectors"], key) if "reflectors" in entry else None
    if "type" in entry:
        library = str(entry["type"]).upper()
        sg, lattice = NAMED_PHASES[library]
        if "lattice" in entry:
            lattice = _lattice(entry["lattice"], key)
        return PhaseSpec(str(name), sg, lattice, library, reflectors, (),
                         f"PyEBSDIndex {library}")
    if "space_group" in entry:
        sg = int(entry["space_group"])
        spec = PhaseSpec(str(name) if name else f"sg{sg}", sg, _lattice(entry["lattice"], key),
                         None, reflectors, (), f"space group {sg}")
    else:
        spec = _from_cif(entry["cif"], str(name), reflectors, key)
    if spec.reflectors is None:
        spec = _with_default_reflectors(spec, key)
    _check_symmetry(spec, key)
    return spec


def phases_from_config(entries: Iterable[Any], key: str) -> list[PhaseSpec]:
    """:func:`phase_from_config` of every entry of a scan's phase list (``key`` =
    ``scans.<name>.phases``)."""
    entries = list(entries)
    check_entries(entries, key)
    return [phase_from_config(e, f"{key}.{i}") for i, e in enumerate(entries)]


def _from_cif(path: Any, name: str, reflectors: tuple | None, key: str) -> PhaseSpec:
    """Space group, lattice and asymmetric unit of a CIF file (diffpy's parser, as orix's
    ``Phase.from_cif`` reads it)."""
    from diffpy.structure.parsers import p_cif

    path = Path(str(path))
    if not path.is_file():
        raise PhaseError(f"config key {key}.cif: {path} not found")
    parser = p_cif.P_cif()
    try:
        structure = parser.parseFile(str(path))
        sg = int(parser.spacegroup.number)
    except Exception as err:  # diffpy raises its own parse errors
        raise PhaseError(f"config key {key}.cif: {path} is not a CIF file with a space "
                         f"group that diffpy reads ({type(err).__name__}: {err})") from None
    atoms = tuple((_element(a.element), *(float(v) for v in a.xyz)) for a in structure)
    lattice = tuple(float(v) for v in structure.lattice.abcABG())
    return PhaseSpec(name, sg, lattice, None, reflectors, atoms, f"CIF {path}")


def _element(symbol: Any) -> str:
    """``'Fe'`` of a CIF atom type such as ``'Fe2+'`` or ``'Fe1'``."""
    text = "".join(ch for ch in str(symbol) if ch.isalpha())
    return text[:1].upper() + text[1:2].lower() if len(text) > 1 and text[1].islower() else text[:1].upper()


def _with_default_reflectors(spec: PhaseSpec, key: str) -> PhaseSpec:
    if spec.atoms:
        return PhaseSpec(spec.name, spec.space_group, spec.lattice, None,
                         default_reflectors(spec), spec.atoms, spec.source)
    library = LIBRARY_OF_SPACE_GROUP.get(spec.space_group)
    if library is None:
        raise PhaseError(
            f"config key {key}: phase {spec.name!r} (space group {spec.space_group}) has no "
            f"atoms to compute its reflectors from: give reflectors [[h, k, l], ...] (the "
            f"plane families whose bands to match, lowest order first) or a cif")
    return PhaseSpec(spec.name, spec.space_group, spec.lattice, library, None, (),
                     f"{spec.source}, PyEBSDIndex {library} reflectors")


def _check_symmetry(spec: PhaseSpec, key: str) -> None:
    """orix accepts the space group and the lattice fits its crystal system."""
    try:
        phase = orix_phase(spec)
    except Exception as err:
        raise PhaseError(f"config key {key}: orix cannot build phase {spec.name!r} "
                         f"({type(err).__name__}: {err})") from None
    a, b, c, al, be, ga = spec.lattice
    system = phase.point_group.system
    want = {"cubic": (a == b == c and al == be == ga == 90),
            "hexagonal": (a == b and al == be == 90 and ga == 120),
            "tetragonal": (a == b and al == be == ga == 90),
            "orthorhombic": (al == be == ga == 90)}.get(system, True)
    if not want:
        raise PhaseError(f"config key {key}.lattice: {list(spec.lattice)} does not fit the "
                         f"{system} space group {spec.space_group} of phase {spec.name!r}")


# --------------------------------------------------------------------------------------
# Libraries
# --------------------------------------------------------------------------------------
def orix_phase(spec: PhaseSpec):
    """orix ``Phase`` (space group, lattice in orix's frame, atoms at their fractional
    positions; module docstring on why the lattice is built in that frame)."""
    from diffpy.structure import Lattice, Structure
    from orix.crystal_map import Phase
    from orix.crystal_map._phase import new_structure_matrix_from_alignment

    base = new_structure_matrix_from_alignment(Lattice(*spec.lattice).base, x="a", z="c*")
    structure = Structure(lattice=Lattice(base=base))
    for element, x, y, z in spec.atoms:
        structure.addNewAtom(element, [x, y, z])
    return Phase(name=spec.name, space_group=int(spec.space_group), structure=structure)


def orix_phase_list(specs: Sequence[PhaseSpec]):
    """orix ``PhaseList`` with ids 0..n-1 in the order of ``specs`` (PyEBSDIndex's
    ``phase`` values)."""
    from orix.crystal_map import PhaseList

    return PhaseList({i: orix_phase(s) for i, s in enumerate(specs)})


def structure_factors(spec: PhaseSpec, hkl: np.ndarray) -> np.ndarray:
    """Kinematical structure factors ``|F|`` of plane families ``hkl`` ``(n, 3)``
    (diffsims' EMsoft-derived ``get_kinematical_structure_factor``; module docstring)."""
    from diffsims.structure_factor import get_kinematical_structure_factor

    if not spec.atoms:
        raise ValueError(f"phase {spec.name!r} has no atoms: no structure factors")
    phase = orix_phase(spec)
    lattice = phase.structure.lattice
    return np.array([abs(get_kinematical_structure_factor(phase, list(h), 0.5 * lattice.rnorm(h)))
                     for h in np.asarray(hkl, dtype=float).reshape(-1, 3)])


def default_reflectors(spec: PhaseSpec, n: int | None = None) -> tuple[tuple[int, ...], ...]:
    """The ``n`` lowest-order plane families with a non-zero structure factor, no two
    parallel (default ``n``: :data:`N_REFLECTORS`); hexagonal phases as ``(h, k, i, l)``.
    """
    from diffsims.crystallography import ReciprocalLatticeVector

    phase = orix_phase(spec)
    n = n or N_REFLECTORS["cubic" if phase.point_group.system == "cubic" else "other"]
    g = ReciprocalLatticeVector.from_min_dspacing(phase, MIN_DSPACING).unique(use_symmetry=True)
    order = np.argsort(-g.dspacing, kind="stable")
    hkl = np.rint(g.hkl[order]).astype(int)
    f = structure_factors(spec, hkl)
    allowed = f > EXTINCT * f.max()
    chosen: list[np.ndarray] = []
    unit: list[np.ndarray] = []
    for h, ok, v in zip(hkl, allowed, g.data[order]):
        if not ok:
            continue
        u = v / np.linalg.norm(v)
        if any(abs(float(u @ w)) > 1 - 1e-6 for w in unit):
            continue  # a higher order of a family already chosen: the same band
        chosen.append(h)
        unit.append(u)
        if len(chosen) == n:
            break
    if phase.is_hexagonal:
        return tuple((int(h), int(k), int(-(h + k)), int(l)) for h, k, l in chosen)
    return tuple(tuple(int(v) for v in h) for h in chosen)


def band_indexer(spec: PhaseSpec):
    """PyEBSDIndex ``BandIndexer`` of one phase (``tripletvote.addphase``)."""
    from pyebsdindex import tripletvote

    reflectors = None if spec.reflectors is None else np.array(spec.reflectors)
    if spec.library is not None:
        return tripletvote.addphase(libtype=spec.library, phasename=spec.name,
                                    spacegroup=spec.space_group,
                                    latticeparameter=np.array(spec.lattice),
                                    polefamilies=reflectors)
    return tripletvote.addphase(phasename=spec.name, spacegroup=spec.space_group,
                                latticeparameter=np.array(spec.lattice), polefamilies=reflectors)


@functools.lru_cache(maxsize=64)
def _laue_group(spec: PhaseSpec):
    return orix_phase(spec).point_group.laue


def laue_groups(specs: Sequence[PhaseSpec]) -> list:
    """The Laue group (orix ``Symmetry``) of each phase, in order."""
    return [s.laue_group() for s in specs]


def summary(specs: Sequence[PhaseSpec]) -> str:
    """``ferrite (m-3m), austenite (m-3m)`` for titles and captions."""
    return ", ".join(f"{s.name} ({s.laue_group().name})" for s in specs)
