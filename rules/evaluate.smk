# Evaluation: decode every pattern with every model, Hough re-index originals and decoded
# sets, per-pattern metrics and Table 1, conventional EBSD maps, and the paper's Figs 2,
# 5/6 and 11. Settings: config["evaluation"] (defaults and checks in
# latentebsd.evaluate.resolve_evaluation_settings; the wiring is in library functions so
# that this file holds rules only).

import functools

from latentebsd.evaluate import evaluation_plan, evaluation_targets_for, index_inputs, ranking_input


EVAL_PLAN = evaluation_plan(config, SCANS, VARIANTS)
EVALUATION = EVAL_PLAN["settings"]
# evaluation_targets(): every final output of this stage, called by all_targets() in common.smk.
evaluation_targets = functools.partial(evaluation_targets_for, EVAL_PLAN)


rule decode:
    input:
        weights="results/models/{variant}/weights.pt",
        latent="results/latent/{variant}/{scan}.nc",
        preprocessed="results/preprocessed/{scan}.h5",
    output:
        "results/decoded/{variant}/{scan}.up2",
    params:
        settings=EVALUATION,
    wildcard_constraints:
        scan=WHOLE_SCANS,
    resources:
        gpu=1,
    log:
        "logs/decode/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/decode_{variant}_{scan}.tsv"
    threads: 2
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/decode.py"


# Sharded scans (common.smk): decode / index / metrics run one job per block of map rows,
# each reading its rows from the scan-level inputs; a gather job per scan joins them.
rule decode_shard:
    input:
        weights="results/models/{variant}/weights.pt",
        latent="results/latent/{variant}/{scan}.nc",
        preprocessed="results/preprocessed/{scan}.h5",
    output:
        temp("results/shards/decoded/{variant}/{scan}/{shard}.up2"),
    params:
        settings=EVALUATION,
        rows=shard_rows,
    wildcard_constraints:
        scan=SHARDED_SCANS,
    resources:
        gpu=1,
    log:
        "logs/decode/{variant}/{scan}/shard_{shard}.log",
    benchmark:
        "benchmarks/out/decode_{variant}_{scan}_shard_{shard}.tsv"
    threads: 2
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/decode.py"


rule gather_decoded:
    input:
        shards=lambda wc: shard_paths(
            "results/shards/decoded/{variant}/{scan}/{shard}.up2", SHARDS, wc.scan, variant=wc.variant
        ),
        preprocessed="results/preprocessed/{scan}.h5",
    output:
        up2="results/decoded/{variant}/{scan}.up2",
    params:
        kind="decoded",
    wildcard_constraints:
        scan=SHARDED_SCANS,
    log:
        "logs/decode/{variant}/{scan}_gather.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/gather_shards.py"


rule index_scan:
    input:
        unpack(lambda wc: index_inputs(wc.source, wc.scan)),
    output:
        h5="results/index/{source}/{scan}.h5",
        ang="results/index/{source}/{scan}.ang",
    params:
        settings=EVALUATION,
    wildcard_constraints:
        source="|".join(EVAL_PLAN["sources"]),
        scan=WHOLE_SCANS,
    log:
        "logs/index/{source}/{scan}.log",
    benchmark:
        "benchmarks/out/index_{source}_{scan}.tsv"
    threads: 2
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/index_scan.py"


rule index_shard:
    input:
        unpack(lambda wc: index_inputs(wc.source, wc.scan)),
    output:
        h5=temp("results/shards/index/{source}/{scan}/{shard}.h5"),
    params:
        settings=EVALUATION,
        rows=shard_rows,
    wildcard_constraints:
        source="|".join(EVAL_PLAN["sources"]),
        scan=SHARDED_SCANS,
    log:
        "logs/index/{source}/{scan}/shard_{shard}.log",
    benchmark:
        "benchmarks/out/index_{source}_{scan}_shard_{shard}.tsv"
    threads: 2
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/index_scan.py"


rule gather_index:
    input:
        shards=lambda wc: shard_paths(
            "results/shards/index/{source}/{scan}/{shard}.h5", SHARDS, wc.scan, source=wc.source
        ),
        preprocessed="results/preprocessed/{scan}.h5",
    output:
        h5="results/index/{source}/{scan}.h5",
        ang="results/index/{source}/{scan}.ang",
    params:
        kind="index",
    wildcard_constraints:
        source="|".join(EVAL_PLAN["sources"]),
        scan=SHARDED_SCANS,
    log:
        "logs/index/{source}/{scan}_gather.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/gather_shards.py"


