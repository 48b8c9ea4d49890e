"""The regime-comparison table (oncorobust.reporting.regimes): its numbers equal those computed
directly from per-image fixture CSVs (inf ε included), seed replicates give across-seed means and
two-level intervals, one regime gives no paired rows, a missing replicate is named."""

from __future__ import annotations

import math
import runpy
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import binomtest

from conftest import restamp, write_result
from oncorobust.provenance import file_fingerprint
from oncorobust.errors import OncorobustError
from oncorobust.evaluation import robustness
from oncorobust.evaluation.paired import (eps50, mean_difference, median_difference, paired_eps50_difference,
                                          two_level_bootstrap)
from oncorobust.evaluation.stats import wilson
from oncorobust.reporting.regimes import (AUROC_COLUMNS, COLUMNS, ReplicateMissingError, load_runs, markdown,
                                          read_train_seconds, regime_table)
from oncorobust.pipeline.plan import (RegimeNameError, RegimeTableError, reference_method, replicate_name,
                                      replicate_names, run_index, split_replicate)

ROOT = Path(__file__).resolve().parents[1]
N_BOOT = 400


# --------------------------------------------------------------------------- fixtures

def _model(rng, n, p_clean, p_adv, flip_scale, n_inf):
    """Per-image outcomes of one model on n two-class images: labels, predictions, flipping ε."""
    label = rng.integers(0, 2, n)
    clean_ok = rng.random(n) < p_clean
    clean_pred = np.where(clean_ok, label, 1 - label)
    adv_ok = clean_ok & (rng.random(n) < p_adv)
    adv_pred = np.where(adv_ok, label, 1 - label)
    eps = rng.exponential(flip_scale, n) + 1e-4
    eps[rng.choice(n, n_inf, replace=False)] = np.inf
    return label, clean_pred, adv_pred, eps


def write_model(root: Path, ds: str, regime: str, method: str, eps_ref: float, ids, outcome, *,
                key_columns=False, shuffle_seed=None):
    """The attack CSV (at eps_ref) and sensitivity CSV (val + test rows) of one model."""
    label, clean_pred, adv_pred, eps = outcome
    att = pd.DataFrame({"sample_id": ids, "label": label, "clean_pred": clean_pred, "adv_pred": adv_pred,
                        "clean_prob": 0.9, "adv_prob": 0.6, "linf": eps_ref})
    if key_columns:
        att = att.assign(regime=regime, method=method, eps=eps_ref)
    if shuffle_seed is not None:  # a file in another row order: rows pair by sample_id
        att = att.sample(frac=1, random_state=shuffle_seed)
    a = root / ds / "attacks" / regime / method / f"eps={eps_ref:g}.csv"
    a.parent.mkdir(parents=True, exist_ok=True)
    write_result(att, a)
    test = pd.DataFrame({"sample_id": ids, "split": "test", "label": label, "clean_pred": clean_pred,
                         "correct": clean_pred == label, "min_flip_eps": eps, "eps_lower": eps / 2, "eps_upper": eps})
    val = test.head(3).assign(sample_id=[f"val-{i}" for i in range(min(3, len(test)))], split="val", eps_upper=0.0)
    s = root / ds / "sensitivity" / f"{regime}.csv"
    s.parent.mkdir(parents=True, exist_ok=True)
    write_result(pd.concat([val, test]), s)
    return a, s


def build(root, ds, regimes, k, method, eps_ref, outcomes, **kw):
    """Write every model's CSVs; returns (index, attack paths, sensitivity paths)."""
    index = run_index(ds, regimes, k, [method], eps_ref)
    atts, senss = [], []
    for e in index:
        ids = outcomes["ids"]
        a, s = write_model(root, ds, e["regime"], method, eps_ref, ids, outcomes[e["regime"]], **kw)
        atts.append(a), senss.append(s)
    return index, atts, senss


