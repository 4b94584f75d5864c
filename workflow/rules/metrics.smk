# Per-pattern metrics, decoded vs original. A sharded scan: one metrics_shard job per
# block of map rows, then gather_metrics.


rule evaluate_metrics:
    input:
        original=lambda wc: fill(
            rules.index_scan.output.h5, source="original", scan=wc.scan
        ),
        decoded=lambda wc: fill(
            rules.index_scan.output.h5, source=wc.variant, scan=wc.scan
        ),
    output:
        "results/evaluation/metrics/{variant}/{scan}.h5",
    log:
        "logs/evaluate/metrics/{variant}/{scan}.log",
    wildcard_constraints:
        scan=P.whole_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60, per_gb=4),
        mem_mb=megabytes(8000),
    params:
        settings=config["evaluation"],
    script:
        "../scripts/evaluate_metrics.py"


use rule evaluate_metrics as metrics_shard with:
    output:
        temp("results/shards/metrics/{variant}/{scan}/{shard}.h5"),
    log:
        "logs/evaluate/metrics/{variant}/{scan}/shard_{shard}.log",
    wildcard_constraints:
        scan=P.sharded_scans,
    params:
        rows=shard_rows,


rule gather_metrics:
    input:
        shards=shard_files(rules.metrics_shard.output[0]),
        preprocessed=rules.preprocess.output[0],
    output:
        metrics="results/evaluation/metrics/{variant}/{scan}.h5",
    log:
        "logs/evaluate/metrics/{variant}/{scan}_gather.log",
    wildcard_constraints:
        scan=P.sharded_scans,
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    script:
        "../scripts/gather_metrics.py"


# Table 1's control rows: a blank disc and the scan's mean pattern, measured like a
# model's decoded patterns at evaluation.controls.patterns random points (latentebsd.controls).
rule quality_controls:
    input:
        preprocessed=rules.preprocess.output[0],
        original=lambda wc: fill(
            rules.index_scan.output.h5, source="original", scan=wc.scan
        ),
    output:
        "results/evaluation/controls/{scan}.h5",
    log:
        "logs/evaluate/controls/{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["evaluation"],
        seed=lambda wc: child_seed(config["seed"], "quality_controls", wc.scan),
    script:
        "../scripts/quality_controls.py"
