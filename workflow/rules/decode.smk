# Decode every pattern with every model, written back to 16-bit UP2. A sharded scan:
# one decode_shard job per block of map rows, then gather_decoded.


rule decode:
    input:
        weights=rules.train.output.weights,
        latent=rules.encode.output.cube,
        preprocessed=rules.preprocess.output[0],
    output:
        "results/decoded/{variant}/{scan}.up2",
    log:
        "logs/decode/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/decode_{variant}_{scan}.tsv"
    wildcard_constraints:
        scan=P.whole_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1  # common.smk: one thread per job
    resources:
        gpu=gpu_slot,
        gpu_shared=gpu_shared_slot,
        runtime=minutes(120, per_gb=2),
        mem_mb=megabytes(32000),
    params:
        settings=config["evaluation"],
    script:
        "../scripts/decode.py"


use rule decode as decode_shard with:
    output:
        temp("results/shards/decoded/{variant}/{scan}/{shard}.up2"),
    log:
        "logs/decode/{variant}/{scan}/shard_{shard}.log",
    benchmark:
        "benchmarks/out/decode_{variant}_{scan}_shard_{shard}.tsv"
    wildcard_constraints:
        scan=P.sharded_scans,
    params:
        rows=shard_rows,


rule gather_decoded:
    input:
        shards=shard_files(rules.decode_shard.output[0]),
        preprocessed=rules.preprocess.output[0],
    output:
        up2="results/decoded/{variant}/{scan}.up2",
    log:
        "logs/decode/{variant}/{scan}_gather.log",
    wildcard_constraints:
        scan=P.sharded_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    script:
        "../scripts/gather_decoded.py"
