"""Snakemake adapter: every model's attack CSV at the reference ε and sensitivity CSV -> the
regime-comparison table (results/tables/regimes.{csv,md}; oncorobust.reporting.regimes), with each
regime's AUROC change under attack from tables/clinical.csv."""

import json
from pathlib import Path

import pandas as pd

from oncorobust.io import atomic_path, write_csv
from oncorobust.logs import step_logging
from oncorobust.reporting.regimes import (add_auroc, load_runs, markdown, read_train_grad_evals, read_train_seconds,
                                         regime_table)
from oncorobust.evaluation.results import test_ids

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "regimes") as log:
    ids = {ds: test_ids(p) for ds, p in zip(sm.params.datasets, sm.input.tests)}
    n_classes = {ds: len(json.loads(Path(p).read_text())["classes"])
                 for ds, p in zip(sm.params.datasets, sm.input.stats)}
    runs = load_runs(sm.params.index, sm.input.attacks, sm.input.sensitivity, ids=ids, n_classes=n_classes,
                     labels=sm.params.labels)
    seconds = {(m["dataset"], m["regime"]): read_train_seconds(p)
               for m, p in zip(sm.params.index, sm.params.benchmarks)}
    stats = dict(zip(sm.params.datasets, sm.input.stats))
    grad_evals = {(m["dataset"], m["regime"]): read_train_grad_evals(h, stats[m["dataset"]], m["regime"],
                                                                      sm.params.adversarial.get(m["dataset"]))
                  for m, h in zip(sm.params.index, sm.params.histories)}
    table = regime_table(runs, seed=sm.params.seed, train_seconds=seconds, train_grad_evals=grad_evals)
    table = add_auroc(table, pd.read_csv(sm.input.clinical))
    write_csv(table, sm.output.csv)
    with atomic_path(sm.output.md) as tmp:
        tmp.write_text("# Training regimes compared: accuracy, worst case, ε₅₀ and paired differences against clean\n\n"
                       + markdown(table))
    for r in table.itertuples():
        log.info("%s %s (%d seed(s)): worst-case accuracy %.1f%% at ε=%g (%s), eps50 %.4g; vs clean %+.1f pp"
                 " [%.1f, %.1f] (McNemar p %.3g), eps50 %+.4g", r.dataset, r.regime, r.replicates, r.worst_accuracy,
                 r.eps, r.method, r.eps50, r.d_accuracy, r.d_accuracy_ci_low, r.d_accuracy_ci_high, r.mcnemar_p,
                 r.d_eps50)
