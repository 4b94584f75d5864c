"""Snakemake entry point of rule ``fig_cells`` (Fig. 9): the dislocation-cell map per d."""

from latentebsd.figures import conventional_cell_scores, figure_cells
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        variants = snakemake.params.variants  # noqa: F821
        matches = snakemake.input.get("truth_matches")  # noqa: F821
        truth = snakemake.input.get("truth")  # noqa: F821
        conventional = (conventional_cell_scores(snakemake.input.conventional, truth)  # noqa: F821
                        if truth else None)
        figure_cells(
            cubes=dict(zip(variants, snakemake.input.cubes)),  # noqa: F821
            rankings=dict(zip(variants, snakemake.input.rankings)),  # noqa: F821
            specs=snakemake.params.specs,  # noqa: F821
            out_png=snakemake.output.figure,  # noqa: F821
            out_csv=snakemake.output.csv,  # noqa: F821
            truth_matches=dict(zip(variants, matches)) if matches else None,
            scan=snakemake.wildcards.scan,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            conventional=conventional,
            detected_auc=snakemake.params.detected_auc,  # noqa: F821
        )
