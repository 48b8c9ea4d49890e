"""The Snakemake DAG: dry runs, config validation, and one tiny real run of ingest + preprocess."""

import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score
import torch
import yaml

from conftest import load_test_config  # the .test/ configs, one definition for every test module

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake", "-s", str(REPO / "workflow" / "Snakefile")]


# ct (adversarial training, transfer attacks), mri and the digits control at 16 px
TINY = load_test_config("config_tiny.yaml")
MODEL = dict(TINY["datasets"]["ct"]["model"])
TRAIN = dict(TINY["datasets"]["ct"]["train"])


def smk(workdir: Path, config: dict, *args: str, snakefile: Path | None = None,
        sort_keys: bool = True) -> subprocess.CompletedProcess:
    """snakemake on ``config`` dumped as YAML (keys sorted, as ``yaml.safe_dump`` does by default,
    or in the dict's own order)."""
    cfg = workdir / "config.yaml"
    cfg.write_text(yaml.safe_dump(config, sort_keys=sort_keys))
    cmd = list(SNAKEMAKE) if snakefile is None else [*SNAKEMAKE[:-1], str(snakefile)]
    out = subprocess.run([*cmd, "--directory", str(workdir), "--configfile", str(cfg),
                          "--cores", "2", *args], capture_output=True, text=True)
    out.text = out.stdout + out.stderr  # snakemake prints errors on either stream
    return out


def test_demo_config_dry_run():
    out = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2", "--directory", str(REPO),
                          "--configfile", str(REPO / "config" / "config.yaml"), "--forceall"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    for rule in ("demo_data", "ingest", "preprocess"):
        assert rule in out.stdout


