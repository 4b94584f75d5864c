"""Snakemake entry point of rule ``train``: one model variant."""

from latentebsd.train import run_train_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_train_rule(
            dataset_path=snakemake.input.dataset,  # noqa: F821
            variant=dict(snakemake.params.variant),  # noqa: F821
            training=dict(snakemake.params.training),  # noqa: F821
            weights_path=snakemake.output.weights,  # noqa: F821
            losses_csv_path=snakemake.output.losses,  # noqa: F821
            plot_path=snakemake.output.plot,  # noqa: F821
            checkpoint_path=snakemake.params.checkpoint,  # noqa: F821
            seed=int(snakemake.params.seed),  # noqa: F821
            gpus=snakemake.resources.get("gpu", 0),  # noqa: F821
            shared=snakemake.resources.get("gpu_shared", 0),  # noqa: F821
            threads=int(snakemake.threads),  # noqa: F821
        )
