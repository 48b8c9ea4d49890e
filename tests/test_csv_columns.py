"""Attack CSVs say what they hold: ``regime``, ``method``, ``eps`` as their last columns, and the
aggregates read them (checked against their params) instead of trusting the input order."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from oncorobust.evaluation.evaluate import COLUMNS, evaluate_attack
from oncorobust.evaluation.scores import SCORE_PREFIXES
from oncorobust.evaluation.health import table_checks, whitebox_flipped, worst_vs_bracket
from conftest import TEST_MODEL_FP, write_result
from oncorobust.io import ATTACK_KEY_COLUMNS, write_attack_csv, write_csv
from oncorobust.provenance import PROVENANCE_COLUMNS, file_fingerprint
from oncorobust.models.architectures import build_model
from oncorobust.models.checkpoints import state_digest
from oncorobust.models.loading import load_model
from oncorobust.evaluation.clinical import direction_counts
from oncorobust.reporting.visibility import visibility_summary
from oncorobust.reporting.tables import dataframe_markdown, sanity_warnings, table1, table1_markdown, table_s5
from oncorobust.evaluation.results import (AttackKeyError, InputKeyError, attack_key_from_path,
                                           check_sensitivity_path, merge_bracket, pair_inputs,
                                           read_attack_csv, read_per_image, summarize)

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "workflow" / "scripts"

# Runs a workflow script with a stand-in for Snakemake's `snakemake` object (attribute and key access).
RUNNER = """
import json, runpy, sys
class NS(dict):
    def __getattr__(self, k):
        try:
            return self[k]
        except KeyError:
            raise AttributeError(k) from None
spec = json.loads(sys.argv[2])
sm = NS({k: NS(v) if isinstance(v, dict) else v for k, v in spec.items()})
runpy.run_path(sys.argv[1], init_globals={"snakemake": sm})
"""


def _run(script: str, spec: dict, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", RUNNER, str(SCRIPTS / script), json.dumps(spec)],
                          capture_output=True, text=True, cwd=cwd)


def _strip_key(text: str) -> str:
    """A CSV's text without its last six columns (the key, then the provenance)."""
    return "".join(line.rsplit(",", 6)[0] + "\n" for line in text.splitlines())


# ---------------------------------------------------------------- the attack script writes the key


@pytest.fixture
def tiny(tmp_path):
    """A tiny model in the train step's format and 12 test images."""
    torch.manual_seed(0)
    model = build_model("vgg_small", classes=2, in_channels=1, size=8, mean=[0.4], std=[0.3], width=4)
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    meta = {"arch": "vgg_small", "classes": ["a", "b"], "channels": 1, "size": 8, "mean": [0.4], "std": [0.3],
            "width": 4, "sha256": state_digest(state)}
    (tmp_path / "m").mkdir()
    torch.save({"state_dict": state, "meta": meta}, tmp_path / "m" / "clean.pt")
    g = torch.Generator().manual_seed(1)
    test = {"x": torch.rand(12, 1, 8, 8, generator=g), "y": torch.randint(0, 2, (12,), generator=g),
            "ids": [f"img{i:02d}" for i in range(12)]}
    torch.save(test, tmp_path / "m" / "test.pt")
    return tmp_path


