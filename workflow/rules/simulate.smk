# Embedded default only: a synthetic scan (UP2) with per-point ground truth.


rule simulate_scan:
    input:
        warmup=expand(rules.numba_warmup.output[0], part="simulate"),
    output:
        patterns="results/simulated/{scan}.up2",
        truth="results/simulated/{scan}_truth.h5",
    log:
        "logs/simulate/{scan}.log",
    benchmark:
        "benchmarks/out/simulate_{scan}.tsv"
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(120),
        mem_mb=megabytes(8000),
    params:
        spec=lambda wc: config["scans"][wc.scan]["simulate"],
        settings=config["simulation"],
        seed=lambda wc: scan_seed(config, wc.scan),
    script:
        "../scripts/simulate_scan.py"
