"""Checks on a (schema-validated) workflow config that JSON Schema cannot express."""

from __future__ import annotations

from .errors import ConfigError

SYNTHETIC_FORMATS = {"lidc", "cbis_ddsm", "manifest"}
_NEEDS = {"lidc": "root", "cbis_ddsm": "root", "manifest": "manifest", "mnist": "root", "cifar10": "root"}


def check_config(config: dict) -> None:
    """Raise ConfigError naming the key when a dataset's source cannot work as configured."""
    for ds, entry in config["datasets"].items():
        src = entry["source"]
        fmt = src["format"]
        key = f"datasets.{ds}.source"
        adv = entry.get("adversarial_training", {})
        if adv.get("regimes"):
            missing = [k for k in ("eps", "step", "epochs") if k not in adv]
            if missing:
                raise ConfigError(f"datasets.{ds}.adversarial_training needs {missing} when regimes"
                                  f" {adv['regimes']} are listed")
        att = entry.get("attack", {})
        if "eps" in att and not any(abs(e - att.get("reference_eps", 0.002)) < 1e-12 for e in att["eps"]):
            raise ConfigError(f"datasets.{ds}.attack.reference_eps = {att.get('reference_eps', 0.002)}"
                              f" is not one of attack.eps {att['eps']}")
        if "synthetic" in src:
            if fmt not in SYNTHETIC_FORMATS:
                raise ConfigError(f"{key}.synthetic: no synthetic generator for format {fmt!r}"
                                  f" (only {sorted(SYNTHETIC_FORMATS)}); remove the key")
            continue
        need = _NEEDS.get(fmt)
        if need and not src.get(need):
            raise ConfigError(f"{key}.{need} is required for format {fmt!r}: set it to the"
                              " folder/file that holds the data (see config/README.md)")


def resolve_source(config: dict, ds: str) -> dict:
    """The dataset's source config with root/manifest pointing at generated demo data if synthetic."""
    src = dict(config["datasets"][ds]["source"])
    if "synthetic" in src:
        root = f"{config.get('results', 'results')}/demo_data/{ds}"
        src["root"] = root
        src.pop("xml_root", None)
        src.pop("csv_root", None)
        if src["format"] == "manifest":
            src["manifest"] = f"{root}/manifest.csv"
    return src
