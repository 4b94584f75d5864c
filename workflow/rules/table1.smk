# The paper's Table 1: every variant's per-pattern metrics pooled over all scans, and
# from it whether each of the paper's trends holds in this run (trends.md).


rule evaluate_table1:
    input:
        metrics=expand(rules.evaluate_metrics.output[0], variant=VARIANTS, scan=SCANS),
        controls=expand(rules.quality_controls.output[0], scan=SCANS),
        originals=expand(rules.index_scan.output.h5, source="original", scan=SCANS),
    output:
        csv="results/evaluation/table1.csv",
        md="results/evaluation/table1.md",
        html=report(
            "results/evaluation/table1.html",
            caption="../report/table1.rst",
            category="1. Table 1",
            labels={"table": "Table 1"},
        ),
        trends=report(
            "results/evaluation/trends.md",
            caption="../report/trends.rst",
            category="1. Table 1",
            labels={"table": "Trends"},
        ),
    log:
        "logs/evaluate/table1.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        metric_paths={
            v: expand(rules.evaluate_metrics.output[0], variant=v, scan=SCANS)
            for v in VARIANTS
        },
        variants=P.specs,
        settings=config["evaluation"],
    script:
        "../scripts/evaluate_table1.py"


# Seed replicates (models.replicates): each seed's Table 1 rows of the replicated
# variants, their spread, and each trend judged per seed - it holds only if every seed
# agrees (latentebsd.replicates).
rule evaluate_seeds:
    input:
        metrics=lambda wc: expand(
            rules.evaluate_metrics.output[0],
            variant=[m for g in P.seed_groups.values() for m in g.values()],
            scan=SCANS,
        ),
    output:
        table="results/evaluation/table1_seeds.csv",
        trends="results/evaluation/trends_seeds.csv",
    log:
        "logs/evaluate/table1_seeds.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(10),
        mem_mb=megabytes(2000),
    params:
        metric_paths={
            m: expand(rules.evaluate_metrics.output[0], variant=m, scan=SCANS)
            for g in P.seed_groups.values()
            for m in g.values()
        },
        seed_groups=P.seed_groups,
        variants=P.specs,
        settings=config["evaluation"],
    script:
        "../scripts/evaluate_seeds.py"
