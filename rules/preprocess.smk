rule preprocess:
    input:
        unpack(lambda wc: scan_source(config["scans"], wc.scan)),
    output:
        "results/preprocessed/{scan}.h5",
    params:
        scan=lambda wc: config["scans"][wc.scan],
        settings=config["preprocess"],
    log:
        "logs/preprocess/{scan}.log",
    benchmark:
        "benchmarks/out/preprocess_{scan}.tsv"
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/preprocess.py"
