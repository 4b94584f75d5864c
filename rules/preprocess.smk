# Background, binning, [-1, 1], detector mask: one preprocessed HDF5 per scan.


rule preprocess:
    input:
        unpack(scan_source),
    output:
        "results/preprocessed/{scan}.h5",
    params:
        scan=lambda wc: config["scans"][wc.scan],
        settings=config["preprocess"],
    log:
        "logs/preprocess/{scan}.log",
    benchmark:
        "benchmarks/out/preprocess_{scan}.tsv"
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/preprocess.py"
