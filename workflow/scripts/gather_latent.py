"""Snakemake entry point of rule ``gather_latent``: shard cubes -> the scan's cube."""

from latentebsd.encode import gather_latent
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        gather_latent(
            snakemake.input.cubes,  # noqa: F821
            snakemake.input.summaries,  # noqa: F821
            snakemake.output.cube,  # noqa: F821
            snakemake.output.tiff,  # noqa: F821
            snakemake.output.reduction,  # noqa: F821
        )
