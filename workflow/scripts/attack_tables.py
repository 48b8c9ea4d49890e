"""Snakemake adapter: all per-image attack CSVs (+ the sensitivity brackets, for one verdict per
image in `worst`) -> Table 1, Table S5, sanity warnings. Each CSV's regime, method and eps come from
its own columns, checked against its entry of params.index (a mis-wired input list stops the job).
Per non-control dataset also the missed findings and false alarms (oncorobust.evaluation.clinical);
for every attack how visible its changes are (oncorobust.evaluation.visibility, on the attack's own
images: the images the worst case counts from the sensitivity search are not among them); AUROC,
sensitivity and specificity clean and under each attack (oncorobust.evaluation.clinical_metrics,
also on the attacks' own images)."""

import json
import math
from pathlib import Path

import pandas as pd

from oncorobust.epsilon import eps_text
from oncorobust.evaluation.results import (AttackKeyError, check_sensitivity_path, merge_bracket, pair_inputs,
                                           read_attack_csv, read_per_image, rows_of_test_split, summarize, test_ids)
from oncorobust.evaluation.visibility import VISIBILITY_COLUMNS
from oncorobust.reporting.visibility import visibility_markdown, visibility_summary
from oncorobust.evaluation.clinical_metrics import check_scores, clinical_markdown, clinical_table
from oncorobust.evaluation.clinical import (DIRECTION_COLUMNS, PositiveClassError, direction_counts, direction_eps,
                                            directions_markdown, positive_class)
