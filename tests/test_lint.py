"""The workflow's own checks, as CI runs them (`make lint`): Snakemake's linter on the demo config
and the rule files' format (snakefmt; reformat with `.venv/bin/snakefmt workflow`)."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _tool(name: str) -> str:
    """The environment's own executable (the venv's bin/), else the one on PATH."""
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.is_file() else shutil.which(name)
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return found


def test_snakemake_lint_is_clean():
    out = subprocess.run([_tool("snakemake"), "--lint", "--configfile", "config/config.yaml"],
                         cwd=REPO, capture_output=True, text=True)
    text = out.stdout + out.stderr
    assert out.returncode == 0 and "Congratulations, your workflow is in a good condition!" in text, text[-6000:]


def test_rule_files_are_snakefmt_formatted():
    out = subprocess.run([_tool("snakefmt"), "--check", "--compact-diff", "workflow"],
                         cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, ("run `.venv/bin/snakefmt workflow`:\n" + out.stdout + out.stderr)[-6000:]
