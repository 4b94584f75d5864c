"""Snakemake entry point of rule ``quality_controls``: Table 1's control rows of one scan."""

from latentebsd.controls import quality_controls
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        quality_controls(
            preprocessed_path=snakemake.input.preprocessed,  # noqa: F821
            original_index_path=snakemake.input.original,  # noqa: F821
            out_path=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
            scan_name=snakemake.wildcards.scan,  # noqa: F821
        )
