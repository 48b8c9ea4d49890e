"""Snakemake adapter: tensors -> models/{regime}.pt + {regime}.history.csv."""

import json

import pandas as pd
import torch

from oncorobust.io import write_csv
from oncorobust.logs import step_logging
from oncorobust.training.train import run_training

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "train") as log:
    torch.set_num_threads(sm.threads)
    with open(sm.input.stats) as fh:
        stats = json.load(fh)
    history = run_training(
        {"train": sm.input.train, "val": sm.input.val}, stats, regime=sm.params.regime,
        model_cfg=sm.params.model, train_cfg=sm.params.train, adv_cfg=sm.params.adversarial_training,
        seed=sm.params.seed, device=sm.params.device, out_model=sm.output.model,
        init_from=sm.input.get("init"), progress=False, code=sm.params.code)
    write_csv(pd.DataFrame(history), sm.output.history)
    log.info("trained %s in %d epochs", sm.params.regime, len(history))
