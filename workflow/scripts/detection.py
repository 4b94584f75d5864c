"""Snakemake entry point of rule ``detection``: every method x class x fold of one scan."""

from latentebsd.benchmark import run_detection_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_detection_rule(
            truth=snakemake.input.truth,  # noqa: F821
            conventional=snakemake.input.conventional,  # noqa: F821
            cubes=dict(zip(snakemake.params.names, snakemake.input.cubes)),  # noqa: F821
            analogues=dict(zip(snakemake.params.analogue_names, snakemake.input.analogues)),  # noqa: F821
            out_csv=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            combined=snakemake.params.combined,  # noqa: F821
            memory_mb=snakemake.params.memory_mb,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
        )