from oncorobust.io import atomic_path, write_csv
from oncorobust.spec import REPLICATE_SEP, split_replicate_name
from oncorobust.logs import step_logging
from oncorobust.reporting.tables import (eps_units_markdown, read_eps_units, sanity_warnings, table1,
                                         table1_markdown, table_s5, table_s5_markdown)

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "tables") as log:
    ids = {ds: test_ids(p) for ds, p in zip(sm.params.datasets, sm.input.tests)}
    classes = {ds: list(json.loads(Path(p).read_text())["classes"]) for ds, p in zip(sm.params.datasets, sm.input.stats)}
    n_classes = {ds: len(c) for ds, c in classes.items()}
    # the positive class of each medical dataset (controls have none): the configured name (a wrong
    # one stops the job), else the default; where no default exists the directions are left out
    positive = {}
    for ds in sm.params.datasets:
        given = sm.params.positive_class.get(ds)
        if ds in sm.params.controls and given is None:
            continue
        try:
            positive[ds] = positive_class(classes[ds], given, key=f"datasets.{ds}.positive_class")
        except PositiveClassError as exc:
            if given is not None:
                raise
            log.warning("%s; missed findings and false alarms are left out for %s", exc, ds)
    sens = {}
    for m, p in pair_inputs(sm.params.sensitivity_index, sm.input.sensitivity, "sensitivity CSVs"):
        check_sensitivity_path(p, m)
        sens[(m["dataset"], m["regime"])] = read_per_image(p, ids[m["dataset"]])
    units = read_eps_units(sm.params.datasets, sm.input.stats)
    per_image, rows, attacked, scored = {}, [], [], {}
    for meta, path in pair_inputs(sm.params.index, sm.input.csvs, "attack CSVs"):
        # regime, method and ε from the file itself, checked against this entry of params.index
        (regime, method, eps), df = read_attack_csv(path, ids[meta["dataset"]], expect=meta)
        key = (meta["dataset"], regime, method, eps)
        if key in per_image:
            raise AttackKeyError(f"{path}: a second attack CSV for {key} (params.index lists it twice)")
        if missing := [c for c in VISIBILITY_COLUMNS if c not in df.columns]:
            raise AttackKeyError(f"{path}: no {'/'.join(missing)} column: the file was written by an older"
                                 f" oncorobust; rerun its attack job (`--forcerun attack_{meta['dataset']}`)")
        attacked.append(rows_of_test_split(df).assign(dataset=meta["dataset"]))
        if len(df):  # a file of no test image has no scores (and no AUROC)
            check_scores(df, path, ["clean", "true_adv"])
            scored.setdefault(key[:2], {})[(method, eps)] = rows_of_test_split(df)
        if method == "worst":  # one verdict: confirmed bracket flips at or below ε count
            df = merge_bracket(df, sens[key[:2]], eps, sm.params.labels, n_classes[meta["dataset"]])
            if df.from_bracket.any():
                log.info("%s %s worst ε=%g: %d images the attack left unflipped are flipped by the"
                         " sensitivity search at or below ε (counted as flipped)", *key[:2], eps,
                         int(df.from_bracket.sum()))
        per_image[key] = df
        ds = meta["dataset"]
        directions = (direction_counts(df, positive[ds], classes[ds][positive[ds]]) if ds in positive
                      else dict.fromkeys(DIRECTION_COLUMNS, math.nan) | {"positive_class": ""})
        rows.append(summarize(df, *key) | directions)
    per_eps = {ds: float(u["per_eps"]) for ds, u in units.items() if u and u.get("per_eps")}
    noise = {ds: pd.read_csv(p, dtype={"sample_id": str}) for ds, p in zip(sm.params.datasets, sm.input.noise)}
    seen = visibility_summary(pd.concat(attacked, ignore_index=True), per_eps, noise)
    write_csv(seen, sm.output.visibility)
    with atomic_path(sm.output.visibility_md) as tmp:
        tmp.write_text("# How visible the change is\n\n" + visibility_markdown(seen, units))
    medians = [f"{m}_median" for m in ("linf_stored", *VISIBILITY_COLUMNS)] + ["below_noise_pct"]
    summary = pd.DataFrame(rows).merge(seen[["dataset", "regime", "method", "eps", *medians]],
                                       on=["dataset", "regime", "method", "eps"], how="left", validate="1:1")
    write_csv(summary, sm.output.summary)
    medical = summary[summary.positive_class.astype(str).str.len() > 0]
    write_csv(medical[["dataset", "regime", "method", "eps", "n", *DIRECTION_COLUMNS]], sm.output.directions)
    eps_rows = pd.DataFrame([{"dataset": ds, "regime": regime, "positive_class": classes[ds][positive[ds]],
                              **direction_eps(rows_of_test_split(f), positive[ds], n_classes[ds], seed=sm.params.seed)}
                             for (ds, regime), f in sens.items() if ds in positive])
    write_csv(eps_rows, sm.output.directions_eps)
    with atomic_path(sm.output.directions_md) as tmp:
        tmp.write_text("# Missed findings vs false alarms\n\n" + directions_markdown(medical, eps_rows, eps_text))
    for (m, p) in pair_inputs(sm.params.sensitivity_index, sm.input.sensitivity, "sensitivity CSVs"):
        if len(sens[(m["dataset"], m["regime"])]):
            check_scores(sens[(m["dataset"], m["regime"])], p, ["clean"])
    clinical = []
    for (ds, regime), frames in scored.items():
        # an adversarially trained model against the clean model of the same replicate (same seed)
        base, k = split_replicate_name(regime)
        ref = scored.get((ds, "clean" if k == 1 else f"clean{REPLICATE_SEP}{k}")) if base != "clean" else None
        clinical.append(clinical_table(ds, regime, frames, sens.get((ds, regime)), classes[ds], positive.get(ds),
                                       rule=sm.params.operating_point[ds], reference=ref,
                                       reference_clean=next(iter(ref.values())) if ref else None))
    clinical = pd.concat(clinical, ignore_index=True) if clinical else clinical_table("", "", {}, None, [], None)
    write_csv(clinical, sm.output.clinical)
    with atomic_path(sm.output.clinical_md) as tmp:
        tmp.write_text("# AUROC, sensitivity and specificity under attack\n\n" + clinical_markdown(clinical, eps_text))
    t1 = table1(summary, sm.params.paper_names, sm.params.labels, units)
    write_csv(t1, sm.output.table1)
    with atomic_path(sm.output.table1_md) as tmp:
        grids = {ds: sorted(summary[summary.dataset == ds].eps.unique()) for ds in sm.params.datasets}
        tmp.write_text("# Table 1: accuracy under attack (clean models)\n\n" + table1_markdown(t1)
                       + "\n## ε in the stored data\n\n" + eps_units_markdown(grids, units))
    s5 = table_s5(per_image, sm.params.reference_eps, sm.params.paper_names, units, seed=sm.params.seed)
    write_csv(s5, sm.output.table_s5)
    with atomic_path(sm.output.table_s5_md) as tmp:
        tmp.write_text("# Table S5: clean vs adversarially trained models (accuracy %, paired difference"
                       " with 95% CI)\n\n" + table_s5_markdown(s5))
    warnings = sanity_warnings(summary, set(sm.params.controls))
    write_csv(warnings, sm.output.sanity)
    for w in warnings.itertuples():
        log.warning("sanity: %s %s %s ε=%g: %s", w.dataset, w.regime, w.method, w.eps, w.warning)
