"""Snakemake entry point of rules ``decode`` (one scan's latent means -> decoded UP2)
and ``decode_shard`` (only the map rows ``params.rows``)."""

from latentebsd.decode import run_decode_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_decode_rule(
            weights_path=snakemake.input.weights,  # noqa: F821
            latent_path=snakemake.input.latent,  # noqa: F821
            preprocessed_path=snakemake.input.preprocessed,  # noqa: F821
            out_path=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            gpu=snakemake.resources.get("gpu", 0),  # noqa: F821
            shared=snakemake.resources.get("gpu_shared", 0),  # noqa: F821
            threads=snakemake.threads,  # noqa: F821
            rows=snakemake.params.get("rows"),  # noqa: F821
        )
