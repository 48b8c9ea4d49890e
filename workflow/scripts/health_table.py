"""Snakemake adapter: per-(dataset, regime) health CSVs -> results/tables/evaluation_health.{csv,md}."""

import pandas as pd

from oncorobust.evaluation.health import markdown
from oncorobust.io import atomic_path, write_csv
from oncorobust.logs import step_logging

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "health") as log:
    health = pd.concat([pd.read_csv(p) for p in sm.input], ignore_index=True)
    health["passed"] = health.passed.map({True: True, False: False, "True": True, "False": False})
    write_csv(health, sm.output.csv)
    with atomic_path(sm.output.md) as tmp:
        tmp.write_text("# Evaluation health: did the attacks work?\n\n" + markdown(health))
    for r in health[health.passed == False].itertuples():  # noqa: E712
        log.warning("evaluation health FAILED: %s %s %s: %s", r.dataset, r.regime, r.check, r.detail)
