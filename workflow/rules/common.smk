# DAG wiring: the study a config asks for (latentebsd.plan), wildcard ranges, input
# functions and the target list. Every path is spelled once, in the rule that writes
# it; consumers refer to it as rules.<rule>.output.<name>.

import math

from latentebsd.config import child_seed
from latentebsd.plan import make_plan, scan_regex, scan_seed
from latentebsd.replicates import training_seed
from latentebsd.workflow import gpu_request, gpu_share

P = make_plan(config)
# Threads: every rule declares 1. On a CPU two jobs side by side do more than one job on
# two threads (2 cores, measured: training 1.5x, Hough indexing 1.6x faster on two
# threads than on one), and a result then does not depend on the machine's core count
# (torch's sums differ in the last bits between thread counts). The SLURM profile gives
# the GPU jobs 8 CPUs.
# SCANS: the scans that are mapped and evaluated (role: both); P.scans adds the
# training-only ones, which are simulated, preprocessed and sampled only.
SCANS, VARIANTS = P.mapped_scans, P.variants


wildcard_constraints:
    scan=scan_regex(P.scans),
    variant=scan_regex(P.models),  # trained models and seed replicates; feature_maps also takes PCA / NMF cubes
    source=scan_regex(P.index_sources),
    shard=r"\d+",


def gpu_slot(wildcards):
    """``resources.gpu`` of train / encode / decode: 1 on a cluster (a GPU of the job's
    own), 0 in a local run (latentebsd.workflow.gpu_request). A function, because
    Snakemake knows its executor only after this file is read; a dry run (``-n``)
    answers for this machine."""
    return gpu_request(local=workflow.local_exec)


def gpu_shared_slot(wildcards):
    """``resources.gpu_shared``: 1 in a local run on a machine with a GPU, where these
    jobs share the GPU (as many at once as its memory allows, decided in the jobs:
    latentebsd.workflow.gpu_admission), unless ``--resources gpu=0`` asks for the CPU.
    """
    given = workflow.global_resources.get("gpu")
    forced_cpu = getattr(given, "value", None) == 0
    return gpu_share(local=workflow.local_exec, forced_cpu=forced_cpu)


def minutes(n, per_gb=0):
    """``resources.runtime`` of a rule: ``n`` minutes, plus ``per_gb`` minutes per GB of
    the job's input (the scan it streams: a 1M-pattern scan is 7 - 30 GB), times the
    attempt (a job retried after a failure - the SLURM profile's ``retries: 1`` - gets
    twice as long). ``per_gb`` is ~3x the rate measured on one 2-core CPU
    (benchmarks/RESULTS.md, "Memory and throughput vs scan size": index ~4 min per GB of
    preprocessed patterns, decode ~0.5, encode and preprocess ~0.15). A cluster executor
    submits it (SLURM: ``sbatch -t``); the SLURM profile's ``set-resources`` overrides it
    per rule; a local run ignores it. Memory does not grow with the scan (every stage
    streams it in chunks), so :func:`megabytes` has no such term."""
    if not per_gb:
        return lambda wildcards, attempt: n * attempt
    return (
        lambda wildcards, input, attempt: math.ceil(n + per_gb * input.size_mb / 1024)
        * attempt
    )


def megabytes(n):
    """``resources.mem_mb`` of a rule: ``n`` MB, times the attempt (as :func:`minutes`).
    A cluster executor asks for it (SLURM: ``sbatch --mem``); locally it limits the jobs
    running at once only under ``--resources mem_mb=...``."""
    return lambda wildcards, attempt: n * attempt


def fill(pattern, **wildcards):
    """``pattern`` (a rule's output) with its wildcards filled in."""
    return expand(pattern, **wildcards)[0]


def scan_source(wildcards):
    """Inputs of the preprocess rule - the pattern file and, for a simulated scan, the
    ground-truth file that carries its geometry."""
    scan = config["scans"][wildcards.scan]
    if "simulate" not in scan:
        return {"patterns": scan["path"]}
    out = rules.simulate_scan.output
    return {
        "patterns": fill(out.patterns, scan=wildcards.scan),
        "geometry": fill(out.truth, scan=wildcards.scan),
    }


def shard_rows(wildcards):
    """Map rows ``(first_row, stop_row)`` of a shard job."""
    return P.shards[wildcards.scan][int(wildcards.shard)]


def shard_files(pattern):
    """Input function of a gather rule: ``pattern`` (a shard rule's output) for every
    shard of the scan."""

    def inputs(wildcards):
        n = len(P.shards[wildcards.scan])
        return [fill(pattern, shard=k, **dict(wildcards.items())) for k in range(n)]

    return inputs


