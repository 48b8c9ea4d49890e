"""The registry (oncorobust.spec) against everything that must agree with it: the schema's enums
and defaults, the workflow's wildcard constraints, the attack dispatch and the figures."""

import copy
import re
from pathlib import Path

import pytest
import yaml

from oncorobust import spec
from oncorobust.errors import ModelError
from oncorobust.config import with_registry
from oncorobust.pipeline.workflow_files import schema_file

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def raw_schema():
    return yaml.safe_load(open(schema_file()))


@pytest.fixture(scope="module")
def schema(raw_schema):
    """The schema as the config pass validates against: the registry filled in (x-registry)."""
    return with_registry(copy.deepcopy(raw_schema))


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


def test_schema_method_enums_come_from_the_registry(raw_schema, schema):
    """The file names no method (a new one needs no schema edit); the config pass's enums are the registry's."""
    for key, mark in (("methods", "methods"), ("members", "member_methods"), ("regimes", "adversarial_regimes")):
        raw = list(_named(raw_schema, key))
        assert raw and all(r["items"] == {"type": "string", "x-registry": mark} for r in raw), key
    methods = list(_named(schema, "methods"))
    for m in methods:
        assert m["items"]["enum"] == list(spec.METHOD_NAMES)
        assert m["default"] == list(spec.CLI_METHODS)
    members = list(_named(schema, "members"))
    assert members and all(m["items"]["enum"] == list(spec.MEMBER_METHODS) for m in members)
    assert all(m["default"] == spec.METHODS["worst"].defaults["members"] for m in members)


def test_schema_attack_defaults_match_the_registry(raw_schema, schema):
    """A block the file writes out (with descriptions) has the registry's defaults; every method
    has a block in the config pass's schema, and nothing else is accepted there."""
    written = raw_schema["properties"]["attacks"]["properties"]
    for name, method in spec.METHODS.items():
        for key, value in method.defaults.items():
            if name in written:
                assert written[name]["properties"][key]["default"] == value, f"attacks.{name}.{key}"
    filled = schema["properties"]["attacks"]
    assert set(spec.METHODS) <= set(filled["properties"]) and filled["additionalProperties"] is False
    assert filled["properties"]["fgsm"] == {"type": "object", "additionalProperties": False, "default": {},
                                            "properties": {}, "x-generated": True}


def test_registry_defaults_fill_methods_the_file_does_not_write(tmp_path):
    """The config pass fills a generated block's defaults and refuses an unknown parameter by name."""
    from oncorobust.config import validate_config
    from oncorobust.errors import ConfigError

    cfg = yaml.safe_load(open(REPO / ".test" / "config_one_dataset.yaml"))
    validate_config(cfg, schema_file())
    assert cfg["attacks"]["fgsm"] == {}
    cfg["attacks"]["fgsm"] = {"steps": 3}
    with pytest.raises(ConfigError, match=r"attacks.fgsm: Additional properties are not allowed \('steps'"):
        validate_config(cfg, schema_file())


def test_schema_regimes_and_heads_match_the_registry(schema):
    regimes = list(_named(schema, "regimes"))
    assert regimes and all(r["items"]["enum"] == list(spec.ADVERSARIAL_REGIMES) for r in regimes)
    outputs = list(_named(schema, "output"))
    assert any(o.get("enum") == list(spec.OUTPUT_CHOICES) for o in outputs)


def test_every_method_runs_through_its_registry_entry():
    """Each entry's ``run`` imports, and the dispatch calls it with the entry's fixed options."""
    from oncorobust.attacks.methods import implementation

    for name, method in spec.METHODS.items():
        assert callable(implementation(name)), name
        assert method.run.partition(":")[0].startswith("oncorobust."), name


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


def test_adversarial_training_defaults_are_stated_once(raw_schema):
    """The inner PGD steps of every adversarial regime: the schema's default is the training
    code's (they disagreed, 7 vs 10); the TRADES/MART losses carry only their β."""
    from oncorobust.training import losses, train

    adv = raw_schema["$defs"]["adversarial_training"]
    assert adv["properties"]["iters"]["default"] == train.ADV_ITERS
    assert all(set(rl.defaults) == {"beta"} for rl in losses.REGIME_LOSSES.values())
