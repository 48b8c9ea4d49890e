"""The configuration a run used, written next to its results (``{results}/config.used.yaml``)."""

from __future__ import annotations

import os

import yaml

from oncorobust.io import atomic_path


def write_config_used(config: dict, origin: dict, path: str | os.PathLike) -> None:
    """Write the run's validated configuration with where it came from, atomically.

    Args:
        config: the validated configuration (defaults filled in), as the workflow used it.
        origin: ``{"configfiles": [absolute paths], "overrides": {...}}`` (the ``--config`` keys).
        path: the YAML file to write (``{results}/config.used.yaml``).

    Raises:
        WriteError: naming ``path``, when the disk is full or the write fails otherwise.
    """
    files = origin.get("configfiles") or []
    header = ["# the configuration this run used (validated, defaults filled in), from:"]
    header += [f"#   {f}" for f in files] or ["#   (no config file)"]
    if origin.get("overrides"):
        header.append("# with --config overrides: " + yaml.safe_dump(origin["overrides"], default_flow_style=True,
                                                                      width=10**6).strip())
    header.append("# rerun exactly this configuration with: snakemake --configfile <this file>")
    text = "\n".join(header) + "\n" + yaml.safe_dump(config, sort_keys=False, allow_unicode=True)
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
