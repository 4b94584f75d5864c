"""Snakemake entry point of rule ``decoded_maps``: Fig 11, IPF and IQ maps of every source."""

from latentebsd.figures import run_fig11_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_fig11_rule(
            index_paths=dict(zip(snakemake.params.sources, snakemake.input)),  # noqa: F821
            variants=snakemake.params.variants,  # noqa: F821
            out_png=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
        )
