# Config validation, wildcard constraints, input functions and the target list.
from snakemake.utils import validate

from oncorobust.config import check_config, resolve_source


validate(config, schema="../schemas/config.schema.yaml")
check_config(config)

R = config["results"]
DATASETS = list(config["datasets"])
SYNTHETIC = [ds for ds in DATASETS if "synthetic" in config["datasets"][ds]["source"]]


wildcard_constraints:
    ds="|".join(DATASETS),
    split="train|val|test",
    regime="adv_pgd|adv_fast|adv_free",


def get_source(wildcards):
    """The dataset's source slice (demo data paths filled in)."""
    return resolve_source(config, wildcards.ds)


def get_dataset_cfg(key):
    """An input function returning one config slice of the dataset, e.g. its preprocess block."""

    def _get(wildcards):
        return config["datasets"][wildcards.ds].get(key, {})

    return _get


def get_ingest_input(wildcards):
    """Generated demo data when the dataset is synthetic; real data are read from their folders."""
    if wildcards.ds in SYNTHETIC:
        return [f"{R}/demo_data/{wildcards.ds}"]
    return []


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
    return config["device"] != "cpu"


def _is_large(ds):
    return config["datasets"][ds]["preprocess"]["size"] > 64


def get_gpu(wildcards):
    """One GPU for training/attack jobs unless device: cpu (SLURM maps it to --gpus)."""
    return 1 if _uses_gpu() else 0


def get_train_threads(wildcards):
    """Compact demo models use one core each (two jobs in parallel beat one job on two cores)."""
    return 8 if _is_large(wildcards.ds) else 1


def get_train_mem_mb(wildcards):
    return 32000 if _is_large(wildcards.ds) else 4000


def get_train_runtime(wildcards):
    """Minutes: paper-size VGG16 runs take hours, the demo's compact models minutes."""
    return 24 * 60 if _is_large(wildcards.ds) else 60


def get_final_output():
    """Everything `rule all` asks for, built from the configured datasets."""
    targets = expand(f"{R}/{{ds}}/manifest.csv", ds=DATASETS)
    targets += expand(f"{R}/{{ds}}/tensors/{{split}}.pt", ds=DATASETS, split=["train", "val", "test"])
    targets += expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS)
    for ds in DATASETS:
        targets += expand(f"{R}/{ds}/models/{{regime}}.pt", regime=regimes(ds))
    return targets
