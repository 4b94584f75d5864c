"""Snakemake entry point of rule ``conventional_maps``: IPF, IQ, KAM, GROD, sharpness of one scan."""

from latentebsd.conventional import run_conventional_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_conventional_rule(
            index_path=snakemake.input[0],  # noqa: F821
            out_h5=snakemake.output.h5,  # noqa: F821
            out_ipf=snakemake.output.ipf,  # noqa: F821
            out_panel=snakemake.output.panel,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
        )
