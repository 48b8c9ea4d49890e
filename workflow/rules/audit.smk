# Given models: a dataset whose model.checkpoint (a state dict of a torchvision/monai/python arch)
# or model.arch torchscript:<file> is given is not trained. import_model checks the file against
# the dataset (classes, input channels, size), wraps it with model.input's normalisation and
# writes results/{ds}/models/clean.pt in the project's format, so every later stage (attacks,
# health, sensitivity, tables, figures) runs on it through models.load_model. The file is an
# input: replacing it reruns exactly this dataset's jobs that depend on the model.
import re as _re

from oncorobust.config import given_model_file

GIVEN = {ds: given_model_file(config["datasets"][ds]["model"]) for ds in DATASETS
         if given_model_file(config["datasets"][ds]["model"])}


def get_import_inputs(wildcards):
    """The given model file, the dataset's stats (classes, size, mean/std) and, for a
    python:<file.py>:<callable> arch, the user's module."""
    inputs = {"checkpoint": GIVEN[wildcards.ds], "stats": f"{R}/{wildcards.ds}/tensors/stats.json"}
    arch = str(config["datasets"][wildcards.ds]["model"].get("arch", ""))
    if arch.startswith("python:"):
        factory = arch[len("python:"):].rsplit(":", 1)[0]
        if factory.endswith(".py"):
            inputs["factory"] = factory
    return inputs


def get_import_mem_mb(wildcards, input):
    """The file, the network built from it and the wrapped copy: a few times the file."""
    return int(2000 + 4 * _mb(input.checkpoint))


rule import_model:
    wildcard_constraints:
        ds="|".join(_re.escape(ds) for ds in GIVEN) or "(?!)",
    input:
        unpack(get_import_inputs),
    output:
        model=f"{R}/{{ds}}/models/clean.pt",
    log:
        f"{R}/logs/import_model/{{ds}}.log",
    params:
        code=code_version("scripts/import_model.py"),
        model=get_dataset_cfg("model"),
    threads: 1
    resources:
        mem_mb=get_import_mem_mb,
        runtime=10,
    conda:
        "../envs/oncorobust.yaml"
    script:
        "../scripts/import_model.py"


# a given model's clean.pt comes from import_model; train_clean cannot match such a dataset's
# inputs differently, so the order settles which rule writes it
ruleorder: import_model > train_clean
