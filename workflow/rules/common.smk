# Config validation, wildcard constraints and input functions. Which jobs exist for the config
# (datasets, models, attack and corruption results, rule all's targets) is planned in
# oncorobust.pipeline.dag; the jobs' threads, GPUs, memory and run time come from
# oncorobust.pipeline.resources.job_resource. Neither is imported by a workflow script, so an
# edit of either changes no job's code param.
import os
import re as _re
import sys
from functools import partial

from snakemake.utils import validate

from oncorobust.pipeline.codehash import code_version as _code_version
from oncorobust.pipeline.codehash import registry_key as _registry_key
from oncorobust.config import (
    check_config,
    check_yaml_files,
    expand_user_paths,
    resolve_source,
    validate_config,
)
from oncorobust import spec as _spec
from oncorobust.epsilon import (
    eps_key as _eps_key,
    normalize_config_eps,
    snap_reference_eps,
)
from oncorobust.pipeline import dag as _dag
from oncorobust.pipeline import resources as _res
from oncorobust.pipeline.dag import canon
from oncorobust.data.privacy import check_privacy

# our own pass first: one line per violation with the key path (Snakemake's names it inside a
# dump of the whole schema); Snakemake's validate then fills the defaults
# a key given twice: Snakemake's YAML loader kept the last silently
check_yaml_files(workflow.configfiles)
# a leading ~ in config paths means the home folder, as in a shell (YAML keeps it literally)
expand_user_paths(config)
# ε written as "k/255" (strings in YAML) becomes its float before validation
normalize_config_eps(config)
# first: privacy.salt is refused by name
check_privacy(config.get("privacy"), config.get("results", "results"))
validate_config(config, os.path.join(workflow.basedir, "schemas", "config.schema.yaml"))
validate(config, schema="../schemas/config.schema.yaml")
check_config(config)
# reference_eps as the very attack.eps entry it equals: one result file per budget
snap_reference_eps(config)

R = config["results"]
DATASETS = _dag.datasets(config)
SYNTHETIC = _dag.synthetic(config)
# Given models (rules/audit.smk): datasets whose model file is given are not trained.
GIVEN = _dag.given_models(config)

# the plan of this config (oncorobust.pipeline.dag), as the rules call it: attack_jobs(ds,
# regime=None) and corruption_jobs(ds, regime=None) -> [(regime, method or corruption, ε or
# severity text)]; attack_job_eps(ds) and attack_job_stem(ds): one attack job's ε texts and its
# log/benchmark name; _attack_per_eps(); attack_csv(ds, regime, method, eps) and
# corruption_csv(ds, regime, name, severity): the per-image CSVs
attack_jobs = partial(_dag.attack_jobs, config)
corruption_jobs = partial(_dag.corruption_jobs, config)
attack_job_eps = partial(_dag.attack_job_eps, config)
attack_job_stem = partial(_dag.attack_job_stem, config)
_attack_per_eps = partial(_dag.attack_per_eps, config)
attack_csv = partial(_dag.attack_csv, R)
corruption_csv = partial(_dag.corruption_csv, R)


def is_control(ds):
    """Whether dataset ``ds`` is a control (MNIST, CIFAR-10, digits)."""
    return _dag.is_control(config["datasets"][ds])


def config_origin():
    """The configuration this run uses, as said at start-up and in {results}/config.used.yaml:
    the config files (absolute paths) and the --config overrides."""
    return {
        "configfiles": [os.path.abspath(str(f)) for f in workflow.configfiles],
        "overrides": canon(dict(workflow.config_settings.config or {})),
    }


wildcard_constraints:
    ds="|".join(DATASETS),
    split="train|val|test",
    regime=_spec.regime_wildcard(),
    method=_spec.method_wildcard(),
    eps="[0-9.e-]+",


def code_version(script):
    """Rule param `code`: a short hash of the oncorobust modules `script` (relative to workflow/)
    imports, transitively (oncorobust.pipeline.codehash), computed once at load time. Snakemake's code
    trigger sees only the script; this param makes an edit of the package rerun the jobs that run
    it (the params trigger)."""
    return _code_version(os.path.join(workflow.basedir, script))


