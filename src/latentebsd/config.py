"""Workflow configuration: one schema, validated once, defaults filled, keys named in errors.

The schema (``workflow/schemas/config.schema.yaml``, JSON schema written as YAML) is the one place where
every setting, its default and its allowed range are written. :func:`validate_config`
fills in the defaults, rejects unknown keys (a typo such as ``epochz`` is an error, not
a silently ignored setting), puts every section's keys in the schema's order (so that
what the workflow writes from a setting does not depend on the order of a config
file), checks what a schema cannot express (:func:`_check_cross_references`) and
reports every problem as ``config key a.b.c: what was expected``. The library then
receives validated sections; :func:`section` gives one section (defaults filled,
checked) to code and tests that call the library directly.
"""

from __future__ import annotations

import copy
import functools
import os
import re
import zlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from latentebsd.phases import PhaseError, check_entries

#: The schema ships inside the package (``latentebsd/schema.yaml``, in the repository a
#: link to ``workflow/schemas/config.schema.yaml``), so that a non-editable install - a wheel on a
#: cluster node - validates configs in every job without the repository beside it.
DEFAULT_SCHEMA = Path(__file__).resolve().with_name("schema.yaml")


class ConfigError(ValueError):
    """The workflow configuration is invalid."""


def _with_defaults(validator_class: type) -> type:
    """A validator class that also fills in ``default`` values while validating."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = copy.deepcopy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _key_path(error: jsonschema.ValidationError) -> str:
    parts = [str(p) for p in error.absolute_path]
    if error.validator == "additionalProperties":
        # jsonschema puts the unknown key only in the message; name it in the path too
        extra = set(error.instance) - set(error.schema.get("properties", {}))
        pattern_props = error.schema.get("patternProperties", {})
        extra = sorted(k for k in extra if not any(re.search(p, k) for p in pattern_props))
        if extra:
            parts.append(extra[0])
    return ".".join(parts) if parts else "(top level)"


def _describe(error: jsonschema.ValidationError) -> str:
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        return f"unknown key (allowed here: {', '.join(allowed)})" if allowed else error.message
    return error.message


@functools.lru_cache(maxsize=4)
def _load_schema(path: str) -> dict:
    with open(path) as f:
        return yaml.safe_load(f)


def schema(schema_path: str | os.PathLike | None = None) -> dict:
    """The parsed schema (``workflow/schemas/config.schema.yaml`` by default); do not modify it."""
    return _load_schema(str(Path(schema_path) if schema_path else DEFAULT_SCHEMA))


def _schema_order(instance: Any, schema: Mapping[str, Any]) -> Any:
    """``instance`` with the keys of every object in the order of ``schema``'s properties
    (keys the schema leaves open, such as scan names, keep their order)."""
    if isinstance(instance, dict):
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        ordered = {k: instance[k] for k in props if k in instance}
        ordered.update({k: v for k, v in instance.items() if k not in props})
        instance.clear()
        for key, value in ordered.items():
            sub = props.get(key, extra if isinstance(extra, dict) else {})
            instance[key] = _schema_order(value, sub)
    return instance


def validate_config(config: dict, schema_path: str | os.PathLike | None = None) -> dict:
    """Validate ``config`` in place against the schema and fill in defaults.

    Parameters
    ----------
    config
        The parsed configuration (Snakemake's ``config`` dict).
    schema_path
        JSON schema (YAML). Defaults to the package's copy of ``workflow/schemas/config.schema.yaml``.

    Returns
    -------
    dict
        ``config``, with defaults filled in and keys in the schema's order.

    Raises
    ------
    ConfigError
        Listing every invalid key as ``config key a.b: message``.
    """
    schema = _load_schema(str(Path(schema_path) if schema_path else DEFAULT_SCHEMA))
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key {_key_path(e)}: {_describe(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _schema_order(config, schema)
    _check_cross_references(config)
    return config


def section(name: str, given: Mapping[str, Any] | None = None,
            schema_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """One validated config section: ``given`` (partial or ``None``) with the schema's
    defaults filled in, for code that calls the library without a whole config.

    Raises
    ------
    ConfigError
        As :func:`validate_config`, naming ``<name>.<key>``.
    """
    schema = _load_schema(str(Path(schema_path) if schema_path else DEFAULT_SCHEMA))
    if name not in schema["properties"]:
        raise KeyError(f"no config section {name!r} in the schema")
    sub = {"type": "object", "additionalProperties": False,
           "properties": {name: schema["properties"][name]},
           "definitions": schema.get("definitions", {})}
    instance = {name: copy.deepcopy(dict(given or {}))}
    validator = _with_defaults(jsonschema.Draft202012Validator)(sub)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key {_key_path(e)}: {_describe(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _schema_order(instance, sub)
    _CHECKS.get(name, lambda _: None)(instance[name])
    return instance[name]


def child_seed(seed: int, *salt: str) -> int:
    """A stable child seed for one use of the global ``seed`` (e.g. one scan and
    variant): unchanged when other scans or variants are added or removed."""
    return (int(seed) * 1_000_003 + zlib.crc32("/".join(salt).encode())) % 2**32


def _fail(key: str, message: str) -> None:
    raise ConfigError(f"config key {key}: {message}")


def _ordered_pair(key: str, pair: list) -> None:
    if pair[0] > pair[1]:
        _fail(key, f"expected [low, high] with low <= high, got {pair}")


def _check_simulation(sim: Mapping[str, Any]) -> None:
    for micro, keys in (("wrought", ("twins_per_grain", "twin_thickness")),
                        ("am", ("domain_misorientation_deg", "wall_density", "particle_weight"))):
        for key in keys:
            _ordered_pair(f"simulation.{micro}.{key}", sim[micro][key])


def _check_training(training: Mapping[str, Any]) -> None:
    _ordered_pair("training.contrastive.gamma_range", training["contrastive"]["gamma_range"])


def _check_maps(maps: Mapping[str, Any]) -> None:
    lo, hi = maps["percentiles"]
    if not lo < hi:
        _fail("maps.percentiles", f"expected [low, high] with low < high, got {maps['percentiles']}")
    seg = maps["segmentation"]
    if seg["sample_size"] < seg["n_clusters"]:
        _fail("maps.segmentation.sample_size", f"expected >= n_clusters ({seg['n_clusters']}), "
              f"got {seg['sample_size']}")


def _check_evaluation(evaluation: Mapping[str, Any]) -> None:
    region = evaluation["panel_region"]
    if region is not None and (region[1] <= region[0] or region[3] <= region[2]):
        _fail("evaluation.panel_region", "expected [row0, row1, col0, col1] with row0 < row1 "
              f"and col0 < col1, got {region}")


def _check_scan_phases(name: str, scan: Mapping[str, Any]) -> None:
    """A user's scan that is indexed names its phases; a simulated one takes its
    materials' (and fractions match them). CIF files and reflectors are checked when
    the plan is made (:func:`latentebsd.plan.check_user_scans`)."""
    key = f"scans.{name}.phases"
    if "simulate" in scan:
        if "phases" in scan:
            _fail(key, f"scan {name} is simulated: its phases are those of "
                  f"scans.{name}.simulate.materials; remove phases")
        spec = scan["simulate"]
        fractions = spec.get("fractions")
        n = len(spec.get("materials", ["nickel"]))
        if fractions is not None and (len(fractions) != n or sum(fractions) <= 0):
            _fail(f"scans.{name}.simulate.fractions", f"expected one probability per "
                  f"material ({n}), not all zero, got {fractions}")
        return
    if "phases" not in scan:
        if scan.get("role", "both") == "both":
            _fail(key, f"required for your own scan {name}: the crystal phases it is "
                  "indexed with, e.g. phases: [BCC] (a ferritic steel), [FCC] (nickel, "
                  "austenite, aluminium), [{type: HCP, name: Ti, lattice: [2.951, 2.951, "
                  "4.686, 90, 90, 120]}], [BCC, FCC] (a duplex steel) or "
                  "[{name: ferrite, cif: data/fe.cif}]")
        return
    try:
        check_entries(scan["phases"], key)
    except PhaseError as err:
        raise ConfigError(str(err)) from None


_CHECKS = {"simulation": _check_simulation, "training": _check_training, "maps": _check_maps,
           "evaluation": _check_evaluation}


def _check_cross_references(config: dict) -> None:
    """Checks a JSON schema cannot express."""
    for name, scan in config.get("scans", {}).items():
        if ("simulate" in scan) == ("path" in scan):
            _fail(f"scans.{name}", "give exactly one of 'simulate' (embedded synthetic scan) "
                  "or 'path' (your own pattern file)")
        # A user's scan without pc takes the file's (checked when it is preprocessed:
        # latentebsd.preprocess.geometry_from_config)
        _check_scan_phases(name, scan)
        background = scan.get("background", config.get("preprocess", {}).get("background"))
        if "simulate" in scan and background == "static":
            key = (f"scans.{name}.background" if "background" in scan
                   else "preprocess.background")
            _fail(key, f"static, but scan {name} is simulated and its file stores no static "
                  f"background; set scans.{name}.background: mean (or none)")
    scans = config.get("scans", {})
    if scans and all(scan.get("role", "both") == "train" for scan in scans.values()):
        _fail("scans", "every scan has role: train; at least one needs role: both "
              "(mapped and evaluated)")
    variants = config.get("models", {}).get("variants", {})
    for name, variant in variants.items():
        if name == "original":
            _fail("models.variants.original", "'original' is reserved for the preprocessed "
                  "patterns; rename that variant")
        if variant["loss"] == "beta_vae" and "beta" not in variant:
            _fail(f"models.variants.{name}.beta", "a beta_vae variant needs beta")
        if variant["loss"] != "beta_vae" and variant.get("beta", 1.0) != 1.0:
            _fail(f"models.variants.{name}.beta", f"a {variant['loss']} variant has beta = 1 "
                  f"(got {variant['beta']}); use loss: beta_vae")
    chosen = config.get("evaluation", {}).get("panel_variant")
    if chosen is not None and chosen not in variants:
        _fail("evaluation.panel_variant", f"{chosen!r} is not one of models.variants "
              f"{list(variants)}")
    bench = config.get("benchmark", {})
    for key in ("analogue_variants", "combined_variant"):
        names = bench.get(key)
        for name in [names] if isinstance(names, str) else (names or []):
            if name not in variants:
                _fail(f"benchmark.{key}", f"{name!r} is not one of models.variants {list(variants)}")
    for name, check in _CHECKS.items():
        if name in config:
            check(config[name])


def load_config(path: str | os.PathLike, schema_path: str | os.PathLike | None = None) -> dict:
    """Read a YAML config file and validate it (see :func:`validate_config`)."""
    path = Path(path)
    try:
        with open(path) as f:
            config = yaml.safe_load(f) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    try:
        return validate_config(config, schema_path)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
