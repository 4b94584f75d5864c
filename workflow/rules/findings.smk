# What held on every seed: the trends and detection verdicts judged on each seed's
# models (models.replicates), as plain statements (latentebsd.findings).
rule findings:
    input:
        trends=rules.evaluate_seeds.output.trends,
        table=rules.evaluate_seeds.output.table,
        detection=rules.detection_seeds.output if P.truth_scans else [],
    output:
        report(
            "results/findings.md",
            caption="../report/findings.rst",
            category="0. Findings",
            labels={"table": "Findings across seeds"},
        ),
    log:
        "logs/evaluate/findings.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(10),
        mem_mb=megabytes(2000),
    params:
        seed_groups=P.seed_groups,
    script:
        "../scripts/findings.py"
