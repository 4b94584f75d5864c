"""Stage ``findings``: what held on every seed, as plain statements (``results/findings.md``).

From the seed-replicate outputs (:mod:`latentebsd.replicates`): each Table 1 trend
judged on every seed (:func:`latentebsd.table1.seed_trend_verdicts`), each "latent
against conventional EBSD" detection verdict on every seed
(:func:`latentebsd.benchmark.seed_detection_verdicts`), and the spread of Table 1 over
seeds (:func:`latentebsd.table1.seed_table`). A statement is listed as held only when
every seed gives it; disagreeing seeds make it inconclusive, a single seed "one seed".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from latentebsd.replicates import INCONCLUSIVE, ONE_SEED

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