@pytest.fixture
def one_seed(tmp_path):
    rng = np.random.default_rng(3)
    n = 61
    ids = [f"img-{i:03d}" for i in range(n)]
    outcomes = {"ids": ids,
                "clean": _model(rng, n, 0.9, 0.3, 0.01, n_inf=3),
                "adv_pgd": _model(rng, n, 0.85, 0.7, 0.03, n_inf=20)}
    index, atts, senss = build(tmp_path, "ct", ["clean", "adv_pgd"], 1, "pgd", 0.016, outcomes)
    # key columns in one file (checked when present), another row order in the other
    write_model(tmp_path, "ct", "clean", "pgd", 0.016, ids, outcomes["clean"], key_columns=True)
    write_model(tmp_path, "ct", "adv_pgd", "pgd", 0.016, ids, outcomes["adv_pgd"], shuffle_seed=1)
    return index, atts, senss, outcomes


# --------------------------------------------------------------------------- names

def test_split_replicate_and_names():
    assert split_replicate("clean") == ("clean", 1)
    assert split_replicate("adv_pgd-r3") == ("adv_pgd", 3)
    assert split_replicate("adv_trades-r12") == ("adv_trades", 12)
    assert replicate_names("clean", 3) == ["clean", "clean-r2", "clean-r3"]
    for name in ("clean", "adv_mart-r2", "adv_pgd-r10"):
        assert replicate_name(*split_replicate(name)) == name
    for bad in ("clean-r1", "clean-r0", "clean-r02", "adv-pgd", "-r2", "clean-r", "clean-rx"):
        with pytest.raises(RegimeNameError):
            split_replicate(bad)
    with pytest.raises(OncorobustError):
        replicate_names("clean", 0)


def test_reference_method_worst_else_strongest():
    assert reference_method(["fgsm", "bim", "pgd", "worst"]) == "worst"
    assert reference_method(["fgsm", "bim", "pgd"]) == "pgd"
    assert reference_method(["fgsm", "square", "apgd_ce"]) == "apgd_ce"
    with pytest.raises(RegimeTableError):
        reference_method(["transfer_pgd"])


def test_run_index_folds_replicate_names():
    idx = run_index("d", ["clean", "adv_pgd", "adv_pgd-r2"], 2, ["pgd"], 0.1)
    assert [(e["regime"], e["base"], e["replicate"]) for e in idx] == [
        ("clean", "clean", 1), ("clean-r2", "clean", 2), ("adv_pgd", "adv_pgd", 1), ("adv_pgd-r2", "adv_pgd", 2)]


# --------------------------------------------------------------------------- K = 1

def test_one_seed_numbers_equal_the_per_image_csvs(one_seed):
    index, atts, senss, out = one_seed
    ids = {"ct": out["ids"]}
    table = regime_table(load_runs(index, atts, senss, ids=ids), n_boot=N_BOOT, seed=7)
    assert list(table.columns) == COLUMNS and len(table) == 2
    c, a = table.iloc[0], table.iloc[1]
    assert (c.regime, a.regime, a.label, a.replicates, a.n, a.method, a.eps, a.interval) == (
        "clean", "adv_pgd", "PGD-AT", 1, 61, "pgd", 0.016, "images")
    for row, key in ((c, "clean"), (a, "adv_pgd")):
        label, clean_pred, adv_pred, eps = out[key]
        k0, k1, n = int((clean_pred == label).sum()), int((adv_pred == label).sum()), len(label)
        assert row.clean_accuracy == pytest.approx(100 * k0 / n)
        assert (row.clean_accuracy_ci_low, row.clean_accuracy_ci_high) == pytest.approx(
            tuple(100 * v for v in wilson(k0, n)))
        assert row.worst_accuracy == pytest.approx(100 * k1 / n)
        assert (row.worst_accuracy_ci_low, row.worst_accuracy_ci_high) == pytest.approx(
            tuple(100 * v for v in wilson(k1, n)))
        assert row.eps50 == np.sort(eps)[math.ceil(n / 2) - 1]  # lower median, inf sorted last
        summ = robustness.summary({("ct", key): pd.DataFrame({"eps_upper": eps})}, set(), n_boot=N_BOOT, seed=7)
        assert (row.eps50_ci_low, row.eps50_ci_high) == (summ.eps50_ci_low[0], summ.eps50_ci_high[0])
        assert row.worst_accuracy_seed_min == row.worst_accuracy_seed_max == row.worst_accuracy
        assert math.isnan(row.eps50_sa_ci_low) and math.isnan(row.eps50_seed_sd)
    # paired: clean rows have none
    assert math.isnan(c.d_accuracy) and math.isnan(c.mcnemar_p) and c.mcnemar_p_per_seed == ""
    lc, _, ac, ec = out["clean"]
    la, _, aa, ea = out["adv_pgd"]
    ok_c, ok_a = ac == lc, aa == la
    b, cc = int((ok_c & ~ok_a).sum()), int((~ok_c & ok_a).sum())
    assert (a.only_clean, a.only_regime) == (b, cc)
    assert a.d_accuracy == pytest.approx(100 * (ok_a.mean() - ok_c.mean()))
    assert a.d_accuracy_ci_low < a.d_accuracy < a.d_accuracy_ci_high
    assert a.mcnemar_p == pytest.approx(binomtest(b, b + cc, 0.5).pvalue, rel=1e-9)
    assert np.isinf(ea).sum() == 20 and a.eps50 == np.sort(ea)[30]
    assert a.d_eps50 == pytest.approx(np.sort(ea)[30] - np.sort(ec)[30])
    direct = paired_eps50_difference(ec, ea, n_boot=N_BOOT, seed=7)
    assert (a.d_eps50_ci_low, a.d_eps50_ci_high) == (direct["ci_low"], direct["ci_high"])
    md = markdown(table)
    assert "Seeds per regime: 1." in md and "Wilson" in md and "McNemar" in md and "PGD-AT" in md


