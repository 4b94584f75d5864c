"""Snakemake entry point of rule ``feature_maps``: ranking, montage, top-k maps,
segmentation, ground-truth matches."""

from latentebsd.maps import feature_maps
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        feature_maps(
            cube_path=snakemake.input.cube,  # noqa: F821
            ranking_csv=snakemake.output.ranking,  # noqa: F821
            montage_png=snakemake.output.montage,  # noqa: F821
            top_pngs=list(snakemake.output.top),  # noqa: F821
            segmentation_npy=snakemake.output.segmentation,  # noqa: F821
            segmentation_png=snakemake.output.segmentation_png,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
            truth_path=snakemake.input.get("truth"),  # noqa: F821
            truth_csv=snakemake.output.truth_csv,  # noqa: F821
            truth_png=snakemake.output.truth_png,  # noqa: F821
        )