def truth_input(wildcards):
    """The ground truth of a simulated scan, for the rules that use it when present."""
    if wildcards.scan not in P.truth_scans:
        return {}
    return {"truth": fill(rules.simulate_scan.output.truth, scan=wildcards.scan)}


def index_inputs(wildcards):
    """Inputs of rule index_scan / index_shard for one source (original or a variant)."""
    inputs = {"preprocessed": fill(rules.preprocess.output[0], scan=wildcards.scan)}
    if wildcards.source == "original":
        inputs["patterns"] = inputs["preprocessed"]
    else:
        inputs["patterns"] = fill(
            rules.decode.output[0], variant=wildcards.source, scan=wildcards.scan
        )
    return inputs


def cube_series(variants):
    """Input function: the cubes (and weights) of ``variants`` for one scan."""

    def inputs(wildcards):
        return {
            "preprocessed": fill(rules.preprocess.output[0], scan=wildcards.scan),
            "cubes": [
                fill(rules.encode.output.cube, variant=v, scan=wildcards.scan)
                for v in variants
            ],
            "weights": [fill(rules.train.output.weights, variant=v) for v in variants],
        }

    return inputs


def cell_figure_inputs(wildcards):
    """Inputs of Fig 9: cubes and rankings of the VAEs, and their ground-truth matches."""
    out = rules.feature_maps.output
    vae = P.vae_variants
    inputs = {
        "cubes": [
            fill(rules.encode.output.cube, variant=v, scan=wildcards.scan) for v in vae
        ],
        "rankings": [fill(out.ranking, variant=v, scan=wildcards.scan) for v in vae],
    }
    if wildcards.scan in P.truth_scans:
        inputs["truth_matches"] = [
            fill(out.truth_csv, variant=v, scan=wildcards.scan) for v in vae
        ]
        # the conventional descriptors' cell-wall AUC, for the verdict in the title
        inputs["truth"] = fill(rules.simulate_scan.output.truth, scan=wildcards.scan)
        inputs["conventional"] = fill(
            rules.conventional_maps.output.h5, scan=wildcards.scan
        )
    return inputs


def all_targets():
    """Every final output of the study."""
    each = dict(variant=VARIANTS, scan=SCANS)
    cubes = dict(variant=P.cube_sources, scan=SCANS)
    maps = rules.feature_maps.output
    return [
        *expand(rules.preprocess.output[0], scan=P.scans),
        rules.sample.output[0],
        *expand(rules.train.output.weights, variant=VARIANTS),
        rules.plot_losses.output[0],
        *expand(rules.encode.output.cube, **cubes),
        *expand(rules.encode.output.tiff, **cubes),
        rules.latent_summary.output[0],
        *[
            f
            for name in (
                "ranking",
                "montage",
                "top",
                "segmentation",
                "segmentation_png",
            )
            for f in expand(maps[name], **cubes)
        ],
        *expand(maps.truth_csv, variant=P.cube_sources, scan=P.truth_scans),
        *expand(maps.truth_png, variant=P.cube_sources, scan=P.truth_scans),
        *(rules.truth_match_summary.output if P.truth_scans else []),
        *(
            expand(rules.fig_dimensionality.output.figure, scan=SCANS)
            if P.vae_variants
            else []
        ),
        *(
            expand(rules.fig_cells.output.figure, scan=P.cell_scans)
            if P.vae_variants
            else []
        ),
        *(expand(rules.fig_beta.output.figure, scan=SCANS) if P.beta_variants else []),
        *expand(rules.index_scan.output.h5, source=P.sources, scan=SCANS),
        *expand(rules.index_scan.output.ang, source=P.sources, scan=SCANS),
        *expand(rules.evaluate_metrics.output[0], **each),
        *rules.evaluate_table1.output,
        *expand(rules.conventional_maps.output.h5, scan=SCANS),
        *expand(rules.conventional_maps.output.ipf, scan=SCANS),
        *expand(rules.conventional_maps.output.panel, scan=SCANS),
        *expand(rules.latent_panels.output[0], scan=SCANS),
        *expand(rules.decoded_maps.output[0], scan=SCANS),
        *expand(
            rules.latent_analogues.output.png, variant=P.analogue_variants, scan=SCANS
        ),
        *(rules.detection_summary.output if P.truth_scans else []),
        *(rules.detection_limits.output if P.truth_scans else []),
        *rules.evaluate_seeds.output,
        *(rules.detection_seeds.output if P.truth_scans else []),
        rules.findings.output[0],
        *expand(rules.novelty.output.png, scan=SCANS),
        *expand(rules.saliency.output.png, scan=SCANS),
    ]
