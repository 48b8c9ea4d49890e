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


def get_final_output():
    """Everything `rule all` asks for, built from the configured datasets."""
    targets = expand(f"{R}/{{ds}}/manifest.csv", ds=DATASETS)
    targets += expand(f"{R}/{{ds}}/tensors/{{split}}.pt", ds=DATASETS, split=["train", "val", "test"])
    targets += expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS)
    return targets
