"""Snakemake entry point of rule ``novelty``: which latent maps the conventional ones explain least."""

from latentebsd.novelty import run_novelty_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        names = snakemake.params.names  # noqa: F821
        run_novelty_rule(
            cubes=dict(zip(names, snakemake.input.cubes)),  # noqa: F821
            rankings=dict(zip(names, snakemake.input.rankings)),  # noqa: F821
            conventional=snakemake.input.conventional,  # noqa: F821
            out_csv=snakemake.output.csv,  # noqa: F821
            out_png=snakemake.output.png,  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            scan=snakemake.wildcards.scan,  # noqa: F821
            panel_variant=snakemake.params.panel_variant,  # noqa: F821
            memory_mb=snakemake.params.memory_mb,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
        )
