# Natural corruptions: per (dataset, regime, corruption, severity) a per-image CSV in the
# attack CSVs' layout (results/{ds}/attacks/{regime}/corrupt_{corruption}/severity={severity}.csv);
# then the corruption table, ε in noise units, the "corruption beat the attack" health check and
# the one-axis figure. Which corruptions run: datasets.<ds>.corruptions (oncorobust.config.corruption_plan).


# One job per (dataset, regime) runs the dataset's whole plan (each corruption at each severity,
# one CSV each): importing MONAI costs about 4 s per process, more than the corruptions themselves.
for _ds in DATASETS:
    if not corruption_jobs(_ds):
        continue

    rule:
        name:
            f"corrupt_{_ds}"
        input:
            model=f"{R}/{_ds}/models/{{regime}}.pt",
            test=f"{R}/{_ds}/tensors/test.pt",
            noise=f"{R}/{_ds}/tensors/noise.csv",
            stats=f"{R}/{_ds}/tensors/stats.json",
        output:
            [
                corruption_csv(_ds, "{regime}", name, sev)
                for (_, name, sev) in corruption_jobs(_ds, "clean")
            ],
        log:
            f"{R}/logs/corrupt/{_ds}/{{regime}}.log",
        benchmark:
            f"{R}/benchmarks/corrupt/{_ds}/{{regime}}.tsv"
        group:
            "attacks"
        conda:
            "../envs/oncorobust.yaml"
        threads: 1
        resources:
            mem_mb=job_resource("corrupt", "mem_mb", _ds),
            runtime=job_resource("corrupt", "runtime", _ds),
            gpu=job_resource("corrupt", "gpu"),
        params:
            code=code_version("scripts/corrupt.py"),
            plan=[
                (name, float(sev)) for (_, name, sev) in corruption_jobs(_ds, "clean")
            ],
            ds=_ds,
            batch_size=config["attacks"]["batch_size"],
            seed=config["seed"],
            device=config["device"],
        script:
            "../scripts/corrupt.py"


rule corruption_tables:
    input:
        corruptions=get_all_corruption_csvs,
        attacks=get_natural_attack_csvs,
        sensitivity=get_sensitivity_csvs,
        tests=get_test_tensors,
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
        noise=expand(f"{R}/{{ds}}/tensors/noise.csv", ds=DATASETS),
    output:
        table=f"{R}/tables/corruptions.csv",
        table_md=f"{R}/tables/corruptions.md",
        noise_units=f"{R}/tables/noise_units.csv",
        noise_units_md=f"{R}/tables/noise_units.md",
        health=f"{R}/tables/corruption_health.csv",
        figure=f"{R}/figures/natural_vs_adversarial.png",
        figure_pdf=f"{R}/figures/natural_vs_adversarial.pdf",
    log:
        f"{R}/logs/tables/corruption_tables.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/corruption_tables.py"),
        index=get_corruption_index,
        attack_index=get_natural_attack_index,
        sensitivity_index=get_sensitivity_pairs(),
        datasets=DATASETS,
        controls=[ds for ds in DATASETS if is_control(ds)],
        seed=config["seed"],
    script:
        "../scripts/corruption_tables.py"
