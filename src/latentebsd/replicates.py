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
``inconclusive (seeds disagree: ...)``; with one seed, ``one seed: <verdict>``.
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


# --------------------------------------------------------------------------------------
# findings.md
# --------------------------------------------------------------------------------------
_AGAINST = {"beats": "beat", "matches": "match", "loses": "lose to"}


def _seed_values(row: Mapping[str, Any], field: str) -> str:
    keys = sorted((k for k in row if k.startswith("seed") and k.endswith(f"_{field}")),
                  key=lambda k: int(k[4:].split("_")[0]))
    parts = []
    for k in keys:
        v = row[k]
        if isinstance(v, float):
            v = "n/a" if v != v else f"{v:.2f}"
        parts.append(f"seed {k[4:].split('_')[0]}: {v}")
    return "; ".join(parts)


def findings_markdown(trends: Any, table: Any, detection: Any | None,
                      seed_groups: Mapping[int, Mapping[str, str]]) -> str:
    """``results/findings.md``: plain statements of what held on every seed and what did
    not (``trends``: :func:`latentebsd.table1.seed_trend_verdicts`; ``table``:
    :func:`latentebsd.table1.seed_table`; ``detection``:
    :func:`latentebsd.benchmark.seed_detection_verdicts` or ``None`` without ground
    truth)."""
    seeds = sorted(int(k) for k in seed_groups)
    variants = list(next(iter(seed_groups.values()), {})) if seed_groups else []
    held, failed, open_, single = [], [], [], []

    def sort(statement: str, verdict: str, positive: bool) -> None:
        if verdict.startswith(ONE_SEED):
            single.append(statement)
        elif verdict.startswith(INCONCLUSIVE) or verdict == "n/a":
            open_.append(statement)
        elif positive:
            held.append(statement)
        else:
            failed.append(statement)

    for r in trends.to_dict("records") if trends is not None else []:
        v = str(r["verdict"])
        if v == "not testable":
            continue
        text = f"Table 1 trend \"{r['trend']}\": {v} ({_seed_values(r, 'values')})."
        sort(text, v, v.endswith("holds") and "not" not in v)
    for r in detection.to_dict("records") if detection is not None else []:
        v = str(r["verdict"])
        word = v.split(": ")[-1]
        if word in _AGAINST:
            text = (f"{r['scan']} / {r['class']}: latent maps ({', '.join(variants)}) "
                    f"{_AGAINST[word]} conventional EBSD "
                    f"({r['conventional_score']:.2f}; latent {_seed_values(r, 'score')})")
        else:
            text = (f"{r['scan']} / {r['class']}: latent against conventional EBSD "
                    f"({r['conventional_score']:.2f}): {v} ({_seed_values(r, 'score')})")
        if v.startswith(ONE_SEED):
            text += f" - {v}"
        sort(text + ".", v, word == "beats")
    spread = []
    if table is not None and len(table):
        for r in table[table["seed"].astype(str) == "spread"].to_dict("records"):
            lo, hi = r.get("Indexed_min"), r.get("Indexed_max")
            if lo == lo and hi == hi:
                spread.append(f"{r['variant']}: indexed {lo:.1f} - {hi:.1f} % over "
                              f"{r['model']}")
    lines = ["# Findings: what held on every seed", "",
             f"Seeds: {len(seeds)} training run(s) of {', '.join(variants) or 'no variant'} "
             f"(`models.replicates`). A verdict is stated as found only when every seed "
             "gives it; a verdict of one seed is not a finding until a replicate repeats it.",
             ""]
    for title, items in (("Held on every seed", held),
                         ("Did not hold (every seed agrees)", failed),
                         ("Inconclusive: the seeds disagree", open_),
                         ("One seed only (set models.replicates.seeds >= 2 to test)", single)):
        if items:
            lines += [f"## {title}", "", *[f"- {s}" for s in items], ""]
    if spread:
        lines += ["## Spread over seeds (Table 1, `table1_seeds.csv`)", "",
                  *[f"- {s}" for s in spread], ""]
    lines += ["Detection verdicts: the fold-selected latent maps of each seed's models against "
              "the conventional maps (IQ, CI, fit, KAM, GROD, sharpness, boundaries, Sigma3 "
              "boundaries, orientation), probe scores on held-out spatial folds "
              "(`detection_seeds.csv`); trends: `trends_seeds.csv`.", ""]
    return "\n".join(lines)


def run_findings_rule(trends: str, table: str, detection: str | None, out_md: str,
                      seed_groups: Mapping[int, Mapping[str, str]]) -> str:
    """What rule ``findings`` runs."""
    import pandas as pd

    from latentebsd.io.atomic import write_text

    det = pd.read_csv(detection) if detection else None
    text = findings_markdown(pd.read_csv(trends), pd.read_csv(table), det,
                             {int(k): dict(v) for k, v in seed_groups.items()})
    write_text(out_md, text)
    return text
