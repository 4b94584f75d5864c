# Do latent maps see what conventional EBSD misses? PCA / NMF baselines as cubes, latent
# KAM / GROD, the detection benchmark on held-out spatial folds (scans with ground
# truth), the novelty ranking and occlusion saliency (every scan).


rule baseline_cube:
    input:
        preprocessed=rules.preprocess.output[0],
    output:
        cube="results/latent/{variant}/{scan}.nc",
        tiff="results/latent/{variant}/{scan}.tif",
    log:
        "logs/benchmark/baseline/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/baseline_{variant}_{scan}.tsv"
    wildcard_constraints:
        variant=scan_regex(P.baselines),
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        benchmark=config["benchmark"],
        variants=P.specs,
        seed=config["seed"],
    script:
        "../scripts/baseline_cube.py"


rule latent_analogues:
    input:
        cube=rules.encode.output.cube,
        conventional=rules.conventional_maps.output.h5,
    output:
        h5="results/benchmark/analogues/{variant}/{scan}.h5",
        png=report(
            "results/benchmark/analogues/{variant}/{scan}.png",
            caption="../report/analogues.rst",
            category="6. Detection benchmark",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "latent KAM / GROD ({variant})"},
        ),
    log:
        "logs/benchmark/analogues/{variant}/{scan}.log",
    wildcard_constraints:
        variant=scan_regex(P.analogue_variants),
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        neighbours=config["benchmark"]["analogue_neighbours"],
        memory_mb=config["maps"]["memory_mb"],
        dpi=config["evaluation"]["dpi"],
    script:
        "../scripts/latent_analogues.py"


rule detection:
    input:
        unpack(truth_input),
        conventional=rules.conventional_maps.output.h5,
        cubes=lambda wc: expand(
            rules.encode.output.cube, variant=P.detection_cubes, scan=wc.scan
        ),
        analogues=lambda wc: expand(
            rules.latent_analogues.output.h5, variant=P.analogue_variants, scan=wc.scan
        ),
    output:
        "results/benchmark/detection/{scan}.csv",
    log:
        "logs/benchmark/detection/{scan}.log",
    benchmark:
        "benchmarks/out/detection_{scan}.tsv"
    wildcard_constraints:
        scan=scan_regex(P.truth_scans),
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["benchmark"],
        names=P.detection_cubes,
        analogue_names=P.analogue_variants,
        combined=P.combined_variant,
        memory_mb=config["maps"]["memory_mb"],
        seed=config["seed"],
    script:
        "../scripts/detection.py"


rule detection_summary:
    input:
        expand(rules.detection.output[0], scan=P.truth_scans),
    output:
        csv="results/benchmark/detection.csv",
        md="results/benchmark/detection.md",
        html=report(
            "results/benchmark/detection.html",
            caption="../report/detection.rst",
            category="6. Detection benchmark",
            labels={"table": "Detection benchmark"},
        ),
        png=report(
            "results/benchmark/detection.png",
            caption="../report/detection_figure.rst",
            category="6. Detection benchmark",
            labels={"figure": "Detection scores per class"},
        ),
    log:
        "logs/benchmark/detection_summary.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        latent=VARIANTS,
        combined=P.combined_variant,
    script:
        "../scripts/detection_summary.py"


rule detection_seeds:
    input:
        expand(rules.detection.output[0], scan=P.truth_scans),
    output:
        "results/benchmark/detection_seeds.csv",
    log:
        "logs/benchmark/detection_seeds.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(10),
        mem_mb=megabytes(2000),
    params:
        seed_groups=P.seed_groups,
    script:
        "../scripts/detection_seeds.py"


rule detection_limits:
    input:
        expand(rules.detection.output[0], scan=P.truth_scans),
    output:
        csv="results/benchmark/detection_limits.csv",
        md="results/benchmark/detection_limits.md",
        png=report(
            "results/benchmark/detection_limits.png",
            caption="../report/detection_limits.rst",
            category="6. Detection benchmark",
            labels={"figure": "Detection limits"},
        ),
    log:
        "logs/benchmark/detection_limits.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        threshold=config["benchmark"]["detection_threshold"],
    script:
        "../scripts/detection_limits.py"


rule novelty:
    input:
        conventional=rules.conventional_maps.output.h5,
        cubes=lambda wc: expand(
            rules.encode.output.cube, variant=P.cube_sources, scan=wc.scan
        ),
        rankings=lambda wc: expand(
            rules.feature_maps.output.ranking, variant=P.cube_sources, scan=wc.scan
        ),
    output:
        csv="results/benchmark/novelty/{scan}.csv",
        png=report(
            "results/benchmark/novelty/{scan}.png",
            caption="../report/novelty.rst",
            category="6. Detection benchmark",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "the most novel latent maps"},
        ),
    log:
        "logs/benchmark/novelty/{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["benchmark"],
        names=P.cube_sources,
        panel_variant=P.panel_variant,
        memory_mb=config["maps"]["memory_mb"],
        seed=config["seed"],
    script:
        "../scripts/novelty.py"


rule saliency:
    input:
        preprocessed=rules.preprocess.output[0],
        weights=lambda wc: fill(rules.train.output.weights, variant=P.panel_variant),
        cube=lambda wc: fill(
            rules.encode.output.cube, variant=P.panel_variant, scan=wc.scan
        ),
        ranking=lambda wc: fill(
            rules.feature_maps.output.ranking, variant=P.panel_variant, scan=wc.scan
        ),
        novelty=rules.novelty.output.csv,
    output:
        h5="results/benchmark/saliency/{scan}.h5",
        png=report(
            "results/benchmark/saliency/{scan}.png",
            caption="../report/saliency.rst",
            category="6. Detection benchmark",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "occlusion saliency"},
        ),
    log:
        "logs/benchmark/saliency/{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["benchmark"],
        variant=P.panel_variant,
        dpi=config["evaluation"]["dpi"],
    script:
        "../scripts/saliency.py"
