# Models and training: one job per model variant (config["models"]["variants"]), then
# one figure comparing all variants' loss curves.
#
# The checkpoint is a param, not an output: Snakemake deletes the outputs of a failed
# or killed job, and the checkpoint must survive so that a re-run resumes from it.


rule train:
    input:
        dataset=rules.sample.output[0],
    output:
        weights="results/models/{variant}/weights.pt",
        losses="results/models/{variant}/losses.csv",
        plot="results/models/{variant}/losses.png",
    log:
        "logs/train/{variant}.log",
    benchmark:
        "benchmarks/out/train_{variant}.tsv"
    conda:
        "../envs/latentebsd.yaml"
    threads: 1  # common.smk: one thread per job
    resources:
        gpu=gpu_slot,
        gpu_shared=gpu_shared_slot,
        runtime=minutes(720),
        mem_mb=megabytes(32000),
    params:
        variant=lambda wc: P.model_specs[wc.variant],
        training=config["training"],
        seed=lambda wc: training_seed(config["seed"], wc.variant),  # a replicate's own
        # beside the weights, wherever they are (a module's prefix: moves both)
        checkpoint=lambda wc, output: os.path.join(
            os.path.dirname(output.weights), "checkpoint.pt"
        ),
    script:
        "../scripts/train.py"


rule plot_losses:
    input:
        losses=expand(rules.train.output.losses, variant=VARIANTS),
    output:
        report(
            "results/models/losses_all.png",
            caption="../report/losses.rst",
            category="0. Training",
        ),
    log:
        "logs/train/plot_losses.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        names=VARIANTS,
        window=config["training"]["smoothing_window"],
    script:
        "../scripts/plot_losses.py"
