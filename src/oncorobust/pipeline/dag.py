"""Which jobs the workflow plans for a config: the datasets in report order, every model (regime ×
replicate), each model's attack and corruption results, the index params of the aggregate rules
and the targets of ``rule all``.

Plain functions of the validated config dict (``workflow/rules/common.smk`` passes Snakemake's
``config``; the tests a loaded YAML). No Snakemake, torch or pandas import. No workflow script
imports this module (nor :mod:`oncorobust.pipeline.resources`, which uses it), so an edit here
changes no job's ``code`` param (:mod:`oncorobust.pipeline.codehash`); what the reporting
scripts share with the plan stays in :mod:`oncorobust.pipeline.plan`.
"""

from __future__ import annotations

from typing import Callable

from oncorobust import spec
from oncorobust.config import corruption_plan
from oncorobust.epsilon import eps_key
from oncorobust.pipeline.plan import run_index

CONTROL_FORMATS = ("mnist", "cifar10", "digits")
PAPER_ORDER = ("ct", "mammogram", "mri", "mnist", "cifar10")

TABLES = ("table1.csv", "table1.md", "table_s5.csv", "table_s5.md", "sanity.csv", "table2.csv", "table2.md",
          "deferral.csv", "deferral_auc.csv", "evaluation_health.csv", "evaluation_health.md", "clinical.csv",
          "clinical.md")
FIGURES = ("fig1_examples", "fig2_accuracy_vs_eps", "fig3_adv_training", "fig4_deferral",
           "fig5_robustness_curves", "fig6_clinical")
ROBUSTNESS_TABLES = ("robustness_summary.csv", "robustness_summary.md", "robustness_seeds.csv")
CORRUPTION_TABLES = ("corruptions.csv", "corruptions.md", "noise_units.csv", "noise_units.md",
                     "corruption_health.csv")


def canon(value):
    """A config slice in canonical form (mappings with sorted keys, floats kept exact), so that
    re-ordering keys in a config file plans no job again; an ε such as 8/255 reaches the job as
    exactly the config's float.

    Args:
        value: a config value (mapping, sequence or scalar).
    Returns:
        The same data: dicts with ``str`` keys in sorted order, tuples as lists, floats as ``float``.
    """
    if isinstance(value, dict):
        return {str(k): canon(value[k]) for k in sorted(value, key=str)}
    if isinstance(value, (list, tuple)):
        return [canon(v) for v in value]
    if isinstance(value, float):
        return float(value)
    return value


# ------------------------------------------------------------------------------ datasets

def is_control(entry: dict) -> bool:
    """Whether a dataset is a control (MNIST, CIFAR-10, digits) rather than a medical set.

    Args:
        entry: its ``datasets.<ds>`` block.
    Returns:
        True for ``paper_dataset`` mnist/cifar10 or a control source format.
    """
    return entry.get("paper_dataset") in ("mnist", "cifar10") or entry["source"]["format"] in CONTROL_FORMATS


def dataset_order(config: dict, ds: str) -> tuple:
    """Sort key of a dataset: medical sets before controls, each in the paper's order, then by
    name (tables and figures do not depend on the order of the config's keys).

    Args:
        config: the validated config.
        ds: a key of ``config["datasets"]``.
    Returns:
        (is a control, index in :data:`PAPER_ORDER` or its length, name).
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    entry = config["datasets"][ds]
    paper = entry.get("paper_dataset")
    return is_control(entry), PAPER_ORDER.index(paper) if paper in PAPER_ORDER else len(PAPER_ORDER), ds


def datasets(config: dict) -> list[str]:
    """The configured datasets in report order (:func:`dataset_order`).

    Args:
        config: the validated config.
    Returns:
        The dataset keys, sorted.
    """
    return sorted(config["datasets"], key=lambda ds: dataset_order(config, ds))


def synthetic(config: dict) -> list[str]:
    """The datasets whose data the workflow generates (``source.synthetic``), in report order.

    Args:
        config: the validated config.
    Returns:
        Their keys.
    """
    return [ds for ds in datasets(config) if "synthetic" in config["datasets"][ds]["source"]]


def source_line(config: dict, ds: str) -> str:
    """How the start-up line names a dataset's source: ``"<ds> synthetic demo data"`` or
    ``"<ds> <format> <root|manifest|path>"``.

    Args:
        config: the validated config.
        ds: the dataset.
    Returns:
        The text.
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    src = config["datasets"][ds]["source"]
    if "synthetic" in src:
        return f"{ds} synthetic demo data"
    where = src.get("root") or src.get("manifest") or src.get("path") or ""
    return f"{ds} {src['format']} {where}".rstrip()


