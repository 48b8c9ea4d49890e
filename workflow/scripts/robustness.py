"""Snakemake adapter: sensitivity CSVs + attack summary -> robustness curves (Figure 5), the ε₅₀ table and its
across-seed version (robustness_seeds.csv; with seed replicates also a section of robustness_summary.md)."""

from pathlib import Path

import numpy as np
import pandas as pd

from oncorobust.reporting import figures
from oncorobust.evaluation import robustness
from oncorobust.io import atomic_path, write_csv
from oncorobust.logs import step_logging
from oncorobust.spec import TRANSFER_PREFIX
from oncorobust.reporting.tables import paper_values, read_eps_units
from oncorobust.evaluation.results import check_sensitivity_path, pair_inputs, read_per_image, test_ids

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "robustness") as log:
    units = read_eps_units(sm.params.datasets, sm.input.stats)
    frames = {}
    ids = {ds: test_ids(p) for ds, p in zip(sm.params.datasets, sm.input.tests)}
    for meta, path in pair_inputs(sm.params.index, sm.input.sensitivity, "sensitivity CSVs"):
        check_sensitivity_path(path, meta)  # the file has no dataset/regime columns: its path names them
        sens = read_per_image(path, ids[meta["dataset"]])
        frames[(meta["dataset"], meta["regime"])] = sens[sens.split == "test"]
    paper = paper_values()
    paper_e50 = {m["dataset"]: robustness.paper_eps50(paper, m["paper_dataset"]) for m in sm.params.index}
    table = robustness.summary(frames, set(sm.params.controls), seed=sm.params.seed, paper_eps50=paper_e50,
                               units=units)
    write_csv(table, sm.output.summary)
    # one row per (dataset, regime) over its seed replicates (replicates: K; K = 1 repeats the summary)
    seeds = robustness.seed_summary(frames, set(sm.params.controls), seed=sm.params.seed)
    write_csv(seeds, sm.output.seeds)
    with atomic_path(sm.output.summary_md) as tmp:
        across = ("" if (seeds.replicates == 1).all() else
                  "\n## Across training seeds (every model above is one seed)\n\n" + robustness.seed_markdown(seeds))
        tmp.write_text("# Robustness summary: ε₅₀ and ε₁₀ with bootstrap 95% CIs\n\n" + robustness.markdown(table)
                       + across)
    finite = np.concatenate([f.eps_upper.to_numpy(float) for f in frames.values()])
    finite = finite[np.isfinite(finite) & (finite > 0)]
    lo = finite.min() / 2 if len(finite) else 1e-4
    hi = max(finite.max() * 1.5, lo * 10) if len(finite) else 1.0
    grid = np.geomspace(lo, hi, 200)
    curves = pd.concat([robustness.curve(f.eps_upper.to_numpy(float), f.correct.to_numpy(bool), grid)
                        .assign(dataset=ds, regime=regime) for (ds, regime), f in frames.items()], ignore_index=True)
    write_csv(curves, sm.output.curves)
    summary = pd.read_csv(sm.input.summary)
    summary = summary[~summary.method.str.startswith(TRANSFER_PREFIX)]
    # the strongest attack of each grid point (the per-image worst case when configured)
    best = summary.sort_values("flip_rate").groupby(["dataset", "regime", "eps"], as_index=False).last()
    markers = best.assign(unchanged=100 - best.flip_rate,
                          accuracy=best.accuracy if sm.params.labels == "true" else np.nan)
    figures.fig5_robustness_curves(curves, set(sm.params.controls), markers, table, stem=Path(sm.output.png).with_suffix(""))
    for r in table.itertuples():
        log.info("%s %s: eps50 %.4g [%.4g, %.4g], ratio to control %s", r.dataset, r.regime, r.eps50,
                 r.eps50_ci_low, r.eps50_ci_high, r.ratio_to_control)
