"""Snakemake entry point of rule ``fig_beta`` (Fig. 10): best / worst / random decodes vs beta."""

from latentebsd.figures import figure_beta
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        variants = snakemake.params.variants  # noqa: F821
        figure_beta(
            preprocessed=snakemake.input.preprocessed,  # noqa: F821
            cubes=dict(zip(variants, snakemake.input.cubes)),  # noqa: F821
            weights=dict(zip(variants, snakemake.input.weights)),  # noqa: F821
            variants=snakemake.params.specs,  # noqa: F821
            out_png=snakemake.output.figure,  # noqa: F821
            out_csv=snakemake.output.csv,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
        )
