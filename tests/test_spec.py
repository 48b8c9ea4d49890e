"""The registry (oncorobust.spec) against everything that must agree with it: the schema's enums
and defaults, the workflow's wildcard constraints, the attack dispatch and the figures."""

import re

import pytest
import yaml

from oncorobust import spec
from oncorobust.errors import ModelError
from oncorobust.pipeline.workflow_files import schema_file


@pytest.fixture(scope="module")
def schema():
    return yaml.safe_load(open(schema_file()))


def _named(node, key):
    """Every schema property called ``key``, anywhere."""
    if isinstance(node, dict):
        props = node.get("properties", {})
        if key in props:
            yield props[key]
        for v in node.values():
            yield from _named(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _named(v, key)


def test_schema_method_enums_match_the_registry(schema):
    methods = list(_named(schema, "methods"))
    assert methods, "no attack.methods in the schema"
    for m in methods:
        assert m["items"]["enum"] == list(spec.METHOD_NAMES)
        assert m["default"] == list(spec.CLI_METHODS)
    members = list(_named(schema, "members"))
    assert members and all(m["items"]["enum"] == list(spec.MEMBER_METHODS) for m in members)
    assert all(m["default"] == spec.METHODS["worst"].defaults["members"] for m in members)


def test_schema_attack_defaults_match_the_registry(schema):
    attacks = schema["properties"]["attacks"]["properties"]
    for name, method in spec.METHODS.items():
        if not method.defaults:
            continue  # a method without parameters (fgsm) needs no block
        assert name in attacks, f"the schema has no attacks.{name} block: add one"
        props = attacks[name].get("properties", {})
        for key, value in method.defaults.items():
            assert props[key]["default"] == value, f"attacks.{name}.{key}"


def test_schema_regimes_and_heads_match_the_registry(schema):
    regimes = list(_named(schema, "regimes"))
    assert regimes and all(r["items"]["enum"] == list(spec.ADVERSARIAL_REGIMES) for r in regimes)
    outputs = list(_named(schema, "output"))
    assert any(o.get("enum") == list(spec.OUTPUT_CHOICES) for o in outputs)


def test_method_wildcard_accepts_exactly_the_result_names():
    rx = re.compile(f"^(?:{spec.method_wildcard()})$")
    for name in spec.METHOD_NAMES:
        assert rx.match(name)
    for name in spec.PAPER_METHODS:
        assert rx.match(f"transfer_{name}")
    for bad in ("transfer_worst", "transfer_square", "apgd", "pgd2", "corrupt_x"):
        assert not rx.match(bad), bad


def test_derived_lists():
    assert spec.PAPER_METHODS == ("fgsm", "bim", "pgd")
    assert spec.METHOD_NAMES[-1] == "worst" and "worst" not in spec.MEMBER_METHODS
    assert spec.STRENGTH_ORDER[0] == "worst" and spec.STRENGTH_ORDER[-1] == "fgsm"
    assert "fgsm" not in spec.ITERATIVE_METHODS and "square" in spec.ITERATIVE_METHODS
    assert spec.EARLY_EXIT_OPTION == ("bim", "pgd")
    assert spec.method_label("transfer_pgd") == "PGD (transfer)"
    # the gradient cost of a PGD-10 run: 10 forward+backward (3 passes each) + 2 checks
    assert spec.METHODS["pgd"].passes({"steps": 10, "restarts": 2}) == 62


def test_consumers_use_the_registry():
    from oncorobust.attacks import methods
    from oncorobust.pipeline import budgets
    from oncorobust.reporting import figures
    from oncorobust.training import train

    assert methods.METHODS == spec.METHOD_NAMES and methods.PAPER_METHODS == spec.PAPER_METHODS
    assert set(figures.METHOD_COLORS) == set(spec.METHODS) == set(figures.METHOD_LABELS)
    assert train.REGIMES == spec.REGIME_NAMES
    assert all(budgets.DEFAULT_ATTACKS[m] == spec.METHODS[m].defaults for m in spec.METHODS)


def test_parse_arch_and_given_files(tmp_path):
    assert spec.parse_arch("vgg_small") == ("vgg_small", "")
    assert spec.parse_arch("python:my.mod:build") == ("python", "my.mod:build")
    with pytest.raises(ModelError, match="unknown model.arch"):
        spec.parse_arch("keras:foo")
    with pytest.raises(ModelError, match="python:<module or file.py>:<callable>"):
        spec.parse_arch("python:justamodule")
    assert spec.given_file({"arch": "torchscript:m.ts"}) == "m.ts"
    assert spec.given_file({"arch": "torchvision:resnet18", "checkpoint": "c.pt"}) == "c.pt"
    assert spec.given_file({"arch": "torchvision:resnet18"}) is None
    assert spec.factory_file("python:nets.py:build") == "nets.py"
    assert spec.factory_file("python:pkg.nets:build") is None
    (tmp_path / "nets.py").write_text("")
    resolved = spec.with_resolved_factory(f"python:{tmp_path / 'nets.py'}:build")
    assert resolved == f"python:{(tmp_path / 'nets.py').resolve()}:build"


def test_spec_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, oncorobust.spec, oncorobust.config; print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"
