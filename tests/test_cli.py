"""The ``oncorobust`` console script (pyproject: oncorobust = "oncorobust.cli:main")."""

import subprocess
import sys
import tomllib
from pathlib import Path

import oncorobust
from oncorobust import cli

REPO = Path(__file__).resolve().parents[1]


def _run(*args):
    return subprocess.run([sys.executable, "-m", "oncorobust.cli", *args], capture_output=True, text=True,
                          timeout=60)


def test_help_lists_the_version_subcommand():
    out = _run("--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("usage: oncorobust") and "version" in out.stdout


def test_version_prints_the_package_version():
    out = _run("version")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == f"oncorobust {oncorobust.__version__}"
    assert oncorobust.__version__ == tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_no_or_unknown_subcommand_is_a_usage_error(capsys):
    assert cli.main([]) == 2
    assert "usage: oncorobust" in capsys.readouterr().err
    out = _run("nonsense")
    assert out.returncode == 2 and "invalid choice" in out.stderr


def test_console_script_entry_point_resolves():
    target = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]["oncorobust"]
    module, func = target.split(":")
    assert module == cli.__name__ and callable(getattr(cli, func))
