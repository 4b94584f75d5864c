"""Snakemake entry point of rule ``truth_match_summary``: ground-truth matches over variants."""

from latentebsd.groundtruth import summarize_truth_matches
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        summarize_truth_matches(
            list(snakemake.input),  # noqa: F821
            snakemake.output.long,  # noqa: F821
            snakemake.output.wide,  # noqa: F821
        )
