"""Snakemake entry point of rule ``gather_decoded``: decoded shard UP2s -> the scan's UP2."""

from latentebsd.decode import gather_up2
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        gather_up2(snakemake.input.shards, snakemake.input.preprocessed, snakemake.output.up2)  # noqa: F821
