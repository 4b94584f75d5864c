rule sample:
    input:
        expand("results/preprocessed/{scan}.h5", scan=SCANS),
    output:
        "results/sample/dataset.h5",
    params:
        patterns_per_scan=config["sample"]["patterns_per_scan"],
        val_fraction=config["sample"]["val_fraction"],
        seed=config["seed"],
    log:
        "logs/sample.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/sample.py"
