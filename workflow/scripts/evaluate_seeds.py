"""Snakemake entry point of rule ``evaluate_seeds``: Table 1 per seed of the replicated
variants, its spread, and the trends judged on every seed."""

from latentebsd.table1 import run_seeds_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_seeds_rule(
            metric_paths=snakemake.params.metric_paths,  # noqa: F821
            seed_groups=snakemake.params.seed_groups,  # noqa: F821
            variants=snakemake.params.variants,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            out_table=snakemake.output.table,  # noqa: F821
            out_trends=snakemake.output.trends,  # noqa: F821
        )
