# Sensitivity stage: per-image smallest flipping eps -> Table 2 and deferral curves.


rule sensitivity:
    input:
        model=f"{R}/{{ds}}/models/{{regime}}.pt",
        val=f"{R}/{{ds}}/tensors/val.pt",
        test=f"{R}/{{ds}}/tensors/test.pt",
    output:
        report(
            f"{R}/{{ds}}/sensitivity/{{regime}}.csv",
            caption="../report/sensitivity.rst",
            category="{ds}",
            subcategory="sensitivity",
            labels={"dataset": "{ds}", "regime": "{regime}"},
        ),
    log:
        f"{R}/logs/sensitivity/{{ds}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/sensitivity/{{ds}}/{{regime}}.tsv"
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("sensitivity", "mem_mb"),
        runtime=job_resource("sensitivity", "runtime"),
        gpu=job_resource("sensitivity", "gpu"),
    params:
        code=code_version("scripts/sensitivity.py"),
        sensitivity=get_dataset_cfg("sensitivity"),
        pgd_alpha_ratio=canon(config["attacks"]["pgd"]["alpha_ratio"]),
        batch_size=config["attacks"]["batch_size"],
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/sensitivity.py"


rule deferral_tables:
    input:
        csvs=get_sensitivity_csvs,
        tests=get_test_tensors,
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
    output:
        table2=report(
            f"{R}/tables/table2.csv",
            caption="../report/table2.rst",
            category="Tables",
            labels={"table": "Table 2"},
        ),
        table2_md=f"{R}/tables/table2.md",
        deferral=f"{R}/tables/deferral.csv",
        auc=report(
            f"{R}/tables/deferral_auc.csv",
            caption="../report/deferral_auc.rst",
            category="Tables",
            labels={"table": "Deferral AUC"},
        ),
        auc_md=f"{R}/tables/deferral_auc.md",
    log:
        f"{R}/logs/tables/deferral_tables.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/deferral_tables.py"),
        index=lambda w: canon(get_sensitivity_index(w)),
        datasets=DATASETS,
    script:
        "../scripts/deferral_tables.py"


rule robustness:
    input:
        sensitivity=get_sensitivity_csvs,
        tests=get_test_tensors,
        summary=f"{R}/tables/attack_summary.csv",
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
    output:
        summary=report(
            f"{R}/tables/robustness_summary.csv",
            caption="../report/robustness.rst",
            category="Tables",
            labels={"table": "Robustness summary"},
        ),
        summary_md=f"{R}/tables/robustness_summary.md",
        seeds=f"{R}/tables/robustness_seeds.csv",
        curves=f"{R}/tables/robustness_curves.csv",
        png=report(
            f"{R}/figures/fig5_robustness_curves.png",
            caption="../report/fig5.rst",
            category="Figures",
            labels={"figure": "5 robustness curves"},
        ),
        pdf=f"{R}/figures/fig5_robustness_curves.pdf",
    log:
        f"{R}/logs/tables/robustness.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/robustness.py"),
        index=lambda w: canon(get_sensitivity_index(w)),
        datasets=DATASETS,
        controls=[ds for ds in DATASETS if is_control(ds)],
        labels=config["attacks"]["labels"],
        seed=config["seed"],
    script:
        "../scripts/robustness.py"
