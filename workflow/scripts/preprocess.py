"""Snakemake entry point of rule ``preprocess``: one scan -> preprocessed HDF5."""

from latentebsd.preprocess import run_preprocess_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_preprocess_rule(
            scan_name=snakemake.wildcards.scan,  # noqa: F821
            pattern_path=snakemake.input.patterns,  # noqa: F821
            geometry_path=snakemake.input.get("geometry"),  # noqa: F821
            out_path=snakemake.output[0],  # noqa: F821
            scan_cfg=snakemake.params.scan,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
        )
