# Background, binning, [-1, 1], detector mask: one preprocessed HDF5 per scan.


rule preprocess:
    input:
        unpack(scan_source),
    output:
        "results/preprocessed/{scan}.h5",
    log:
        "logs/preprocess/{scan}.log",
    benchmark:
        "benchmarks/out/preprocess_{scan}.tsv"
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60, per_gb=1),
        mem_mb=megabytes(8000),
    params:
        scan=lambda wc: config["scans"][wc.scan],
        settings=config["preprocess"],
    script:
        "../scripts/preprocess.py"
