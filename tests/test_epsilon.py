"""ε exact end to end (issue 30, item 4): k/255 fractions in the config, file names that read back as
the config's float, one comparison, and tables that show 8/255."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import load_test_config
from oncorobust.config import check_config
from oncorobust.epsilon import eps_key, eps_text, normalize_config_eps, parse_fraction, same_eps, snap_reference_eps
from oncorobust.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("k", list(range(1, 256)))
def test_every_k_over_255_round_trips_through_its_file_name_and_shows_as_k_255(k):
    eps = k / 255
    assert float(eps_key(eps)) == eps  # the attack runs at exactly the config's value
    assert parse_fraction(f"{k}/255") == eps
    text = eps_text(eps)
    # a short decimal where one writes it exactly (51/255 = 0.2), else the fraction
    assert text == (f"{eps:g}" if float(f"{eps:g}") == eps else f"{k}/255")


def test_eps_text_keeps_the_decimals_people_wrote():
    assert [eps_text(e) for e in (0.002, 0.008, 0.05, 0.1, 1.0)] == ["0.002", "0.008", "0.05", "0.1", "1"]
    assert eps_text(0.0123456789) == "0.01235"
    assert [eps_key(e) for e in (0.002, 0.016, 0.2)] == ["0.002", "0.016", "0.2"]  # demo paths unchanged


def test_same_eps_is_the_one_comparison():
    assert same_eps(8 / 255, 0.0313725490196)  # 12 significant digits (a rounded params copy)
    assert not same_eps(8 / 255, 0.0313725)  # six: another budget
    assert same_eps(float(Fraction(8, 255)), 8 / 255)


def test_config_fractions_become_floats_before_validation():
    cfg = {"datasets": {"d": {"attack": {"eps": ["1/255", 0.01, " 8 / 255 "], "reference_eps": "8/255"},
                              "adversarial_training": {"eps": "8/255", "step": "2/255"},
                              "sensitivity": {"eps_max": "64/255"}}}}
    normalize_config_eps(cfg)
    d = cfg["datasets"]["d"]
    assert d["attack"] == {"eps": [1 / 255, 0.01, 8 / 255], "reference_eps": 8 / 255}
    assert d["adversarial_training"] == {"eps": 8 / 255, "step": 2 / 255}
    assert d["sensitivity"]["eps_max"] == 64 / 255


def test_the_same_budget_twice_is_refused_and_a_bad_string_is_named():
    cfg = load_test_config("config_one_dataset.yaml")
    cfg["datasets"]["digits"]["attack"] = {"methods": ["fgsm"], "eps": [8 / 255, 0.0313725490196],
                                           "reference_eps": 8 / 255}
    with pytest.raises(ConfigError, match=r"attack.eps: 0.03137254901960784 \(item 0\) and 0.0313725490196"
                                          r" \(item 1\) are the same budget"):
        check_config(cfg, workdir=REPO)
    cfg["datasets"]["digits"]["attack"]["eps"] = ["eight/255"]
    with pytest.raises(ConfigError, match=r"eps\[0\] = 'eight/255' is not a number: .* or \"8/255\""):
        check_config(cfg, workdir=REPO)


def test_reference_eps_becomes_the_attack_eps_entry_it_equals():
    cfg = {"datasets": {"d": {"attack": {"eps": [1 / 255, 8 / 255], "reference_eps": 0.0313725490196078}},
                        "e": {"attack": {"eps": [0.002], "reference_eps": 0.002}}}}
    snap_reference_eps(cfg)
    assert cfg["datasets"]["d"]["attack"]["reference_eps"] == 8 / 255
    assert eps_key(cfg["datasets"]["d"]["attack"]["reference_eps"]) == "0.03137254901960784"
    assert cfg["datasets"]["e"]["attack"]["reference_eps"] == 0.002


@pytest.mark.slow
def test_k255_config_plans_exact_eps_paths(tmp_path):
    cfg = tmp_path / "k.yaml"
    cfg.write_text((REPO / ".test" / "config_k255.yaml").read_text())
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "-n",
                          "--cores", "2", "--directory", str(tmp_path), "--configfile", str(cfg)],
                         capture_output=True, text=True)
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    assert "attacks/clean/pgd/eps=0.03137254901960784.csv" in out.stdout
    assert "attacks/clean/pgd/eps=0.00392156862745098.csv" in out.stdout


@pytest.mark.full
def test_k255_config_runs_end_to_end(tmp_path):
    """The .test config with k/255 budgets: every stage, the health checks (none dropped) and the
    regimes table, with 8/255 shown in the tables."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text((REPO / ".test" / "config_k255.yaml").read_text())
    run = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"),
                          "--cores", "2", "--directory", str(tmp_path), "--configfile", str(cfg)],
                         capture_output=True, text=True)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    res = tmp_path / "results" / "k255"
    table1 = (res / "tables" / "table1.md").read_text()
    assert "| 8/255 |" in table1 and "| 1/255 |" in table1
    df = pd.read_csv(res / "digits" / "attacks" / "clean" / "pgd" / "eps=0.03137254901960784.csv")
    assert (df.eps == 8 / 255).all()  # the attack ran at exactly 8/255
    health = pd.read_csv(res / "tables" / "evaluation_health.csv")
    for regime in ("clean", "adv_pgd"):
        checks = set(health[health.regime == regime].check)
        assert "square_vs_whitebox" in checks, sorted(checks)
    regimes = (res / "tables" / "regimes.md").read_text()
    assert "ε = 8/255" in regimes
    used = yaml.safe_load((res / "config.used.yaml").read_text())
    assert used["datasets"]["digits"]["attack"]["eps"] == [1 / 255, 4 / 255, 8 / 255]
