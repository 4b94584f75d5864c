"""Snakemake entry point of rule ``latent_panels``: latent maps beside conventional maps (Figs 5/6)."""

from latentebsd.figures import run_latent_panel_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_latent_panel_rule(
            latent_path=snakemake.input.latent,  # noqa: F821
            conventional_path=snakemake.input.conventional,  # noqa: F821
            out_png=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            variant=snakemake.params.variant,  # noqa: F821
            ranking_csv=snakemake.input.ranking,  # noqa: F821
        )
