# Hough indexing (PyEBSDIndex) of the preprocessed patterns (source "original") and of
# every decoded set, with per-pattern quality. A sharded scan: one index_shard job per
# block of map rows, then gather_index.


rule index_scan:
    input:
        unpack(index_inputs),
        warmup=expand(rules.numba_warmup.output[0], part="index"),
    output:
        h5="results/index/{source}/{scan}.h5",
        ang="results/index/{source}/{scan}.ang",
    log:
        "logs/index/{source}/{scan}.log",
    benchmark:
        "benchmarks/out/index_{source}_{scan}.tsv"
    wildcard_constraints:
        scan=P.whole_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(240, per_gb=12),
        mem_mb=megabytes(16000),
    params:
        settings=config["evaluation"],
        phases=lambda wc: P.phases[wc.scan],
    script:
        "../scripts/index_scan.py"


use rule index_scan as index_shard with:
    output:
        h5=temp("results/shards/index/{source}/{scan}/{shard}.h5"),
    log:
        "logs/index/{source}/{scan}/shard_{shard}.log",
    benchmark:
        "benchmarks/out/index_{source}_{scan}_shard_{shard}.tsv"
    wildcard_constraints:
        scan=P.sharded_scans,
    params:
        rows=shard_rows,


rule gather_index:
    input:
        shards=shard_files(rules.index_shard.output.h5),
        preprocessed=rules.preprocess.output[0],
    output:
        h5="results/index/{source}/{scan}.h5",
        ang="results/index/{source}/{scan}.ang",
    log:
        "logs/index/{source}/{scan}_gather.log",
    wildcard_constraints:
        scan=P.sharded_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    script:
        "../scripts/gather_index.py"