def test_paper_config_dry_run():
    out = subprocess.run([*SNAKEMAKE, "-n", "--cores", "2", "--directory", str(REPO),
                          "--configfile", str(REPO / "config" / "paper.yaml"), "--forceall"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "train_adversarial" in out.stdout and "sensitivity" in out.stdout


def test_unknown_config_key_is_named(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["datasets"]["ct"]["preprocess"]["sise"] = 32
    out = smk(tmp_path, bad, "-n")
    assert out.returncode != 0
    assert "Additional properties are not allowed ('sise' was unexpected)" in out.text


def test_wrong_type_is_named(tmp_path):
    bad = yaml.safe_load(yaml.safe_dump(TINY))
    bad["datasets"]["ct"]["preprocess"]["size"] = "big"
    out = smk(tmp_path, bad, "-n")
    assert out.returncode != 0 and "'big' is not of type 'integer'" in out.text


def test_real_source_without_root_is_a_config_error(tmp_path):
    bad = {"datasets": {"ct": {"source": {"format": "lidc"}, "preprocess": {"size": 16},
                               "model": MODEL, "train": TRAIN}}}
    out = smk(tmp_path, bad, "-n")
    assert out.returncode != 0
    assert "ConfigError" in out.text and "datasets.ct.source.root is required" in out.text


def test_missing_data_folder_fails_with_one_clear_line(tmp_path):
    cfg = {"datasets": {"ct": {"source": {"format": "lidc", "root": str(tmp_path / "LIDC")},
                               "preprocess": {"size": 16}, "model": MODEL, "train": TRAIN}}}
    out = smk(tmp_path, cfg)
    assert out.returncode != 0
    log = (tmp_path / "results" / "logs" / "ingest" / "ct.log").read_text()
    assert "DataError: source.root = " in log and "no such folder" in log
    assert "Traceback" not in log


@pytest.mark.slow
@pytest.mark.full  # 6 min on 2 cores: .ci/run runs it (ONCOROBUST_FULL_TESTS=1); make test stays under 15 min
def test_tiny_end_to_end_then_nothing_to_do(tmp_path):
    out = smk(tmp_path, TINY)
    assert out.returncode == 0, out.text[-3000:]
    res = tmp_path / "results"
    for ds in TINY["datasets"]:
        manifest = pd.read_csv(res / ds / "manifest.csv")
        assert manifest.groupby("patient_id").split.nunique().max() == 1
        for split in ("train", "val", "test"):
            t = torch.load(res / ds / "tensors" / f"{split}.pt", weights_only=True)
            assert t["x"].shape[1:] == (1, 16, 16) and len(t["ids"]) == len(t["y"])
            assert set(t["ids"]) <= set(manifest[manifest.split == split].sample_id.astype(str))
    assert (res / "benchmarks" / "preprocess" / "ct.tsv").exists()
    for regime in ("clean", "adv_pgd"):
        ck = torch.load(res / "ct" / "models" / f"{regime}.pt", weights_only=True)
        assert ck["meta"]["regime"] == regime and ck["meta"]["size"] == 16
    transfer = pd.read_csv(res / "ct" / "attacks" / "adv_pgd" / "transfer_pgd" / "eps=0.05.csv")
    test_ids = torch.load(res / "ct" / "tensors" / "test.pt", weights_only=True)["ids"]
    assert transfer.sample_id.astype(str).tolist() == test_ids and (transfer.linf <= 0.05 + 1e-6).all()
    t1 = pd.read_csv(res / "tables" / "table1.csv")
    assert set(t1.dataset) == {"ct", "mri", "digits"} and "75.41" in (res / "tables" / "table1.md").read_text()
    t2 = pd.read_csv(res / "tables" / "table2.csv")
    assert set(t2.regime) == {"clean", "adv_pgd"} and len(t2) == 2 * 4  # two rows per (ds, regime)
    sens = pd.read_csv(res / "digits" / "sensitivity" / "clean.csv")
    assert set(sens.split) == {"val", "test"} and (sens.min_flip_eps > 0).all()
    s5 = pd.read_csv(res / "tables" / "table_s5.csv")
    assert set(s5.evaluation) == {"white-box", "transfer"} and set(s5.dataset) == {"ct"}
    # missed findings vs false alarms: the medical sets (positive class malignant), not the control;
    # on two classes they are exactly the flips of the correctly classified images
    dirs = pd.read_csv(res / "tables" / "directions.csv")
    assert set(dirs.dataset) == {"ct", "mri"} and set(dirs.positive_class) == {"malignant"}
    row = dirs[(dirs.dataset == "ct") & (dirs.regime == "clean") & (dirs.method == "pgd")].iloc[0]
    pgd = pd.read_csv(res / "ct" / "attacks" / "clean" / "pgd" / "eps=0.05.csv")
    right = pgd[pgd.label == pgd.clean_pred]
    assert row.missed + row.false_alarms == int((right.adv_pred != right.clean_pred).sum())
    assert row.n_detected == int((right.label == 1).sum()) and row.n_cleared == int((right.label == 0).sum())
    assert set(pd.read_csv(res / "tables" / "directions_eps.csv").dataset) == {"ct", "mri"}
    assert "## ct (positive class: malignant)" in (res / "tables" / "directions.md").read_text()
    # how visible: the medians of the changed images' own rows, ‖δ‖∞ in HU for CT
    seen = pd.read_csv(res / "tables" / "visibility.csv")
    vrow = seen[(seen.dataset == "ct") & (seen.regime == "clean") & (seen.method == "pgd")].iloc[0]
    changed = pgd[pgd.adv_pred != pgd.clean_pred]
    assert vrow.n_changed == len(changed) and len(seen) == len(pd.read_csv(res / "tables" / "attack_summary.csv"))
    if len(changed):
        assert vrow.ssim_median == pytest.approx(changed.ssim.median()) and 0 < vrow.ssim_median <= 1
        assert vrow.linf_stored_median > vrow.linf_median and "HU" in (res / "tables" / "visibility.md").read_text()
    # AUROC under attack: the positive class's log-odds of the CSV's own rows, as scikit-learn ranks them
    clin = pd.read_csv(res / "tables" / "clinical.csv")
    crow = clin[(clin.dataset == "ct") & (clin.regime == "clean") & (clin.method == "pgd")].iloc[0]
    assert crow.auroc == pytest.approx(roc_auc_score(pgd.label == 1, pgd.true_adv_logit_1 - pgd.true_adv_logit_0))
    clean_row = clin[(clin.dataset == "ct") & (clin.regime == "clean") & (clin.method == "clean")].iloc[0]
    assert clean_row.auroc == pytest.approx(roc_auc_score(pgd.label == 1, pgd.clean_logit_1 - pgd.clean_logit_0))
    assert set(clin[clin.dataset == "digits"].positive_class) >= {"macro"} and "## ct — clean" in (
        res / "tables" / "clinical.md").read_text()
    for fig in ("fig1_examples", "fig2_accuracy_vs_eps", "fig3_adv_training", "fig4_deferral", "fig6_clinical"):
        assert (res / "figures" / f"{fig}.png").stat().st_size > 10_000
    report = smk(tmp_path, TINY, "--report", "results/report.html")
    assert report.returncode == 0, report.text[-2000:]
    html = (res / "report.html").read_text()
    assert "fig2_accuracy_vs_eps.png" in html and "table1.csv" in html
    again = smk(tmp_path, TINY, "-n")
    assert "Nothing to be done" in again.text
    # the same config in its own key order (datasets ct, mri, digits; sorted: ct, digits, mri):
    # tables and figures list datasets in a canonical order, so nothing reruns
    again = smk(tmp_path, TINY, "-n", sort_keys=False)
    assert "Nothing to be done" in again.text, again.text[-2000:]
    # changing one dataset's preprocessing replans only that dataset
    changed = yaml.safe_load(yaml.safe_dump(TINY))
    changed["datasets"]["mri"]["preprocess"]["size"] = 20
    plan = smk(tmp_path, changed, "-n")
    assert planned_datasets(plan.text) == {"mri"}
    assert planned_datasets(plan.text, exclude_rules=()) == {"ct", "mri", "digits"}  # the cards
    # adding one eps to one dataset: with one attack job per ε (attacks.jobs: per_eps) only that ε's
    # attack jobs and the aggregates after them; with one job per method (the default) that
    # dataset's attack jobs, which now write one more ε, and no other dataset's
    more = yaml.safe_load(yaml.safe_dump(TINY))
    more["datasets"]["digits"]["attack"]["eps"] = [0.05, 0.1]
    for jobs, attacked in (("per_eps", ["results/digits/attacks/clean/fgsm/eps=0.1.csv",
                                        "results/digits/attacks/clean/pgd/eps=0.1.csv"]),
                           ("per_method", ["results/digits/attacks/clean/fgsm/eps=0.05.csv",
                                           "results/digits/attacks/clean/fgsm/eps=0.1.csv",
                                           "results/digits/attacks/clean/pgd/eps=0.05.csv",
                                           "results/digits/attacks/clean/pgd/eps=0.1.csv"])):
        if jobs == "per_eps":  # the layout of the jobs alone reruns no attack (the cards name the benchmark files)
            layout = smk(tmp_path, {**TINY, "attacks": {**TINY.get("attacks", {}), "jobs": jobs}}, "-n")
            assert not re.findall(r"^\s*rule attack_\w+:", layout.text, re.M), layout.text[-2000:]
        plan = smk(tmp_path, {**more, "attacks": {**more.get("attacks", {}), "jobs": jobs}}, "-n")
        planned = [p for line in re.findall(r"^\s+output: (.+)$", plan.text, re.M) for p in line.split(", ")]
        assert sorted(p for p in planned if "/attacks/" in p) == attacked, jobs
        # besides them: the aggregates (tables, figures, cards) and digits' health checks, which read its attack CSVs
        assert not [p for p in planned if "/attacks/" not in p and "/tables/" not in p and "/figures/" not in p
                    and "/cards/" not in p and p not in ("results/digits/health/clean.csv", "results/config.used.yaml")]
    # changing one dataset's learning rate replans its training and everything after it only
    lr = yaml.safe_load(yaml.safe_dump(TINY))
    lr["datasets"]["mri"]["train"]["lr"] = 0.02
    plan = smk(tmp_path, lr, "-n")
    assert planned_datasets(plan.text) == {"mri"}
    jobs = set(re.findall(r"^\s*(?:local)?rule (\w+):", plan.text, re.M))
    assert {"train_clean", "attack_mri", "sensitivity", "tables"} <= jobs and not jobs & {"ingest", "preprocess"}
    # editing the attack script reruns the attack jobs (Snakemake's code trigger) and nothing upstream
    copy = tmp_path / "wf"
    shutil.copytree(REPO / "workflow", copy / "workflow")
    unchanged = smk(tmp_path, TINY, "-n", snakefile=copy / "workflow" / "Snakefile")
    assert "Nothing to be done" in unchanged.text
    script = copy / "workflow" / "scripts" / "attack.py"
    script.write_text(script.read_text() + "\n# edited\n")
    plan = smk(tmp_path, TINY, "-n", snakefile=copy / "workflow" / "Snakefile")
    jobs = set(re.findall(r"^\s*(?:local)?rule (\w+):", plan.text, re.M))
    assert {"attack_ct", "attack_mri", "attack_digits"} <= jobs
    assert not jobs & {"ingest", "preprocess", "train_clean", "train_adversarial"}


def planned_datasets(dry_run_output: str, exclude_rules: tuple[str, ...] = ("card",)) -> set[str]:
    """The {ds} wildcard values of the jobs a dry run plans, except those of ``exclude_rules``
    (a robustness card reads the shared tables, so every card follows any dataset's change)."""
    blocks = re.split(r"^(?:local)?rule ", dry_run_output, flags=re.M)
    return {m for b in blocks if b.split(":", 1)[0].strip() not in exclude_rules
            for m in re.findall(r"wildcards: ds=(\w+)", b)}


REPLICATES = load_test_config("config_replicates.yaml")


def test_replicates_dry_run_plans_each_seed(tmp_path):
    """replicates: 3 plans clean, clean-r2, clean-r3 (and the same for adv_trades), each trained
    with its own seed; K = 1 (the other tests) keeps today's paths."""
    out = smk(tmp_path, REPLICATES, "-n", "-p")
    assert out.returncode == 0, out.text[-3000:]
    for model in ("clean", "clean-r2", "clean-r3", "adv_trades", "adv_trades-r2", "adv_trades-r3"):
        assert f"results/digits/models/{model}.pt" in out.text, model
    assert "results/digits/models/clean-r4.pt" not in out.text
    assert "results/tables/regimes.md" in out.text


@pytest.mark.slow
@pytest.mark.full
def test_replicates_and_trades_end_to_end(tmp_path):
    out = smk(tmp_path, REPLICATES)
    assert out.returncode == 0, out.text[-3000:]
    res = tmp_path / "results"
    weights = {}
    for model in ("clean", "clean-r2", "clean-r3", "adv_trades", "adv_trades-r2", "adv_trades-r3"):
        ck = torch.load(res / "digits" / "models" / f"{model}.pt", weights_only=True)
        assert ck["meta"]["regime"] == model.split("-r")[0]
        weights[model] = max(ck["state_dict"].values(), key=lambda v: v.numel())  # the largest weight
    assert not torch.equal(weights["clean"], weights["clean-r2"])  # another seed, another model
    table = pd.read_csv(res / "tables" / "regimes.csv")
    assert list(table.regime) == ["clean", "adv_trades"] and (table.replicates == 3).all()
    row = table.set_index("regime").loc["adv_trades"]
    assert row.worst_accuracy_ci_low <= row.worst_accuracy <= row.worst_accuracy_ci_high
    assert row.worst_accuracy_seed_min <= row.worst_accuracy <= row.worst_accuracy_seed_max
    assert 0 <= row.mcnemar_p <= 1 and not math.isnan(row.d_accuracy)
    assert "3 seeds" in (res / "tables" / "regimes.md").read_text() or "seeds" in (res / "tables" / "regimes.md").read_text()