def job_resource(kind, name, ds=None):
    """A rule's `threads` or resource `name` (gpu, mem_mb, runtime) of a job of `kind`, as Snakemake
    calls it (wildcards, input files, threads): oncorobust.pipeline.resources.job_resource. `ds`:
    the dataset of a rule made per dataset (attack_{ds}, corrupt_{ds})."""

    def _get(wildcards, input, threads=1):
        return _res.job_resource(
            config,
            kind,
            name,
            ds=ds,
            wildcards=dict(wildcards.items()),
            inputs=dict(input.items()),
            threads=threads,
        )

    return _get


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
    """The train/val tensors and stats of a dataset (inputs of training); for a user arch
    (torchvision:/monai:/python:) also its initial weights (model.weights) and a python:<file.py>
    factory, so that replacing them retrains."""
    t = f"{R}/{wildcards.ds}/tensors"
    inputs = {
        "train": f"{t}/train.pt",
        "val": f"{t}/val.pt",
        "stats": f"{t}/stats.json",
    }
    model = config["datasets"][wildcards.ds].get("model", {})
    arch = str(model.get("arch", "vgg_small"))
    if ":" in arch and model.get("weights"):
        inputs["weights"] = model["weights"]
    if _spec.factory_file(arch):
        inputs["factory"] = _spec.factory_file(arch)
    return inputs


def get_adv_train_inputs(wildcards):
    """Tensors, plus the clean model when adversarial training fine-tunes it (init: pretrained)."""
    inputs = get_tensor_inputs(wildcards)
    adv = config["datasets"][wildcards.ds].get("adversarial_training", {})
    if adv.get("init", "scratch") == "pretrained":
        inputs["init"] = (
            f"{R}/{wildcards.ds}/models/{_dag.clean_of(wildcards.regime)}.pt"
        )
    return inputs


def get_train_seed(wildcards):
    """The training seed of the model's replicate (replicate 1: config seed)."""
    return _spec.replicate_seed(
        config["seed"], _spec.split_replicate_name(wildcards.regime)[1]
    )


def get_attack_inputs(ds):
    """The attacked model and the test tensors of dataset ``ds``; the clean model too for
    transfer attacks."""

    def inputs(wildcards):
        out = {
            "model": f"{R}/{ds}/models/{wildcards.regime}.pt",
            "test": f"{R}/{ds}/tensors/test.pt",
        }
        if _spec.is_transfer(wildcards.method):
            out["source"] = f"{R}/{ds}/models/{_dag.clean_of(wildcards.regime)}.pt"
        return out

    return inputs


def _member_params():
    """worst's members' parameter blocks."""
    att = config["attacks"]
    return {m: dict(att.get(m, {})) for m in att["worst"]["members"]}


def get_attack_params(wildcards):
    """Only the parameters this method uses (so changing PGD's reruns only PGD jobs): its own
    block, worst's members' blocks, and early_exit for bim/pgd."""
    att = config["attacks"]
    base = _spec.base_method(wildcards.method)
    out = {"params": dict(att.get(base, {}))}
    if base in _spec.EARLY_EXIT_OPTION:
        out["early_exit"] = att["early_exit"]
    if base == "worst":
        out["member_params"] = _member_params()
    return canon(out)


def get_registry(kind):
    """The registry entries a job reads, as its ``registry`` param (oncorobust.spec's tables are
    left out of every non-reporting code hash: editing or adding one entry reruns only the jobs
    that read it). ``kind``: attack (its method, worst's members, the ε = 0 check's PGD), health
    (every method it judges or runs) or train (its regime; adversarial: PGD, every parameter passed).
    """
    members = tuple(config["attacks"]["worst"]["members"])

    def _get(wildcards):
        if kind == "attack":
            return canon(_registry_key(_spec.methods_read(wildcards.method, members)))
        if kind == "health":
            judged = [
                *config["datasets"][wildcards.ds]["attack"]["methods"],
                "pgd",
                "square",
            ]
            return canon(
                _registry_key(
                    {n for m in judged for n in _spec.methods_read(m, members)}
                )
            )
        base = _spec.split_replicate_name(wildcards.regime)[0]
        pgd = ["pgd"] if _spec.REGIMES[base].adversarial else []
        return canon(_registry_key(pgd, [base], method_defaults=False))

    return _get


def get_worst_params(wildcards):
    """worst's members and their parameters, for the health check of its convergence (empty when
    the dataset runs no worst case)."""
    if "worst" not in config["datasets"][wildcards.ds]["attack"]["methods"]:
        return {}
    members = list(config["attacks"]["worst"]["members"])
    return canon({"members": members, "member_params": _member_params()})


def get_health_inputs(wildcards):
    """The model, test tensors and the attack CSVs of one (dataset, regime)."""
    return {
        "model": f"{R}/{wildcards.ds}/models/{wildcards.regime}.pt",
        "test": f"{R}/{wildcards.ds}/tensors/test.pt",
        "sensitivity": f"{R}/{wildcards.ds}/sensitivity/{wildcards.regime}.csv",
        "attacks": [
            attack_csv(wildcards.ds, *job)
            for job in attack_jobs(wildcards.ds, wildcards.regime)
        ],
    }


