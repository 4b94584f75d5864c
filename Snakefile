# latentebsd: EBSD scans -> VAE latent feature maps (Calvat et al. 2025, npj Comput. Mater.)
#
# The DAG, stage by stage (one rule file each, the logic in the library module of the
# same name: rules/encode.smk -> latentebsd.encode):
#   warmup         compile every numba path once, before the jobs that use them
#   simulate       (embedded default only) synthetic UP2 scans + ground truth -> results/simulated/
#   preprocess     background, binning, [-1, 1], detector mask       -> results/preprocessed/
#   sample         N random patterns per scan, 80/20 train/val split -> results/sample/
#   train          one job per model variant and seed replicate      -> results/models/
#   encode         latent cube per scan x variant                    -> results/latent/
#   maps           feature-map ranking, montage, segmentation, truth -> results/maps/
#   decode         every pattern decoded back to UP2                 -> results/decoded/
#   index          Hough re-indexing of original and decoded sets    -> results/index/
#   metrics        per-pattern decoded-vs-original metrics           -> results/evaluation/metrics/
#   table1         the paper's Table 1                               -> results/evaluation/table1.*
#   conventional   IPF, IQ, KAM, GROD, sharpness, Sigma3, Rodrigues maps -> results/evaluation/conventional/
#   figures        Figs 5/6, 8, 9, 10, 11                            -> results/maps/figures/, results/evaluation/figures/
#   benchmark      PCA / NMF baselines, latent KAM / GROD, detection benchmark, novelty, saliency
#                                                                    -> results/benchmark/
#   findings       trends and detection verdicts on every seed (models.replicates)
#                                                                    -> results/findings.md
#
# Run: snakemake --cores all --resources gpu=1          (embedded default)
#      snakemake --cores all --configfile config/paper.yaml   (your own scans)

from snakemake.utils import min_version

# Snakemake 9 (pyproject.toml: snakemake>=9): tested with 9.27.1; 9.0.0 plans the
# default, a --config override and the module use alike (dry runs).
min_version("9.0")


# The latentebsd package this revision of the workflow runs (pyproject.toml's version
# and latentebsd.__version__; tests/test_deploy.py checks all three). Every rule file and
# script imports the package, which neither `snakedeploy` nor a `module` fetches: a
# missing or different installed version stops the run here, before any job.
LATENTEBSD_VERSION = "0.1.0"


include: "rules/version.smk"


from latentebsd.config import validate_config
from latentebsd.workflow import claim_workdir, clear_partials

# A run killed with SIGKILL leaves Snakemake's locks and half-written temporaries;
# when no other run is alive here they are cleared, so that the same command reruns.
# Only the top-level process of a run of this Snakefile does this: not Snakemake inside
# a job (local subprocess or cluster job: --mode subprocess / remote), and not a host
# workflow that uses this one as a module.
MAIN_RUN = workflow.is_main_process and workflow.modifier.base_snakefile is None
claim_workdir(main=MAIN_RUN)


if MAIN_RUN:

    onstart:
        # the half-written files only with the local executor: jobs of a killed cluster
        # run may still be writing theirs (the executor is known here, not at parse time)
        clear_partials(local=workflow.local_exec)


# The embedded default, config/config.yaml, is the config of a run without --configfile
# (--config values override it). A --configfile replaces it instead of being merged into
# it (a merge would keep the default's simulated scans beside your own). As a module,
# the host's `config:` is the whole config.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


validate_config(config, schema_path=workflow.source_path("config/schema.yaml"))


include: "rules/common.smk"
include: "rules/warmup.smk"
include: "rules/simulate.smk"
include: "rules/preprocess.smk"
include: "rules/sample.smk"
include: "rules/train.smk"
include: "rules/encode.smk"
include: "rules/maps.smk"
include: "rules/decode.smk"
include: "rules/index.smk"
include: "rules/metrics.smk"
include: "rules/table1.smk"
include: "rules/conventional.smk"
include: "rules/figures.smk"
include: "rules/benchmark.smk"
include: "rules/findings.smk"


rule all:
    default_target: True
    input:
        all_targets(),
