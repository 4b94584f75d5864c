# Compile every numba path once, in jobs of their own, before the jobs that use them:
# one cold compile instead of one per job, and outputs that do not depend on whether
# the cache was cold (latentebsd.warmup). "simulate" precedes the simulation jobs,
# "index" the indexing jobs and runs beside the training.


rule numba_warmup:
    output:
        temp("results/.numba/warmup_{part}.json"),
    params:
        simulation=config["simulation"],
        evaluation=config["evaluation"],
    wildcard_constraints:
        part="simulate|index",
    log:
        "logs/numba_warmup/{part}.log",
    benchmark:
        "benchmarks/out/numba_warmup_{part}.tsv"
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/numba_warmup.py"
