"""Snakemake entry point of rules ``encode`` (one scan x one model -> latent cube,
NetCDF + TIFF) and ``encode_shard`` (only the map rows ``params.rows``)."""

from latentebsd.encode import run_encode_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_encode_rule(
            preprocessed=snakemake.input.patterns,  # noqa: F821
            weights=snakemake.input.weights,  # noqa: F821
            cube=snakemake.output.cube,  # noqa: F821
            tiff=snakemake.output.get("tiff"),  # noqa: F821
            reduction=snakemake.output.reduction,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            variant=snakemake.wildcards.variant,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            gpus=snakemake.resources.get("gpu", 0),  # noqa: F821
            shared=snakemake.resources.get("gpu_shared", 0),  # noqa: F821
            threads=snakemake.threads,  # noqa: F821
            rows=snakemake.params.get("rows"),  # noqa: F821
        )
