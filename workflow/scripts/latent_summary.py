"""Snakemake entry point of rule ``latent_summary``: one CSV row per latent cube."""

from latentebsd.encode import summarize_reductions
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        summarize_reductions(list(snakemake.input), snakemake.output[0])  # noqa: F821
