from latentebsd.workflow import scan_seed, scan_source


SCANS = list(config["scans"])
VARIANTS = list(config["models"]["variants"])


wildcard_constraints:
    scan="|".join(SCANS),
    variant="|".join(VARIANTS),


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
