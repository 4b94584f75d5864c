"""Snakemake entry point of rule ``findings``: what held on every seed (findings.md)."""

from latentebsd.findings import run_findings_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        detection = snakemake.input.detection  # noqa: F821
        detection = [detection] if isinstance(detection, str) else list(detection)
        run_findings_rule(
            trends=snakemake.input.trends,  # noqa: F821
            table=snakemake.input.table,  # noqa: F821
            detection=detection[0] if detection else None,
            out_md=snakemake.output[0],  # noqa: F821
            seed_groups=snakemake.params.seed_groups,  # noqa: F821
        )
