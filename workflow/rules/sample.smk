# N random patterns per scan (every role), 80/20 train/validation split (seeded); the
# ground truth of simulated scans counts the distinct orientations trained on.


rule sample:
    input:
        preprocessed=expand(rules.preprocess.output[0], scan=P.scans),
        truths=[
            fill(rules.simulate_scan.output.truth, scan=s)
            for s in P.scans
            if "simulate" in config["scans"][s]
        ],
    output:
        "results/sample/dataset.h5",
    log:
        "logs/sample.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["sample"],
        seed=config["seed"],
    script:
        "../scripts/sample.py"
