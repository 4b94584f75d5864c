"""Workflow configuration: schema validation with errors that name the key.

The schema lives in ``config/schema.yaml`` (JSON schema written as YAML). Validation
fills in the schema's defaults, rejects unknown keys (a typo such as ``epochz`` is an
error, not a silently ignored setting) and reports every problem as
``config key a.b.c: what was expected``.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_SCHEMA = REPO_ROOT / "config" / "schema.yaml"


class ConfigError(ValueError):
    """The workflow configuration is invalid."""


def _with_defaults(validator_class: type) -> type:
    """A validator class that also fills in ``default`` values while validating."""
    check_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):  # noqa: ANN001
        if isinstance(instance, dict):
            for key, sub in properties.items():
                if "default" in sub and key not in instance:
                    instance[key] = _copy(sub["default"])
        yield from check_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


def _copy(value: Any) -> Any:
    return yaml.safe_load(yaml.safe_dump(value))


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


def validate_config(config: dict, schema_path: str | os.PathLike | None = None) -> dict:
    """Validate ``config`` in place against the schema and fill in defaults.

    Parameters
    ----------
    config
        The parsed configuration (Snakemake's ``config`` dict).
    schema_path
        JSON schema (YAML). Defaults to ``config/schema.yaml`` in the repository.

    Returns
    -------
    dict
        ``config``, with defaults filled in.

    Raises
    ------
    ConfigError
        Listing every invalid key as ``config key a.b: message``.
    """
    schema_path = Path(schema_path) if schema_path else DEFAULT_SCHEMA
    with open(schema_path) as f:
        schema = yaml.safe_load(f)
    validator = _with_defaults(jsonschema.Draft202012Validator)(schema)
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"config key {_key_path(e)}: {_describe(e)}" for e in errors]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    _check_cross_references(config)
    return config


def _check_cross_references(config: dict) -> None:
    """Checks a JSON schema cannot express."""
    scans = config.get("scans", {})
    for name, scan in scans.items():
        if ("simulate" in scan) == ("path" in scan):
            raise ConfigError(
                f"config key scans.{name}: give exactly one of 'simulate' (embedded "
                f"synthetic scan) or 'path' (your own pattern file)"
            )
        if "path" in scan and "pc" not in scan:
            raise ConfigError(
                f"config key scans.{name}.pc: your own scans need the pattern centre "
                f"[x, y, z] (and pc_convention) for indexing"
            )


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


def simulated_scans(config: dict) -> list[str]:
    """Names of the scans the workflow simulates (the embedded default)."""
    return [name for name, scan in config["scans"].items() if "simulate" in scan]


def user_scans(config: dict) -> list[str]:
    """Names of the scans that come from the user's own pattern files."""
    return [name for name, scan in config["scans"].items() if "path" in scan]