rule evaluate_metrics:
    input:
        original="results/index/original/{scan}.h5",
        decoded="results/index/{variant}/{scan}.h5",
    output:
        "results/evaluation/metrics/{variant}/{scan}.h5",
    params:
        settings=EVALUATION,
    wildcard_constraints:
        scan=WHOLE_SCANS,
    log:
        "logs/evaluate/metrics/{variant}/{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/evaluate_metrics.py"


rule metrics_shard:
    input:
        original="results/index/original/{scan}.h5",
        decoded="results/index/{variant}/{scan}.h5",
    output:
        temp("results/shards/metrics/{variant}/{scan}/{shard}.h5"),
    params:
        settings=EVALUATION,
        rows=shard_rows,
    wildcard_constraints:
        scan=SHARDED_SCANS,
    log:
        "logs/evaluate/metrics/{variant}/{scan}/shard_{shard}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/evaluate_metrics.py"


rule gather_metrics:
    input:
        shards=lambda wc: shard_paths(
            "results/shards/metrics/{variant}/{scan}/{shard}.h5", SHARDS, wc.scan, variant=wc.variant
        ),
        preprocessed="results/preprocessed/{scan}.h5",
    output:
        metrics="results/evaluation/metrics/{variant}/{scan}.h5",
    params:
        kind="metrics",
    wildcard_constraints:
        scan=SHARDED_SCANS,
    log:
        "logs/evaluate/metrics/{variant}/{scan}_gather.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/gather_shards.py"


rule evaluate_table1:
    input:
        expand("results/evaluation/metrics/{variant}/{scan}.h5", variant=VARIANTS, scan=SCANS),
    output:
        csv="results/evaluation/table1.csv",
        md="results/evaluation/table1.md",
        html=report(
            "results/evaluation/table1.html",
            caption="../report/table1.rst",
            category="1. Table 1",
            labels={"table": "Table 1"},
        ),
    params:
        metric_paths={v: [f"results/evaluation/metrics/{v}/{s}.h5" for s in SCANS] for v in VARIANTS},
        variants=EVAL_PLAN["specs"],
        settings=EVALUATION,
    log:
        "logs/evaluate/table1.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/evaluate_table1.py"


rule conventional_maps:
    input:
        "results/index/original/{scan}.h5",
    output:
        h5="results/evaluation/conventional/{scan}.h5",
        ipf=report(
            "results/evaluation/figures/{scan}_ipf.png",
            caption="../report/ipf.rst",
            category="3. Conventional EBSD maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "IPF map (Fig 2)"},
        ),
        panel=report(
            "results/evaluation/figures/{scan}_conventional.png",
            caption="../report/conventional.rst",
            category="3. Conventional EBSD maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "IQ, GROD, KAM, sharpness"},
        ),
    params:
        settings=EVALUATION,
    log:
        "logs/evaluate/conventional/{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/evaluate_conventional.py"


rule latent_panels:
    input:
        unpack(lambda wc: ranking_input(EVAL_PLAN, wc.scan, maps_targets())),
        latent=f"results/latent/{EVAL_PLAN['panel_variant']}/{{scan}}.nc",
        conventional="results/evaluation/conventional/{scan}.h5",
    output:
        report(
            "results/evaluation/figures/{scan}_latent_vs_conventional.png",
            caption="../report/latent_vs_conventional.rst",
            category="4. Latent vs conventional maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "Latent maps vs IQ, GROD, KAM, sharpness (Figs 5/6)"},
        ),
    params:
        settings=EVALUATION,
        variant=EVAL_PLAN["panel_variant"],
    log:
        "logs/evaluate/latent_panels/{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/evaluate_latent_panels.py"


rule decoded_maps:
    input:
        expand("results/index/{source}/{{scan}}.h5", source=EVAL_PLAN["sources"]),
    output:
        report(
            "results/evaluation/figures/{scan}_decoded_maps.png",
            caption="../report/decoded_maps.rst",
            category="2. Decoded patterns (Fig 11)",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "IPF and IQ maps from decoded patterns (Fig 11)"},
        ),
    params:
        index_paths=lambda wc: {s: f"results/index/{s}/{wc.scan}.h5" for s in EVAL_PLAN["sources"]},
        variants=EVAL_PLAN["specs"],
        settings=EVALUATION,
    log:
        "logs/evaluate/decoded_maps/{scan}.log",
    threads: 1
    conda:
        "../envs/latentebsd.yaml"
    script:
        "../scripts/evaluate_decoded_maps.py"