def test_attack_script_appends_regime_method_eps(tiny):
    out = tiny / "results" / "ds" / "attacks" / "adv_pgd" / "transfer_fgsm" / "eps=0.05.csv"
    out.parent.mkdir(parents=True)
    # one job writes every ε of the grid (attacks.jobs: per_method), each read back exactly from its name
    out_k255 = out.parent / f"eps={4 / 255!r}.csv"
    spec = {"input": {"model": "m/clean.pt", "source": "m/clean.pt", "test": "m/test.pt"},
            "output": [str(out), str(out_k255)], "log": [str(tiny / "attack.log")], "threads": 1,
            "wildcards": {"ds": "ds", "regime": "adv_pgd", "method": "transfer_fgsm", "eps": "0.05"},
            "params": {"attack": {"params": {}}, "labels": "predicted", "batch_size": 5, "seed": 3,
                       "device": "cpu"}}
    run = _run("attack.py", spec, tiny)
    assert run.returncode == 0, run.stderr[-2000:]
    df = pd.read_csv(out)
    assert list(df.columns) == COLUMNS + LOGITS2 + ["regime", "method", "eps", "model_fp", "data_fp", "row_fp"]
    assert list(df.columns) == COLUMNS + LOGITS2 + list(ATTACK_KEY_COLUMNS) + list(PROVENANCE_COLUMNS)
    # the provenance: the model's weight digest and the test tensors' file digest
    assert (df.model_fp == torch.load(tiny / "m" / "clean.pt", weights_only=True)["meta"]["sha256"][:16]).all()
    assert (df.data_fp == hashlib.sha256((tiny / "m" / "test.pt").read_bytes()).hexdigest()[:16]).all()
    assert (df.regime == "adv_pgd").all() and (df.method == "transfer_fgsm").all()
    assert df.eps.dtype == float and (df.eps == 0.05).all() and len(df) == 12
    k255 = pd.read_csv(out_k255)
    assert (k255.eps == 4 / 255).all() and (k255.linf <= 4 / 255 + 1e-6).all() and (k255.linf > 0.05 / 2).sum() == 0
    # the old columns, byte for byte, as the previous version wrote them (write_csv of the result)
    model = load_model(tiny / "m" / "clean.pt")
    test = torch.load(tiny / "m" / "test.pt", weights_only=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the job ran (threads: 1): the logits' last bits depend on the thread count
    try:
        old = evaluate_attack(model, test["x"], test["y"], test["ids"], "transfer_fgsm", 0.05, params={},
                              labels="predicted", seed=3, batch_size=5, source_model=model)
    finally:
        torch.set_num_threads(threads)
    write_csv(old, tiny / "old.csv")
    assert _strip_key(out.read_text()) == (tiny / "old.csv").read_text()
    assert read_attack_csv(out, test["ids"], expect={"dataset": "ds", "regime": "adv_pgd",
                                                      "method": "transfer_fgsm", "eps": 0.05})[0] \
        == ("adv_pgd", "transfer_fgsm", 0.05)


def test_write_attack_csv_refuses_a_result_that_has_a_key_column(tmp_path):
    with pytest.raises(ValueError, match="eps"):
        write_attack_csv(pd.DataFrame({"sample_id": ["a"], "eps": [0.1]}), tmp_path / "x.csv",
                         regime="clean", method="pgd", eps=0.1, model_fp=TEST_MODEL_FP, data_fp="")


# ---------------------------------------------------------------- the reader checks the key


#: the logit columns of a two-class attack CSV
LOGITS2 = [f"{p}_logit_{k}" for p in SCORE_PREFIXES for k in (0, 1)]


def _logits(pred, rng, prefix):
    """Two-class logits whose argmax is ``pred``."""
    z = rng.random(len(pred)).astype(np.float32) * 3
    return {f"{prefix}_logit_0": np.where(pred == 0, z, -z), f"{prefix}_logit_1": np.where(pred == 1, z, -z)}


def _frame(ids, rng, eps):
    n = len(ids)
    label = rng.integers(0, 2, n)
    clean = np.where(rng.random(n) < 0.85, label, 1 - label)
    adv = np.where(rng.random(n) < 0.3, 1 - clean, clean)
    return pd.DataFrame({"sample_id": ids, "label": label, "clean_pred": clean, "adv_pred": adv,
                         "clean_prob": rng.random(n).astype(np.float32),
                         "adv_prob": rng.random(n).astype(np.float32),
                         "linf": np.full(n, eps, dtype=np.float32), "l2": np.full(n, 8 * eps),
                         "psnr": np.full(n, -20 * np.log10(eps)), "ssim": 1 - rng.random(n) / 100,
                         **_logits(clean, rng, "clean"), **_logits(adv, rng, "adv"),
                         **_logits(adv, rng, "true_adv")})[COLUMNS + LOGITS2]


def _attack_csv(root: Path, regime, method, eps, df, key=True, data_fp="") -> Path:
    p = root / "ds" / "attacks" / regime / method / f"eps={eps:g}.csv"
    p.parent.mkdir(parents=True, exist_ok=True)
    if key:
        write_attack_csv(df, p, regime=regime, method=method, eps=eps, model_fp=TEST_MODEL_FP, data_fp=data_fp)
    else:
        write_result(df, p, data_fp=data_fp)
    return p


def test_read_attack_csv_checks_params_path_and_format(tmp_path):
    ids = [f"s{i}" for i in range(20)]
    df = _frame(ids, np.random.default_rng(0), 0.016)
    p = _attack_csv(tmp_path, "clean", "pgd", 0.016, df)
    key, got = read_attack_csv(p, ids, expect={"dataset": "ds", "regime": "clean", "method": "pgd", "eps": 0.016})
    assert key == ("clean", "pgd", 0.016) and list(got.columns[:len(COLUMNS)]) == COLUMNS
    assert attack_key_from_path(p) == key and attack_key_from_path(tmp_path / "x.csv") is None
    # an entry of params.index that is not this file's (a mis-wired input list)
    with pytest.raises(AttackKeyError,
                       match=r"eps=0\.016\.csv holds .*eps=0\.016.* given as .*eps=0\.032.*disagreeing: eps"):
        read_attack_csv(p, ids, expect={"regime": "clean", "method": "pgd", "eps": 0.032})
    with pytest.raises(AttackKeyError, match="disagreeing: regime/method"):
        read_attack_csv(p, ids, expect={"regime": "adv_pgd", "method": "fgsm", "eps": 0.016})
    # a file whose own columns contradict its path (copied by hand)
    moved = tmp_path / "ds" / "attacks" / "clean" / "pgd" / "eps=0.032.csv"
    moved.write_bytes(p.read_bytes())
    with pytest.raises(AttackKeyError, match="its path says"):
        read_attack_csv(moved, ids)
    # a file of the previous version (no key columns): refused, saying to rerun the attack jobs
    old = _attack_csv(tmp_path / "old", "clean", "pgd", 0.016, df, key=False)
    with pytest.raises(AttackKeyError, match=r"eps=0\.016\.csv: no regime/method/eps column.*Rerun the attack jobs"):
        read_attack_csv(old, ids, expect={"regime": "clean", "method": "pgd", "eps": 0.016})
    # several results pasted into one file
    two = tmp_path / "two.csv"
    pd.concat([pd.read_csv(p), pd.read_csv(p).assign(eps=0.032)]).to_csv(two, index=False)
    with pytest.raises(AttackKeyError, match="several values"):
        read_attack_csv(two)


# ---------------------------------------------------------------- the aggregate: checked, tables unchanged


@pytest.fixture
def grid(tmp_path):
    """Attack CSVs of one dataset (clean + adv_pgd with transfer, worst at two ε), its sensitivity
    CSVs, test tensors and stats, in both formats (with and without the key columns)."""
    rng = np.random.default_rng(7)
    ids = [f"ds-{i:03d}" for i in range(40)]
    jobs = [(r, m, e) for r in ("clean", "adv_pgd") for m in ("fgsm", "pgd", "worst") for e in (0.1, 0.2)]
    jobs += [("adv_pgd", f"transfer_{m}", e) for m in ("fgsm", "pgd") for e in (0.1, 0.2)]
    frames = {job: _frame(ids, rng, job[2]) for job in jobs}
    sens = {r: pd.DataFrame({"sample_id": ids, "split": "test", "label": np.arange(len(ids)) % 2,
                             "clean_pred": np.arange(len(ids)) % 2, "eps_upper": rng.random(len(ids)) * 0.3,
                             **_logits(np.arange(len(ids)) % 2, rng, "clean")})
            for r in ("clean", "adv_pgd")}
    for fmt in ("new", "old"):
        root = tmp_path / fmt
        (root / "ds" / "tensors").mkdir(parents=True)
        torch.save({"ids": ids}, root / "ds" / "tensors" / "test.pt")
        fp = file_fingerprint(root / "ds" / "tensors" / "test.pt")
        for (r, m, e), df in frames.items():
            _attack_csv(root, r, m, e, df, key=fmt == "new", data_fp=fp)
        (root / "ds" / "tensors" / "stats.json").write_text(json.dumps({"classes": ["b", "m"]}))
        pd.DataFrame({"sample_id": ids, "split": "test", "sigma": 30.0, "span": 1500.0, "unit": "HU"}).to_csv(
            root / "ds" / "tensors" / "noise.csv", index=False)
        (root / "ds" / "sensitivity").mkdir()
        for r, df in sens.items():
            write_result(df, root / "ds" / "sensitivity" / f"{r}.csv", data_fp=fp)
    index = [{"dataset": "ds", "regime": r, "method": m, "eps": e} for r, m, e in jobs]
    return tmp_path, index, ids


def _tables_spec(root: Path, index: list[dict]) -> dict:
    out = root / "tables"
    return {"input": {"csvs": [str(root / "ds" / "attacks" / m["regime"] / m["method"] / f"eps={m['eps']:g}.csv")
                               for m in index],
                      "sensitivity": [str(root / "ds" / "sensitivity" / f"{r}.csv") for r in ("clean", "adv_pgd")],
                      "tests": [str(root / "ds" / "tensors" / "test.pt")],
                      "stats": [str(root / "ds" / "tensors" / "stats.json")],
                      "noise": [str(root / "ds" / "tensors" / "noise.csv")]},
            "output": {k: str(out / f) for k, f in [("table1", "table1.csv"), ("table1_md", "table1.md"),
                                                     ("table_s5", "table_s5.csv"), ("table_s5_md", "table_s5.md"),
                                                     ("sanity", "sanity.csv"), ("summary", "attack_summary.csv"),
                                                     ("directions", "directions.csv"),
                                                     ("directions_eps", "directions_eps.csv"),
                                                     ("directions_md", "directions.md"),
                                                     ("visibility", "visibility.csv"),
                                                     ("visibility_md", "visibility.md"),
                                                     ("clinical", "clinical.csv"), ("clinical_md", "clinical.md")]},
            "params": {"index": index,
                       "sensitivity_index": [{"dataset": "ds", "regime": r} for r in ("clean", "adv_pgd")],
                       "labels": "predicted", "paper_names": {"ds": "ct"}, "reference_eps": {"ds": 0.1},
                       "controls": [], "datasets": ["ds"], "positive_class": {"ds": None},
                       "operating_point": {"ds": "youden"}, "seed": 0},
            "log": [str(root / "tables.log")]}


def test_tables_refuse_a_csv_whose_eps_disagrees_with_params(grid):
    tmp, index, _ = grid
    root = tmp / "new"
    wrong = [dict(m) for m in index]
    spec = _tables_spec(root, wrong)
    spec["params"]["index"][0]["eps"] = 0.2  # the params say 0.2 for the file eps=0.1.csv
    run = _run("attack_tables.py", spec, tmp)
    assert run.returncode == 1
    assert "clean/fgsm/eps=0.1.csv holds" in run.stderr and "disagreeing: eps" in run.stderr
    assert not (root / "tables" / "table1.csv").exists()
    # inputs swapped against params.index (same ε): caught by the method column
    spec = _tables_spec(root, index)
    spec["input"]["csvs"][0], spec["input"]["csvs"][2] = spec["input"]["csvs"][2], spec["input"]["csvs"][0]
    run = _run("attack_tables.py", spec, tmp)
    assert run.returncode == 1 and "disagreeing: method" in run.stderr
    # one list longer than the other
    spec = _tables_spec(root, index)
    spec["params"]["index"] = index[:-1]
    run = _run("attack_tables.py", spec, tmp)
    assert run.returncode == 1 and "params.index" in run.stderr


def test_tables_refuse_csvs_of_the_previous_version(grid):
    tmp, index, _ = grid
    run = _run("attack_tables.py", _tables_spec(tmp / "old", index), tmp)
    assert run.returncode == 1 and "no regime/method/eps column" in run.stderr
    assert "Rerun the attack jobs" in run.stderr


def test_tables_unchanged_by_the_key_columns(grid):
    """The script on CSVs with the key equals the previous version's computation (params zipped by
    position with CSVs without it), byte for byte; the key columns reach no output."""
    tmp, index, ids = grid
    spec = _tables_spec(tmp / "new", index)
    run = _run("attack_tables.py", spec, tmp)
    assert run.returncode == 0, run.stderr[-2000:]
    old = tmp / "old"
    sens = {r: read_per_image(old / "ds" / "sensitivity" / f"{r}.csv", ids) for r in ("clean", "adv_pgd")}
    per_image, rows, attacked = {}, [], []
    for meta, path in zip(index, spec["input"]["csvs"]):
        df = read_per_image(path.replace(str(tmp / "new"), str(old)), ids)
        assert list(df.columns) == COLUMNS + LOGITS2 + list(PROVENANCE_COLUMNS)
        key = (meta["dataset"], meta["regime"], meta["method"], meta["eps"])
        attacked.append(df.assign(dataset="ds", regime=meta["regime"], method=meta["method"], eps=meta["eps"]))
        if meta["method"] == "worst":
            df = merge_bracket(df, sens[meta["regime"]], meta["eps"], "predicted", 2)
        per_image[key] = df
        # the classes are b, m: no name says positive, so on two classes label 1 ("m")
        rows.append(summarize(df, *key) | direction_counts(df, 1, "m"))
    ref = tmp / "ref"
    # the visibility medians of each attack's own changed images (no stored units: stats.json has none)
    noise = {"ds": pd.read_csv(old / "ds" / "tensors" / "noise.csv", dtype={"sample_id": str})}
    seen = visibility_summary(pd.concat(attacked, ignore_index=True), {}, noise)
    assert seen.n_changed.gt(0).all() and seen.ssim_median.between(0.99, 1).all()
    assert (seen.below_noise_pct == 0).all()  # σ = 30/1500 = 0.02 < every ‖δ‖∞ (0.1, 0.2)
    summary = pd.DataFrame(rows).merge(
        seen[["dataset", "regime", "method", "eps", "linf_stored_median", "l2_median", "psnr_median",
              "ssim_median", "below_noise_pct"]], on=["dataset", "regime", "method", "eps"], how="left")
    t1 = table1(summary, {"ds": "ct"}, "predicted", {"ds": None})
    s5 = table_s5(per_image, {"ds": 0.1}, {"ds": "ct"}, {"ds": None})
    for name, frame in [("attack_summary", summary), ("table1", t1), ("table_s5", s5),
                        ("sanity", sanity_warnings(summary, set()))]:
        write_csv(frame, ref / f"{name}.csv")
        assert (tmp / "new" / "tables" / f"{name}.csv").read_bytes() == (ref / f"{name}.csv").read_bytes(), name
    assert table1_markdown(t1) in (tmp / "new" / "tables" / "table1.md").read_text()
    assert dataframe_markdown(s5) in (tmp / "new" / "tables" / "table_s5.md").read_text()
    assert len(s5) == 5  # at the reference ε: fgsm, pgd, worst white-box and fgsm, pgd transfer (not vacuous)


def test_health_checks_unchanged_by_the_key_columns(grid):
    """health.py reads the same CSVs (read_per_image): its checks do not see the key columns."""
    tmp, index, ids = grid
    results = []
    for fmt in ("old", "new"):
        root = tmp / fmt
        per_image = {(m["method"], m["eps"]): read_per_image(
            root / "ds" / "attacks" / "adv_pgd" / m["method"] / f"eps={m['eps']:g}.csv", ids)
            for m in index if m["regime"] == "adv_pgd"}
        summary = pd.DataFrame([summarize(df, "ds", "adv_pgd", m, e) for (m, e), df in per_image.items()])
        sens = read_per_image(root / "ds" / "sensitivity" / "adv_pgd.csv", ids)
        results.append((table_checks(summary, per_image, "predicted"), worst_vs_bracket(per_image, sens, "predicted"),
                        whitebox_flipped(per_image, 0.1, "predicted", ids).tolist()))
    assert results[0] == results[1]


def test_sensitivity_inputs_are_checked_against_their_params(tmp_path):
    """Sensitivity CSVs carry no dataset/regime column: their path names them, and the aggregates
    (tables, deferral_tables, robustness) check it against params.index; lists must pair one to one."""
    p = tmp_path / "results" / "ct" / "sensitivity" / "clean.csv"
    check_sensitivity_path(p, {"dataset": "ct", "regime": "clean", "exclude_fraction": 0.2})
    check_sensitivity_path(tmp_path / "s.csv", {"dataset": "ct", "regime": "clean"})  # another layout: unchecked
    with pytest.raises(InputKeyError, match=r"sensitivity/clean\.csv is the sensitivity CSV of dataset='ct',"
                                            r" regime='clean', but was given as regime='adv_pgd'"):
        check_sensitivity_path(p, {"dataset": "ct", "regime": "adv_pgd"})
    assert pair_inputs([{"a": 1}], [p], "sensitivity CSVs") == [({"a": 1}, str(p))]
    with pytest.raises(InputKeyError, match="2 sensitivity CSVs but 1 entries"):
        pair_inputs([{"a": 1}], [p, p], "sensitivity CSVs")
    assert issubclass(AttackKeyError, InputKeyError)


def test_deferral_tables_refuse_swapped_sensitivity_inputs(grid):
    tmp, _, _ = grid
    root = tmp / "new"
    index = [{"dataset": "ds", "regime": r, "exclude_fraction": 0.2, "paper_dataset": None}
             for r in ("clean", "adv_pgd")]
    spec = {"input": {"csvs": [str(root / "ds" / "sensitivity" / f"{r}.csv") for r in ("adv_pgd", "clean")],
                      "tests": [str(root / "ds" / "tensors" / "test.pt")],
                      "stats": [str(root / "ds" / "tensors" / "stats.json")]},
            "output": {k: str(root / "t2" / f"{k}.csv") for k in ("table2", "table2_md", "deferral", "auc", "auc_md")},
            "params": {"index": index, "datasets": ["ds"]}, "log": [str(root / "deferral.log")]}
    run = _run("deferral_tables.py", spec, tmp)
    assert run.returncode == 1 and "adv_pgd.csv is the sensitivity CSV of dataset='ds', regime='adv_pgd'" in run.stderr


def test_tables_refuse_a_hand_edited_attack_csv(grid):
    """An attack CSV edited by hand (one image's adversarial class changed) stops Table 1, naming the file
    and line, instead of entering it (issue 29: Table 1 showed 20.0% instead of 50.0%)."""
    tmp, index, _ = grid
    root = tmp / "new"
    spec = _tables_spec(root, index)
    edited = Path(spec["input"]["csvs"][1])
    lines = edited.read_text().splitlines()
    fields = lines[1].split(",")
    fields[3] = str(1 - int(fields[3]))  # adv_pred flipped by hand
    lines[1] = ",".join(fields)
    edited.write_text("\n".join(lines) + "\n")
    run = _run("attack_tables.py", spec, tmp)
    assert run.returncode == 1
    assert f"ProvenanceError: {edited}, line 2: the row was changed after the workflow wrote it" in run.stderr
    assert not Path(spec["output"]["table1"]).exists()
