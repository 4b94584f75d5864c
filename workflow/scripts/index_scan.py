"""Snakemake entry point of rules ``index_scan`` (Hough-index one pattern set, .h5 +
.ang) and ``index_shard`` (only the map rows ``params.rows``, .h5 only)."""

from latentebsd.index import run_index_rule
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        run_index_rule(
            pattern_path=snakemake.input.patterns,  # noqa: F821
            preprocessed_path=snakemake.input.preprocessed,  # noqa: F821
            out_h5=snakemake.output.h5,  # noqa: F821
            out_ang=snakemake.output.get("ang"),  # noqa: F821
            settings=snakemake.params.settings,  # noqa: F821
            source=snakemake.wildcards.source,  # noqa: F821
            threads=snakemake.threads,  # noqa: F821
            rows=snakemake.params.get("rows"),  # noqa: F821
            phases=snakemake.params.phases,  # noqa: F821
        )
