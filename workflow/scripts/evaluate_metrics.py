"""Snakemake entry point of rules ``evaluate_metrics`` and ``metrics_shard`` (only the
map rows ``params.rows``): per-pattern decoded-vs-original metrics."""

from latentebsd.metrics import run_metrics_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_metrics_rule(
            original_path=snakemake.input.original,  # noqa: F821
            decoded_path=snakemake.input.decoded,  # noqa: F821
            out_path=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            variant=snakemake.wildcards.variant,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            rows=snakemake.params.get("rows"),  # noqa: F821
        )
