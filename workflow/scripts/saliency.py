"""Snakemake entry point of rule ``saliency``: occlusion maps of chosen latent features."""

from latentebsd.saliency import run_saliency_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_saliency_rule(
            preprocessed=snakemake.input.preprocessed,  # noqa: F821
            weights=snakemake.input.weights,  # noqa: F821
            cube=snakemake.input.cube,  # noqa: F821
            ranking_csv=snakemake.input.ranking,  # noqa: F821
            novelty_csv=snakemake.input.novelty,  # noqa: F821
            out_h5=snakemake.output.h5,  # noqa: F821
            out_png=snakemake.output.png,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            variant=snakemake.params.variant,  # noqa: F821
            threads=snakemake.threads,  # noqa: F821
            dpi=snakemake.params.dpi,  # noqa: F821
        )