def test_worst_counts_the_searchs_flips_at_or_below_eps(tmp_path):
    """`worst`: an image the attack left unflipped but the sensitivity search flipped at ≤ ε is
    wrong under the worst case (as in Table 1 / Table S5)."""
    ids = ["a", "b", "c", "d"]
    label = np.array([0, 1, 1, 0])
    clean_pred = np.array([0, 1, 1, 0])
    adv_pred = np.array([0, 1, 0, 0])          # attack flipped c only
    eps = np.array([0.05, 0.2, 0.01, np.inf])  # the search flipped a at 0.05 ≤ 0.1
    outcomes = {"ids": ids, "clean": (label, clean_pred, adv_pred, eps)}
    index, atts, senss = build(tmp_path, "d", ["clean"], 1, "worst", 0.1, outcomes)
    table = regime_table(load_runs(index, atts, senss, n_classes={"d": 2}), n_boot=50)
    assert table.worst_accuracy.iloc[0] == pytest.approx(50.0)  # a and c wrong, b and d right
    assert table.clean_accuracy.iloc[0] == 100.0
    assert table.eps50.iloc[0] == 0.05


def test_one_regime_only_gives_no_paired_rows(tmp_path):
    rng = np.random.default_rng(0)
    ids = [f"i{i}" for i in range(30)]
    outcomes = {"ids": ids, "clean": _model(rng, 30, 0.8, 0.5, 0.02, n_inf=16)}  # ε₅₀ = inf
    index, atts, senss = build(tmp_path, "mri", ["clean"], 1, "pgd", 0.016, outcomes)
    table = regime_table(load_runs(index, atts, senss), n_boot=50)
    assert len(table) == 1 and table.regime.iloc[0] == "clean"
    assert table.eps50.iloc[0] == math.inf
    paired = [col for col in COLUMNS if col.startswith("d_") or col.startswith("only_") or col == "mcnemar_p"]
    assert table[paired].isna().all(axis=None)
    md = markdown(table)
    assert "> eps_max" in md and md.count("\n| mri |") == 1


# --------------------------------------------------------------------------- K = 3

@pytest.fixture
def three_seeds(tmp_path):
    rng = np.random.default_rng(11)
    n = 50
    ids = [f"s{i:02d}" for i in range(n)]
    outcomes = {"ids": ids}
    for k, name in enumerate(replicate_names("clean", 3)):
        outcomes[name] = _model(rng, n, 0.9, 0.2 + 0.1 * k, 0.01, n_inf=2)
    for k, name in enumerate(replicate_names("adv_trades", 3)):
        outcomes[name] = _model(rng, n, 0.8, 0.6 + 0.1 * k, 0.03, n_inf=5 * k)
    index, atts, senss = build(tmp_path, "digits", ["clean", "adv_trades"], 3, "pgd", 0.1, outcomes)
    return tmp_path, index, atts, senss, outcomes