def get_health_index(wildcards):
    """(method, eps) of each attack CSV of get_health_inputs, in the same order."""
    return [
        {"method": m, "eps": float(e)}
        for (_, m, e) in attack_jobs(wildcards.ds, wildcards.regime)
    ]


def get_health_csvs(wildcards=None):
    return _dag.model_files(config, "health")


def get_all_attack_csvs(wildcards=None):
    return [attack_csv(*job) for job in _dag.every_dataset(config, _dag.attack_jobs)]


def get_attack_index(wildcards=None):
    """Metadata of every attack CSV, in the order of get_all_attack_csvs (params of the tables)."""
    return _dag.attack_index(_dag.every_dataset(config, _dag.attack_jobs))


def get_sensitivity_csvs(wildcards=None):
    return _dag.model_files(config, "sensitivity")


def get_test_tensors(wildcards=None):
    """Each dataset's test tensors, in DATASETS order (aggregates check every per-image CSV
    against its test images)."""
    return [f"{R}/{ds}/tensors/test.pt" for ds in DATASETS]


def get_sensitivity_pairs(wildcards=None):
    """(dataset, regime) of every sensitivity CSV, in the order of get_sensitivity_csvs."""
    return [{"dataset": ds, "regime": r} for ds, r in _dag.models(config)]


def get_sensitivity_index(wildcards=None):
    return _dag.sensitivity_index(config)


def get_final_output():
    """Everything `rule all` asks for, built from the configured datasets."""
    return _dag.final_targets(config)


def get_import_inputs(wildcards):
    """The given model file, the dataset's stats (classes, size, mean/std), its validation and
    test images (the output head is detected on them; each must give finite outputs) and, for a
    python:<file.py>:<callable> arch, the user's module."""
    t = f"{R}/{wildcards.ds}/tensors"
    inputs = {
        "checkpoint": GIVEN[wildcards.ds],
        "stats": f"{t}/stats.json",
        "val": f"{t}/val.pt",
        "test": f"{t}/test.pt",
    }
    arch = str(config["datasets"][wildcards.ds]["model"].get("arch", ""))
    if _spec.factory_file(arch):
        inputs["factory"] = _spec.factory_file(arch)
    return inputs


# Natural corruptions (rules/corrupt.smk): which run is datasets.<ds>.corruptions, resolved by
# oncorobust.config.corruption_plan (the modality's small default set when names is not given).


def get_all_corruption_csvs(wildcards=None):
    jobs = _dag.every_dataset(config, _dag.corruption_jobs)
    return [corruption_csv(*job) for job in jobs]


def get_corruption_index(wildcards=None):
    """Metadata of every corruption CSV, in the order of get_all_corruption_csvs."""
    return _dag.corruption_index(config)


def get_natural_attack_csvs(wildcards=None):
    return [attack_csv(*job) for job in _dag.natural_attack_jobs(config)]


def get_natural_attack_index(wildcards=None):
    return _dag.attack_index(_dag.natural_attack_jobs(config))


# Regime comparison (rules/regimes.smk)
def get_regime_index(wildcards=None):
    """One entry per model (dataset, base regime, replicate 1..K): the worst-case attack at the
    dataset's reference ε (oncorobust.pipeline.dag.regime_index over plan.run_index). Replicate 1
    of regime R is named R, replicate k ≥ 2 R-r{k} (the paths' regime)."""
    return _dag.regime_index(config)


def get_regime_attack_csvs(wildcards=None):
    return [
        attack_csv(e["dataset"], e["regime"], e["method"], _eps_key(e["eps"]))
        for e in get_regime_index()
    ]


def get_regime_sensitivity_csvs(wildcards=None):
    return [
        f"{R}/{e['dataset']}/sensitivity/{e['regime']}.csv" for e in get_regime_index()
    ]


def _start_line():
    """The line a run prints first: the configuration it uses, each dataset's source, the results."""
    origin = config_origin()
    files = " + ".join(origin["configfiles"])
    overrides = " with --config overrides" if origin["overrides"] else ""
    sources = "; ".join(_dag.source_line(config, ds) for ds in DATASETS)
    where = os.path.abspath(R)
    ignored = ""
    local = os.path.abspath(os.path.join("config", "config.yaml"))
    if (
        not workflow.overwrite_configfiles
        and os.path.isfile(local)
        and local not in files
    ):
        ignored = f" ({local} is not read: name it with --configfile)"
    return (
        f"oncorobust: configuration {files}{overrides}{ignored}; datasets: {sources};"
        f" results in {where} (the full config: {R}/config.used.yaml)"
    )


if workflow.is_main_process:
    print(_start_line(), file=sys.stderr)
