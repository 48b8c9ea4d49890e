# Config validation, wildcard constraints, input functions and the target list.
import os
import re as _re
import sys

from snakemake.utils import validate

from oncorobust.pipeline.codehash import code_version as _code_version
from oncorobust.config import (
    check_config,
    check_yaml_files,
    corruption_plan as _corruption_plan,
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
from oncorobust.pipeline import plan as _plan
from oncorobust.pipeline import resources as _res
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
CONTROL_FORMATS = ("mnist", "cifar10", "digits")
PAPER_ORDER = ("ct", "mammogram", "mri", "mnist", "cifar10")


def _is_control(entry):
    return (
        entry.get("paper_dataset") in ("mnist", "cifar10")
        or entry["source"]["format"] in CONTROL_FORMATS
    )


def _dataset_order(ds):
    """Medical sets before controls, each in the paper's order, then by name: tables and figures
    do not depend on the order of the config's keys (a config dumped with sorted keys reruns nothing).
    """
    entry = config["datasets"][ds]
    paper = entry.get("paper_dataset")
    return (
        _is_control(entry),
        PAPER_ORDER.index(paper) if paper in PAPER_ORDER else len(PAPER_ORDER),
        ds,
    )


DATASETS = sorted(config["datasets"], key=_dataset_order)
SYNTHETIC = [ds for ds in DATASETS if "synthetic" in config["datasets"][ds]["source"]]


def _source_line(ds):
    src = config["datasets"][ds]["source"]
    if ds in SYNTHETIC:
        return f"{ds} synthetic demo data"
    where = src.get("root") or src.get("manifest") or src.get("path") or ""
    return f"{ds} {src['format']} {where}".rstrip()


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
        inputs["init"] = f"{R}/{wildcards.ds}/models/{clean_of(wildcards.regime)}.pt"
    return inputs


def base_regimes(ds):
    """The training regimes of a dataset: clean plus its configured adversarial ones."""
    return ["clean"] + list(
        config["datasets"][ds].get("adversarial_training", {}).get("regimes", [])
    )


def regimes(ds):
    """Every model of a dataset: each regime × replicate (``datasets.<ds>.replicates``; replicate
    1 keeps the regime's name, k >= 2 is ``<regime>-r<k>``)."""
    k_max = int(config["datasets"][ds].get("replicates", 1))
    return [
        _spec.replicate_name(r, k)
        for r in base_regimes(ds)
        for k in range(1, k_max + 1)
    ]


def clean_of(model):
    """The clean model of the same replicate (transfer source, fine-tuning start)."""
    return _spec.replicate_name("clean", _spec.split_replicate_name(model)[1])


def get_train_seed(wildcards):
    """The training seed of the model's replicate (replicate 1: config seed)."""
    return _spec.replicate_seed(
        config["seed"], _spec.split_replicate_name(wildcards.regime)[1]
    )


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


# mem_mb and runtime of the model-running jobs: oncorobust.pipeline.resources estimates them from the
# model (arch, input size), the batch and the job's input tensors (their size: images in memory,
# and a batch never larger than the split). Snakemake evaluates these functions again when a job
# is scheduled, so the tensor files exist then; before that they count as empty.


def _shape(ds):
    d = config["datasets"][ds]
    m = d.get("model", {})
    arch = m.get("arch", "vgg_small")
    # user models (torchvision:, monai:, python:, torchscript:) are estimated as VGG16, the
    # heaviest network resources.py knows (resnet18/densenet121 need less)
    arch = arch if arch in ("vgg16", "vgg_small") else "vgg16"
    return {
        "arch": arch,
        "size": int(d["preprocess"]["size"]),
        "width": int(m.get("width", 32)),
        "channels": 3 if d["source"]["format"] == "cifar10" else 1,
    }


def _mb(*paths):
    """Total size (MB) of the existing files among ``paths`` (0 before they are written)."""
    return sum(os.path.getsize(p) for p in paths if p and os.path.exists(p)) / 2**20


def _n_images(ds, *paths):
    shape = _shape(ds)
    return _res.images_in(_mb(*paths), shape["size"], shape["channels"])


def _device():
    return "cuda" if _uses_gpu() else "cpu"


def _unknown_runtime(ds):
    """Minutes asked while the inputs are not written yet (a dry run): the old fixed values."""
    return 24 * 60 if _is_large(ds) else 60


def _train_batch(wildcards):
    ds, regime = wildcards.ds, getattr(wildcards, "regime", "clean")
    d = config["datasets"][ds]
    if regime == "clean":
        return int(d["train"]["batch_size"])
    return int(
        d.get("adversarial_training", {}).get("batch_size", d["train"]["batch_size"])
    )


def get_train_mem_mb(wildcards, input):
    """Training: five parameter copies, the (adversarial) training batch's activations."""
    s = _shape(wildcards.ds)
    return _res.mem_mb(
        "train",
        s["arch"],
        s["size"],
        _train_batch(wildcards),
        channels=s["channels"],
        width=s["width"],
        data_mb=_mb(input.train, input.val),
        n_images=_n_images(wildcards.ds, input.train) or None,
        pretrained=config["datasets"][wildcards.ds].get("model", {}).get("pretrained")
        == "imagenet",
    )


def get_train_runtime(wildcards, input, threads):
    """Minutes: epochs × (the update loop's and the validation attack's gradient evaluations
    (pipeline.resources.train_grad_evals) × 3 + the validation's forward passes)."""
    ds = wildcards.ds
    regime = _spec.split_replicate_name(getattr(wildcards, "regime", "clean"))[0]
    d = config["datasets"][ds]
    s = _shape(ds)
    n_train, n_val = _n_images(ds, input.train), _n_images(ds, input.val)
    if not n_train:
        return _unknown_runtime(ds)
    adv = d.get("adversarial_training", {}) if regime != "clean" else {}
    epochs = int(adv.get("epochs", d["train"]["epochs"]))
    if regime == "adv_free":  # fit() divides the epochs by the replays
        epochs = -(-epochs // int(adv.get("free_replays", 4)))
    cost = _res.train_grad_evals(regime, adv, n_train, n_val)
    forward_only = n_val * (1 if regime == "clean" else 2)
    return _res.runtime_min(
        s["arch"],
        s["size"],
        1,
        epochs * (3 * (cost["train"] + cost["validation"]) + forward_only),
        device=_device(),
        threads=threads,
        width=s["width"],
    )


def _attack_batch_mem_mb(ds, kind, input):
    """mem_mb of a job of dataset ``ds`` that runs the model on one attack batch (``kind``:
    attack, or transfer with the source model too), its test tensors in memory."""
    s = _shape(ds)
    return _res.mem_mb(
        kind,
        s["arch"],
        s["size"],
        int(config["attacks"]["batch_size"]),
        channels=s["channels"],
        width=s["width"],
        data_mb=_mb(input.test),
    )


def get_attack_mem_mb(ds):
    """An attack job of dataset ``ds``: the model (and the source model of a transfer attack), one
    attack batch."""

    def mem_mb(wildcards, input):
        kind = "transfer" if _spec.is_transfer(wildcards.method) else "attack"
        return _attack_batch_mem_mb(ds, kind, input)

    return mem_mb


def get_attack_runtime(ds):
    """Minutes of an attack job of ``ds``: the method's passes per image at each of its ε."""

    def runtime(wildcards, input):
        s = _shape(ds)
        base = _spec.base_method(wildcards.method)
        att = config["attacks"]
        passes = _res.attack_passes(
            wildcards.method,
            att.get(base, {}),
            {m: att.get(m, {}) for m in att["worst"]["members"]},
        )
        if att["labels"] == "predicted":
            passes *= 1.5  # the images the model gets wrong are attacked again with their label
        n = _n_images(ds, input.test)
        if not n:
            return 60
        return _res.runtime_min(
            s["arch"],
            s["size"],
            n,
            (passes + 2) * len(attack_job_eps(ds)),
            device=_device(),
            width=s["width"],
        )

    return runtime


def get_health_mem_mb(wildcards, input):
    s = _shape(wildcards.ds)
    n = min(
        _n_images(wildcards.ds, input.test),
        int(config["attacks"]["health"]["max_images"]),
    )
    return _res.mem_mb(
        "health",
        s["arch"],
        s["size"],
        int(config["attacks"]["batch_size"]),
        channels=s["channels"],
        width=s["width"],
        data_mb=_mb(input.test),
        n_images=n or None,
    )


def get_health_runtime(wildcards, input):
    """PGD × 1, × restarts and × 2 steps × 2 restarts, APGD at ε = 1, Square, gradients; the worst
    case with doubled budgets on at most 64 images."""
    s = _shape(wildcards.ds)
    att = config["attacks"]
    passes = _res.health_passes(att["pgd"], att["health"]["square_queries"])
    n = min(_n_images(wildcards.ds, input.test), int(att["health"]["max_images"]))
    if not n:
        return 60
    if get_worst_params(wildcards):
        worst = _res.attack_passes(
            "worst", att["worst"], {m: att.get(m, {}) for m in att["worst"]["members"]}
        )
        passes += 2 * worst * min(n, 64) / n  # its members' steps doubled
    return _res.runtime_min(
        s["arch"], s["size"], n, passes, device=_device(), width=s["width"]
    )


def get_sensitivity_mem_mb(wildcards, input):
    s = _shape(wildcards.ds)
    n = max(_n_images(wildcards.ds, input.val), _n_images(wildcards.ds, input.test))
    return _res.mem_mb(
        "sensitivity",
        s["arch"],
        s["size"],
        int(config["attacks"]["batch_size"]),
        channels=s["channels"],
        width=s["width"],
        data_mb=_mb(input.val, input.test),
        n_images=n or None,
    )


def get_sensitivity_runtime(wildcards, input):
    """Val + test images × the search's passes per image (resources.sensitivity_passes)."""
    s = _shape(wildcards.ds)
    c = config["datasets"][wildcards.ds]["sensitivity"]
    passes = _res.sensitivity_passes(c)
    n = _n_images(wildcards.ds, input.val) + _n_images(wildcards.ds, input.test)
    if not n:
        return _unknown_runtime(wildcards.ds)
    return _res.runtime_min(
        s["arch"], s["size"], n, passes, device=_device(), width=s["width"]
    )


def get_fig1_mem_mb(wildcards, input):
    """Models are loaded one after another: the largest dataset's job."""
    return max(
        _res.mem_mb(
            "figure",
            _shape(ds)["arch"],
            _shape(ds)["size"],
            int(config["attacks"]["batch_size"]),
            channels=_shape(ds)["channels"],
            width=_shape(ds)["width"],
            data_mb=_mb(test),
        )
        for ds, test in zip(DATASETS, input.tests)
    )


def get_fig1_runtime(wildcards, input):
    """PGD on each test split (at worst the whole split, when no image yields an example)."""
    passes = _res.attack_passes("pgd", config["attacks"]["pgd"]) + 2
    if not any(os.path.exists(t) for t in input.tests):
        return 60
    return max(
        _res.FLOOR_MIN,
        sum(
            _res.runtime_min(
                _shape(ds)["arch"],
                _shape(ds)["size"],
                _n_images(ds, test),
                passes,
                device=_device(),
                width=_shape(ds)["width"],
            )
            for ds, test in zip(DATASETS, input.tests)
        )
        - (len(DATASETS) - 1) * int(_res.START_MIN),
    )


def eps_str(eps):
    """The canonical text of an ε in file names (oncorobust.epsilon.eps_key: 0.002 -> '0.002', 8/255
    -> '0.03137254901960784'): it reads back as exactly the config's float."""
    return _eps_key(eps)


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
                if r != "clean" and method in _spec.PAPER_METHODS:
                    jobs.append((r, f"{_spec.TRANSFER_PREFIX}{method}", eps_str(eps)))
    return jobs


def attack_csv(ds, regime, method, eps):
    return f"{R}/{ds}/attacks/{regime}/{method}/eps={eps}.csv"


def attack_eps(ds):
    """The canonical ε texts of a dataset's attack grid, in the config's order."""
    return [eps_str(e) for e in config["datasets"][ds]["attack"]["eps"]]


def _attack_per_eps():
    return config["attacks"]["jobs"] == "per_eps"


def attack_job_eps(ds):
    """The ε texts of one attack job's outputs: the whole grid (attacks.jobs: per_method) or the
    {eps} wildcard (per_eps). The job reads its ε back from these names (no ε param: switching
    the layout reruns no attack; adding an ε reruns a per_method job, every ε of its grid).
    """
    return ["{eps}"] if _attack_per_eps() else attack_eps(ds)


def attack_job_stem(ds):
    """An attack job's log and benchmark name under logs/attack/ and benchmarks/attack/."""
    parts = [ds, "{regime}", "{method}"] + (["eps={eps}"] if _attack_per_eps() else [])
    return "/".join(parts)


def get_attack_inputs(ds):
    """The attacked model and the test tensors of dataset ``ds``; the clean model too for
    transfer attacks."""

    def inputs(wildcards):
        out = {
            "model": f"{R}/{ds}/models/{wildcards.regime}.pt",
            "test": f"{R}/{ds}/tensors/test.pt",
        }
        if _spec.is_transfer(wildcards.method):
            out["source"] = f"{R}/{ds}/models/{clean_of(wildcards.regime)}.pt"
        return out

    return inputs


def get_attack_params(wildcards):
    """Only the parameters this method uses (so changing PGD's reruns only PGD jobs): its own
    block, worst's members' blocks, and early_exit for bim/pgd."""
    att = config["attacks"]
    base = _spec.base_method(wildcards.method)
    out = {"params": dict(att.get(base, {}))}
    if base in _spec.EARLY_EXIT_OPTION:
        out["early_exit"] = att["early_exit"]
    if base == "worst":
        out["member_params"] = {
            m: dict(att.get(m, {})) for m in att["worst"]["members"]
        }
    return canon(out)


def get_worst_params(wildcards):
    """worst's members and their parameters, for the health check of its convergence (empty when
    the dataset runs no worst case)."""
    if "worst" not in config["datasets"][wildcards.ds]["attack"]["methods"]:
        return {}
    att = config["attacks"]
    return canon(
        {
            "members": list(att["worst"]["members"]),
            "member_params": {m: dict(att.get(m, {})) for m in att["worst"]["members"]},
        }
    )


def canon(value):
    """A config slice in canonical form (mappings with sorted keys, floats kept exact), so
    that re-ordering keys in a config file plans no job again; an ε such as 8/255 reaches the job
    as exactly the config's float.
    """
    if isinstance(value, dict):
        return {str(k): canon(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, float):
        return float(value)
    return value


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
    return [
        f"{R}/{ds}/health/{regime}.csv" for ds in DATASETS for regime in regimes(ds)
    ]


def get_all_attack_csvs(wildcards=None):
    return [attack_csv(ds, *job) for ds in DATASETS for job in attack_jobs(ds)]


def get_attack_index(wildcards=None):
    """Metadata of every attack CSV, in the order of get_all_attack_csvs (params of the tables)."""
    return [
        {"dataset": ds, "regime": r, "method": m, "eps": float(e)}
        for ds in DATASETS
        for (r, m, e) in attack_jobs(ds)
    ]


def get_sensitivity_csvs(wildcards=None):
    return [
        f"{R}/{ds}/sensitivity/{regime}.csv"
        for ds in DATASETS
        for regime in regimes(ds)
    ]


def get_test_tensors(wildcards=None):
    """Each dataset's test tensors, in DATASETS order (aggregates check every per-image CSV
    against its test images)."""
    return expand(f"{R}/{{ds}}/tensors/test.pt", ds=DATASETS)


def get_sensitivity_pairs(wildcards=None):
    """(dataset, regime) of every sensitivity CSV, in the order of get_sensitivity_csvs."""
    return [
        {"dataset": ds, "regime": regime} for ds in DATASETS for regime in regimes(ds)
    ]


def get_sensitivity_index(wildcards=None):
    return [
        {
            "dataset": ds,
            "regime": regime,
            "exclude_fraction": config["datasets"][ds]["sensitivity"][
                "exclude_fraction"
            ],
            "paper_dataset": config["datasets"][ds].get("paper_dataset"),
        }
        for ds in DATASETS
        for regime in regimes(ds)
    ]


def is_control(ds):
    return _is_control(config["datasets"][ds])


def get_final_output():
    """Everything `rule all` asks for, built from the configured datasets."""
    targets = [f"{R}/config.used.yaml"]
    targets += expand(f"{R}/{{ds}}/manifest.csv", ds=DATASETS)
    targets += expand(
        f"{R}/{{ds}}/tensors/{{split}}.pt", ds=DATASETS, split=["train", "val", "test"]
    )
    targets += expand(f"{R}/{{ds}}/tensors/stats.json", ds=DATASETS)
    for ds in DATASETS:
        targets += expand(f"{R}/{ds}/models/{{regime}}.pt", regime=regimes(ds))
    targets += expand(
        f"{R}/tables/{{table}}",
        table=[
            "table1.csv",
            "table1.md",
            "table_s5.csv",
            "table_s5.md",
            "sanity.csv",
            "table2.csv",
            "table2.md",
            "deferral.csv",
            "deferral_auc.csv",
            "evaluation_health.csv",
            "evaluation_health.md",
            "clinical.csv",
            "clinical.md",
        ],
    )
    targets += expand(
        f"{R}/figures/{{fig}}.{{ext}}",
        ext=["png", "pdf"],
        fig=[
            "fig1_examples",
            "fig2_accuracy_vs_eps",
            "fig3_adv_training",
            "fig4_deferral",
            "fig5_robustness_curves",
            "fig6_clinical",
        ],
    )
    targets += expand(
        f"{R}/tables/{{table}}",
        table=[
            "robustness_summary.csv",
            "robustness_summary.md",
            "robustness_seeds.csv",
        ],
    )
    # natural corruptions beside the adversarial worst case (rules/corrupt.smk)
    targets += expand(
        f"{R}/tables/{{table}}",
        table=[
            "corruptions.csv",
            "corruptions.md",
            "noise_units.csv",
            "noise_units.md",
            "corruption_health.csv",
        ],
    )
    targets += expand(f"{R}/figures/natural_vs_adversarial.{{ext}}", ext=["png", "pdf"])
    targets += expand(f"{R}/{{ds}}/tensors/noise.csv", ds=DATASETS)
    # regimes against clean, paired (rules/regimes.smk)
    targets += expand(f"{R}/tables/regimes.{{ext}}", ext=["csv", "md"])
    # one robustness card per (dataset, regime) (rules/cards.smk)
    targets += [
        f"{R}/cards/{ds}_{regime}.{ext}"
        for ds in DATASETS
        for regime in regimes(ds)
        for ext in ("md", "html")
    ]
    return targets


# Given models (rules/audit.smk): datasets whose model file is given are not trained.
GIVEN = {
    ds: _spec.given_file(config["datasets"][ds]["model"])
    for ds in DATASETS
    if _spec.given_file(config["datasets"][ds]["model"])
}


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


def get_import_mem_mb(wildcards, input):
    """The file, the network built from it and the wrapped copy: a few times the file."""
    return int(2000 + 4 * _mb(input.checkpoint))


# Natural corruptions (rules/corrupt.smk): which run is datasets.<ds>.corruptions, resolved by
# oncorobust.config.corruption_plan (the modality's small default set when names is not given).


def corruption_jobs(ds, regime=None):
    """(regime, corruption, severity text) of every corruption result of a dataset (or one regime)."""
    plan = _corruption_plan(ds, config["datasets"][ds])
    return [
        (r, name, _spec.severity_str(s))
        for r in (regimes(ds) if regime is None else [regime])
        for name, sevs in plan.items()
        for s in sevs
    ]


def corruption_csv(ds, regime, name, severity):
    return f"{R}/{ds}/attacks/{regime}/{_spec.CORRUPT_PREFIX}{name}/severity={severity}.csv"


def get_all_corruption_csvs(wildcards=None):
    return [corruption_csv(ds, *job) for ds in DATASETS for job in corruption_jobs(ds)]


def get_corruption_index(wildcards=None):
    """Metadata of every corruption CSV, in the order of get_all_corruption_csvs."""
    return [
        {"dataset": ds, "regime": r, "corruption": n, "severity": float(s)}
        for ds in DATASETS
        for (r, n, s) in corruption_jobs(ds)
    ]


def _natural_attack_jobs():
    """(dataset, regime, method, eps) of the strongest white-box attack's CSVs (worst when run)."""
    jobs = []
    for ds in DATASETS:
        methods = config["datasets"][ds]["attack"]["methods"]
        best = next((m for m in _spec.STRENGTH_ORDER if m in methods), None)
        jobs += [(ds, r, m, e) for (r, m, e) in attack_jobs(ds) if m == best]
    return jobs


def get_natural_attack_csvs(wildcards=None):
    return [attack_csv(*job) for job in _natural_attack_jobs()]


def get_natural_attack_index(wildcards=None):
    return [
        {"dataset": ds, "regime": r, "method": m, "eps": float(e)}
        for (ds, r, m, e) in _natural_attack_jobs()
    ]


def get_corrupt_mem_mb(ds):
    """A corruption job of dataset ``ds``: the model and one batch of forward passes (as an attack
    job, no source model)."""

    def mem_mb(wildcards, input):
        return _attack_batch_mem_mb(ds, "attack", input)

    return mem_mb


def get_corrupt_runtime(ds):
    """Minutes of a corruption job of ``ds``: per corruption and severity two forward passes per
    test image (clean and corrupted) plus the corruption."""

    def runtime(wildcards, input):
        s = _shape(ds)
        n = _n_images(ds, input.test)
        if not n:
            return 10
        passes = 4 * len(corruption_jobs(ds, "clean"))
        return _res.runtime_min(
            s["arch"], s["size"], n, passes, device=_device(), width=s["width"]
        )

    return runtime


# Regime comparison (rules/regimes.smk)
def get_regime_index(wildcards=None):
    """One entry per model (dataset, base regime, replicate 1..K): the worst-case attack at the
    dataset's reference ε (oncorobust.pipeline.plan.run_index). Replicate 1 of regime R is
    named R, replicate k ≥ 2 R-r{k} (the paths' regime)."""
    index = []
    for ds in DATASETS:
        d = config["datasets"][ds]
        index += _plan.run_index(
            ds,
            base_regimes(ds),
            int(d.get("replicates", 1)),
            d["attack"]["methods"],
            d["attack"]["reference_eps"],
        )
    return canon(index)


def get_regime_attack_csvs(wildcards=None):
    return [
        attack_csv(e["dataset"], e["regime"], e["method"], eps_str(e["eps"]))
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
    sources = "; ".join(_source_line(ds) for ds in DATASETS)
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