def test_three_seeds_across_seed_means_and_intervals(three_seeds):
    _, index, atts, senss, out = three_seeds
    assert [Path(p).parts[-3] for p in atts] == ["clean", "clean-r2", "clean-r3",
                                                  "adv_trades", "adv_trades-r2", "adv_trades-r3"]
    table = regime_table(load_runs(index, atts, senss), n_boot=N_BOOT, seed=2)
    assert list(table.regime) == ["clean", "adv_trades"]
    assert (table.replicates == 3).all() and (table.interval == "seeds+images").all()
    for row, base in zip(table.itertuples(), ("clean", "adv_trades")):
        reps = [out[n] for n in replicate_names(base, 3)]
        acc = [100 * np.mean(r[2] == r[0]) for r in reps]
        clean_acc = [100 * np.mean(r[1] == r[0]) for r in reps]
        e50 = [eps50(r[3]) for r in reps]
        assert row.worst_accuracy == pytest.approx(np.mean(acc))
        assert row.clean_accuracy == pytest.approx(np.mean(clean_acc))
        assert row.eps50 == pytest.approx(np.mean(e50))
        assert (row.worst_accuracy_seed_min, row.worst_accuracy_seed_max) == pytest.approx((min(acc), max(acc)))
        assert row.worst_accuracy_seed_sd == pytest.approx(np.std(acc, ddof=1))
        direct = two_level_bootstrap([(r[2] == r[0]).astype(float) for r in reps], np.mean, n_boot=N_BOOT, seed=2,
                                     bounds=(0.0, 1.0))
        for key in ("ci_low", "ci_high", "sa_ci_low", "sa_ci_high", "images_ci_low", "images_ci_high"):
            assert getattr(row, f"worst_accuracy_{key}") == pytest.approx(100 * direct[key])
        assert row.worst_accuracy_ci_low <= row.worst_accuracy <= row.worst_accuracy_ci_high
        assert row.worst_accuracy_sa_ci_low < row.worst_accuracy < row.worst_accuracy_sa_ci_high
        # the small-K interval never leaves [0, 100] % (it can overshoot unclipped with 3 seeds)
        assert 0 <= row.worst_accuracy_sa_ci_low and row.worst_accuracy_sa_ci_high <= 100
        assert row.eps50_seed_min == pytest.approx(min(e50))
    t = table.iloc[1]
    pairs = [(out[c], out[a]) for c, a in zip(replicate_names("clean", 3), replicate_names("adv_trades", 3))]
    d = [100 * (np.mean(a[2] == a[0]) - np.mean(c[2] == c[0])) for c, a in pairs]
    assert t.d_accuracy == pytest.approx(np.mean(d))
    assert (t.d_accuracy_seed_min, t.d_accuracy_seed_max) == pytest.approx((min(d), max(d)))
    acc_pairs = [np.column_stack([c[2] == c[0], a[2] == a[0]]).astype(float) for c, a in pairs]
    direct = two_level_bootstrap(acc_pairs, mean_difference, n_boot=N_BOOT, seed=2, bounds=(-1.0, 1.0))
    assert (t.d_accuracy_ci_low, t.d_accuracy_ci_high) == pytest.approx((100 * direct["ci_low"], 100 * direct["ci_high"]))
    assert (t.d_accuracy_sa_ci_low, t.d_accuracy_sa_ci_high) == pytest.approx(
        (100 * direct["sa_ci_low"], 100 * direct["sa_ci_high"]))
    ps = []
    for c, a in pairs:
        ok_c, ok_a = c[2] == c[0], a[2] == a[0]
        b, cc = int((ok_c & ~ok_a).sum()), int((~ok_c & ok_a).sum())
        ps.append(binomtest(b, b + cc, 0.5).pvalue if b + cc else 1.0)
    assert t.mcnemar_p == pytest.approx(max(ps)) and len(t.mcnemar_p_per_seed.split(";")) == 3
    de = [eps50(a[3]) - eps50(c[3]) for c, a in pairs]
    assert t.d_eps50 == pytest.approx(np.mean(de))
    eps_pairs = [np.column_stack([c[3], a[3]]) for c, a in pairs]
    direct = two_level_bootstrap(eps_pairs, median_difference, n_boot=N_BOOT, seed=2)
    assert (t.d_eps50_ci_low, t.d_eps50_ci_high) == pytest.approx((direct["ci_low"], direct["ci_high"]))
    md = markdown(table)
    assert "Seeds per regime: 3." in md and "t⊕img" in md and "two-level bootstrap" in md


