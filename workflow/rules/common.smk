# Config validation, wildcard constraints, input functions and the target list.
import os

from snakemake.utils import validate

from oncorobust.config import check_config, resolve_source, validate_config


# our own pass first: one line per violation with the key path (Snakemake's names it inside a
# dump of the whole schema); Snakemake's validate then fills the defaults
validate_config(config, os.path.join(workflow.basedir, "schemas", "config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")
check_config(config)

R = config["results"]
DATASETS = list(config["datasets"])
SYNTHETIC = [ds for ds in DATASETS if "synthetic" in config["datasets"][ds]["source"]]


wildcard_constraints:
    ds="|".join(DATASETS),
    split="train|val|test",
    regime="clean|adv_pgd|adv_fast|adv_free",
    method="transfer_(fgsm|bim|pgd)|fgsm|bim|pgd|apgd_ce|apgd_margin|fab|square|worst",
    eps="[0-9.e-]+",


def get_source(wildcards):
    """The dataset's source slice (demo data paths filled in)."""
    return canon(resolve_source(config, wildcards.ds))


def get_dataset_cfg(key):
    """An input function returning one config slice of the dataset, e.g. its preprocess block."""

    def _get(wildcards):
        return canon(config["datasets"][wildcards.ds].get(key, {}))

    return _get


def get_ingest_input(wildcards):
    """Generated demo data when the dataset is synthetic; real data are read from their folders."""
    if wildcards.ds in SYNTHETIC:
        return [f"{R}/demo_data/{wildcards.ds}"]
    return []


def get_adv_training_cfg(wildcards):
    """The adversarial-training slice minus the regime list (adding a regime reruns no other)."""
    adv = config["datasets"][wildcards.ds].get("adversarial_training", {})
    return canon({k: v for k, v in adv.items() if k != "regimes"})


def get_tensor_inputs(wildcards):
    """The train/val tensors and stats of a dataset (inputs of training)."""
    t = f"{R}/{wildcards.ds}/tensors"
    return {"train": f"{t}/train.pt", "val": f"{t}/val.pt", "stats": f"{t}/stats.json"}


def get_adv_train_inputs(wildcards):
    """Tensors, plus the clean model when adversarial training fine-tunes it (init: pretrained)."""
    inputs = get_tensor_inputs(wildcards)
    adv = config["datasets"][wildcards.ds].get("adversarial_training", {})
    if adv.get("init", "scratch") == "pretrained":
        inputs["init"] = f"{R}/{wildcards.ds}/models/clean.pt"
    return inputs


def regimes(ds):
    """The training regimes of a dataset: clean plus its configured adversarial ones."""
    return ["clean"] + list(config["datasets"][ds].get("adversarial_training", {}).get("regimes", []))


def _uses_gpu():
    """Only an explicit CUDA device asks the cluster for a GPU (auto may run anywhere)."""
    return config["device"].startswith("cuda")


def _is_large(ds):
    return config["datasets"][ds]["preprocess"]["size"] > 64


def get_gpu(wildcards):
    """One GPU for training/attack/sensitivity jobs when device is cuda (SLURM: --gpus=1)."""
    return 1 if _uses_gpu() else 0


def get_train_threads(wildcards):
    """Compact demo models use one core each (two jobs in parallel beat one job on two cores)."""
    return 8 if _is_large(wildcards.ds) else 1


def get_train_mem_mb(wildcards):
    return 32000 if _is_large(wildcards.ds) else 4000


def get_train_runtime(wildcards):
    """Minutes: paper-size VGG16 runs take hours, the demo's compact models minutes."""
    return 24 * 60 if _is_large(wildcards.ds) else 60


def eps_str(eps):
    """The canonical text of an ε in file names (0.002 -> '0.002')."""
    return f"{float(eps):g}"


PAPER_METHODS = ("fgsm", "bim", "pgd")


def attack_jobs(ds, regime=None):
    """(regime, method, eps) of every attack result of a dataset (or of one regime): white-box
    for every regime, and for every adversarially trained one transfer from the clean model
    with the paper's methods (the paper's protocol)."""
    att = config["datasets"][ds]["attack"]
    jobs = []
    for r in regimes(ds) if regime is None else [regime]:
        for method in att["methods"]:
            for eps in att["eps"]:
                jobs.append((r, method, eps_str(eps)))
                if r != "clean" and method in PAPER_METHODS:
                    jobs.append((r, f"transfer_{method}", eps_str(eps)))
    return jobs


def attack_csv(ds, regime, method, eps):
    return f"{R}/{ds}/attacks/{regime}/{method}/eps={eps}.csv"


def get_attack_inputs(wildcards):
    """The attacked model and the test tensors; the clean model too for transfer attacks."""
    inputs = {"model": f"{R}/{wildcards.ds}/models/{wildcards.regime}.pt",
              "test": f"{R}/{wildcards.ds}/tensors/test.pt"}
    if wildcards.method.startswith("transfer_"):
        inputs["source"] = f"{R}/{wildcards.ds}/models/clean.pt"
    return inputs


def get_attack_params(wildcards):
    """Only the parameters this method uses (so changing PGD's reruns only PGD jobs): its own
    block, worst's members' blocks, and early_exit for bim/pgd."""
    att = config["attacks"]
    base = wildcards.method.removeprefix("transfer_")
    out = {"params": dict(att.get(base, {}))}
    if base in ("bim", "pgd"):
        out["early_exit"] = att["early_exit"]
    if base == "worst":
        out["member_params"] = {m: dict(att.get(m, {})) for m in att["worst"]["members"]}
    return canon(out)


def canon(value):
    """A config slice in canonical form (mappings with sorted keys, floats rounded to 12
    significant digits), so that re-ordering keys in a config file plans no job again."""
    if isinstance(value, dict):
        return {str(k): canon(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def get_health_inputs(wildcards):
    """The model, test tensors and the attack CSVs of one (dataset, regime)."""
    return {"model": f"{R}/{wildcards.ds}/models/{wildcards.regime}.pt",
            "test": f"{R}/{wildcards.ds}/tensors/test.pt",
            "attacks": [attack_csv(wildcards.ds, *job) for job in attack_jobs(wildcards.ds, wildcards.regime)]}


def get_health_index(wildcards):
    """(method, eps) of each attack CSV of get_health_inputs, in the same order."""
    return [{"method": m, "eps": float(e)} for (_, m, e) in attack_jobs(wildcards.ds, wildcards.regime)]


def get_health_csvs(wildcards=None):
    return [f"{R}/{ds}/health/{regime}.csv" for ds in DATASETS for regime in regimes(ds)]


def get_all_attack_csvs(wildcards=None):
    return [attack_csv(ds, *job) for ds in DATASETS for job in attack_jobs(ds)]


def get_attack_index(wildcards=None):
    """Metadata of every attack CSV, in the order of get_all_attack_csvs (params of the tables)."""
    return [{"dataset": ds, "regime": r, "method": m, "eps": float(e)}
            for ds in DATASETS for (r, m, e) in attack_jobs(ds)]


def get_sensitivity_csvs(wildcards=None):
    return [f"{R}/{ds}/sensitivity/{regime}.csv" for ds in DATASETS for regime in regimes(ds)]


def get_sensitivity_index(wildcards=None):
    return [
        {
            "dataset": ds,
            "regime": regime,
            "exclude_fraction": config["datasets"][ds]["sensitivity"]["exclude_fraction"],
            "paper_dataset": config["datasets"][ds].get("paper_dataset"),
        }
        for ds in DATASETS
        for regime in regimes(ds)
    ]


def is_control(ds):
    entry = config["datasets"][ds]
    return entry.get("paper_dataset") in ("mnist", "cifar10") or entry["source"]["format"] in (
        "mnist",
        "cifar10",
        "digits",
    )


def get_final_output():
    """Everything `rule all` asks for, built from the configured datasets."""
    targets = expand(f"{R}/{{ds}}/manifest.csv", ds=DATASETS)
    targets += expand(f"{R}/{{ds}}/tensors/{{split}}.pt", ds=DATASETS, split=["train", "val", "test"])
    targets += expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS)
    for ds in DATASETS:
        targets += expand(f"{R}/{ds}/models/{{regime}}.pt", regime=regimes(ds))
    targets += expand(f"{R}/tables/{{table}}", table=["table1.csv", "table1.md", "table_s5.csv",
                                                      "table_s5.md", "sanity.csv", "table2.csv",
                                                      "table2.md", "deferral.csv", "deferral_auc.csv",
                                                      "evaluation_health.csv", "evaluation_health.md"])
    targets += expand(f"{R}/figures/{{fig}}.{{ext}}", ext=["png", "pdf"],
                      fig=["fig1_examples", "fig2_accuracy_vs_eps", "fig3_adv_training", "fig4_deferral"])
    return targets
