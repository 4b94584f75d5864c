"""Snakemake entry point of rule ``simulate_scan``: one synthetic scan + ground truth."""

from latentebsd.simulate import simulate_scan
from latentebsd.workflow import rule_log

if "snakemake" in globals():
    with rule_log(snakemake.log[0]):  # noqa: F821
        spec = snakemake.params.spec  # noqa: F821
        simulate_scan(
            up2_path=snakemake.output.patterns,  # noqa: F821
            truth_path=snakemake.output.truth,  # noqa: F821
            microstructure=spec["microstructure"],
            map_shape=tuple(spec["map_shape"]),
            settings=snakemake.params.settings,  # noqa: F821
            seed=snakemake.params.seed,  # noqa: F821
            grading=spec.get("grading"),
            materials=spec.get("materials"),
            fractions=spec.get("fractions"),
        )
