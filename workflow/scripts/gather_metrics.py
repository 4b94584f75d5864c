"""Snakemake entry point of rule ``gather_metrics``: metric shard files -> the scan's metrics."""

from latentebsd.metrics import gather_metrics
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        gather_metrics(snakemake.input.shards, snakemake.input.preprocessed,  # noqa: F821
                       snakemake.output.metrics)  # noqa: F821
