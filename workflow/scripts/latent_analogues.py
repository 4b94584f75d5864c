"""Snakemake entry point of rule ``latent_analogues``: latent KAM / GROD of one scan x variant."""

from latentebsd.analogues import run_analogue_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_analogue_rule(
            cube_path=snakemake.input.cube,  # noqa: F821
            conventional_path=snakemake.input.conventional,  # noqa: F821
            out_h5=snakemake.output.h5,  # noqa: F821
            out_png=snakemake.output.png,  # noqa: F821
            neighbours=snakemake.params.neighbours,  # noqa: F821
            memory_mb=snakemake.params.memory_mb,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            variant=snakemake.wildcards.variant,  # noqa: F821
            dpi=snakemake.params.dpi,  # noqa: F821
        )
