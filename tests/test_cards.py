"""Robustness cards (issue 20, scope 6): the card's numbers equal the tables', the HTML opens
offline, the verdict follows the health checks, and the edge cases (no worst, one ε, a control,
no deferral, no health result, ε₅₀ beyond the search) say what they are."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from conftest import write_result
from oncorobust.provenance import model_fingerprint
import torch
import yaml

from oncorobust.reporting import cards
from oncorobust.errors import CardError
from oncorobust.pipeline.plan import card_config
from oncorobust.evaluation import robustness
from oncorobust.evaluation.clinical import DIRECTION_COLUMNS, direction_counts, direction_eps
from oncorobust.evaluation.deferral import curve_auc, deferral_curves, table2_rows
from oncorobust.evaluation.sensitivity import SENSITIVITY_COLUMNS
from oncorobust.evaluation.health import COLUMNS as HEALTH_COLUMNS
from oncorobust.io import write_csv
from oncorobust.models.checkpoints import state_digest
from oncorobust.data.preprocess import eps_units
from oncorobust.reporting.tables import clinical_eps, dataframe_markdown, table1, table1_markdown
from oncorobust.evaluation.results import summarize

REPO = Path(__file__).resolve().parents[1]
CT_UNITS = eps_units("lidc", {"mode": "window", "window": [-1350, 150]}, [])
DIGIT_UNITS = eps_units("digits", {"mode": "none"}, [])
CHECKS = ["iterative_vs_fgsm", "monotone_in_eps", "gradients", "deterministic", "unbounded_attack",
          "pgd_convergence", "loss_converged", "square_vs_whitebox"]


def _per_image(rng, n, eps, strength, ids):
    label = rng.integers(0, 2, n)
    clean = np.where(rng.random(n) < 0.85, label, 1 - label)
    flip = rng.random(n) < min(0.95, strength * eps)
    adv = np.where(flip, 1 - clean, clean)
    return pd.DataFrame({"sample_id": ids, "label": label, "clean_pred": clean, "adv_pred": adv,
                         "clean_prob": 0.9, "adv_prob": 0.6, "linf": eps})


def _sens(rng, n_val, n_test, scale, never=0.0):
    rows = []
    for split, n in (("val", n_val), ("test", n_test)):
        e = rng.exponential(scale, n)
        e[rng.random(n) < never] = np.inf
        correct = rng.random(n) < 0.85
        rows.append(pd.DataFrame({"sample_id": [f"{split}{i}" for i in range(n)], "split": split,
                                  "label": 0, "clean_pred": 0, "correct": correct, "min_flip_eps": e,
                                  "eps_lower": e * 0.9, "eps_upper": e, "first_order_eps": e * 1.3,
                                  "confidence": rng.random(n)}))
    return pd.concat(rows, ignore_index=True)[SENSITIVITY_COLUMNS]


def _health(ds, regime, failed=()):
    rows = []
    for c in CHECKS:
        rows.append({"dataset": ds, "regime": regime, "check": c, "passed": c not in failed, "value": 1.0,
                     "threshold": "t", "detail": f"detail of {c}"})
    return pd.DataFrame(rows)[HEALTH_COLUMNS]


def _model(path: Path, **meta):
    state = {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    torch.save({"state_dict": state, "meta": {"arch": "vgg_small", "sha256": state_digest(state), **meta}}, path)
    return state_digest(state)


@pytest.fixture(scope="module")
def res(tmp_path_factory):
    """A results tree shaped like the workflow's: ct (clean + adv_pgd, worst), digits (control,
    clean only, one ε, no worst), written by the same library functions the workflow uses."""
    root = tmp_path_factory.mktemp("cards") / "results"
    rng = np.random.default_rng(0)
    grids = {"ct": ([0.008, 0.016, 0.032], ["fgsm", "bim", "pgd", "worst"], 90, ["clean", "adv_pgd"]),
             "digits": ([0.1], ["fgsm", "pgd"], 120, ["clean"])}
    units = {"ct": CT_UNITS, "digits": DIGIT_UNITS}
    rows, sens = [], {}
    for ds, (grid, methods, n, regs) in grids.items():
        (root / ds / "tensors").mkdir(parents=True)
        classes = ["benign", "malignant"] if ds == "ct" else [str(i) for i in range(10)]
        (root / ds / "tensors" / "stats.json").write_text(json.dumps({"eps_units": units[ds], "classes": classes}))
        (root / ds / "health").mkdir()
        (root / ds / "models").mkdir()
        ids = [f"s{i}" for i in range(n)]
        for regime in regs:
            for k, method in enumerate(methods):
                for e in grid:
                    df = _per_image(np.random.default_rng(hash((ds, regime, e)) % 2**32 + k), n, e, 10 + 8 * k, ids)
                    # missed findings and false alarms: ct's positive class is malignant, digits has none
                    dirs = (direction_counts(df, 1, "malignant") if ds == "ct"
                            else {**dict.fromkeys(DIRECTION_COLUMNS, np.nan), "positive_class": ""})
                    rows.append(summarize(df, ds, regime, method, e) | dirs)
                    if regime != "clean" and method in ("fgsm", "bim", "pgd"):
                        rows.append(summarize(df, ds, regime, f"transfer_{method}", e) | dirs)
            sens[(ds, regime)] = _sens(rng, 40, n, 0.02 if ds == "ct" else 0.08)
            write_csv(_health(ds, regime, failed=("loss_converged",) if regime == "clean" else ()),
                      root / ds / "health" / f"{regime}.csv")
            _model(root / ds / "models" / f"{regime}.pt")
    summary = pd.DataFrame(rows)
    tables = root / "tables"
    write_csv(summary, tables / "attack_summary.csv")
    # flipping ε per direction: detected malignant cases flip at about 0.01, cleared benign ones at 0.03
    lab = np.array([0, 1] * 45)
    write_csv(pd.DataFrame([{"dataset": "ct", "regime": r, "positive_class": "malignant",
                             **direction_eps(pd.DataFrame({"label": lab, "clean_pred": lab,
                                                           "eps_upper": np.where(lab == 1, 0.01, 0.03)
                                                           * rng.uniform(0.8, 1.2, 90)}), 1, 2, n_boot=200)}
                            for r in ("clean", "adv_pgd")]), tables / "directions_eps.csv")
    t1 = table1(summary, {"ct": "ct", "digits": "mnist"}, "predicted", units)
    write_csv(t1, tables / "table1.csv")
    (tables / "table1.md").write_text(table1_markdown(t1))
    frames = {k: v[v.split == "test"] for k, v in sens.items()}
    rob = robustness.summary(frames, {"digits"}, n_boot=200, seed=0, units=units)
    write_csv(rob, tables / "robustness_summary.csv")
    (tables / "robustness_summary.md").write_text(robustness.markdown(rob))
    grid = np.geomspace(1e-4, 0.5, 60)
    write_csv(pd.concat([robustness.curve(f.eps_upper.to_numpy(float), f.correct.to_numpy(bool), grid)
                         .assign(dataset=ds, regime=r) for (ds, r), f in frames.items()]),
              tables / "robustness_curves.csv")
    t2, aucs = [], []
    for (ds, regime), s in sens.items():
        t2 += table2_rows(s, ds, regime, 0.2)
        aucs.append(curve_auc(deferral_curves(s[s.split == "test"])).assign(dataset=ds, regime=regime))
    t2 = pd.DataFrame(t2)
    t2.insert(t2.columns.get_loc("threshold_eps") + 1, "threshold_stored",
              [clinical_eps(e, units.get(ds))[1] for ds, e in zip(t2.dataset, t2.threshold_eps)])
    write_csv(t2, tables / "table2.csv")
    auc = pd.concat(aucs).pivot(index=["dataset", "regime"], columns="policy", values="auc").reset_index()
    write_csv(auc, tables / "deferral_auc.csv")
    (tables / "deferral_auc.md").write_text(dataframe_markdown(auc))
    return root


CFG = {"attacks": {"bim": {"steps": 10, "alpha_ratio": 0.1}, "pgd": {"steps": 10, "restarts": 1},
                   "apgd_ce": {"steps": 25}, "apgd_margin": {"steps": 25}, "fab": {"steps": 20},
                   "worst": {"members": ["apgd_ce", "apgd_margin", "fab"]}, "early_exit": True,
                   "health": {"square_queries": 200}, "labels": "predicted"},
       "datasets": {"ct": {"attack": {"methods": ["fgsm", "bim", "pgd", "worst"], "eps": [0.008, 0.016, 0.032],
                                      "reference_eps": 0.016},
                           "sensitivity": {"eps_max": 0.1, "method": "apgd_margin", "restarts": 1},
                           "adversarial_training": {"regimes": ["adv_pgd"], "eps": 0.016, "iters": 7}},
                    "digits": {"attack": {"methods": ["fgsm", "pgd"], "eps": [0.1], "reference_eps": 0.1},
                               "sensitivity": {"eps_max": 0.4}}}}


def make_card(res: Path, ds: str, regime: str, **over) -> dict:
    cfg = card_config(CFG, ds, regime, control=ds == "digits")
    t = res / "tables"
    kw = dict(dataset=ds, regime=regime, summary_csv=t / "attack_summary.csv",
              robustness_csv=t / "robustness_summary.csv", stats_json=res / ds / "tensors" / "stats.json",
              health_csv=res / ds / "health" / f"{regime}.csv", table2_csv=t / "table2.csv",
              auc_csv=t / "deferral_auc.csv", attack_cfg=cfg["attack"], attacks_cfg=cfg["attacks"],
              sensitivity_cfg=cfg["sensitivity"], adversarial_cfg=cfg["adversarial"], control=cfg["control"],
              version="9.9.9")
    kw.update(over)
    if "model" not in kw:
        kw["model"] = cards.model_identity(res / ds / "models" / f"{regime}.pt")
    return cards.gather(**kw)


def test_card_numbers_equal_the_tables(res):
    card = make_card(res, "ct", "clean")
    md = cards.render_markdown(card)
    t1 = pd.read_csv(res / "tables" / "table1.csv")
    ct = t1[t1.dataset == "ct"]
    base = ct[ct.method == "baseline"].iloc[0]
    assert (card["clean"]["accuracy"], card["clean"]["ci_low"], card["clean"]["ci_high"], card["clean"]["n"]) == (
        base.accuracy, base.ci_low, base.ci_high, base.n)
    table1_md = (res / "tables" / "table1.md").read_text()
    worst = ct[ct.method == "worst"].sort_values("eps")
    assert [r["eps"] for r in card["attacks"]] == worst.eps.tolist()
    for r, w in zip(card["attacks"], worst.itertuples()):
        assert r["method"] == "worst" and (r["accuracy"], r["ci_low"], r["ci_high"]) == (w.accuracy, w.ci_low, w.ci_high)
        cell = f"{w.accuracy:.1f} [{w.ci_low:.1f}, {w.ci_high:.1f}]"
        assert cell in table1_md and f"| {w.eps:g} | {r['eps_stored_text']} | WORST | {cell} |" in md
        assert r["eps_stored_text"] == f"{w.eps * 1500:.3g} HU" and r["eps_stored"] == w.eps_stored
    assert f"{base.accuracy:.1f}% [{base.ci_low:.1f}, {base.ci_high:.1f}] on {int(base.n)} test images" in md
    rob = pd.read_csv(res / "tables" / "robustness_summary.csv")
    r = rob[(rob.dataset == "ct") & (rob.regime == "clean")].iloc[0]
    for name in ("eps50", "eps10"):
        assert (card[name]["value"], card[name]["ci_low"], card[name]["ci_high"]) == (
            r[name], r[f"{name}_ci_low"], r[f"{name}_ci_high"])
    rob_md = (res / "tables" / "robustness_summary.md").read_text()
    cell = f"{r.eps50:.3g} [{r.eps50_ci_low:.3g}, {r.eps50_ci_high:.3g}]"
    assert cell in rob_md and cell in md and f"{r.eps50_stored:.3g} HU" in rob_md
    assert f"ε = {r.eps50:.3g} ({r.eps50_stored:.3g} HU)" in card["verdict"]
    assert f"{r.eps10:.3g} [{r.eps10_ci_low:.3g}, {r.eps10_ci_high:.3g}]" in md
    t2 = pd.read_csv(res / "tables" / "table2.csv")
    t = t2[(t2.dataset == "ct") & (t2.regime == "clean") & t2.threshold_from.str.startswith("validation")].iloc[0]
    d = card["deferral"]["table2"]
    assert (d["acc_before"], d["acc_after"], d["n_retained"], d["threshold_stored"]) == (
        t.acc_before, t.acc_after, t.n_retained, t.threshold_stored)
    assert f"from {t.acc_before:.4g}% on all {t.n_test} to {t.acc_after:.4g}%" in md
    auc_md = (res / "tables" / "deferral_auc.md").read_text()
    a = pd.read_csv(res / "tables" / "deferral_auc.csv").query("dataset == 'ct' and regime == 'clean'").iloc[0]
    for policy in ("sensitivity", "random", "confidence", "first_order"):
        assert card["deferral"]["auc"][policy] == a[policy] and f"{a[policy]:.2f}" in auc_md
        assert f"{a[policy]:.2f} |" in md
    # what was run: budgets, the model's digest, version; nothing per image
    assert "Budget of pgd: restarts 1, steps 10; early exit." in md and "apgd_ce, apgd_margin, fab" in md
    assert card["run"]["model"]["sha256"] in md and "oncorobust 9.9.9" in md
    assert not re.search(r"\bs\d+\b|val\d|test\d", md)  # no sample ID


def test_adversarial_regime_shows_training_and_transfer(res):
    card = make_card(res, "ct", "adv_pgd")
    md = cards.render_markdown(card)
    assert "adversarially trained (adv_pgd: eps 0.016, iters 7)" in md
    summ = pd.read_csv(res / "tables" / "attack_summary.csv")
    tr = summ[(summ.dataset == "ct") & (summ.regime == "adv_pgd") & summ.method.str.startswith("transfer_")
              & (summ.eps == 0.016)].sort_values("accuracy").iloc[0]
    name = tr.method.removeprefix("transfer_").upper()
    assert f"ε = 0.016: {name} {tr.accuracy:.1f}% [{tr.ci_low:.1f}, {tr.ci_high:.1f}]" in md
    assert "all 5 health checks that judge its attacks passed" in card["verdict"]


def test_html_is_self_contained(res):
    for ds, regime in (("ct", "clean"), ("digits", "clean")):
        card = make_card(res, ds, regime)
        curves = pd.read_csv(res / "tables" / "robustness_curves.csv").query("dataset == @ds and regime == @regime")
        page = cards.render_html(card, curves)
        assert page.startswith("<!DOCTYPE html>") and "<style>" in page and "<svg" in page
        low = page.lower()
        for bad in ("http://", "https://", "src=", "href=", "<script", "<link", "@import", "url(", "<img", "<iframe"):
            assert bad not in low, bad
        assert card["verdict"].replace("'", "&#x27;") in page
        assert f"{card['clean']['accuracy']:.1f}%" in page


def test_verdict_follows_the_health_result(res, tmp_path):
    failing = make_card(res, "ct", "clean")
    # the verdict rests on the per-image search and the worst case: a failed check of the paper's
    # PGD (loss_converged) does not weaken it, but says Table 1's PGD rows may be optimistic
    assert failing["verdict"].endswith("all 5 health checks that judge its attacks passed, so nothing suggests they"
                                       " understate the fragility. (loss_converged failed, which judges only the"
                                       " paper's BIM/PGD: Table 1's rows of those attacks may be optimistic.)")
    ok = tmp_path / "ok.csv"
    write_csv(_health("ct", "clean"), ok)
    passing = make_card(res, "ct", "clean", health_csv=ok)
    assert passing["verdict"] != failing["verdict"] and "all 5 health checks that judge its attacks passed" in passing["verdict"]
    assert "which judge" not in passing["verdict"]
    md_fail, md_ok = cards.render_markdown(failing), cards.render_markdown(passing)
    assert cards.HEALTH_MEANING["loss_converged"] in md_fail and cards.HEALTH_MEANING["loss_converged"] not in md_ok
    assert "| loss_converged | PGD (Table 1) | ✗ FAIL |" in md_fail and "| gradients | every attack | ✓ pass |" in md_ok
    # with no search result and no worst case the verdict rests on the paper's attacks: every check judges it
    paper = {**failing, "eps50": None, "attacks": [r for r in failing["attacks"] if r["method"] != "worst"]
             or [{**failing["attacks"][-1], "method": "pgd"}]}
    assert "1 of the 8 health checks that judge its attacks failed (loss_converged)" in cards.verdict_sentence(paper)
    three = tmp_path / "three.csv"
    write_csv(_health("ct", "clean", failed=("gradients", "square_vs_whitebox", "pgd_convergence")), three)
    md3 = cards.render_markdown(make_card(res, "ct", "clean", health_csv=three))
    assert "2 of the 5 health checks that judge its attacks failed (gradients, square_vs_whitebox)" in md3
    assert "(pgd_convergence failed, which judges only the paper's BIM/PGD" in md3
    for c in ("gradients", "square_vs_whitebox", "pgd_convergence"):
        assert cards.HEALTH_MEANING[c] in md3
    # an unknown (newer) check still gets a sentence; a not-applicable one is not counted
    h = _health("ct", "clean").astype({"passed": object})
    h.loc[len(h)] = {"dataset": "ct", "regime": "clean", "check": "some_new_check", "passed": False, "value": 1.0,
                     "threshold": "t", "detail": "d"}
    h.loc[len(h)] = {"dataset": "ct", "regime": "clean", "check": "transfer_vs_whitebox", "passed": None,
                     "value": float("nan"), "threshold": "t", "detail": "d"}
    odd = tmp_path / "odd.csv"
    write_csv(h, odd)
    card = make_card(res, "ct", "clean", health_csv=odd)
    assert "1 of the 6 health checks that judge its attacks failed (some_new_check)" in card["verdict"]
    md = cards.render_markdown(card)
    assert cards.GENERIC_MEANING in md and "Not applicable here: transfer_vs_whitebox." in md
    missing = make_card(res, "ct", "clean", health_csv=tmp_path / "absent.csv")
    assert "no evaluation-health check was recorded" in missing["verdict"]
    assert "how strong the attacks were is unknown" in cards.render_markdown(missing)


def test_control_one_eps_no_worst(res):
    card = make_card(res, "digits", "clean")
    md = cards.render_markdown(card)
    assert card["control"] and "(control dataset)" in md and "of this control dataset" in card["verdict"]
    assert len(card["attacks"]) == 1 and card["attacks"][0]["eps"] == 0.1
    assert "No per-image worst case (`worst`) was configured" in md and "fgsm, pgd" in card["worst_note"]
    summ = pd.read_csv(res / "tables" / "attack_summary.csv").query("dataset == 'digits' and eps == 0.1")
    top = summ[summ.flip_rate == summ.flip_rate.max()]
    best = top[top.accuracy == top.accuracy.min()]  # ties broken by accuracy, then the stronger method
    assert card["attacks"][0]["method"] in set(best.method) and card["attacks"][0]["accuracy"] == best.accuracy.iloc[0]
    if len(best) > 1:
        assert card["attacks"][0]["method"] == "pgd"  # pgd ranks above fgsm among equals
    assert card["attacks"][0]["eps_stored_text"] == clinical_eps(0.1, DIGIT_UNITS)[1]


def test_missing_deferral_and_robustness_rows(res, tmp_path):
    t2 = pd.read_csv(res / "tables" / "table2.csv")
    write_csv(t2[t2.dataset != "ct"], tmp_path / "t2.csv")
    card = make_card(res, "ct", "clean", table2_csv=tmp_path / "t2.csv", auc_csv=None)
    assert card["deferral"] is None and "Deferral was not computed for this model." in cards.render_markdown(card)
    rob = pd.read_csv(res / "tables" / "robustness_summary.csv")
    write_csv(rob[rob.dataset != "ct"], tmp_path / "rob.csv")
    card = make_card(res, "ct", "clean", robustness_csv=tmp_path / "rob.csv")
    assert card["eps50"] is None and card["verdict"].startswith("Under the strongest attack at ε = 0.032 (48 HU)")
    assert "No per-image sensitivity result" in cards.render_markdown(card)
    cards.render_html(card)  # renders without the sections' numbers


def test_eps50_beyond_the_search(res, tmp_path):
    rob = pd.read_csv(res / "tables" / "robustness_summary.csv")
    i = rob.index[(rob.dataset == "ct") & (rob.regime == "clean")][0]
    rob.loc[i, ["eps50", "eps50_ci_high", "eps50_stored"]] = [math.inf, math.inf, math.inf]
    write_csv(rob, tmp_path / "rob.csv")
    card = make_card(res, "ct", "clean", robustness_csv=tmp_path / "rob.csv")
    assert card["verdict"].startswith("Fewer than half of the test images change their prediction up to ε = 0.1")
    assert "> eps_max" in cards.render_markdown(card)


def test_bad_inputs_name_the_file(res, tmp_path):
    with pytest.raises(CardError, match="no such file"):
        make_card(res, "ct", "clean", summary_csv=tmp_path / "nope.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(CardError, match=r"bad\.csv.*lacks column"):
        make_card(res, "ct", "clean", summary_csv=tmp_path / "bad.csv")
    with pytest.raises(CardError, match="no white-box attack result for ct/adv_fast"):
        make_card(res, "ct", "adv_fast", model=None)


def test_verdict_line_and_find_cards(res, tmp_path):
    card = make_card(res, "ct", "clean")
    md = tmp_path / "results" / "cards" / "ct_clean.md"
    md.parent.mkdir(parents=True)
    md.write_text(cards.render_markdown(card))
    assert cards.read_verdict(md) == card["verdict"]
    assert cards.verdict_line(md) == f"{md} (also .html): {card['verdict']}"
    assert cards.find_cards(tmp_path / "results") == [md] and cards.find_cards(tmp_path / "none") == []
    with pytest.raises(CardError, match="no such robustness card"):
        cards.verdict_line(tmp_path / "x.md")
    (tmp_path / "y.md").write_text("# something else\n")
    with pytest.raises(CardError, match="no line starting with"):
        cards.read_verdict(tmp_path / "y.md")


def test_given_model_digest_and_runtime(tmp_path):
    digest = _model(tmp_path / "m.pt", checkpoint_sha256="ab" * 32, source="torchscript", output="logit")
    ident = cards.model_identity(tmp_path / "m.pt")
    assert ident == {"arch": "vgg_small", "sha256": digest, "checkpoint_sha256": "ab" * 32, "source": "torchscript",
                     "output": "logit"}
    run = cards._run_lines({"regime": "clean", "run": cards._run({}, {}, {}, None, ["pgd"], ident, None, None, "1")})
    assert run[0] == ("Model: vgg_small, given model (torchscript), imported, not trained here; output head: one"
                      " logit per image, attacked as the two logits [0, z].")
    assert f"Given checkpoint file SHA-256: `{'ab' * 32}`." in run
    bench = tmp_path / "b"
    bench.mkdir()
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    (bench / "a.tsv").write_text(header + "12.5\t0:00:12\t1\t1\t1\t1\t0\t0\t0\t1\n")
    (bench / "b.tsv").write_text(header + "60.0\t0:01:00\t1\t1\t1\t1\t0\t0\t0\t1\n")
    rt = cards.read_benchmarks({"attacks": [bench / "a.tsv", bench / "b.tsv"], "train": [bench / "missing.tsv"]})
    assert rt == {"attacks": {"seconds": 72.5, "jobs": 2}}
    log = tmp_path / "sens.log"
    log.write_text("x INFO oncorobust.evaluation.sensitivity: flipping eps (eps_upper): 130 images, 0 not flipped at eps_max=0.1,"
                   " median 0.03; median bracket width 0.0004; 24310 gradient evaluations (187 per image), FAB lowered 3,"
                   " 0 boundary flips pushed\n")
    assert cards.read_grad_evals(log) == {"total": 24310, "per_image": 187.0}
    assert cards.read_grad_evals(tmp_path / "absent.log") is None


def test_plausibility_warns_of_chance_accuracy_constant_predictions_and_no_flip():
    classes = ["benign", "malignant"]
    ok = pd.DataFrame({"split": "test", "label": [0, 1] * 20, "clean_pred": [0, 1] * 18 + [1, 0] * 2,
                       "eps_upper": 0.01})
    assert cards.plausibility(ok, classes, 0.1)["warnings"] == []
    # reversed classes: 36 of 40 wrong, below chance with its CI
    rev = ok.assign(clean_pred=1 - ok.clean_pred)
    w = cards.plausibility(rev, classes, 0.1)["warnings"]
    assert len(w) == 1 and w[0].startswith("Clean accuracy 10.0% is below chance (50% for 2 classes")
    assert "reversed" in w[0]
    # a model that scales by 255 itself: one class for every image, accuracy at chance, nothing flips
    const = ok.assign(clean_pred=1, eps_upper=float("inf"))
    w = cards.plausibility(const, classes, 0.1)["warnings"]
    assert [x.split(" ")[0:3] for x in w] == [["Clean", "accuracy", "50.0%"], ["The", "model", "predicts"],
                                             ["No", "test", "image"]]
    assert "'malignant' for 100% of the test images" in w[1] and "up to ε = 0.1" in w[2]
    assert cards.plausibility(None, classes)["checked"] is False
    # the verdict carries the first warning
    card = {"clean": {"accuracy": 50.0}, "attacks": [], "plausibility": {"warnings": w}}
    assert cards.verdict_sentence(card).endswith("Caution: " + w[0])


def test_card_config_of_the_demo():
    cfg = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    c = card_config(cfg, "ct", "clean", control=False)
    assert set(c["attacks"]) >= {"fgsm", "bim", "pgd", "apgd_ce", "apgd_margin", "fab", "worst", "labels", "health"}
    assert c["adversarial"] is None and c["sensitivity"]["eps_max"] == 0.1
    adv = card_config(cfg, "ct", "adv_pgd", control=False)["adversarial"]
    assert adv["eps"] == 0.016 and "regimes" not in adv
    with pytest.raises(CardError, match="'nope'"):
        card_config(cfg, "nope", "clean", control=False)


def test_adapter_writes_both_files(res, tmp_path):
    """workflow/scripts/cards.py with a stand-in for Snakemake's `snakemake` object."""
    out = tmp_path / "cards"
    cfg = card_config(CFG, "ct", "clean", control=False)
    spec = {"input": {"summary": "tables/attack_summary.csv", "robustness": "tables/robustness_summary.csv",
                      "curves": "tables/robustness_curves.csv", "table2": "tables/table2.csv",
                      "auc": "tables/deferral_auc.csv", "health": "ct/health/clean.csv",
                      "stats": "ct/tensors/stats.json", "model": "ct/models/clean.pt",
                      "sensitivity": "ct/sensitivity/clean.csv", "directions": "tables/directions_eps.csv",
                      "clinical": "tables/clinical.csv"},
            "output": {"md": str(out / "ct_clean.md"), "html": str(out / "ct_clean.html")},
            "params": {"card": cfg, "benchmarks": {"train": ["benchmarks/none.tsv"]}, "sensitivity_log": "none.log"},
            "log": [str(tmp_path / "card.log")], "wildcards": {"ds": "ct", "regime": "clean"}}
    code = textwrap.dedent(f"""
        import json, os, runpy, sys
        from types import SimpleNamespace as NS
        spec = json.loads(sys.argv[1])
        os.chdir({str(res)!r})
        sm = NS(input=NS(**spec["input"]), output=NS(**spec["output"]), params=NS(**spec["params"]),
                log=spec["log"], wildcards=NS(**spec["wildcards"]), threads=1)
        runpy.run_path({str(REPO / "workflow" / "scripts" / "cards.py")!r}, init_globals={{"snakemake": sm}})
    """)
    sens = pd.DataFrame({"sample_id": [f"t{i}" for i in range(20)], "split": "test", "label": [0, 1] * 10,
                         "clean_pred": [0, 1] * 9 + [1, 0], "eps_upper": 0.01})
    write_result(sens, res / "ct" / "sensitivity" / "clean.csv", model_fp=model_fingerprint(res / "ct" / "models" / "clean.pt"))
    run = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    md, page = (out / "ct_clean.md").read_text(), (out / "ct_clean.html").read_text()
    assert "## Is the model plausible?\n\nYes as far as checked" in md
    verdict = cards.read_verdict(out / "ct_clean.md")
    assert "all 5 health checks that judge its attacks passed" in verdict and verdict in (tmp_path / "card.log").read_text()
    # the harmful direction first: detected malignant cases flip at about 0.01 (cleared ones at 0.03)
    assert verdict.startswith("Half of the correctly detected malignant cases are called benign at ε = 0.0"), verdict
    assert re.search(r"half of the correctly cleared ones are called malignant at ε = 0\.0[23]", verdict), verdict
    assert "## Missed findings and false alarms" in md and "missed findings (malignant → benign)" in md
    assert "Runtime: no benchmark recorded." in md and "Gradient evaluations: not recorded." in md
    assert "<svg" in page and "https://" not in page and "oncorobust " in md


def test_dry_run_plans_one_card_per_model(tmp_path):
    out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile"), "-n",
                          "--cores", "2", "--directory", str(tmp_path),
                          "--configfile", str(REPO / "config" / "config.yaml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    planned = set(re.findall(r"^\s+output: (results/cards/\S+)\.md, ", out.stdout, re.M))
    assert planned == {f"results/cards/{ds}_{r}" for ds in ("ct", "mammo", "mri", "digits") for r in ("clean", "adv_pgd")}
