"""oncorobust.pipeline.dag: which jobs the workflow plans for a config, checked on small config
dicts without Snakemake (workflow/rules/common.smk only passes Snakemake's config to these)."""

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import load_test_config
from oncorobust.epsilon import eps_key
from oncorobust.pipeline import dag
from oncorobust.pipeline.codehash import module_files

REPO = Path(__file__).resolve().parents[1]


def entry(fmt="digits", methods=("fgsm", "pgd"), eps=(0.05,), regimes=(), replicates=None, **extra):
    """One ``datasets.<ds>`` block with what the plan reads (no corruptions unless given)."""
    d = {"source": {"format": fmt}, "preprocess": {"size": 16},
         "attack": {"methods": list(methods), "eps": list(eps), "reference_eps": eps[0]},
         "sensitivity": {"exclude_fraction": 0.1}, "model": {"arch": "vgg_small"},
         "corruptions": {"names": []}}
    if regimes:
        d["adversarial_training"] = {"regimes": list(regimes)}
    if replicates:
        d["replicates"] = replicates
    return d | extra


def config(jobs="per_method", **datasets):
    return {"results": "res", "attacks": {"jobs": jobs}, "datasets": datasets}


def test_datasets_medical_first_in_the_papers_order_whatever_the_key_order():
    ds = {"zeta": entry("digits"), "m": entry("mnist"), "b_mri": entry("manifest", paper_dataset="mri"),
          "mammo": entry("cbis_ddsm", paper_dataset="mammogram"), "a_ct": entry("lidc", paper_dataset="ct"),
          "other": entry("manifest"), "cifar": entry("cifar10", paper_dataset="cifar10")}
    want = ["a_ct", "mammo", "b_mri", "other", "cifar", "m", "zeta"]
    assert dag.datasets(config(**ds)) == want
    assert dag.datasets(config(**dict(reversed(ds.items())))) == want
    # a medical format named a control by its paper_dataset is a control
    assert dag.is_control(entry("manifest", paper_dataset="mnist"))


def test_one_dataset_clean_only_one_eps():
    c = config(d=entry())
    assert dag.regimes(c, "d") == ["clean"]
    assert dag.attack_jobs(c, "d") == [("clean", "fgsm", "0.05"), ("clean", "pgd", "0.05")]
    assert dag.every_dataset(c, dag.attack_jobs) == [("d", "clean", "fgsm", "0.05"), ("d", "clean", "pgd", "0.05")]
    assert dag.corruption_jobs(c, "d") == []
    assert dag.models(c) == [("d", "clean")]


def test_transfer_jobs_only_for_adversarial_regimes_and_the_papers_methods():
    c = config(ct=entry("lidc", methods=("fgsm", "square", "pgd"), eps=(0.01, 0.02), regimes=("adv_pgd",)))
    jobs = dag.attack_jobs(c, "ct")
    assert dag.attack_jobs(c, "ct", "clean") == [("clean", m, e) for m in ("fgsm", "square", "pgd")
                                                 for e in ("0.01", "0.02")]
    adv = dag.attack_jobs(c, "ct", "adv_pgd")
    assert adv[:2] == [("adv_pgd", "fgsm", "0.01"), ("adv_pgd", "transfer_fgsm", "0.01")]  # right after its white-box
    assert {m for _, m, _ in adv if m.startswith("transfer_")} == {"transfer_fgsm", "transfer_pgd"}  # square: none
    assert len(jobs) == 6 + 10 and jobs == dag.attack_jobs(c, "ct", "clean") + adv


def test_replicates_are_named_and_transferred_from_their_own_clean_model():
    c = config(d=entry(regimes=("adv_trades",), replicates=3))
    assert dag.regimes(c, "d") == ["clean", "clean-r2", "clean-r3", "adv_trades", "adv_trades-r2", "adv_trades-r3"]
    assert dag.base_regimes(c, "d") == ["clean", "adv_trades"]
    assert [dag.clean_of(m) for m in ("adv_trades", "adv_trades-r3", "clean-r2")] == ["clean", "clean-r3", "clean-r2"]
    assert ("adv_trades-r2", "transfer_pgd", "0.05") in dag.attack_jobs(c, "d")
    index = dag.regime_index(c)
    assert [(e["regime"], e["base"], e["replicate"], e["method"]) for e in index] == [
        ("clean", "clean", 1, "pgd"), ("clean-r2", "clean", 2, "pgd"), ("clean-r3", "clean", 3, "pgd"),
        ("adv_trades", "adv_trades", 1, "pgd"), ("adv_trades-r2", "adv_trades", 2, "pgd"),
        ("adv_trades-r3", "adv_trades", 3, "pgd")]


def test_per_eps_and_per_method_jobs():
    d = entry(eps=(0.002, 8 / 255))
    per_method, per_eps = config(d=d), config("per_eps", d=d)
    assert dag.attack_eps(per_method, "d") == ["0.002", eps_key(8 / 255)]
    assert float(dag.attack_eps(per_method, "d")[1]) == 8 / 255  # reads back as the config's float
    assert dag.attack_job_eps(per_method, "d") == dag.attack_eps(per_method, "d")
    assert dag.attack_job_eps(per_eps, "d") == ["{eps}"]
    assert dag.attack_job_stem(per_method, "d") == "d/{regime}/{method}"
    assert dag.attack_job_stem(per_eps, "d") == "d/{regime}/{method}/eps={eps}"
    assert not dag.attack_per_eps(per_method) and dag.attack_per_eps(per_eps)
    # the results themselves do not depend on the job layout
    assert dag.attack_jobs(per_method, "d") == dag.attack_jobs(per_eps, "d")


