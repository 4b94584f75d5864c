# Latent feature maps: encode every pattern (latent cube per scan x variant), rank the
# maps, segment them, match them to simulated ground truth, and the paper's Figs 8-10.
# Settings: config["maps"] (defaults and checks in latentebsd.maps.resolve_maps_settings).

import functools

from latentebsd.maps import (
    cell_figure_inputs,
    feature_maps_inputs,
    figure_inputs,
    maps_targets_for,
    workflow_plan,
)


# Which scans / variants get which outputs (logic and defaults in latentebsd.maps; the
# wiring is a library function so that this file holds rules only).
MAPS_PLAN = workflow_plan(config, SCANS, VARIANTS)
MAPS = MAPS_PLAN["settings"]
# maps_targets(): every final output of this stage, called by all_targets() in common.smk.
maps_targets = functools.partial(maps_targets_for, MAPS_PLAN)


rule encode:
    input:
        patterns="results/preprocessed/{scan}.h5",
        weights="results/models/{variant}/weights.pt",
    output:
        cube="results/latent/{variant}/{scan}.nc",
        tiff="results/latent/{variant}/{scan}.tif",
        reduction="results/latent/{variant}/{scan}_reduction.json",
    params:
        settings={k: MAPS[k] for k in ("chunk_size", "batch_size")},
    wildcard_constraints:
        scan=WHOLE_SCANS,
    resources:
        gpu=1,
    log:
        "logs/encode/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/encode_{variant}_{scan}.tsv"
    threads: 2
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/encode.py"


# A sharded scan (common.smk): one encode job per block of map rows, then a gather.
rule encode_shard:
    input:
        patterns="results/preprocessed/{scan}.h5",
        weights="results/models/{variant}/weights.pt",
    output:
        cube=temp("results/shards/latent/{variant}/{scan}/{shard}.nc"),
        reduction=temp("results/shards/latent/{variant}/{scan}/{shard}.json"),
    params:
        settings={k: MAPS[k] for k in ("chunk_size", "batch_size")},
        rows=shard_rows,
    wildcard_constraints:
        scan=SHARDED_SCANS,
    resources:
        gpu=1,
    log:
        "logs/encode/{variant}/{scan}/shard_{shard}.log",
    benchmark:
        "benchmarks/out/encode_{variant}_{scan}_shard_{shard}.tsv"
    threads: 2
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/encode.py"


rule gather_latent:
    input:
        cubes=lambda wc: shard_paths(
            "results/shards/latent/{variant}/{scan}/{shard}.nc", SHARDS, wc.scan, variant=wc.variant
        ),
        summaries=lambda wc: shard_paths(
            "results/shards/latent/{variant}/{scan}/{shard}.json", SHARDS, wc.scan, variant=wc.variant
        ),
    output:
        cube="results/latent/{variant}/{scan}.nc",
        tiff="results/latent/{variant}/{scan}.tif",
        reduction="results/latent/{variant}/{scan}_reduction.json",
    params:
        kind="latent",
    wildcard_constraints:
        scan=SHARDED_SCANS,
    log:
        "logs/encode/{variant}/{scan}_gather.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/gather_shards.py"


rule latent_summary:
    input:
        expand("results/latent/{variant}/{scan}_reduction.json", variant=VARIANTS, scan=SCANS),
    output:
        "results/latent/summary.csv",
    log:
        "logs/encode/summary.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/maps_latent_summary.py"


rule feature_maps:
    input:
        unpack(lambda wc: feature_maps_inputs(wc.scan, wc.variant, MAPS_PLAN)),
    output:
        ranking="results/maps/{variant}/{scan}/ranking.csv",
        montage="results/maps/{variant}/{scan}/montage.png",
        top=expand("results/maps/{{variant}}/{{scan}}/{t}.png", t=MAPS_PLAN["top"]),
        segmentation="results/maps/{variant}/{scan}/segmentation.npy",
        segmentation_png="results/maps/{variant}/{scan}/segmentation.png",
        # best latent feature per ground-truth class (all "absent" for a scan without truth)
        truth_csv="results/maps/{variant}/{scan}/truth_match.csv",
        truth_png="results/maps/{variant}/{scan}/truth_match.png",
    params:
        settings=MAPS,
        seed=config["seed"],
    log:
        "logs/maps/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/maps_{variant}_{scan}.tsv"
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/maps.py"


rule truth_match_summary:
    input:
        expand(
            "results/maps/{variant}/{scan}/truth_match.csv",
            variant=VARIANTS,
            scan=MAPS_PLAN["truth_scans"],
        ),
    output:
        long="results/maps/truth_match_summary.csv",
        wide="results/maps/truth_match_summary_wide.csv",
    log:
        "logs/maps/truth_match_summary.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/maps_truth_summary.py"


rule fig_dimensionality:
    input:
        unpack(lambda wc: figure_inputs(wc.scan, MAPS_PLAN["vae_variants"])),
    output:
        figure=report(
            "results/maps/figures/fig8_dimensionality_{scan}.png",
            caption="../report/fig8.rst",
            category="5. Latent feature maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "Fig 8: reconstructions by latent dimension"},
        ),
        csv="results/maps/figures/fig8_dimensionality_{scan}.csv",
    params:
        variants=MAPS_PLAN["vae_variants"],
        latent_dims=MAPS_PLAN["latent_dims"],
        settings=MAPS,
        seed=config["seed"],
    log:
        "logs/maps/fig8_{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/maps_fig8.py"


rule fig_cells:
    input:
        unpack(lambda wc: cell_figure_inputs(wc.scan, MAPS_PLAN)),
    output:
        figure=report(
            "results/maps/figures/fig9_cells_{scan}.png",
            caption="../report/fig9.rst",
            category="5. Latent feature maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "Fig 9: best dislocation-cell map per d"},
        ),
        csv="results/maps/figures/fig9_cells_{scan}.csv",
    params:
        variants=MAPS_PLAN["vae_variants"],
        latent_dims=MAPS_PLAN["latent_dims"],
        settings=MAPS,
    log:
        "logs/maps/fig9_{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/maps_fig9.py"


rule fig_beta:
    input:
        unpack(lambda wc: figure_inputs(wc.scan, MAPS_PLAN["beta_variants"])),
    output:
        figure=report(
            "results/maps/figures/fig10_beta_{scan}.png",
            caption="../report/fig10.rst",
            category="5. Latent feature maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "Fig 10: beta-VAE reconstructions"},
        ),
        csv="results/maps/figures/fig10_beta_{scan}.csv",
    params:
        variants=MAPS_PLAN["beta_variants"],
        specs={v: MAPS_PLAN["specs"][v] for v in MAPS_PLAN["beta_variants"]},
        settings=MAPS,
        seed=config["seed"],
    log:
        "logs/maps/fig10_{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/maps_fig10.py"
