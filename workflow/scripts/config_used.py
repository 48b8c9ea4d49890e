"""Snakemake adapter: the configuration this run used (validated, defaults filled in) and the files
and --config overrides it came from -> results/config.used.yaml (oncorobust.pipeline.runconfig)."""

from oncorobust.logs import step_logging
from oncorobust.pipeline.runconfig import write_config_used

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "config_used"):
    write_config_used(sm.params.config, sm.params.origin, sm.output[0])
