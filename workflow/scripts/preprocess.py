"""Snakemake adapter: manifest.csv -> tensors/{train,val,test}.pt + stats.json + skipped.csv."""

from pathlib import Path

import pandas as pd
import torch

from oncorobust.io import write_csv, write_json
from oncorobust.logs import step_logging
from oncorobust.preprocess import run_preprocess, save_tensors

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "preprocess") as log:
    torch.set_num_threads(sm.threads)
    manifest = pd.read_csv(sm.input.manifest, dtype={"sample_id": str, "patient_id": str})
    tensors, stats, skipped = run_preprocess(manifest, sm.params.source, sm.params.preprocess,
                                             sm.params.seed, sm.params.on_bad_file)
    save_tensors(tensors, Path(sm.output.stats).parent)
    write_csv(skipped, sm.output.skipped)
    write_json(stats, sm.output.stats)
    log.info("tensors: %s", {k: tuple(v["x"].shape) for k, v in tensors.items()})
