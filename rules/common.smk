from latentebsd.shards import scan_regex, shard_plan, shard_paths
from latentebsd.workflow import scan_seed, scan_source


SCANS = list(config["scans"])
VARIANTS = list(config["models"]["variants"])
# Scans of more than config["shard_patterns"] patterns -> row ranges of their shards.
# Their encode / decode / index / metrics run as one job per shard plus a gather job
# (rules *_shard and gather_*); the other scans use the one-job rules.
SHARDS = shard_plan(config, SCANS)
WHOLE_SCANS = scan_regex([s for s in SCANS if s not in SHARDS])
SHARDED_SCANS = scan_regex(list(SHARDS))


wildcard_constraints:
    scan="|".join(SCANS),
    variant="|".join(VARIANTS),
    shard=r"\d+",


def shard_rows(wildcards):
    """Map rows ``(first_row, stop_row)`` of a shard job."""
    return SHARDS[wildcards.scan][int(wildcards.shard)]


def all_targets():
    """Every final output of the study."""
    return [
        *expand("results/preprocessed/{scan}.h5", scan=SCANS),
        "results/sample/dataset.h5",
        *expand("results/models/{variant}/weights.pt", variant=VARIANTS),
        "results/models/losses_all.png",
        *maps_targets(),
        *evaluation_targets(),
    ]
