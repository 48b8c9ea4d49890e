"""Snakemake adapter: manifest.csv -> tensors/{train,val,test}.pt + stats.json + skipped.csv.

With privacy.pseudonymize_ids the manifest's sources are pseudonyms: the real paths come from the
private mapping ingest wrote (privacy.mapping_dir); tensors keep the pseudonymous sample IDs, and
the log and skipped.csv are scrubbed (the real paths of skipped files go to the mapping folder).
"""

from pathlib import Path

import pandas as pd
import torch

from oncorobust.io import write_csv, write_json
from oncorobust.logs import step_logging
from oncorobust.data.preprocess import run_preprocess, save_tensors
from oncorobust.data.privacy import Scrubber, enabled, read_mapping, real_manifest, write_private_csv
from oncorobust.data.sources import ARRAY_FORMATS, source_root

sm = snakemake  # noqa: F821 (injected by snakemake)
private = enabled(sm.params.privacy)
with step_logging(sm.log[0], "preprocess") as log:
    torch.set_num_threads(sm.threads)
    manifest = pd.read_csv(sm.input.manifest, dtype={"sample_id": str, "patient_id": str})
    if private:
        scrubber = Scrubber()
        scrubber.attach()
        mapping = read_mapping(sm.input.private_mapping)
        fmt = sm.params.source["format"]
        scrubber.learn_mapping(mapping, None if fmt in ARRAY_FORMATS else source_root(sm.params.source))
        manifest = real_manifest(manifest, mapping, sm.input.private_mapping)
    tensors, stats, skipped = run_preprocess(manifest, sm.params.source, sm.params.preprocess,
                                             sm.params.seed, sm.params.on_bad_file)
    save_tensors(tensors, Path(sm.output.stats).parent)
    if private:
        write_private_csv(skipped, sm.output.private_skipped)
        skipped = scrubber.scrub_frame(skipped, ["file", "reason"])
    write_csv(skipped, sm.output.skipped)
    write_json(stats, sm.output.stats)
    log.info("tensors: %s", {k: tuple(v["x"].shape) for k, v in tensors.items()})
