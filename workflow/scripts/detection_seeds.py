"""Snakemake entry point of rule ``detection_seeds``: latent against conventional EBSD
judged on every seed's models."""

from latentebsd.benchmark import run_seeds_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_seeds_rule(
            csvs=list(snakemake.input),  # noqa: F821
            out_csv=snakemake.output[0],  # noqa: F821
            seed_groups=snakemake.params.seed_groups,  # noqa: F821
        )
