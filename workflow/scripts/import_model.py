"""Snakemake adapter: a given model (state dict, TorchScript or torch.export program) + stats.json
+ the val/test images (output head, finite outputs) -> models/clean.pt."""

import json

import torch

from oncorobust.io import save_torch
from oncorobust.logs import step_logging
from oncorobust.models.loading import import_checkpoint

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "import_model") as log:
    with open(sm.input.stats) as fh:
        stats = json.load(fh)
    images = torch.cat([torch.load(p, map_location="cpu", weights_only=True)["x"] for p in (sm.input.val, sm.input.test)])
    payload = import_checkpoint(sm.params.model, stats, images)
    save_torch(payload, sm.output.model)
    meta = payload["meta"]
    log.info("imported %s (%s, SHA-256 %s) as the clean model: %d classes, input %dx%dx%d, network"
             " input %d channel(s), mean %s, std %s, output head %s", meta["checkpoint"], meta["arch"],
             meta["checkpoint_sha256"][:16], len(meta["classes"]), meta["channels"], meta["size"],
             meta["size"], meta["input_channels"], meta["mean"], meta["std"], meta["output"])
