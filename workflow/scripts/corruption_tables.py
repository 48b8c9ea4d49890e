"""Snakemake adapter: the corruption CSVs (+ the strongest attack's CSVs, the sensitivity brackets,
stats.json and noise.csv) -> results/tables/corruptions.{csv,md}, noise_units.{csv,md},
corruption_health.csv and results/figures/natural_vs_adversarial.{png,pdf}
(oncorobust.reporting.natural)."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.errors import DataError
from oncorobust.io import atomic_path, write_csv
from oncorobust.logs import step_logging
from oncorobust.reporting.natural import (attack_curve, corruption_health, corruption_markdown, corruption_table,
                                          mean_corruption_accuracy, natural_vs_adversarial, noise_units_markdown,
                                          noise_units_table)
from oncorobust.evaluation.results import read_per_image, test_ids

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "corruption_tables") as log:
    datasets = list(sm.params.datasets)
    ids = {ds: test_ids(p) for ds, p in zip(datasets, sm.input.tests)}
    units = {ds: json.loads(Path(p).read_text()).get("eps_units") for ds, p in zip(datasets, sm.input.stats)}
    noise = {}
    for ds, p in zip(datasets, sm.input.noise):
        nz = pd.read_csv(p, dtype={"sample_id": str, "split": str, "unit": str})
        noise[ds] = nz
    if len(sm.params.index) != len(sm.input.corruptions):
        raise DataError(f"rule corruption_tables: {len(sm.input.corruptions)} corruption CSVs but"
                        f" {len(sm.params.index)} entries in params.index (workflow/rules)")
    per_image = {}
    for meta, path in zip(sm.params.index, sm.input.corruptions):
        df = read_per_image(path, ids[meta["dataset"]])
        if len(df) and (str(df.method.iloc[0]) != f"corrupt_{meta['corruption']}" or str(df.regime.iloc[0]) != meta["regime"]
                        or not math.isclose(float(df.severity.iloc[0]), float(meta["severity"]), rel_tol=1e-9)):
            raise DataError(f"{path} holds {df.regime.iloc[0]}/{df.method.iloc[0]} severity {df.severity.iloc[0]} but was"
                            f" given as {meta}: the rule's input list and params.index disagree (workflow/rules)")
        per_image[(meta["dataset"], meta["regime"], meta["corruption"], float(meta["severity"]))] = df
    attacks = {(m["dataset"], m["regime"], m["method"], float(m["eps"])): read_per_image(p, ids[m["dataset"]])
               for m, p in zip(sm.params.attack_index, sm.input.attacks)}
    sens = {(m["dataset"], m["regime"]): read_per_image(p, ids[m["dataset"]])
            for m, p in zip(sm.params.sensitivity_index, sm.input.sensitivity)}

    table = corruption_table(per_image, units)
    means = mean_corruption_accuracy(table)
    write_csv(table, sm.output.table)
    with atomic_path(sm.output.table_md) as tmp:
        tmp.write_text(corruption_markdown(table, means, sm.params.controls))
    nu = noise_units_table(sens, noise, seed=int(sm.params.seed))
    write_csv(nu, sm.output.noise_units)
    with atomic_path(sm.output.noise_units_md) as tmp:
        tmp.write_text(noise_units_markdown(nu))
    health = corruption_health(per_image, sens, pairs=list(sens))
    write_csv(health, sm.output.health)
    for h in health[~health.passed.astype(bool)].itertuples():
        log.warning("health %s %s: %s", h.dataset, h.regime, h.detail)
    sigma = {}
    for ds in datasets:
        t = noise[ds][noise[ds].split == "test"].sigma.to_numpy(dtype=np.float64)
        sigma[ds] = float(np.nanmedian(t)) if np.isfinite(t).any() else math.nan
    natural_vs_adversarial(table, attack_curve(attacks), units, sigma, datasets,
                           stem=Path(sm.output.figure).with_suffix(""))
    for r in means.itertuples():
        log.info("%s %s: clean %.1f%%, mean corrupted %.1f%%, mean relative %.3f over %d conditions", r.dataset,
                 r.regime, r.clean_accuracy, r.mean_corruption_accuracy, r.mean_relative_accuracy, r.n_conditions)
