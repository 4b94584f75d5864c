"""Snakemake entry point of rule ``sample``: preprocessed scans -> train/val sample."""

from pathlib import Path

from latentebsd.sample import sample_training_set
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        sample_training_set(
            preprocessed=list(snakemake.input.preprocessed),  # noqa: F821
            out_path=snakemake.output[0],  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
            truths={Path(t).name.removesuffix("_truth.h5"): t
                    for t in snakemake.input.truths},  # noqa: F821
        )
