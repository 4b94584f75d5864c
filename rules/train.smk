# Models and training: one job per VAE variant (config["models"]["variants"]), then
# one figure comparing all variants' loss curves.
#
# The checkpoint is a param, not an output: Snakemake deletes the outputs of a failed
# or killed job, and the checkpoint must survive so that a re-run resumes from it.


rule train:
    input:
        dataset="results/sample/dataset.h5",
    output:
        weights="results/models/{variant}/weights.pt",
        losses="results/models/{variant}/losses.csv",
        plot="results/models/{variant}/losses.png",
    params:
        variant=lambda wildcards: config["models"]["variants"][wildcards.variant],
        training=config["training"],
        seed=config["seed"],
        checkpoint=lambda wildcards: f"results/models/{wildcards.variant}/checkpoint.pt",
    threads: 2
    resources:
        gpu=1,
    log:
        "logs/train/{variant}.log",
    benchmark:
        "benchmarks/out/train_{variant}.tsv"
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/train.py"


rule plot_losses:
    input:
        losses=expand("results/models/{variant}/losses.csv", variant=VARIANTS),
    output:
        report(
            "results/models/losses_all.png",
            caption="../report/losses.rst",
            category="0. Training",
        ),
    params:
        names=VARIANTS,
        window=config["training"].get("smoothing_window"),
    log:
        "logs/train/plot_losses.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/plot_losses.py"
