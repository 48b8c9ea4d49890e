# Figures for the paper and the report (captions under workflow/report/).


rule fig1_examples:
    input:
        models=expand(f"{R}/{{ds}}/models/clean.pt", ds=DATASETS),
        tests=expand(f"{R}/{{ds}}/tensors/test.pt", ds=DATASETS),
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
    output:
        png=report(
            f"{R}/figures/fig1_examples.png",
            caption="../report/fig1.rst",
            category="Figures",
            labels={"figure": "1 examples"},
        ),
        pdf=f"{R}/figures/fig1_examples.pdf",
    log:
        f"{R}/logs/figures/fig1_examples.log",
    benchmark:
        f"{R}/benchmarks/figures/fig1_examples.tsv"
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("fig1", "mem_mb"),
        runtime=job_resource("fig1", "runtime"),
    params:
        code=code_version("scripts/figures.py"),
        datasets=DATASETS,
        eps=canon(
            {ds: config["datasets"][ds]["attack"]["reference_eps"] for ds in DATASETS}
        ),
        pgd=canon(config["attacks"]["pgd"]),
        batch_size=config["attacks"]["batch_size"],
        seed=config["seed"],
    script:
        "../scripts/figures.py"


rule fig2_fig3:
    input:
        summary=f"{R}/tables/attack_summary.csv",
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
    output:
        fig2=report(
            f"{R}/figures/fig2_accuracy_vs_eps.png",
            caption="../report/fig2.rst",
            category="Figures",
            labels={"figure": "2 accuracy vs eps"},
        ),
        fig2_pdf=f"{R}/figures/fig2_accuracy_vs_eps.pdf",
        fig3=report(
            f"{R}/figures/fig3_adv_training.png",
            caption="../report/fig3.rst",
            category="Figures",
            labels={"figure": "3 adversarial training"},
        ),
        fig3_pdf=f"{R}/figures/fig3_adv_training.pdf",
    log:
        f"{R}/logs/figures/fig2_fig3.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/figures.py"),
        controls=[ds for ds in DATASETS if is_control(ds)],
        paper_names=canon(
            {ds: config["datasets"][ds].get("paper_dataset") for ds in DATASETS}
        ),
        datasets=DATASETS,
    script:
        "../scripts/figures.py"


rule fig4_deferral:
    input:
        deferral=f"{R}/tables/deferral.csv",
    output:
        png=report(
            f"{R}/figures/fig4_deferral.png",
            caption="../report/fig4.rst",
            category="Figures",
            labels={"figure": "4 deferral"},
        ),
        pdf=f"{R}/figures/fig4_deferral.pdf",
    log:
        f"{R}/logs/figures/fig4_deferral.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/figures.py"),
    script:
        "../scripts/figures.py"


rule fig6_clinical:
    input:
        clinical=f"{R}/tables/clinical.csv",
        directions=f"{R}/tables/directions.csv",
    output:
        png=report(
            f"{R}/figures/fig6_clinical.png",
            caption="../report/fig6.rst",
            category="Figures",
            labels={"figure": "6 clinical metrics under attack"},
        ),
        pdf=f"{R}/figures/fig6_clinical.pdf",
    log:
        f"{R}/logs/figures/fig6_clinical.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/figures.py"),
    script:
        "../scripts/figures.py"


localrules:
    config_used,


rule config_used:
    output:
        f"{R}/config.used.yaml",
    log:
        f"{R}/logs/config_used.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    params:
        code=code_version("scripts/config_used.py"),
        # the validated config (defaults filled in) and where it came from: any change rewrites it
        config=canon(config),
        origin=config_origin(),
    script:
        "../scripts/config_used.py"
