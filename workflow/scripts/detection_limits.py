"""Snakemake entry point of rule ``detection_limits``: score against graded strength."""

from latentebsd.detection_limits import run_limits_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        out = snakemake.output  # noqa: F821
        run_limits_rule(list(snakemake.input), out.csv, out.md, out.png,  # noqa: F821
                        snakemake.params.threshold)  # noqa: F821
