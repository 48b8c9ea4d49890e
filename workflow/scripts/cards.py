"""Snakemake adapter: the tables and one model's files -> its robustness card (.md and .html)."""

from pathlib import Path

import pandas as pd

from oncorobust.reporting.cards import gather, model_identity, read_benchmarks, read_grad_evals, render_html, render_markdown
from oncorobust import package_version
from oncorobust.io import atomic_path
from oncorobust.logs import step_logging
from oncorobust.evaluation.results import read_per_image

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "cards") as log:
    ds, regime = sm.wildcards.ds, sm.wildcards.regime
    cfg = sm.params.card
    card = gather(dataset=ds, regime=regime, summary_csv=sm.input.summary, robustness_csv=sm.input.robustness,
                  stats_json=sm.input.stats, health_csv=sm.input.health, table2_csv=sm.input.table2,
                  auc_csv=sm.input.auc, attack_cfg=cfg["attack"], attacks_cfg=cfg["attacks"],
                  sensitivity_cfg=cfg["sensitivity"], adversarial_cfg=cfg.get("adversarial"),
                  control=cfg["control"], model=model_identity(sm.input.model),
                  runtime=read_benchmarks(sm.params.benchmarks), grad_evals=read_grad_evals(sm.params.sensitivity_log),
                  version=package_version(), per_image=read_per_image(sm.input.sensitivity),
                  directions_csv=sm.input.directions, clinical_csv=sm.input.clinical)
    curves = pd.read_csv(sm.input.curves)
    curve = curves[(curves.dataset.astype(str) == ds) & (curves.regime.astype(str) == regime)]
    with atomic_path(sm.output.md) as tmp:
        tmp.write_text(render_markdown(card), encoding="utf-8")
    with atomic_path(sm.output.html) as tmp:
        tmp.write_text(render_html(card, curve), encoding="utf-8")
    log.info("%s: %s", Path(sm.output.md), card["verdict"])
