"""Snakemake adapter: sensitivity CSVs -> Table 2, deferral curves and their AUCs."""

import pandas as pd

from oncorobust.evaluation.deferral import curve_auc, deferral_curves, table2_rows
from oncorobust.io import atomic_path, write_csv
from oncorobust.logs import step_logging
from oncorobust.reporting.tables import clinical_eps, dataframe_markdown, paper_lookup, read_eps_units
from oncorobust.evaluation.results import check_sensitivity_path, pair_inputs, read_per_image, test_ids

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "deferral"):
    t2, curves, aucs = [], [], []
    units = read_eps_units(sm.params.datasets, sm.input.stats)
    ids = {ds: test_ids(p) for ds, p in zip(sm.params.datasets, sm.input.tests)}
    for meta, path in pair_inputs(sm.params.index, sm.input.csvs, "sensitivity CSVs"):
        check_sensitivity_path(path, meta)  # the file has no dataset/regime columns: its path names them
        sens = read_per_image(path, ids[meta["dataset"]])
        ds, regime = meta["dataset"], meta["regime"]
        before = paper_lookup("table2", meta["paper_dataset"], "clean", "original", 0) if regime == "clean" else float("nan")
        after = paper_lookup("table2", meta["paper_dataset"], "clean", "excluded_20pct", 0) if regime == "clean" else float("nan")
        t2 += table2_rows(sens, ds, regime, meta["exclude_fraction"], before, after)
        c = deferral_curves(sens[sens.split == "test"]).assign(dataset=ds, regime=regime)
        curves.append(c)
        aucs.append(curve_auc(c).assign(dataset=ds, regime=regime))
    t2 = pd.DataFrame(t2)
    t2.insert(t2.columns.get_loc("threshold_eps") + 1, "threshold_stored",
              [clinical_eps(e, units.get(ds))[1] for ds, e in zip(t2.dataset, t2.threshold_eps)])
    write_csv(t2, sm.output.table2)
    cols = ["dataset", "regime", "threshold_from", "threshold_eps", "threshold_stored", "excluded_fraction", "n_test", "acc_before",
            "n_retained", "acc_after", "acc_after_ci_low", "acc_after_ci_high", "paper_before", "paper_after"]
    with atomic_path(sm.output.table2_md) as tmp:
        tmp.write_text("# Table 2: test accuracy (%) before and after deferring the most sensitive images\n\n"
                       + dataframe_markdown(t2[cols], floatfmt=".4g"))
    write_csv(pd.concat(curves, ignore_index=True), sm.output.deferral)
    auc = pd.concat(aucs, ignore_index=True).pivot(index=["dataset", "regime"], columns="policy", values="auc").reset_index()
    write_csv(auc, sm.output.auc)
    with atomic_path(sm.output.auc_md) as tmp:
        tmp.write_text("# Deferral: mean accuracy (%) on retained test images, deferring 0-50%\n\n"
                       + dataframe_markdown(auc))