def given_models(config: dict) -> dict[str, str]:
    """The datasets whose model file is given (``model`` names a checkpoint: imported, not trained).

    Args:
        config: the validated config.
    Returns:
        Dataset → the given file, in report order.
    """
    out = {}
    for ds in datasets(config):
        given = spec.given_file(config["datasets"][ds]["model"])
        if given:
            out[ds] = given
    return out


# ------------------------------------------------------------------------------ models

def base_regimes(config: dict, ds: str) -> list[str]:
    """The training regimes of a dataset: ``clean``, then its ``adversarial_training.regimes``.

    Args:
        config: the validated config.
        ds: the dataset.
    Returns:
        The base regime names.
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    return ["clean"] + list(config["datasets"][ds].get("adversarial_training", {}).get("regimes", []))


def regimes(config: dict, ds: str) -> list[str]:
    """Every model of a dataset: each base regime × replicate (``datasets.<ds>.replicates``;
    replicate 1 keeps the regime's name, k ≥ 2 is ``<regime>-r<k>``).

    Args:
        config: the validated config.
        ds: the dataset.
    Returns:
        The model names, regime by regime, replicates 1..K within each.
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    k_max = int(config["datasets"][ds].get("replicates", 1))
    return [spec.replicate_name(r, k) for r in base_regimes(config, ds) for k in range(1, k_max + 1)]


def models(config: dict) -> list[tuple[str, str]]:
    """(dataset, model) of every trained or given model, datasets in report order.

    Args:
        config: the validated config.
    Returns:
        The pairs, in the order of :func:`datasets` and :func:`regimes`.
    """
    return [(ds, r) for ds in datasets(config) for r in regimes(config, ds)]


def clean_of(model: str) -> str:
    """The clean model of the same replicate (transfer source, fine-tuning start).

    Args:
        model: a model name (``R`` or ``R-r<k>``).
    Returns:
        ``clean`` or ``clean-r<k>``.
    """
    return spec.replicate_name("clean", spec.split_replicate_name(model)[1])


# ------------------------------------------------------------------------------ attacks

def attack_per_eps(config: dict) -> bool:
    """Whether each attack job runs one ε (``attacks.jobs: per_eps``) rather than the whole grid.

    Args:
        config: the validated config.
    Returns:
        True for per_eps.
    """
    return config["attacks"]["jobs"] == "per_eps"


def attack_eps(config: dict, ds: str) -> list[str]:
    """The canonical ε texts of a dataset's attack grid in the config's order
    (:func:`oncorobust.epsilon.eps_key`: they read back as exactly the config's floats).

    Args:
        config: the validated config.
        ds: the dataset.
    Returns:
        One text per ``attack.eps`` entry.
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    return [eps_key(e) for e in config["datasets"][ds]["attack"]["eps"]]


def attack_job_eps(config: dict, ds: str) -> list[str]:
    """The ε texts of one attack job's outputs: the whole grid (per_method) or the ``{eps}``
    wildcard (per_eps). The job reads its ε back from these names (no ε param: switching the
    layout reruns no attack; adding an ε reruns a per_method job, every ε of its grid).

    Args:
        config: the validated config.
        ds: the dataset.
    Returns:
        ``["{eps}"]`` or :func:`attack_eps`.
    """
    return ["{eps}"] if attack_per_eps(config) else attack_eps(config, ds)


def attack_job_stem(config: dict, ds: str) -> str:
    """An attack job's log and benchmark name under ``logs/attack/`` and ``benchmarks/attack/``.

    Args:
        config: the validated config.
        ds: the dataset.
    Returns:
        ``<ds>/{regime}/{method}`` (per_eps: ``/eps={eps}`` appended), with Snakemake wildcards.
    """
    return "/".join([ds, "{regime}", "{method}"] + (["eps={eps}"] if attack_per_eps(config) else []))


def attack_jobs(config: dict, ds: str, regime: str | None = None) -> list[tuple[str, str, str]]:
    """(model, method, ε text) of every attack result of a dataset (or of one model): white-box
    with every configured method for every model, and for every adversarially trained one the
    paper's methods transferred from the clean model too (the paper's protocol).

    Args:
        config: the validated config.
        ds: the dataset.
        regime: one model's name; default: every model of :func:`regimes`.
    Returns:
        The triples, model by model, method by method, ε in the grid's order (a transfer result
        right after its white-box one).
    Raises:
        KeyError: ``ds`` is not a configured dataset.
    """
    jobs = []
    for r in regimes(config, ds) if regime is None else [regime]:
        for method in config["datasets"][ds]["attack"]["methods"]:
            for eps in attack_eps(config, ds):
                jobs.append((r, method, eps))
                if r != "clean" and method in spec.PAPER_METHODS:
                    jobs.append((r, f"{spec.TRANSFER_PREFIX}{method}", eps))
    return jobs


def corruption_jobs(config: dict, ds: str, regime: str | None = None) -> list[tuple[str, str, str]]:
    """(model, corruption, severity text) of every corruption result of a dataset (or one model):
    ``datasets.<ds>.corruptions`` resolved by :func:`oncorobust.config.corruption_plan`.

    Args:
        config: the validated config.
        ds: the dataset.
        regime: one model's name; default: every model.
    Returns:
        The triples, model by model, corruption by corruption, severities in order.
    Raises:
        ConfigError: the corruption block is invalid (:func:`~oncorobust.config.corruption_plan`).
    """
    plan = corruption_plan(ds, config["datasets"][ds])
    return [(r, name, spec.severity_str(s)) for r in (regimes(config, ds) if regime is None else [regime])
            for name, sevs in plan.items() for s in sevs]


def every_dataset(config: dict, jobs: Callable[[dict, str], list[tuple]]) -> list[tuple]:
    """``(ds, *job)`` for each dataset in report order and each job of ``jobs(config, ds)``.

    Args:
        config: the validated config.
        jobs: :func:`attack_jobs`, :func:`corruption_jobs` or one of that form.
    Returns:
        The jobs of every dataset, the dataset first in each tuple.
    """
    return [(ds, *job) for ds in datasets(config) for job in jobs(config, ds)]


def natural_attack_jobs(config: dict) -> list[tuple[str, str, str, str]]:
    """(dataset, model, method, ε text) of the strongest configured white-box attack's results
    (``worst`` when run; :data:`oncorobust.spec.STRENGTH_ORDER`), beside the corruptions.

    Args:
        config: the validated config.
    Returns:
        The jobs, in the order of :func:`every_dataset` over :func:`attack_jobs`.
    """
    best = {ds: next((m for m in spec.STRENGTH_ORDER if m in config["datasets"][ds]["attack"]["methods"]), None)
            for ds in datasets(config)}
    return [job for job in every_dataset(config, attack_jobs) if job[2] == best[job[0]]]


def attack_index(jobs: list[tuple[str, str, str, str]]) -> list[dict]:
    """The metadata of attack results (the aggregate rules' index params), one entry per job.

    Args:
        jobs: (dataset, model, method, ε text) tuples.
    Returns:
        ``{"dataset", "regime", "method", "eps" (float)}`` in the same order.
    """
    return [{"dataset": ds, "regime": r, "method": m, "eps": float(e)} for (ds, r, m, e) in jobs]


def corruption_index(config: dict) -> list[dict]:
    """The metadata of every corruption result, in the order of :func:`every_dataset`.

    Args:
        config: the validated config.
    Returns:
        ``{"dataset", "regime", "corruption", "severity" (float)}`` entries.
    """
    return [{"dataset": ds, "regime": r, "corruption": n, "severity": float(s)}
            for (ds, r, n, s) in every_dataset(config, corruption_jobs)]


def sensitivity_index(config: dict) -> list[dict]:
    """The metadata of every model's sensitivity result, in the order of :func:`models`.

    Args:
        config: the validated config.
    Returns:
        ``{"dataset", "regime", "exclude_fraction", "paper_dataset"}`` entries.
    """
    return [{"dataset": ds, "regime": r,
             "exclude_fraction": config["datasets"][ds]["sensitivity"]["exclude_fraction"],
             "paper_dataset": config["datasets"][ds].get("paper_dataset")} for ds, r in models(config)]


def regime_index(config: dict) -> list[dict]:
    """One entry per model (dataset, base regime, replicate 1..K): the worst-case attack at the
    dataset's reference ε (:func:`oncorobust.pipeline.plan.run_index`), canonical.

    Args:
        config: the validated config.
    Returns:
        The entries, datasets in report order.
    Raises:
        RegimeTableError: a dataset runs no usable attack method.
    """
    index = []
    for ds in datasets(config):
        d = config["datasets"][ds]
        index += run_index(ds, base_regimes(config, ds), int(d.get("replicates", 1)), d["attack"]["methods"],
                           d["attack"]["reference_eps"])
    return canon(index)


# ------------------------------------------------------------------------------ files

def attack_csv(results: str, ds: str, regime: str, method: str, eps: str) -> str:
    """The per-image CSV of one attack result.

    Args:
        results: the results folder (config ``results``).
        ds, regime, method, eps: the result (ε as its text).
    Returns:
        ``{results}/{ds}/attacks/{regime}/{method}/eps={eps}.csv``.
    """
    return f"{results}/{ds}/attacks/{regime}/{method}/eps={eps}.csv"


def corruption_csv(results: str, ds: str, regime: str, name: str, severity: str) -> str:
    """The per-image CSV of one corruption result.

    Args:
        results: the results folder.
        ds, regime, name, severity: the result (severity as its text).
    Returns:
        ``{results}/{ds}/attacks/{regime}/corrupt_{name}/severity={severity}.csv``.
    """
    return f"{results}/{ds}/attacks/{regime}/{spec.CORRUPT_PREFIX}{name}/severity={severity}.csv"


def model_files(config: dict, kind: str) -> list[str]:
    """One file per model, in the order of :func:`models`: ``{results}/{ds}/{kind}/{regime}.csv``.

    Args:
        config: the validated config.
        kind: ``health`` or ``sensitivity``.
    Returns:
        The paths.
    """
    return [f"{config['results']}/{ds}/{kind}/{r}.csv" for ds, r in models(config)]


def final_targets(config: dict) -> list[str]:
    """Everything ``rule all`` asks for: the config record, each dataset's manifest, tensors and
    noise table, every model, the tables, figures and one robustness card per model.

    Args:
        config: the validated config.
    Returns:
        The paths, in a fixed order.
    """
    R, dss = config["results"], datasets(config)
    per_ds = lambda *names: [f"{R}/{ds}/{n}" for n in names for ds in dss]  # noqa: E731
    targets = [f"{R}/config.used.yaml"] + per_ds("manifest.csv")
    targets += [f"{R}/{ds}/tensors/{s}.pt" for ds in dss for s in ("train", "val", "test")]
    targets += per_ds("tensors/stats.json")
    targets += [f"{R}/{ds}/models/{r}.pt" for ds, r in models(config)]
    targets += [f"{R}/tables/{t}" for t in TABLES]
    targets += [f"{R}/figures/{f}.{ext}" for ext in ("png", "pdf") for f in FIGURES]
    targets += [f"{R}/tables/{t}" for t in ROBUSTNESS_TABLES + CORRUPTION_TABLES]
    targets += [f"{R}/figures/natural_vs_adversarial.{ext}" for ext in ("png", "pdf")]
    targets += per_ds("tensors/noise.csv")
    targets += [f"{R}/tables/regimes.{ext}" for ext in ("csv", "md")]
    targets += [f"{R}/cards/{ds}_{r}.{ext}" for ds, r in models(config) for ext in ("md", "html")]
    return targets
