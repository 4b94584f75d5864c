"""Snakemake entry point of rule ``plot_losses``: all variants' loss curves on one figure."""

from latentebsd.train import plot_loss_comparison
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        plot_loss_comparison(
            dict(zip(snakemake.params.names, snakemake.input.losses)),  # noqa: F821
            snakemake.output[0],  # noqa: F821
            window=snakemake.params.window,  # noqa: F821
        )
