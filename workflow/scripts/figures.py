"""Snakemake adapter: tables / models -> the paper's figures (PNG + PDF)."""

from pathlib import Path

import pandas as pd
import torch

from oncorobust.evaluation.examples import example_for
from oncorobust.reporting import figures
from oncorobust.logs import step_logging
from oncorobust.models.loading import load_model
from oncorobust.reporting.tables import paper_values, read_eps_units

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "figures") as log:
    torch.set_num_threads(sm.threads)
    if sm.rule == "fig1_examples":
        examples = []
        units = read_eps_units(sm.params.datasets, sm.input.stats)
        pgd = {k: v for k, v in sm.params.pgd.items() if k in ("steps", "random_start", "restarts")}
        for ds, model_path, test_path in zip(sm.params.datasets, sm.input.models, sm.input.tests):
            model = load_model(model_path)
            meta = torch.load(model_path, weights_only=True)["meta"]
            test = torch.load(test_path, weights_only=True)
            eps = float(sm.params.eps[ds])
            # attacked attacks.batch_size images at a time (a param; per-image seeds: the example
            # does not depend on the batch)
            ex = example_for(model, test, meta["classes"], eps, seed=sm.params.seed,
                             batch_size=int(sm.params.batch_size), **pgd)
            if ex is None:
                log.warning("%s: no correctly classified test image flips at ε=%g; not shown", ds, eps)
                continue
            examples.append({**ex, "dataset": ds, "units": units.get(ds)})
            log.info("%s: example %s", ds, ex["sample_id"])
        figures.fig1_examples(examples, Path(sm.output.png).with_suffix(""))
    elif sm.rule == "fig2_fig3":
        summary = pd.read_csv(sm.input.summary)
        controls = set(sm.params.controls)
        units = read_eps_units(sm.params.datasets, sm.input.stats)
        figures.fig2_accuracy_vs_eps(summary, controls, paper_values(), sm.params.paper_names,
                                     Path(sm.output.fig2).with_suffix(""), units=units)
        figures.fig3_adv_training(summary, controls, stem=Path(sm.output.fig3).with_suffix(""), units=units)
    elif sm.rule == "fig6_clinical":
        figures.fig6_clinical(pd.read_csv(sm.input.clinical), pd.read_csv(sm.input.directions),
                              stem=Path(sm.output.png).with_suffix(""))
    else:
        figures.fig4_deferral(pd.read_csv(sm.input.deferral), stem=Path(sm.output.png).with_suffix(""))
