# Encode every pattern: one latent cube (NetCDF + Fiji TIFF) per scan x variant.
# A scan over shard_patterns runs as one encode_shard job per block of map rows, each
# reading its rows from the scan-level inputs, and one gather_latent job.


rule encode:
    input:
        patterns=rules.preprocess.output[0],
        weights=rules.train.output.weights,
    output:
        cube="results/latent/{variant}/{scan}.nc",
        tiff="results/latent/{variant}/{scan}.tif",
        reduction="results/latent/{variant}/{scan}_reduction.json",
    log:
        "logs/encode/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/encode_{variant}_{scan}.tsv"
    wildcard_constraints:
        scan=P.whole_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1  # common.smk: one thread per job
    resources:
        gpu=gpu_slot,
        gpu_shared=gpu_shared_slot,
        runtime=minutes(120, per_gb=1),
        mem_mb=megabytes(32000),
    params:
        settings=config["maps"],
    script:
        "../scripts/encode.py"


use rule encode as encode_shard with:
    output:
        cube=temp("results/shards/latent/{variant}/{scan}/{shard}.nc"),
        reduction=temp("results/shards/latent/{variant}/{scan}/{shard}.json"),
    log:
        "logs/encode/{variant}/{scan}/shard_{shard}.log",
    benchmark:
        "benchmarks/out/encode_{variant}_{scan}_shard_{shard}.tsv"
    wildcard_constraints:
        scan=P.sharded_scans,
    params:
        rows=shard_rows,


rule gather_latent:
    input:
        cubes=shard_files(rules.encode_shard.output.cube),
        summaries=shard_files(rules.encode_shard.output.reduction),
    output:
        cube="results/latent/{variant}/{scan}.nc",
        tiff="results/latent/{variant}/{scan}.tif",
        reduction="results/latent/{variant}/{scan}_reduction.json",
    log:
        "logs/encode/{variant}/{scan}_gather.log",
    wildcard_constraints:
        scan=P.sharded_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    script:
        "../scripts/gather_latent.py"


rule latent_summary:
    input:
        expand(rules.encode.output.reduction, variant=VARIANTS, scan=SCANS),
    output:
        "results/latent/summary.csv",
    log:
        "logs/encode/summary.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    script:
        "../scripts/latent_summary.py"
