"""The conda environment for --software-deployment-method conda matches pyproject."""

import re
import tomllib
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]


def test_conda_env_is_valid_and_matches_pyproject():
    env = yaml.safe_load((REPO / "workflow" / "envs" / "oncorobust.yaml").read_text())
    assert env["channels"][0] == "conda-forge"
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert "-e ../.." in pip  # the package itself, with pyproject's dependency ranges
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for pin in ("torch", "torchvision"):
        version = next(p.split("==")[1] for p in pip if p.startswith(pin + "=="))
        upper = next(re.search(r"<=([\d.]+)", d).group(1) for d in deps if re.match(pin + r"[<>=]", d))
        assert version == upper, (pin, version, upper)
    for rule in (REPO / "workflow" / "rules").glob("*.smk"):
        text = rule.read_text()
        assert text.count("conda:") == text.count("\nrule "), rule.name
