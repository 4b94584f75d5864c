# Conventional EBSD maps of the preprocessed patterns: IPF (Fig 2), IQ, KAM, GROD,
# sharpness, Sigma3 twin boundaries, orientation (Rodrigues vector).


rule conventional_maps:
    input:
        lambda wc: fill(rules.index_scan.output.h5, source="original", scan=wc.scan),
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
            labels={"scan": "{scan}", "figure": "IQ, GROD, KAM, sharpness, Sigma3"},
        ),
    log:
        "logs/evaluate/conventional/{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["evaluation"],
    script:
        "../scripts/conventional_maps.py"
