"""Snakemake entry point of rule ``baseline_cube``: PCA / NMF of one scan as a latent cube."""

from latentebsd.baselines import run_baseline_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_baseline_rule(
            preprocessed=snakemake.input.preprocessed,  # noqa: F821
            cube=snakemake.output.cube,  # noqa: F821
            tiff=snakemake.output.tiff,  # noqa: F821
            variant=snakemake.wildcards.variant,  # noqa: F821
            benchmark=snakemake.params.benchmark,  # noqa: F821
            variants=snakemake.params.variants,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
        )
