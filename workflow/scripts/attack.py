"""Snakemake adapter: (model, test tensors) -> per-image attack CSV for one method and eps, its
regime, method and eps appended, then the model's and the images' fingerprints (the aggregates check them)."""

import torch

from oncorobust.evaluation.evaluate import evaluate_attack
from oncorobust.io import write_attack_csv
from oncorobust.logs import step_logging
from oncorobust.models.loading import load_model
from oncorobust.provenance import file_fingerprint, model_fingerprint
from oncorobust.device import resolve_device

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "attack"):
    torch.set_num_threads(sm.threads)
    device = resolve_device(sm.params.device)
    test = torch.load(sm.input.test, map_location="cpu", weights_only=True)
    model = load_model(sm.input.model, device)
    source = load_model(sm.input.source, device) if "source" in sm.input.keys() else None
    opts = sm.params.attack
    method, eps = sm.wildcards.method, float(sm.wildcards.eps)
    result = evaluate_attack(model, test["x"], test["y"], test["ids"], method, eps,
                             params=opts["params"], labels=sm.params.labels, seed=sm.params.seed,
                             batch_size=sm.params.batch_size, device=device, source_model=source,
                             early_exit=opts.get("early_exit", False), member_params=opts.get("member_params"))
    write_attack_csv(result, sm.output[0], regime=sm.wildcards.regime, method=method, eps=eps,
                     model_fp=model_fingerprint(sm.input.model), data_fp=file_fingerprint(sm.input.test))
