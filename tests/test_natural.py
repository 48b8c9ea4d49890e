"""Natural corruptions wired into the workflow: per-image noise σ at preprocessing, the corruption
jobs' per-image CSVs, the corruption / noise-unit tables, the health check and the config."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from torch import nn

from oncorobust import spec
from oncorobust.config import corruption_plan, validate_config
from oncorobust.data.ingest import run_ingest
from oncorobust.data.preprocess import NOISE_COLUMNS, preprocess_with_noise, run_preprocess
from oncorobust.errors import ConfigError
from oncorobust.evaluation.corruptions import CORRUPTIONS, CorruptionError, evaluate_corruption
from oncorobust.evaluation.evaluate import COLUMNS, evaluate_attack
from oncorobust.io import write_csv
from oncorobust.reporting.natural import (HEALTH_COLUMNS, attack_curve, corruption_health, corruption_markdown,
                                          corruption_table,
                                          mean_corruption_accuracy, natural_vs_adversarial, noise_units_markdown,
                                          noise_units_table, sigma_multiples)
from conftest import write_result
from oncorobust.evaluation.results import read_per_image

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = ROOT / "workflow" / "schemas" / "config.schema.yaml"


# ---------------------------------------------------------------------------------------------
# per-image noise σ at preprocessing


def _ct_like(root: Path, sigma_hu: float, n: int = 24, seed: int = 0) -> dict:
    """Float TIFF lesion crops in HU: a smooth ramp + a blob (-800 … -400 HU) + Gaussian noise."""
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:64, 0:64]
    rows = []
    for i in range(n):
        bg = -800 + 3 * xx + 2 * yy + 400 * np.exp(-((xx - 32) ** 2 + (yy - 30 - i % 5) ** 2) / (2 * 8 ** 2))
        Image.fromarray((bg + rng.normal(0, sigma_hu, bg.shape)).astype(np.float32), mode="F").save(root / f"i{i}.tiff")
        rows.append({"patient_id": f"p{i}", "sample_id": f"s{i}", "label": ["benign", "malignant"][i % 2],
                     "path": f"i{i}.tiff"})
    pd.DataFrame(rows).to_csv(root / "manifest.csv", index=False)
    return {"format": "manifest", "manifest": str(root / "manifest.csv"), "classes": ["benign", "malignant"]}


PREP = {"size": 16, "intensity": {"mode": "window", "window": [-1350, 150]}, "balance": "none"}


@pytest.mark.parametrize("sigma_hu", [10.0, 40.0])
def test_noise_sigma_recorded_per_sample_in_stored_units(tmp_path, sigma_hu):
    src = _ct_like(tmp_path / "ct", sigma_hu)
    manifest, _ = run_ingest(src, {}, seed=0)
    tensors, stats, _, noise = preprocess_with_noise(manifest, src, PREP, 0)
    assert list(noise.columns) == NOISE_COLUMNS
    # one row per image of the tensors, in split then tensor order
    assert list(noise.sample_id) == [i for s in ("train", "val", "test") for i in tensors[s]["ids"]]
    assert list(noise.split) == [s for s in ("train", "val", "test") for _ in tensors[s]["ids"]]
    # σ measured on the 64 px crop in HU, before the window and the resize to 16 px
    assert np.all(np.abs(noise.sigma / sigma_hu - 1) < 0.10)
    assert (noise.span == 1500.0).all() and (noise.unit == stats["eps_units"]["unit"]).all()


def test_noise_csv_written_and_tensors_unchanged(tmp_path):
    src = _ct_like(tmp_path / "ct", 20.0)
    manifest, _ = run_ingest(src, {}, seed=0)
    t1, s1, k1 = run_preprocess(manifest, src, PREP, 0)
    t2, s2, k2, noise = preprocess_with_noise(manifest, src, PREP, 0)
    assert s1 == s2 and k1.equals(k2)
    for split in t1:
        assert torch.equal(t1[split]["x"], t2[split]["x"]) and torch.equal(t1[split]["y"], t2[split]["y"])
        assert t1[split]["ids"] == t2[split]["ids"]
    write_csv(noise, tmp_path / "noise.csv")
    back = pd.read_csv(tmp_path / "noise.csv", dtype={"sample_id": str})
    assert list(back.columns) == NOISE_COLUMNS and len(back) == sum(len(t["ids"]) for t in t1.values())
    # sigma_px = sigma / span: the image's noise in [0,1] model-input units
    assert np.allclose(back.sigma / back.span, noise.sigma / 1500.0)


def test_array_sources_record_levels_and_no_sigma():
    src = {"format": "digits"}
    manifest, _ = run_ingest(src, {"test_fraction": 0.3, "val_fraction": 0.15}, seed=0)
    tensors, stats, _, noise = preprocess_with_noise(manifest, src,
                                                     {"size": 8, "intensity": {"mode": "none"}, "balance": "none"}, 0)
    assert (noise.span == 16.0).all() and noise.sigma.isna().all()
    assert len(noise) == sum(len(t["ids"]) for t in tensors.values())


# ---------------------------------------------------------------------------------------------
# evaluate_corruption: the per-image CSV of a corrupt job


class _Tiny(nn.Module):
    def __init__(self, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 16 * 16, 2)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).flatten(1))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = (0.3 + 0.4 * torch.rand(20, 1, 16, 16, generator=g)).float()
    y = torch.randint(0, 2, (20,), generator=g)
    return _Tiny(), x, y, [f"img{i:02d}" for i in range(20)]


def test_corruption_csv_passes_the_attack_csv_checks(batch, tmp_path):
    model, x, y, ids = batch
    df = evaluate_corruption(model, x, y, ids, "gaussian_noise", 40.0, units_per_pixel=1500.0, seed=0,
                             batch_size=7, regime="clean")
    logits = [f"{p}_logit_{k}" for p in ("clean", "adv") for k in (0, 1)]  # a corruption has no true_adv
    assert list(df.columns) == COLUMNS + logits + ["regime", "method", "severity", "unit"]
    assert (df.method == "corrupt_gaussian_noise").all() and (df.severity == 40.0).all()
    assert (df.unit == CORRUPTIONS["gaussian_noise"].unit).all() and (df.regime == "clean").all()
    assert ((df.linf >= 0) & (df.linf <= 1)).all() and df.linf.max() > 0
    assert np.isfinite(df[["clean_prob", "adv_prob"]].to_numpy()).all()
    path = tmp_path / "attacks" / "clean" / "corrupt_gaussian_noise" / "severity=40.csv"
    path.parent.mkdir(parents=True)
    write_result(df, path)  # as the corrupt job writes it (provenance columns appended)
    back = read_per_image(path, ids)  # one row per test image, as the attack CSVs are checked
    assert list(back.sample_id) == ids
    # the same clean predictions as the attack CSV of the same model
    att = evaluate_attack(model, x, y, ids, "fgsm", 0.01, seed=0, batch_size=7)
    assert (att.clean_pred.to_numpy() == df.clean_pred.to_numpy()).all()
    assert np.allclose(att.clean_prob.to_numpy(), df.clean_prob.to_numpy())


@pytest.mark.parametrize("name,severity", [("gaussian_noise", 20.0), ("rician_noise", 20.0), ("bias_field", 0.2),
                                           ("jpeg", 30.0)])
def test_seeded_results_identical_across_batch_sizes(batch, name, severity):
    model, x, y, ids = batch
    upp = np.linspace(300, 1500, len(x))  # per-image spans
    a = evaluate_corruption(model, x, y, ids, name, severity, units_per_pixel=upp, seed=3, batch_size=20)
    b = evaluate_corruption(model, x, y, ids, name, severity, units_per_pixel=upp, seed=3, batch_size=3)
    pd.testing.assert_frame_equal(a, b)
    c = evaluate_corruption(model, x.flip(0), y.flip(0), ids[::-1], name, severity,
                            units_per_pixel=upp[::-1], seed=3, batch_size=4)
    pd.testing.assert_frame_equal(a, c.iloc[::-1].reset_index(drop=True))


def test_evaluate_corruption_errors(batch):
    model, x, y, ids = batch
    with pytest.raises(CorruptionError, match="unknown corruption"):
        evaluate_corruption(model, x, y, ids, "snow", 1.0)
    with pytest.raises(CorruptionError, match="valid range"):
        evaluate_corruption(model, x, y, ids, "jpeg", 150.0)
    with pytest.raises(CorruptionError, match="units_per_pixel"):
        evaluate_corruption(model, x, y, ids, "gaussian_noise", 5.0, units_per_pixel=[1.0, 2.0])


# ---------------------------------------------------------------------------------------------
# tables, noise units, health, figure


def _frame(ids, label, clean, adv, linf, name="gaussian_noise", sev=20.0, regime="clean"):
    n = len(ids)
    return pd.DataFrame({"sample_id": ids, "label": label, "clean_pred": clean, "adv_pred": adv,
                         "clean_prob": np.full(n, 0.9), "adv_prob": np.full(n, 0.8), "linf": linf,
                         "regime": regime, "method": f"corrupt_{name}", "severity": sev, "unit": "σ"})


def test_table_accuracy_equals_the_per_image_mean():
    rng = np.random.default_rng(0)
    ids = [f"s{i}" for i in range(50)]
    label = rng.integers(0, 2, 50)
    clean = np.where(rng.random(50) < 0.8, label, 1 - label)
    adv = np.where(rng.random(50) < 0.6, label, 1 - label)
    df = _frame(ids, label, clean, adv, rng.random(50) * 0.1)
    table = corruption_table({("ct", "clean", "gaussian_noise", 20.0): df}, {"ct": {"per_eps": 1500.0, "unit": "HU"}})
    r = table.iloc[0]
    assert r.accuracy == pytest.approx(100 * float((df.adv_pred == df.label).mean()))
    assert r.clean_accuracy == pytest.approx(100 * float((df.clean_pred == df.label).mean()))
    assert r.ci_low <= r.accuracy <= r.ci_high
    assert r.median_linf_stored == pytest.approx(float(df.linf.median()) * 1500.0) and r.stored_unit == "HU"
    means = mean_corruption_accuracy(table)
    assert means.mean_relative_accuracy.iloc[0] == pytest.approx(r.accuracy / r.clean_accuracy)
    md = corruption_markdown(table, means)
    assert "gaussian_noise" in md and "Mean corruption accuracy" in md
    # no units known (control without per_eps): stored columns NaN, still rendered
    t2 = corruption_table({("d", "clean", "contrast", 0.5): df}, {"d": None})
    assert math.isnan(t2.median_linf_stored.iloc[0]) and "–" in corruption_markdown(t2, mean_corruption_accuracy(t2))


def test_health_counts_corruption_flips_inside_the_attacks_failed_ball():
    ids = ["a", "b", "c", "d"]
    sens = pd.DataFrame({"sample_id": ids, "split": "test", "eps_lower": [0.02, 0.02, 0.01, 0.05],
                         "eps_upper": [0.03, 0.03, 0.02, np.inf]})
    # a: flipped at 0.01 < 0.02 (counted); b: flipped at 0.03 ≥ 0.02 (not); c: not flipped; d: flipped at 0.04 < 0.05
    df1 = _frame(ids, [0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 0, 1], [0.01, 0.03, 0.001, 0.04])
    df2 = _frame(ids, [0, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0.005, 0.0, 0.0, 0.0], sev=40.0)  # a again
    h = corruption_health({("ct", "clean", "gaussian_noise", 20.0): df1, ("ct", "clean", "gaussian_noise", 40.0): df2},
                          {("ct", "clean"): sens})
    assert list(h.columns) == HEALTH_COLUMNS and len(h) == 1
    assert h.value.iloc[0] == 2 and not h.passed.iloc[0] and "a by corrupt_gaussian_noise" in h.detail.iloc[0]
    ok = corruption_health({("ct", "clean", "gaussian_noise", 20.0): df1.assign(linf=0.5)}, {("ct", "clean"): sens})
    assert ok.passed.iloc[0] and ok.value.iloc[0] == 0


def test_eps50_in_sigma_units_and_controls_without_sigma():
    ids = [f"s{i}" for i in range(9)]
    sens = pd.DataFrame({"sample_id": ids + ["v0"], "split": ["test"] * 9 + ["val"],
                         "eps_lower": 0.0, "eps_upper": [0.01, 0.02, 0.03, 0.04, 0.05, 0.06, np.inf, np.inf, 0.01, 9.9]})
    noise = pd.DataFrame({"sample_id": ids, "split": "test", "sigma": [15.0] * 8 + [0.2], "span": 1500.0, "unit": "HU"})
    m = sigma_multiples(sens, noise)
    assert len(m) == 9 and m.eps_sigma.iloc[0] == pytest.approx(0.01 / (15 / 1500))
    assert np.isposinf(m.eps_sigma.iloc[6]) and math.isnan(m.eps_sigma.iloc[8])  # σ below one stored step
    t = noise_units_table({("ct", "clean"): sens, ("digits", "clean"): sens}, {"ct": noise, "digits": None}, n_boot=200)
    ct = t[t.dataset == "ct"].iloc[0]
    assert ct.n_with_sigma == 8 and ct.eps50_sigma == pytest.approx(0.04 / 0.01)
    assert ct.ci_low <= ct.eps50_sigma <= ct.ci_high and ct.median_sigma == 15.0
    dg = t[t.dataset == "digits"].iloc[0]
    assert dg.n_with_sigma == 0 and math.isnan(dg.eps50_sigma) and math.isnan(dg.median_sigma)
    assert "No σ for digits" in noise_units_markdown(t)


def test_figure_copes_with_one_dataset_one_corruption_no_sigma(tmp_path):
    df = _frame(["a", "b"], [0, 1], [0, 1], [0, 0], [0.01, 0.02])
    table = corruption_table({("digits", "clean", "gaussian_noise", 2.0): df}, {"digits": {"per_eps": 16.0, "unit": "grey level"}})
    curves = pd.DataFrame(columns=["dataset", "regime", "method", "eps", "accuracy", "ci_low", "ci_high"])
    natural_vs_adversarial(table, curves, {"digits": None}, {"digits": math.nan}, ["digits"], stem=tmp_path / "f")
    assert (tmp_path / "f.png").stat().st_size > 0
    empty = corruption_table({}, {})
    natural_vs_adversarial(empty, curves, {}, {}, ["ct"], stem=tmp_path / "g")
    assert (tmp_path / "g.png").exists() and "No corruption results" in corruption_markdown(empty, mean_corruption_accuracy(empty))


def test_figure_folds_seed_replicates_onto_their_regime(tmp_path):
    ids = [f"s{i}" for i in range(10)]
    per = {}
    for k, name in enumerate(("clean", "clean-r2")):
        wrong = [1] * (2 + 4 * k) + [0] * (8 - 4 * k)  # 20 % and 60 % wrong under the corruption
        per[("ct", name, "gaussian_noise", 20.0)] = _frame(ids, [0] * 10, [0] * 10, wrong, [0.01] * 10)
    table = corruption_table(per, {"ct": {"per_eps": 1500.0, "unit": "HU"}})
    curves = attack_curve({("ct", n, "worst", 0.01): _frame(ids, [0] * 10, [0] * 10, [1] * (3 + 2 * k) + [0] * (7 - 2 * k),
                                                             [0.01] * 10) for k, n in enumerate(("clean", "clean-r2"))})
    fig = natural_vs_adversarial(table, curves, {"ct": {"per_eps": 1500.0, "unit": "HU"}}, {"ct": math.nan}, ["ct"])
    lines = {ln.get_label(): ln for ln in fig.axes[0].get_lines() if not ln.get_label().startswith("_")}
    assert len(lines) == 2 and all(lab.endswith("(clean, mean of 2 seeds)") for lab in lines)  # not one per seed
    noise = next(ln for lab, ln in lines.items() if lab.startswith("gaussian_noise"))
    assert list(noise.get_ydata()) == pytest.approx([60.0])  # mean of 80 % and 40 % accuracy


# ---------------------------------------------------------------------------------------------
# config


def _demo() -> dict:
    return yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def test_schema_and_registry_agree():
    schema = yaml.safe_load(SCHEMA.read_text())
    block = schema["$defs"]["dataset"]["properties"]["corruptions"]["properties"]
    assert tuple(block["names"]["items"]["enum"]) == spec.CORRUPTION_NAMES == tuple(CORRUPTIONS)
    assert tuple(block["severities"]["propertyNames"]["enum"]) == spec.CORRUPTION_NAMES
    assert [m for m in block["modality"]["enum"] if m] == list(spec.MODALITIES)
    for kind in spec.CORRUPTION_KINDS.values():
        c = CORRUPTIONS[kind.name]
        assert (kind.modalities, kind.severities, kind.stored_units) == (c.modalities, c.severities, c.stored_units)


def test_demo_and_paper_configs_plan_small_valid_sets():
    for name in ("config.yaml", "paper.yaml"):
        cfg = yaml.safe_load((ROOT / "config" / name).read_text())
        validate_config(cfg, SCHEMA)
        for ds, entry in cfg["datasets"].items():
            plan = corruption_plan(ds, entry)
            assert len(plan) <= 4 and all(len(s) <= 5 for s in plan.values())
            modality = spec.dataset_modality(entry)
            assert all(modality in spec.CORRUPTION_KINDS[n].modalities for n in plan)


def test_default_plan_and_disabling():
    entry = copy.deepcopy(_demo()["datasets"]["ct"])
    entry.pop("corruptions")
    plan = corruption_plan("ct", entry)
    assert list(plan) == list(spec.DEFAULT_CORRUPTION_SETS["ct"]) and plan["gaussian_noise"] == [5.0, 20.0, 80.0]
    entry["corruptions"] = {"names": []}
    assert corruption_plan("ct", entry) == {}
    mri = copy.deepcopy(_demo()["datasets"]["mri"])
    mri.pop("corruptions")  # percentile intensity: rician_noise needs explicit grey levels, left out by default
    assert "rician_noise" not in corruption_plan("mri", mri) and "bias_field" in corruption_plan("mri", mri)


@pytest.mark.parametrize("block,match", [
    ({"names": ["snow"]}, r"datasets\.ct\.corruptions\.names\[0\] = 'snow' is not a known corruption.*gaussian_noise"),
    ({"names": ["bias_field"]}, r"datasets\.ct\.corruptions\.names\[0\] = 'bias_field' does not apply to ct"),
    ({"names": ["jpeg"], "severities": {"jpeg": [120]}}, r"severities\.jpeg\[0\] = 120 is outside"),
    ({"names": ["jpeg"], "severities": {"contrsat": [0.5]}}, r"severities\.contrsat: not a known corruption \(did you mean 'contrast'"),
    ({"names": ["gaussian_blur"], "severities": {"gaussian_blur": [2, 2.0000001]}}, r"one file name"),
    ({"modality": "xray"}, r"corruptions\.modality = 'xray'"),
])
def test_config_errors_name_the_key(block, match):
    entry = copy.deepcopy(_demo()["datasets"]["ct"])
    entry["corruptions"] = block
    with pytest.raises(ConfigError, match=match):
        corruption_plan("ct", entry)


def test_stored_unit_noise_on_percentile_data_needs_grey_levels():
    entry = copy.deepcopy(_demo()["datasets"]["mammo"])
    entry["corruptions"] = {"names": ["gaussian_noise"]}
    with pytest.raises(ConfigError, match=r"datasets\.mammo\.corruptions\.severities\.gaussian_noise is required"):
        corruption_plan("mammo", entry)