def test_missing_replicate_file_is_named(three_seeds):
    _, index, atts, senss, _ = three_seeds
    Path(senss[4]).unlink()  # adv_trades-r2's sensitivity CSV
    with pytest.raises(ReplicateMissingError) as err:
        load_runs(index, atts, senss)
    assert isinstance(err.value, OncorobustError)
    assert str(senss[4]) in str(err.value) and "adv_trades-r2" in str(err.value)
    assert "replicate 2" in str(err.value)


def test_replicate_absent_from_the_runs_is_named(three_seeds):
    _, index, atts, senss, _ = three_seeds
    runs = load_runs(index, atts, senss)
    with pytest.raises(ReplicateMissingError, match=r"adv_trades-r3"):
        regime_table([r for r in runs if r.regime != "adv_trades-r3"], n_boot=20)


def test_models_scored_on_other_images_are_refused(three_seeds):
    root, index, atts, senss, out = three_seeds
    write_model(root, "digits", "clean-r2", "pgd", 0.1, [f"x{i}" for i in range(50)], out["clean-r2"])
    with pytest.raises(RegimeTableError, match="different test images"):
        regime_table(load_runs(index, atts, senss), n_boot=20)


def test_key_columns_disagreeing_with_the_wiring_are_refused(one_seed):
    index, atts, senss, out = one_seed
    df = pd.read_csv(atts[0]).assign(method="fgsm")  # the clean CSV says it holds FGSM
    df.to_csv(atts[0], index=False)
    with pytest.raises(OncorobustError, match="fgsm"):
        load_runs(index, atts, senss)


# --------------------------------------------------------------------------- the workflow adapter

def test_script_writes_csv_and_md(one_seed, tmp_path):
    torch = pytest.importorskip("torch")
    index, atts, senss, out = one_seed
    test_pt = tmp_path / "test.pt"
    torch.save({"ids": out["ids"]}, test_pt)
    for p in [*atts, *senss]:  # made on these test tensors
        restamp(p, file_fingerprint(test_pt))
    stats = tmp_path / "stats.json"
    stats.write_text('{"classes": ["benign", "malignant"], "counts": {"train": {"used": {"0": 60, "1": 40}},'
                     ' "val": {"used": {"0": 10, "1": 20}}}}')
    hist = tmp_path / "adv_pgd.history.csv"
    pd.DataFrame({"epoch": [1, 2, 3], "loss": [1.0, 0.9, 0.8]}).to_csv(hist, index=False)
    bench = tmp_path / "clean.tsv"
    bench.write_text("s\th:m:s\n12.5\t0:00:12\n")
    assert read_train_seconds(bench) == 12.5 and math.isnan(read_train_seconds(tmp_path / "none.tsv"))
    clinical = tmp_path / "clinical.csv"  # the tables job's AUROC rows: adv_pgd against clean under attack
    pd.DataFrame([{"dataset": "ct", "regime": "adv_pgd", "method": "any attack", "direction": "any", "eps": 0.016,
                   "positive_class": "malignant", "threshold": 0.0, "d_auroc_regime": 0.12,
                   "d_auroc_regime_ci_low": 0.05, "d_auroc_regime_ci_high": 0.19, "d_auroc_regime_p": 0.001}]
                 ).to_csv(clinical, index=False)
    sm = types.SimpleNamespace(
        log=[str(tmp_path / "regimes.log")],
        input=types.SimpleNamespace(attacks=[str(p) for p in atts], sensitivity=[str(p) for p in senss],
                                    tests=[str(test_pt)], stats=[str(stats)], clinical=str(clinical)),
        output=types.SimpleNamespace(csv=str(tmp_path / "regimes.csv"), md=str(tmp_path / "regimes.md")),
        params=types.SimpleNamespace(index=index, datasets=["ct"], labels="predicted", seed=0,
                                     adversarial={"ct": {"iters": 5, "clean_fraction": 0.5}},
                                     histories=[str(tmp_path / "clean.history.csv"), str(hist)],
                                     benchmarks=[str(bench), str(tmp_path / "missing.tsv")]))
    runpy.run_path(str(ROOT / "workflow" / "scripts" / "regimes_table.py"), init_globals={"snakemake": sm})
    csv = pd.read_csv(sm.output.csv)
    assert list(csv.columns) == COLUMNS + AUROC_COLUMNS and list(csv.regime) == ["clean", "adv_pgd"]
    eps = float(csv.eps.iloc[1])
    assert (csv.d_auroc.iloc[1] == 0.12) == (eps == 0.016) and math.isnan(csv.d_auroc.iloc[0])
    assert csv.train_seconds.iloc[0] == 12.5 and math.isnan(csv.train_seconds.iloc[1])
    # 3 epochs × (100 training images × (1 + 5 × 0.5) + 30 validation images × 5 PGD steps); no clean history
    assert csv.train_grad_evals.iloc[1] == 3 * (100 * 3.5 + 30 * 5) and math.isnan(csv.train_grad_evals.iloc[0])
    assert "1.5 k grad. evals" in Path(sm.output.md).read_text()
    assert csv.only_clean.isna().iloc[0] and float(csv.only_clean.iloc[1]).is_integer()
    assert Path(sm.output.md).read_text().startswith("# Training regimes compared")


