"""Snakemake entry point of the ``gather_*`` rules: shard files -> the scan's file(s)."""

from latentebsd.shards import run_gather_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_gather_rule(
            kind=snakemake.params.kind,  # noqa: F821
            inputs=dict(snakemake.input.items()),  # noqa: F821
            outputs=dict(snakemake.output.items()),  # noqa: F821
        )
