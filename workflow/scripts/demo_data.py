"""Snakemake adapter: write synthetic demo data in the dataset's native format."""

from oncorobust.logs import step_logging
from oncorobust.data.sources.synthetic import generate

with step_logging(snakemake.log[0], "demo_data") as log:  # noqa: F821 (injected by snakemake)
    syn = dict(snakemake.params.synthetic)  # noqa: F821
    generate(snakemake.params.fmt, snakemake.output[0], seed=snakemake.params.seed, **syn)  # noqa: F821
    log.info("wrote synthetic %s data (%s) to %s", snakemake.params.fmt, syn, snakemake.output[0])  # noqa: F821
