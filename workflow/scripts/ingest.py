"""Snakemake adapter: native-format source -> results/{ds}/manifest.csv + skipped.csv."""

from oncorobust.ingest import run_ingest
from oncorobust.io import write_csv
from oncorobust.logs import step_logging

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "ingest"):
    manifest, skipped = run_ingest(sm.params.source, sm.params.split, sm.params.seed,
                                   sm.params.privacy, sm.params.on_bad_file)
    write_csv(skipped, sm.output.skipped)
    write_csv(manifest, sm.output.manifest)