def test_rule_file_names_its_inputs_and_params():
    text = (ROOT / "workflow" / "rules" / "regimes.smk").read_text()
    text += (ROOT / "workflow" / "rules" / "common.smk").read_text()  # its input functions
    text += (ROOT / "src" / "oncorobust" / "pipeline" / "dag.py").read_text()  # the regime index they read
    for piece in ("rule regimes_table:", 'code=code_version("scripts/regimes_table.py")', "log:", "threads: 1",
                  "resources:", f"{{R}}/tables/regimes.csv", f"{{R}}/tables/regimes.md", "run_index("):
        assert piece in text, piece


def test_regimes_table_gains_the_auroc_difference_under_attack():
    """add_auroc: one seed, the clinical table's paired DeLong difference of `any attack` at the row's
    ε; several seeds, the mean of the per-seed differences; the clean regime and other ε: none."""
    from oncorobust.reporting.regimes import AUROC_COLUMNS, add_auroc

    base = {"positive_class": "malignant", "d_auroc_regime_ci_low": -0.2, "d_auroc_regime_ci_high": 0.0,
            "d_auroc_regime_p": 0.04, "threshold": 0.0}
    clinical = pd.DataFrame([
        base | {"dataset": "ct", "regime": "adv_pgd", "method": "any attack", "eps": 0.016, "d_auroc_regime": -0.1},
        base | {"dataset": "ct", "regime": "adv_pgd", "method": "pgd", "eps": 0.016, "d_auroc_regime": -0.05},
        base | {"dataset": "ct", "regime": "adv_pgd", "method": "any attack", "eps": 0.032, "d_auroc_regime": -0.3},
        base | {"dataset": "ct", "regime": "clean", "method": "any attack", "eps": 0.016, "d_auroc_regime": np.nan},
        base | {"dataset": "mri", "regime": "adv_pgd", "method": "any attack", "eps": 0.016, "d_auroc_regime": 0.1},
        base | {"dataset": "mri", "regime": "adv_pgd-r2", "method": "any attack", "eps": 0.016, "d_auroc_regime": 0.3},
    ])
    table = pd.DataFrame({"dataset": ["ct", "ct", "mri"], "regime": ["clean", "adv_pgd", "adv_pgd"],
                          "eps": [0.016, 0.016, 0.016]})
    out = add_auroc(table, clinical)
    assert list(out.columns) == ["dataset", "regime", "eps", *AUROC_COLUMNS]
    assert math.isnan(out.d_auroc[0]) and out.d_auroc[1] == -0.1 and out.d_auroc_p[1] == 0.04
    assert out.d_auroc[2] == pytest.approx(0.2) and math.isnan(out.d_auroc_ci_low[2])
    assert out.auroc_method[1] == "any attack"
