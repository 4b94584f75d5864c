"""Snakemake entry point of rule ``detection_summary``: the benchmark's tables and figure."""

from latentebsd.benchmark import run_summary_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_summary_rule(
            csvs=list(snakemake.input),  # noqa: F821
            out_csv=snakemake.output.csv,  # noqa: F821
            out_md=snakemake.output.md,  # noqa: F821
            out_html=snakemake.output.html,  # noqa: F821
            out_png=snakemake.output.png,  # noqa: F821
            latent=snakemake.params.latent,  # noqa: F821
            combined=snakemake.params.combined,  # noqa: F821
        )
