# Regime comparison: clean vs adversarially trained models, seed replicates pooled, paired tests
# (input functions in common.smk).


rule regimes_table:
    input:
        attacks=get_regime_attack_csvs,
        sensitivity=get_regime_sensitivity_csvs,
        tests=get_test_tensors,
        stats=expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS),
        # AUROC under attack, paired against the clean model (the tables job)
        clinical=f"{R}/tables/clinical.csv",
    output:
        csv=f"{R}/tables/regimes.csv",
        md=f"{R}/tables/regimes.md",
    log:
        f"{R}/logs/tables/regimes.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/regimes_table.py"),
        index=get_regime_index,
        datasets=DATASETS,
        labels=config["attacks"]["labels"],
        seed=config["seed"],
        # the training cost (gradient evaluations per epoch) depends on these
        adversarial=canon(
            {
                ds: config["datasets"][ds].get("adversarial_training", {})
                for ds in DATASETS
            }
        ),
        # training cost: read when present (not inputs: a benchmark file is no rule's output)
        # and epochs run (history; an imported model has none: no cost shown)
        histories=lambda w: [
            f"{R}/{e['dataset']}/models/{e['regime']}.history.csv"
            for e in get_regime_index()
        ],
        benchmarks=lambda w: [
            f"{R}/benchmarks/train/{e['dataset']}/{e['regime']}.tsv"
            for e in get_regime_index()
        ],
    script:
        "../scripts/regimes_table.py"
