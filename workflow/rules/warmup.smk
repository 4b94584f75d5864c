# Compile every numba path once, in jobs of their own, before the jobs that use them:
# one cold compile instead of one per job, and outputs that do not depend on whether
# the cache was cold (latentebsd.warmup). "simulate" precedes the simulation jobs,
# "index" the indexing jobs and runs beside the training.


rule numba_warmup:
    output:
        temp("results/.numba/warmup_{part}.json"),
    log:
        "logs/numba_warmup/{part}.log",
    benchmark:
        "benchmarks/out/numba_warmup_{part}.tsv"
    wildcard_constraints:
        part="simulate|index",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        simulation=config["simulation"],
        evaluation=config["evaluation"],
    script:
        "../scripts/numba_warmup.py"
