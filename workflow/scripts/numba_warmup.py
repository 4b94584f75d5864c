"""Snakemake entry point of rule ``numba_warmup``: compile one part's numba paths."""

from latentebsd.warmup import warm_up
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        warm_up(
            part=snakemake.wildcards.part,  # noqa: F821
            out_path=snakemake.output[0],  # noqa: F821
            simulation=snakemake.params.simulation,  # noqa: F821
            evaluation=snakemake.params.evaluation,  # noqa: F821
        )
