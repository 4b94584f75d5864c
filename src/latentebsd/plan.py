"""What the workflow makes for a validated config: scans, variants, shards, figure series.

Imported by ``workflow/rules/common.smk`` alone: the rule files read their wildcard ranges and
scan groups from one :class:`Plan`, and ``common.smk`` turns it into target lists and
input functions (each path is spelled once, in the rule that writes it).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from latentebsd.baselines import baseline_variants
from latentebsd.config import child_seed
from latentebsd.io.patterns import PatternReader
from latentebsd.phases import SIMULATED_MATERIALS, phases_from_config
from latentebsd.replicates import replicate_specs, seed_groups
from latentebsd.preprocess import choose_background, geometry_from_config, scan_settings
from latentebsd.shards import aligned_shard_rows, stage_block_rows

log = logging.getLogger(__name__)

#: Regex that matches no wildcard value (for a rule with no scans to serve).
NO_MATCH = "(?!x)x"


@dataclass(frozen=True)
class Plan:
    """The study a config asks for.

    Attributes
    ----------
    scans, variants
        Names, in config order (``scans``: all of them - simulated, preprocessed and
        sampled for training).
    mapped_scans
        Scans with ``role: both``: encoded, mapped, decoded, re-indexed, evaluated
        (``role: train`` scans are only sampled).
    specs
        Variant name -> ``{loss, latent_dim, beta}``.
    shards
        Scans over ``shard_patterns`` -> row ranges of their shards.
    whole_scans, sharded_scans
        Wildcard regexes of the scans that run as one job per stage / as shards.
    vae_variants
        Plain VAEs sorted by d (the Fig 8 / 9 series).
    beta_variants
        ``maps.beta_variants`` that are configured (the Fig 10 rows).
    truth_scans
        Simulated scans (they have ground truth).
    cell_scans
        Scans of Fig 9: simulated ``am`` scans and every real scan.
    top
        File stems of the top-k single-map figures.
    sources
        What the index stage indexes: ``original`` and every variant.
    panel_variant
        The variant whose latent maps the Fig 5/6 panels show.
    baselines
        The PCA / NMF cubes of the benchmark (``pca16``, ...).
    cube_sources
        Every latent cube a scan gets: the model variants, then the baselines.
    analogue_variants
        Variants whose latent KAM / GROD are mapped and benchmarked.
    combined_variant
        The variant benchmarked together with the conventional maps.
    phases
        Mapped scan -> its phases (dicts of :meth:`latentebsd.phases.PhaseSpec.to_dict`,
        :func:`scan_phases`), what its index jobs index with.
    replicates
        Seed replicates (``models.replicates``, :mod:`latentebsd.replicates`): model name
        (``vae16@seed1``) -> its variant's spec; trained, encoded, decoded, re-indexed,
        scored and benchmarked, but in no figure, Table 1 or maps ranking.
    models
        Every trained model: ``variants``, then ``replicates``.
    model_specs
        ``specs`` and ``replicates`` together.
    seed_groups
        Seed k -> {replicated variant: model name}; seed 0 are the variants themselves.
    index_sources
        What is re-indexed: ``sources`` and the replicates.
    detection_cubes
        The cubes the detection benchmark scores: ``cube_sources`` and the replicates.
    """

    scans: list[str]
    mapped_scans: list[str]
    variants: list[str]
    specs: dict[str, dict[str, Any]]
    shards: dict[str, list[tuple[int, int]]]
    whole_scans: str
    sharded_scans: str
    vae_variants: list[str]
    beta_variants: list[str]
    truth_scans: list[str]
    cell_scans: list[str]
    top: list[str]
    sources: list[str]
    panel_variant: str
    baselines: list[str]
    cube_sources: list[str]
    analogue_variants: list[str]
    combined_variant: str
    phases: dict[str, list[dict[str, Any]]]
    replicates: dict[str, dict[str, Any]]
    models: list[str]
    model_specs: dict[str, dict[str, Any]]
    seed_groups: dict[int, dict[str, str]]
    index_sources: list[str]
    detection_cubes: list[str]


def make_plan(config: Mapping[str, Any]) -> Plan:
    """The :class:`Plan` of a validated config (user scans checked first:
    :func:`check_user_scans`)."""
    check_user_scans(config)
    scans = list(config["scans"])
    scan_cfg = config["scans"]
    mapped = [s for s in scans if scan_cfg[s].get("role", "both") == "both"]
    specs = {v: dict(spec) for v, spec in config["models"]["variants"].items()}
    variants = list(specs)
    shards = shard_plan(config, mapped)
    panel = panel_variant(config["evaluation"], variants)
    bench = config["benchmark"]
    baselines = baseline_variants(bench, specs)
    replicates = replicate_specs(config["models"], variants)
    return Plan(
        scans=scans, mapped_scans=mapped, variants=variants, specs=specs, shards=shards,
        whole_scans=scan_regex([s for s in mapped if s not in shards]),
        sharded_scans=scan_regex(list(shards)),
        vae_variants=sorted((v for v in variants if specs[v]["loss"] == "vae"),
                            key=lambda v: int(specs[v]["latent_dim"])),
        beta_variants=[v for v in config["maps"]["beta_variants"] if v in specs],
        truth_scans=[s for s in mapped if "simulate" in scan_cfg[s]],
        cell_scans=[s for s in mapped if "simulate" not in scan_cfg[s]
                    or scan_cfg[s]["simulate"]["microstructure"] == "am"],
        top=[f"top{r:02d}" for r in range(1, config["maps"]["top_k"] + 1)],
        sources=["original", *variants],
        panel_variant=panel,
        baselines=baselines,
        cube_sources=[*variants, *baselines],
        analogue_variants=list(bench["analogue_variants"] or [panel]),
        combined_variant=bench["combined_variant"] or panel,
        phases={s: scan_phases(config, s) for s in mapped},
        replicates=replicates,
        models=[*variants, *replicates],
        model_specs={**specs, **replicates},
        seed_groups=seed_groups(config["models"], variants),
        index_sources=["original", *variants, *replicates],
        detection_cubes=[*variants, *baselines, *replicates],
    )


def scan_phases(config: Mapping[str, Any], name: str) -> list[dict[str, Any]]:
    """The phases scan ``name`` is indexed with, resolved (:mod:`latentebsd.phases`):
    a simulated scan's materials', a user's ``scans.<name>.phases`` (FCC nickel for a
    training-only scan that names none: it is never indexed)."""
    scan = config["scans"][name]
    if "simulate" in scan:
        specs = [SIMULATED_MATERIALS[m] for m in scan["simulate"].get("materials", ["nickel"])]
    elif "phases" in scan:
        specs = phases_from_config(scan["phases"], f"scans.{name}.phases")
    else:
        specs = [SIMULATED_MATERIALS["nickel"]]
    return [s.to_dict() for s in specs]


def check_user_scans(config: Mapping[str, Any]) -> None:
    """Stop before anything runs when a user's scan lacks what its preprocessing and
    indexing need.

    For every user's scan: its phases (:func:`scan_phases`: CIF files read, reflectors
    found). For every ``scans.<name>.path`` that exists: the geometry the config and
    the file give together (:func:`latentebsd.preprocess.geometry_from_config`: pattern
    centre, tilts, step) and, for ``background: static``, the file's static background -
    the same checks, with the same errors naming the config key, that rule
    ``preprocess`` makes later. Files not there yet are checked when they are
    preprocessed.
    """
    for name, scan in config["scans"].items():
        if "path" in scan and "phases" in scan:
            scan_phases(config, name)
        if "path" not in scan or not Path(scan["path"]).is_file():
            continue
        reader = PatternReader(scan["path"], nav_shape=scan.get("nav_shape"))
        geometry_from_config(name, scan, reader)
        settings, keys = scan_settings(name, scan, config["preprocess"])
        if settings["background"] == "static":
            # the checks only: the mean is never computed here
            choose_background("static", reader, np.zeros(reader.pattern_shape),
                              keys["background"])


def panel_variant(evaluation: Mapping[str, Any], variants: Sequence[str]) -> str:
    """``evaluation.panel_variant`` if set, else ``vae128`` (the paper's Fig 5) when
    configured, else the first variant."""
    if not variants:
        raise ValueError("models.variants is empty: no latent maps to show")
    chosen = evaluation.get("panel_variant")
    if chosen is None:
        return "vae128" if "vae128" in variants else variants[0]
    return chosen


def scan_seed(config: Mapping[str, Any], name: str) -> int:
    """Seed of a simulated scan: its own ``simulate.seed`` if set, else one derived from
    the global seed and the scan name (stable when other scans are added or removed)."""
    spec = config["scans"][name]["simulate"]
    return int(spec["seed"]) if "seed" in spec else child_seed(config["seed"], name)


def scan_map_shape(config: Mapping[str, Any], name: str) -> tuple[int, int] | None:
    """``(n_rows, n_cols)`` of a scan known before it is preprocessed, or ``None``.

    A simulated scan's ``map_shape``; else the scan's ``nav_shape``; else the pattern
    file's own header (``None`` if the file is not there yet).
    """
    scan = config["scans"][name]
    if "simulate" in scan:
        return tuple(int(v) for v in scan["simulate"]["map_shape"])
    if "nav_shape" in scan:
        return tuple(int(v) for v in scan["nav_shape"])
    path = Path(scan["path"])
    if not path.is_file():
        return None
    return tuple(int(v) for v in PatternReader(path).map_shape)


def shard_plan(config: Mapping[str, Any], scans: Sequence[str]) -> dict[str, list[tuple[int, int]]]:
    """Row ranges of the shards of every scan that is split (scans not split are absent)."""
    shard_patterns = config.get("shard_patterns")
    if shard_patterns is None:
        return {}
    plan: dict[str, list[tuple[int, int]]] = {}
    for name in scans:
        shape = scan_map_shape(config, name)
        if shape is None:
            log.warning("scan %s: map shape unknown until its file exists; not sharded", name)
            continue
        ranges = aligned_shard_rows(*shape, shard_patterns, stage_block_rows(config, shape[1]))
        if len(ranges) > 1:
            plan[name] = ranges
    return plan


def scan_regex(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (nothing when empty)."""
    return "|".join(re.escape(n) for n in names) if names else NO_MATCH
