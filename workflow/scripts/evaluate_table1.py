"""Snakemake entry point of rule ``evaluate_table1``: Table 1 (CSV, Markdown, HTML) and
the paper's trends judged on it (Markdown)."""

from latentebsd.table1 import run_table_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_table_rule(
            metric_paths=snakemake.params.metric_paths,  # noqa: F821
            variants=snakemake.params.variants,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            out_csv=snakemake.output.csv,  # noqa: F821
            out_md=snakemake.output.md,  # noqa: F821
            out_html=snakemake.output.html,  # noqa: F821
            out_trends=snakemake.output.trends,  # noqa: F821
            control_paths=list(snakemake.input.controls),  # noqa: F821
            original_paths=list(snakemake.input.originals),  # noqa: F821
        )
