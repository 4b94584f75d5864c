# The paper's figures beside Table 1 and the maps: Figs 5/6 (latent maps beside the
# conventional ones), 8 (reconstructions vs d), 9 (the cell map per d), 10 (vs beta) and
# 11 (orientation and IQ maps of decoded patterns).


rule fig_dimensionality:
    input:
        unpack(cube_series(P.vae_variants)),
    output:
        figure=report(
            "results/maps/figures/fig8_dimensionality_{scan}.png",
            caption="../report/fig8.rst",
            category="5. Latent feature maps",
            subcategory="{scan}",
            labels={
                "scan": "{scan}",
                "figure": "Fig 8: reconstructions by latent dimension",
            },
        ),
        csv="results/maps/figures/fig8_dimensionality_{scan}.csv",
    log:
        "logs/maps/fig8_{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        variants=P.vae_variants,
        specs=P.specs,
        settings=config["maps"],
        seed=config["seed"],
    script:
        "../scripts/fig_dimensionality.py"


rule fig_cells:
    input:
        unpack(cell_figure_inputs),
    output:
        figure=report(
            "results/maps/figures/fig9_cells_{scan}.png",
            caption="../report/fig9.rst",
            category="5. Latent feature maps",
            subcategory="{scan}",
            labels={
                "scan": "{scan}",
                "figure": "Fig 9: latent map per d closest to the cells",
            },
        ),
        csv="results/maps/figures/fig9_cells_{scan}.csv",
    log:
        "logs/maps/fig9_{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        variants=P.vae_variants,
        specs=P.specs,
        settings=config["maps"],
        detected_auc=config["benchmark"]["detection_threshold"],
    script:
        "../scripts/fig_cells.py"


rule fig_beta:
    input:
        unpack(cube_series(P.beta_variants)),
    output:
        figure=report(
            "results/maps/figures/fig10_beta_{scan}.png",
            caption="../report/fig10.rst",
            category="5. Latent feature maps",
            subcategory="{scan}",
            labels={"scan": "{scan}", "figure": "Fig 10: beta-VAE reconstructions"},
        ),
        csv="results/maps/figures/fig10_beta_{scan}.csv",
    log:
        "logs/maps/fig10_{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        variants=P.beta_variants,
        specs=P.specs,
        settings=config["maps"],
        seed=config["seed"],
    script:
        "../scripts/fig_beta.py"


rule latent_panels:
    input:
        ranking=lambda wc: fill(
            rules.feature_maps.output.ranking, variant=P.panel_variant, scan=wc.scan
        ),
        latent=lambda wc: fill(
            rules.encode.output.cube, variant=P.panel_variant, scan=wc.scan
        ),
        conventional=rules.conventional_maps.output.h5,
    output:
        report(
            "results/evaluation/figures/{scan}_latent_vs_conventional.png",
            caption="../report/latent_vs_conventional.rst",
            category="4. Latent vs conventional maps",
            subcategory="{scan}",
            labels={
                "scan": "{scan}",
                "figure": "Latent maps vs IQ, GROD, KAM, sharpness (Figs 5/6)",
            },
        ),
    log:
        "logs/evaluate/latent_panels/{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        settings=config["evaluation"],
        variant=P.panel_variant,
    script:
        "../scripts/latent_panels.py"


rule decoded_maps:
    input:
        lambda wc: expand(rules.index_scan.output.h5, source=P.sources, scan=wc.scan),
    output:
        report(
            "results/evaluation/figures/{scan}_decoded_maps.png",
            caption="../report/decoded_maps.rst",
            category="2. Decoded patterns (Fig 11)",
            subcategory="{scan}",
            labels={
                "scan": "{scan}",
                "figure": "IPF and IQ maps from decoded patterns (Fig 11)",
            },
        ),
    log:
        "logs/evaluate/decoded_maps/{scan}.log",
    conda:
        "../envs/latentebsd.yaml"
    threads: 1
    resources:
        runtime=minutes(60),
        mem_mb=megabytes(8000),
    params:
        sources=P.sources,
        variants=P.specs,
        settings=config["evaluation"],
    script:
        "../scripts/decoded_maps.py"
