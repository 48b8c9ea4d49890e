"""Snakemake adapter: (model, test tensors) -> one per-image attack CSV per output
(results/{ds}/attacks/{regime}/{method}/eps={eps}.csv: every ε of the dataset's grid, or one, as
config attacks.jobs says; torch is imported and the model loaded once), each with its regime, method
and ε appended, then the model's and the images' fingerprints (the aggregates check them).

ε is read back from the output's name: the canonical text (oncorobust.epsilon.eps_key) is exactly
the config's float."""

from pathlib import Path

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
    model_fp, data_fp = model_fingerprint(sm.input.model), file_fingerprint(sm.input.test)
    opts, method = sm.params.attack, sm.wildcards.method
    for out in sm.output:
        eps = float(Path(out).name.removeprefix("eps=").removesuffix(".csv"))
        result = evaluate_attack(model, test["x"], test["y"], test["ids"], method, eps,
                                 params=opts["params"], labels=sm.params.labels, seed=sm.params.seed,
                                 batch_size=sm.params.batch_size, device=device, source_model=source,
                                 early_exit=opts.get("early_exit", False), member_params=opts.get("member_params"))
        write_attack_csv(result, out, regime=sm.wildcards.regime, method=method, eps=eps,
                         model_fp=model_fp, data_fp=data_fp)
