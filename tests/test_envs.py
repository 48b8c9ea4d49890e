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
        rules = text.count("\nrule ") + text.count("    rule:\n")  # named rules and rules defined in a loop
        assert text.count("conda:") == rules, rule.name


# --------------------------------------------------------------- every dependency in the env

import ast  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from importlib import metadata  # noqa: E402

import pytest  # noqa: E402
from packaging.requirements import Requirement  # noqa: E402
from packaging.utils import canonicalize_name  # noqa: E402

ENV = REPO / "workflow" / "envs" / "oncorobust.yaml"
POST_DEPLOY = ENV.with_name("oncorobust.post-deploy.sh")  # Snakemake's name for it: <env>.post-deploy.sh


def _env_requirements() -> dict[str, Requirement]:
    """The env file's conda and pip packages (not the editable package itself), by canonical name."""
    env = yaml.safe_load(ENV.read_text())
    out = {}
    for dep in env["dependencies"]:
        for spec in (dep["pip"] if isinstance(dep, dict) else [dep]):
            if spec.startswith("-e ") or spec.split("=")[0] in ("python", "pip"):
                continue
            req = Requirement(spec.replace("=", "==", 1) if re.match(r"^[\w.-]+=[^=]", spec) else spec)
            out[canonicalize_name(req.name)] = req
    return out


def _post_deploy_pins() -> dict[str, str]:
    """Packages the post-deploy script installs with ``pip install --no-deps``: name -> version."""
    text = POST_DEPLOY.read_text()
    pins = {}
    for line in text.splitlines():
        if re.search(r"pip install --no-deps", line):
            for name, version in re.findall(r"([\w.-]+)==([\w.]+)", line):
                pins[canonicalize_name(name)] = version
    return pins


def test_env_lists_every_pyproject_dependency_with_its_range():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = _env_requirements()
    for dep in map(Requirement, project):
        name = canonicalize_name(dep.name)
        assert name in env, f"{dep} (pyproject) is missing from {ENV.name}"
        pinned = [s.version for s in env[name].specifier if s.operator == "=="]
        if pinned:  # a pin must lie in pyproject's range
            assert dep.specifier.contains(pinned[0], prereleases=True), (str(dep), str(env[name]))
        else:
            assert env[name].specifier == dep.specifier, (str(dep), str(env[name]))
    # the optional extras a workflow rule may import (not the test/bench tools) with their ranges too
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    optional = [Requirement(d) for k, v in extras.items() if k not in ("test", "bench") for d in v]
    for dep in optional:
        name = canonicalize_name(dep.name)
        assert name in env and env[name].specifier == dep.specifier, f"extra {dep} missing from {ENV.name}"
    extra = set(env) - {canonicalize_name(Requirement(d).name) for d in project} - {canonicalize_name(d.name) for d in optional}
    assert not extra, f"{ENV.name} lists packages pyproject does not: {sorted(extra)}"


def test_post_deploy_script_installs_torchattacks_without_dependencies():
    assert POST_DEPLOY.is_file() and POST_DEPLOY.read_text().startswith("#!")
    assert subprocess.run(["bash", "-n", str(POST_DEPLOY)]).returncode == 0  # valid shell
    pins = _post_deploy_pins()
    makefile = re.search(r"pip install --no-deps 'torchattacks==([\w.]+)'", (REPO / "Makefile").read_text())
    assert pins == {"torchattacks": makefile.group(1)}  # same version as `make setup`
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    assert not any(canonicalize_name(Requirement(d).name) == "torchattacks" for d in project)


def _third_party_imports() -> set[str]:
    """Top-level modules imported anywhere in the package and the workflow scripts."""
    files = [*(REPO / "src" / "oncorobust").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]
    mods = set()
    for f in files:
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                mods |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                mods.add(node.module.split(".")[0])
    return mods - set(sys.stdlib_module_names) - {"oncorobust", "__future__"}


def _closure(names: set[str]) -> set[str]:
    """``names`` plus every distribution they require (unconditional requirements), transitively."""
    seen, todo = set(), list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for r in map(Requirement, reqs):
            if r.marker is None or r.marker.evaluate({"extra": ""}):
                todo.append(canonicalize_name(r.name))
    return seen


def test_env_provides_every_module_the_rules_import():
    provided = _closure(set(_env_requirements()) | set(_post_deploy_pins()))
    by_module = metadata.packages_distributions()
    imports = _third_party_imports()
    assert {"torch", "torchattacks", "pydicom", "sklearn", "yaml", "matplotlib"} <= imports
    for mod in sorted(imports):
        dists = {canonicalize_name(d) for d in by_module.get(mod, [])}
        if not dists:
            pytest.fail(f"module {mod} is imported by the package but not installed in this environment")
        assert dists & provided, f"module {mod} (from {sorted(dists)}) is not installed by {ENV.name}"
