"""Snakemake adapter: manifest.csv -> tensors/{train,val,test}.pt + stats.json + skipped.csv
+ noise.csv (per image: its noise σ in stored units, measured on the crop before intensity scaling
and resizing, and its stored units per [0,1]; oncorobust.data.preprocess.preprocess_with_noise).

With privacy.pseudonymize_ids the manifest's sources are pseudonyms: the real paths come from the
private mapping ingest wrote (privacy.mapping_dir); tensors keep the pseudonymous sample IDs, and
the log and skipped.csv are scrubbed (the real paths of skipped files go to the mapping folder).
"""

from pathlib import Path

import pandas as pd
import torch

from oncorobust.errors import OncorobustError
from oncorobust.io import write_csv, write_json
from oncorobust.logs import step_logging
from oncorobust.data.preprocess import preprocess_with_noise, save_tensors
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
    try:
        tensors, stats, skipped, noise = preprocess_with_noise(manifest, sm.params.source, sm.params.preprocess,
                                                               sm.params.seed, sm.params.on_bad_file)
    except OncorobustError as exc:
        exc.private = private  # the skip list it carries goes to the log (by reason only if private)
        raise
    save_tensors(tensors, Path(sm.output.stats).parent)
    if private:
        write_private_csv(skipped, sm.output.private_skipped)
        skipped = scrubber.scrub_frame(skipped, ["file", "reason"])
    write_csv(skipped, sm.output.skipped)
    write_json(stats, sm.output.stats)
    # tensors/noise.csv (the rule's output `noise`; next to stats.json where an older rule lacks it)
    write_csv(noise, sm.output.noise if "noise" in sm.output.keys() else Path(sm.output.stats).parent / "noise.csv")
    ok = noise.sigma.notna()
    if ok.any():
        log.info("noise σ (stored units, %s): median %.3g over %d image(s)", noise.unit.iloc[0],
                 float(noise.sigma[ok].median()), int(ok.sum()))
    log.info("tensors: %s", {k: tuple(v["x"].shape) for k, v in tensors.items()})
