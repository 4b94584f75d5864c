"""Snakemake entry point of rule ``gather_index``: index shard files -> the scan's .h5 and .ang."""

from latentebsd.index import gather_index
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        gather_index(snakemake.input.shards, snakemake.input.preprocessed,  # noqa: F821
                     snakemake.output.h5, snakemake.output.ang)  # noqa: F821
