# N random patterns per scan, 80/20 train/validation split (seeded).


rule sample:
    input:
        expand(rules.preprocess.output[0], scan=SCANS),
    output:
        "results/sample/dataset.h5",
    params:
        settings=config["sample"],
        seed=config["seed"],
    log:
        "logs/sample.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/sample.py"
