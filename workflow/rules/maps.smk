# Latent feature maps: rank the maps of every cube, montage, top-k maps, segmentation,
# and the match to the ground truth of simulated scans.


rule feature_maps:
    input:
        unpack(truth_input),
        cube=rules.encode.output.cube,
    output:
        ranking="results/maps/{variant}/{scan}/ranking.csv",
        montage="results/maps/{variant}/{scan}/montage.png",
        top=expand("results/maps/{{variant}}/{{scan}}/{t}.png", t=P.top),
        segmentation="results/maps/{variant}/{scan}/segmentation.npy",
        segmentation_png="results/maps/{variant}/{scan}/segmentation.png",
        # best latent feature per ground-truth class (all "absent" for a scan without truth)
        truth_csv="results/maps/{variant}/{scan}/truth_match.csv",
        truth_png="results/maps/{variant}/{scan}/truth_match.png",
    log:
        "logs/maps/{variant}/{scan}.log",
    benchmark:
        "benchmarks/out/maps_{variant}_{scan}.tsv"
    wildcard_constraints:
        variant=scan_regex(P.cube_sources),  # trained models and the PCA / NMF baselines
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["maps"],
        seed=config["seed"],
    script:
        "../scripts/feature_maps.py"


rule truth_match_summary:
    input:
        expand(
            rules.feature_maps.output.truth_csv,
            variant=P.cube_sources,
            scan=P.truth_scans,
        ),
    output:
        long="results/maps/truth_match_summary.csv",
        wide="results/maps/truth_match_summary_wide.csv",
    log:
        "logs/maps/truth_match_summary.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    script:
        "../scripts/truth_match_summary.py"
