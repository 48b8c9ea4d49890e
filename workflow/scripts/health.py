"""Snakemake adapter: model, test tensors and its attack CSVs -> evaluation-health checks."""

import pandas as pd
import torch

from oncorobust.evaluation.health import (COLUMNS, WORST_CHECK_IMAGES, model_checks, table_checks, whitebox_flipped,
                                          worst_convergence, worst_vs_bracket)
from oncorobust.io import write_csv
from oncorobust.logs import step_logging
from oncorobust.models.loading import load_model
from oncorobust.evaluation.results import read_per_image, sample_ids, summarize
from oncorobust.device import resolve_device
from oncorobust.epsilon import same_eps

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "health") as log:
    torch.set_num_threads(sm.threads)
    device = resolve_device(sm.params.device)
    ds, regime = sm.wildcards.ds, sm.wildcards.regime
    test = torch.load(sm.input.test, map_location="cpu", weights_only=True)
    all_ids = sample_ids(test["ids"], sm.input.test)
    per_image = {(m["method"], m["eps"]): read_per_image(p, all_ids) for m, p in zip(sm.params.index, sm.input.attacks)}
    summary = pd.DataFrame([summarize(df, ds, regime, method, eps) for (method, eps), df in per_image.items()])
    rows = table_checks(summary, per_image, sm.params.labels)
    bracket = worst_vs_bracket(per_image, read_per_image(sm.input.sensitivity, all_ids), sm.params.labels)
    if bracket:
        rows.append(bracket)
    n = min(len(test["x"]), sm.params.health["max_images"])
    x, ids = test["x"][:n], test["ids"][:n]  # stays on the CPU: model_checks moves each batch
    # images per model call: the attack jobs' batch (a param: changing it reruns the checks, whose
    # results do not depend on it — per-image seeds)
    batch = int(sm.params.batch_size)
    model = load_model(sm.input.model, device)
    if sm.params.labels == "true":
        target = test["y"][:n]
    else:
        with torch.no_grad():
            target = torch.cat([model(x[i:i + batch].to(device)).argmax(1).cpu() for i in range(0, n, batch)]
                               or [torch.zeros(0, dtype=torch.int64)])
    ref = float(sm.params.reference_eps)
    # square_queries 0 (oncorobust audit --budget quick): no Square comparison
    flipped = whitebox_flipped(per_image, ref, sm.params.labels, ids) if sm.params.health["square_queries"] else None
    rows += model_checks(model, x, target, ids, ref_eps=ref, pgd=sm.params.pgd, seed=sm.params.seed,
                         square_queries=sm.params.health["square_queries"], whitebox_flipped=flipped,
                         batch_size=batch)
    # the worst case the verdict rests on, with every member's budget doubled, on the first images
    worst = next((df for (m, e), df in per_image.items() if m == "worst" and same_eps(e, ref)), None)
    if worst is not None and sm.params.worst:
        k = min(n, WORST_CHECK_IMAGES)
        by_id = worst.set_index(worst.sample_id.astype(str))
        mine = by_id.loc[[str(i) for i in ids[:k]]]
        base = mine.clean_pred if sm.params.labels == "predicted" else mine.label
        rows.append(worst_convergence(model, x[:k], target[:k], ids[:k], (mine.adv_pred != base).to_numpy(), eps=ref,
                                      members=sm.params.worst["members"],
                                      member_params=sm.params.worst["member_params"], seed=sm.params.seed,
                                      batch_size=batch))
    out = pd.DataFrame(rows).assign(dataset=ds, regime=regime)[COLUMNS]
    write_csv(out, sm.output[0])
    for r in out[out.passed == False].itertuples():  # noqa: E712
        log.warning("evaluation health: %s %s FAILED %s: %s", ds, regime, r.check, r.detail)
