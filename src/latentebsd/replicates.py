"""Seed replicates: the same variant trained from other seeds, and verdicts that hold
only when every seed agrees.

A verdict that one training run gives and a retraining flips is not a finding
(benchmarks/RESULTS.md: the detection verdict for thin twins flipped between two CPU
models). ``models.replicates: {seeds: S, variants: [...]}`` trains each listed variant
``S - 1`` more times, as models ``<variant>@seed<k>`` (k = 1 .. S - 1; seed 0 is the
variant itself), which are encoded, decoded, re-indexed and scored like every model.
Each seed's models then give their own trend and detection verdicts
(:func:`latentebsd.table1.seed_trend_verdicts`,
:func:`latentebsd.benchmark.seed_detection_verdicts`), combined here
(:func:`combine_verdicts`): the verdict when every seed gives it, else
``inconclusive (seeds disagree: ...)``; with one seed, ``one seed: <verdict>``. What
held is written as plain statements by :mod:`latentebsd.findings`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from latentebsd.config import child_seed

#: Separator of a replicate's name: ``vae16@seed1``.
SEP = "@seed"
INCONCLUSIVE = "inconclusive"
ONE_SEED = "one seed"


def replicate_name(variant: str, k: int) -> str:
    """The model name of seed ``k`` of ``variant`` (``k`` = 0: the variant itself)."""
    return variant if int(k) == 0 else f"{variant}{SEP}{int(k)}"


def split_name(model: str) -> tuple[str, int]:
    """``(variant, k)`` of a model name (:func:`replicate_name` inverted)."""
    if SEP in model:
        base, k = model.rsplit(SEP, 1)
        if k.isdigit() and int(k) > 0:
            return base, int(k)
    return model, 0


def replicated_variants(models: Mapping[str, Any], variants: Sequence[str]) -> list[str]:
    """The variants the ``models`` section replicates, in ``variants`` order
    (``replicates.variants`` empty = all)."""
    chosen = list(models.get("replicates", {}).get("variants") or [])
    return [v for v in variants if not chosen or v in chosen]


def n_seeds(models: Mapping[str, Any]) -> int:
    """Training runs per replicated variant, the variant's own included."""
    return int(models.get("replicates", {}).get("seeds", 1))


def seed_groups(models: Mapping[str, Any], variants: Sequence[str]) -> dict[int, dict[str, str]]:
    """Seed k -> {variant: model name} for every replicated variant and seed (seed 0:
    the variants themselves)."""
    chosen = replicated_variants(models, variants)
    return {k: {v: replicate_name(v, k) for v in chosen} for k in range(n_seeds(models))}


def replicate_specs(models: Mapping[str, Any], variants: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Model name -> spec of every replicate (seeds 1 .. S - 1), in seed, variant order;
    each the spec of its variant."""
    specs = models["variants"]
    return {name: dict(specs[v]) for k, group in seed_groups(models, variants).items() if k > 0
            for v, name in group.items()}


def training_seed(seed: int, model: str) -> int:
    """The training seed of a model: the global ``seed`` for seed 0 (every variant, as
    before replicates existed), a child seed of it for replicate k."""
    _, k = split_name(model)
    return int(seed) if k == 0 else child_seed(seed, f"replicate{k}")


def combine_verdicts(per_seed: Mapping[int, str]) -> str:
    """One verdict from each seed's: the verdict when every seed gives it
    (``<verdict>`` with several seeds, ``one seed: <verdict>`` with one), else
    ``inconclusive (seeds disagree: seed 0 holds, seed 1 does not hold)``."""
    if not per_seed:
        return "n/a"
    items = sorted(per_seed.items())
    values = {v for _, v in items}
    if len(items) == 1:
        return f"{ONE_SEED}: {items[0][1]}"
    if len(values) == 1:
        return items[0][1]
    return (f"{INCONCLUSIVE} (seeds disagree: "
            + ", ".join(f"seed {k} {v}" for k, v in items) + ")")


def agreed(verdict: str) -> bool:
    """Whether a combined verdict is the same on every seed of several."""
    return not (verdict.startswith(INCONCLUSIVE) or verdict.startswith(ONE_SEED)
                or verdict == "n/a")

