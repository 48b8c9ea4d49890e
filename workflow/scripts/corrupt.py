"""Snakemake adapter: (model, test tensors, noise.csv) -> one per-image CSV per natural corruption and
severity of the dataset's plan (oncorobust.evaluation.corruptions.evaluate_corruption), in the attack CSVs' layout:
results/{ds}/attacks/{regime}/corrupt_{corruption}/severity={severity}.csv.

Stored-unit severities (noise σ, window shift) are converted to [0,1] with each image's own span
of stored units (tensors/noise.csv), falling back to stats.json eps_units.per_eps where a span is
unknown."""

import json
import math

import numpy as np
import pandas as pd
import torch

from oncorobust.device import resolve_device
from oncorobust.evaluation.corruptions import CORRUPTIONS, CorruptionError, evaluate_corruption
from oncorobust.io import write_result_csv
from oncorobust.logs import step_logging
from oncorobust.models.loading import load_model
from oncorobust.provenance import file_fingerprint, model_fingerprint

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "corrupt") as log:
    torch.set_num_threads(sm.threads)
    device = resolve_device(sm.params.device)
    test = torch.load(sm.input.test, map_location="cpu", weights_only=True)
    units = json.loads(open(sm.input.stats).read()).get("eps_units") or {}
    per_eps = units.get("per_eps")
    model = load_model(sm.input.model, device)
    made_by = model_fingerprint(sm.input.model)
    noise = pd.read_csv(sm.input.noise, dtype={"sample_id": str})
    span = noise[noise.split == "test"].set_index("sample_id").span.reindex([str(i) for i in test["ids"]])
    for (name, severity), out in zip(sm.params.plan, sm.output):
        upp = 1.0
        if CORRUPTIONS[name].stored_units:
            upp = span.to_numpy(dtype=np.float64)
            gap = ~np.isfinite(upp) | (upp <= 0)
            if gap.any():
                if per_eps is None or not math.isfinite(float(per_eps)) or float(per_eps) <= 0:
                    raise CorruptionError(f"{name}: severity {severity:g} is in stored units, but {int(gap.sum())} test"
                                          f" image(s) have no span in {sm.input.noise} and {sm.input.stats} gives no"
                                          " eps_units.per_eps: the stored units per [0,1] are unknown")
                upp[gap] = float(per_eps)
            log.info("%s: stored units per [0,1] per image, median %g %s", name,
                     float(np.median(upp)) if len(upp) else math.nan, units.get("unit", ""))
        result = evaluate_corruption(model, test["x"], test["y"], test["ids"], name, float(severity),
                                     units_per_pixel=upp, seed=sm.params.seed, batch_size=sm.params.batch_size,
                                     device=device, regime=sm.wildcards.regime, stored_unit=units.get("unit"))
        log.info("corrupt_%s severity %g (%s): accuracy %.4f → %.4f, flip rate %.4f, median ‖δ‖∞ %.4g, n=%d",
                 name, severity, CORRUPTIONS[name].unit, float((result.clean_pred == result.label).mean()),
                 float((result.adv_pred == result.label).mean()), float((result.adv_pred != result.clean_pred).mean()),
                 float(result.linf.median()) if len(result) else math.nan, len(result))
        write_result_csv(result, out, model_fp=made_by, data_fp=file_fingerprint(sm.input.test))
