# latentebsd: EBSD scans -> VAE latent feature maps (Calvat et al. 2025, npj Comput. Mater.)
#
# The DAG, stage by stage (one rule file each):
#   simulate_scan  (embedded default only) synthetic UP2 scans + ground truth
#   preprocess     background, binning, [-1, 1], detector mask       -> results/preprocessed/
#   sample         N random patterns per scan, 80/20 train/val split -> results/sample/
#   train          one job per model variant (GPU when present)      -> results/models/
#   encode, maps   latent cube per scan x variant, feature maps, ranking, segmentation
#                                                                    -> results/latent/, results/maps/
#   decode, index, evaluate
#                  decoded UP2, Hough re-indexing, Table 1, conventional maps, figures
#                                                                    -> results/decoded/, results/index/, results/evaluation/
#
# Run: snakemake --cores all --resources gpu=1          (embedded default)
#      snakemake --cores all --configfile config/paper.yaml   (your own scans)

from latentebsd.config import validate_config


# A --configfile replaces the embedded default instead of being merged into it (a
# merge would keep the default's simulated scans beside your own).
if not config:

    configfile: "config/config.yaml"


validate_config(config, schema_path=workflow.source_path("config/schema.yaml"))


include: "rules/common.smk"
include: "rules/simulate.smk"
include: "rules/preprocess.smk"
include: "rules/sample.smk"
include: "rules/train.smk"
include: "rules/maps.smk"
include: "rules/evaluate.smk"


rule all:
    input:
        all_targets(),
    default_target: True
