# Robustness cards: one page per (dataset, regime), from the tables and the model's own files
# (the config slices it shows: oncorobust.pipeline.plan.card_config).
from oncorobust.pipeline.plan import benchmark_files, card_config


rule card:
    input:
        summary=f"{R}/tables/attack_summary.csv",
        directions=f"{R}/tables/directions_eps.csv",
        clinical=f"{R}/tables/clinical.csv",
        robustness=f"{R}/tables/robustness_summary.csv",
        curves=f"{R}/tables/robustness_curves.csv",
        table2=f"{R}/tables/table2.csv",
        auc=f"{R}/tables/deferral_auc.csv",
        health=f"{R}/{{ds}}/health/{{regime}}.csv",
        stats=f"{R}/{{ds}}/tensors/stats.json",
        model=f"{R}/{{ds}}/models/{{regime}}.pt",
        # clean predictions and flips per test image: the card's plausibility checks
        sensitivity=f"{R}/{{ds}}/sensitivity/{{regime}}.csv",
    output:
        md=f"{R}/cards/{{ds}}_{{regime}}.md",
        html=report(
            f"{R}/cards/{{ds}}_{{regime}}.html",
            caption="../report/card.rst",
            category="Cards",
            labels={"dataset": "{ds}", "regime": "{regime}"},
        ),
    log:
        f"{R}/logs/cards/{{ds}}_{{regime}}.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/cards.py"),
        card=lambda w: canon(card_config(config, w.ds, w.regime, is_control(w.ds))),
        # benchmark files and the sensitivity log are read when present, not inputs: they exist
        # once the tables the card reads are written
        benchmarks=lambda w: benchmark_files(
            R, w.ds, w.regime, attack_jobs(w.ds, w.regime), _attack_per_eps()
        ),
        sensitivity_log=lambda w: f"{R}/logs/sensitivity/{w.ds}/{w.regime}.log",
    script:
        "../scripts/cards.py"
