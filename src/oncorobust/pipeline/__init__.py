"""Workflow support that imports neither torch nor Snakemake: compute budgets, per-job resources,
the code hash that makes a rule rerun when its modules change, and the shipped workflow's files."""
