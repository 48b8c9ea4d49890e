# Attack stage: one job per (dataset, regime, method) runs the method at each ε of the dataset's grid
# (attacks.jobs: per_method; importing torch costs ~3-4 s per process on a small CPU, more than a
# demo attack itself), or one job per ε as well (per_eps: adding an ε runs only that ε). Either
# way one per-image CSV per ε: results/{ds}/attacks/{regime}/{method}/eps={eps}.csv; then the
# tables. The rules are attack_{ds}: the datasets' ε grids differ, and a rule's outputs are fixed.
for _ds in DATASETS:

    rule:
        name:
            f"attack_{_ds}"
        input:
            unpack(get_attack_inputs(_ds)),
        output:
            [attack_csv(_ds, "{regime}", "{method}", e) for e in attack_job_eps(_ds)],
        log:
            f"{R}/logs/attack/{attack_job_stem(_ds)}.log",
        benchmark:
            f"{R}/benchmarks/attack/{attack_job_stem(_ds)}.tsv"
        group:
            "attacks"
        conda:
            "../envs/oncorobust.yaml"
        threads: 1
        resources:
            mem_mb=job_resource("attack", "mem_mb", _ds),
            runtime=job_resource("attack", "runtime", _ds),
            gpu=job_resource("attack", "gpu"),
        params:
            code=code_version("scripts/attack.py"),
            registry=get_registry("attack"),
            attack=get_attack_params,
            labels=config["attacks"]["labels"],
            batch_size=config["attacks"]["batch_size"],
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/attack.py"


rule tables:
    input:
        csvs=get_all_attack_csvs,
        sensitivity=get_sensitivity_csvs,
        tests=get_test_tensors,
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
        # each image's own noise σ (how visible: the change against the image's noise)
        noise=expand(f"{R}/{{ds}}/tensors/noise.csv", ds=DATASETS),
    output:
        table1=report(
            f"{R}/tables/table1.csv",
            caption="../report/table1.rst",
            category="Tables",
            labels={"table": "Table 1"},
        ),
        table1_md=f"{R}/tables/table1.md",
        table_s5=report(
            f"{R}/tables/table_s5.csv",
            caption="../report/table_s5.rst",
            category="Tables",
            labels={"table": "Table S5"},
        ),
        table_s5_md=f"{R}/tables/table_s5.md",
        sanity=report(
            f"{R}/tables/sanity.csv",
            caption="../report/sanity.rst",
            category="Tables",
            labels={"table": "Sanity warnings"},
        ),
        summary=f"{R}/tables/attack_summary.csv",
        directions=report(
            f"{R}/tables/directions.csv",
            caption="../report/directions.rst",
            category="Tables",
            labels={"table": "Missed findings vs false alarms"},
        ),
        directions_eps=f"{R}/tables/directions_eps.csv",
        directions_md=f"{R}/tables/directions.md",
        visibility=report(
            f"{R}/tables/visibility.csv",
            caption="../report/visibility.rst",
            category="Tables",
            labels={"table": "How visible the change is"},
        ),
        visibility_md=f"{R}/tables/visibility.md",
        clinical=report(
            f"{R}/tables/clinical.csv",
            caption="../report/clinical.rst",
            category="Tables",
            labels={"table": "AUROC, sensitivity and specificity under attack"},
        ),
        clinical_md=f"{R}/tables/clinical.md",
    log:
        f"{R}/logs/tables/attack_tables.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/attack_tables.py"),
        index=get_attack_index,
        sensitivity_index=get_sensitivity_pairs(),
        labels=config["attacks"]["labels"],
        paper_names=canon(
            {ds: config["datasets"][ds].get("paper_dataset") for ds in DATASETS}
        ),
        reference_eps=canon(
            {ds: config["datasets"][ds]["attack"]["reference_eps"] for ds in DATASETS}
        ),
        controls=[ds for ds in DATASETS if is_control(ds)],
        datasets=DATASETS,
        positive_class=canon(
            {ds: config["datasets"][ds].get("positive_class") for ds in DATASETS}
        ),
        operating_point=canon(
            {ds: config["datasets"][ds]["operating_point"] for ds in DATASETS}
        ),
        seed=config["seed"],
    script:
        "../scripts/attack_tables.py"


rule health:
    input:
        unpack(get_health_inputs),
    output:
        f"{R}/{{ds}}/health/{{regime}}.csv",
    log:
        f"{R}/logs/health/{{ds}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/health/{{ds}}/{{regime}}.tsv"
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("health", "mem_mb"),
        runtime=job_resource("health", "runtime"),
        gpu=job_resource("health", "gpu"),
    params:
        code=code_version("scripts/health.py"),
        registry=get_registry("health"),
        index=get_health_index,
        health=canon(config["attacks"]["health"]),
        batch_size=config["attacks"]["batch_size"],
        pgd=canon(config["attacks"]["pgd"]),
        reference_eps=lambda w: canon(
            config["datasets"][w.ds]["attack"]["reference_eps"]
        ),
        labels=config["attacks"]["labels"],
        # the worst case's members and their budgets (its convergence check doubles them)
        worst=get_worst_params,
        seed=config["seed"],
        device=config["device"],
    script:
        "../scripts/health.py"


rule health_table:
    input:
        get_health_csvs,
    output:
        csv=report(
            f"{R}/tables/evaluation_health.csv",
            caption="../report/health.rst",
            category="Tables",
            labels={"table": "Evaluation health"},
        ),
        md=f"{R}/tables/evaluation_health.md",
    log:
        f"{R}/logs/tables/evaluation_health.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/health_table.py"),
    script:
        "../scripts/health_table.py"