def test_the_natural_attack_is_the_strongest_configured_white_box_one():
    c = config(a=entry(methods=("fgsm", "pgd")), b=entry(methods=("pgd", "worst")), c=entry(methods=("square",)))
    assert dag.natural_attack_jobs(c) == [("a", "clean", "pgd", "0.05"), ("b", "clean", "worst", "0.05"),
                                          ("c", "clean", "square", "0.05")]
    assert dag.attack_index(dag.natural_attack_jobs(c))[1] == {"dataset": "b", "regime": "clean", "method": "worst",
                                                               "eps": 0.05}


def test_corruptions_default_to_the_modalitys_set_per_model():
    c = config(ct=entry("lidc", regimes=("adv_pgd",), corruptions={}))
    jobs = dag.corruption_jobs(c, "ct")
    clean = dag.corruption_jobs(c, "ct", "clean")
    assert clean and jobs == clean + [("adv_pgd", n, s) for _, n, s in clean]
    index = dag.corruption_index(c)
    assert [(e["regime"], e["corruption"]) for e in index] == [(r, n) for r, n, _ in jobs]
    assert all(isinstance(e["severity"], float) for e in index)
    assert dag.corruption_csv("res", "ct", *jobs[0]).startswith(f"res/ct/attacks/clean/corrupt_{jobs[0][1]}/severity=")


def test_model_files_sensitivity_index_and_targets_follow_one_model_order():
    c = config(d=entry(regimes=("adv_pgd",)), ct=entry("lidc", paper_dataset="ct"))
    assert dag.models(c) == [("ct", "clean"), ("d", "clean"), ("d", "adv_pgd")]
    assert dag.model_files(c, "health") == ["res/ct/health/clean.csv", "res/d/health/clean.csv",
                                            "res/d/health/adv_pgd.csv"]
    assert [(e["dataset"], e["regime"], e["paper_dataset"]) for e in dag.sensitivity_index(c)] == [
        ("ct", "clean", "ct"), ("d", "clean", None), ("d", "adv_pgd", None)]
    targets = dag.final_targets(c)
    assert targets[0] == "res/config.used.yaml" and len(targets) == len(set(targets))
    assert [t for t in targets if "/models/" in t] == ["res/ct/models/clean.pt", "res/d/models/clean.pt",
                                                       "res/d/models/adv_pgd.pt"]
    assert [t for t in targets if t.startswith("res/cards/")][-2:] == ["res/cards/d_adv_pgd.md",
                                                                       "res/cards/d_adv_pgd.html"]
    assert {"res/tables/regimes.csv", "res/figures/fig1_examples.pdf", "res/ct/tensors/noise.csv"} <= set(targets)


def test_given_models_are_not_trained():
    c = config(a=entry(model={"arch": "torchvision:resnet18", "checkpoint": "w.pt"}),
               b=entry(model={"arch": "torchscript:m.ts"}), c=entry())
    assert dag.given_models(c) == {"a": "w.pt", "b": "m.ts"}


def test_the_tiny_test_config():
    c = load_test_config("config_tiny.yaml") | {"results": "results/tiny", "attacks": {"jobs": "per_method"}}
    assert dag.datasets(c) == ["ct", "mri", "digits"]
    assert dag.synthetic(c) == ["ct", "mri"]
    assert dag.source_line(c, "digits") == "digits digits" and dag.source_line(c, "ct") == "ct synthetic demo data"
    assert len(dag.attack_jobs(c, "ct")) == 2 + 2 * 2 and len(dag.attack_jobs(c, "mri")) == 2
    assert dag.corruption_jobs(c, "mri") == [] and dag.corruption_jobs(c, "ct")


def test_canon_sorts_keys_and_keeps_floats():
    assert list(dag.canon({"b": 1, "a": {"d": (1, 2), "c": 8 / 255}})) == ["a", "b"]
    assert dag.canon({"b": 1, "a": {"d": (1, 2), "c": 8 / 255}})["a"] == {"c": 8 / 255, "d": [1, 2]}


def test_the_plan_imports_no_snakemake_torch_or_pandas():
    code = ("import sys, oncorobust.pipeline.dag, oncorobust.pipeline.resources;"
            "print(sorted({'snakemake', 'torch', 'pandas'} & {m.split('.')[0] for m in sys.modules}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("script", sorted((REPO / "workflow" / "scripts").glob("*.py")), ids=lambda p: p.stem)
def test_no_workflow_script_reaches_the_plan_or_the_resources(script):
    """An edit of the plan or of a resource formula must change no job's code param."""
    reached = {f.relative_to(REPO / "src" / "oncorobust").as_posix() for f in module_files(script)}
    assert not reached & {"pipeline/dag.py", "pipeline/resources.py"}
