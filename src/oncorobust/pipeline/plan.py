"""What the workflow plans for its reporting jobs: regime and replicate names, the attack giving
the worst case and one index entry per trained model (the regime table), the config slices and
benchmark files of a robustness card.

Torch- and pandas-free, so that the workflow plans its jobs (``workflow/rules/common.smk``)
without importing the reporting code; :mod:`oncorobust.reporting.regimes` and
:mod:`oncorobust.reporting.cards` re-export these names. Which jobs exist for a config (datasets,
models, attack and corruption results, the targets) is :mod:`oncorobust.pipeline.dag`, a module no
workflow script imports (this one is: the cards and regimes_table scripts reach it).
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from oncorobust.errors import CardError, OncorobustError
from oncorobust.spec import REPLICATE_SEP, STRENGTH_ORDER, TRANSFER_PREFIX
from oncorobust.spec import replicate_name as spec_replicate_name


class RegimeTableError(OncorobustError, ValueError):
    """The regime table cannot be built from its inputs (the message names what is wrong)."""


class RegimeNameError(RegimeTableError):
    """A regime name does not follow the replicate convention ``R`` / ``R-r{k}`` (k ≥ 2)."""


# the strict form of the registry's naming (spec.REPLICATE_SEP; spec.split_replicate_name is lenient)
_REPLICATE = re.compile(rf"(?P<base>[A-Za-z0-9_]+){re.escape(REPLICATE_SEP)}(?P<k>[0-9]+)")
_BASE = re.compile(r"[A-Za-z0-9_]+")


def split_replicate(name: str) -> tuple[str, int]:
    """The base regime and replicate number of a regime name: ``"adv_pgd"`` → ``("adv_pgd", 1)``,
    ``"clean-r3"`` → ``("clean", 3)``.

    Args:
        name: a regime name as in the paths (``R`` or ``R-r{k}``).
    Returns:
        (base regime R, replicate number k ≥ 1).
    Raises:
        RegimeNameError: not ``R`` or ``R-r{k}`` with k ≥ 2 written without leading zeros
            (replicate 1 is named ``R`` itself, so ``R-r1`` is refused).
    """
    name = str(name)
    if _BASE.fullmatch(name):
        return name, 1
    m = _REPLICATE.fullmatch(name)
    if not m:
        raise RegimeNameError(f"regime {name!r}: a regime is named R (replicate 1) or R-r<k> (replicate k ≥ 2),"
                              " R made of letters, digits and underscores")
    k = m["k"]
    if k.startswith("0") or int(k) < 2:
        raise RegimeNameError(f"regime {name!r}: replicate 1 keeps the regime's own name and replicates"
                              " 2..K are named R-r2..R-rK (no leading zeros)")
    return m["base"], int(k)


def replicate_name(base: str, k: int) -> str:
    """The regime name of replicate ``k`` of ``base`` (inverse of :func:`split_replicate`).

    Args:
        base: the base regime name (letters, digits, underscores).
        k: the replicate number, 1-based.
    Returns:
        ``base`` for k = 1, else ``{base}-r{k}``.
    Raises:
        RegimeNameError: ``base`` is not a base regime name, or ``k`` is not an integer ≥ 1.
    """
    if not _BASE.fullmatch(str(base)):
        raise RegimeNameError(f"regime {base!r}: not a base regime name (letters, digits, underscores)")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise RegimeNameError(f"replicate {k!r} of {base!r}: replicates are numbered 1, 2, ...")
    return spec_replicate_name(str(base), int(k))  # the registry's naming, checked above


def replicate_names(base: str, replicates: int) -> list[str]:
    """The regime names of replicates 1..K of ``base``: ``[base, base-r2, ..., base-rK]``.

    Args:
        base: the base regime name.
        replicates: K, seeds per regime.
    Returns:
        The K names, replicate 1 first.
    Raises:
        RegimeNameError: ``replicates`` is not a positive integer, or ``base`` is not a base regime name.
    """
    if isinstance(replicates, bool) or int(replicates) != replicates or replicates < 1:
        raise RegimeNameError(f"replicates = {replicates!r}: must be a positive integer")
    return [replicate_name(base, k) for k in range(1, int(replicates) + 1)]


def reference_method(methods: Iterable[str]) -> str:
    """The attack whose per-image CSV gives the worst case: ``worst`` when configured, else the
    strongest configured white-box method (:data:`oncorobust.spec.STRENGTH_ORDER`).

    Args:
        methods: the dataset's ``attack.methods``.
    Returns:
        The first of :data:`oncorobust.spec.STRENGTH_ORDER` among ``methods``.
    Raises:
        RegimeTableError: no usable method (transfer attacks do not count).
    """
    present = [m for m in methods if not str(m).startswith(TRANSFER_PREFIX)]
    for m in STRENGTH_ORDER:
        if m in present:
            return m
    raise RegimeTableError(f"attack.methods = {list(methods)}: no attack method the regime table can use"
                           f" (one of {', '.join(STRENGTH_ORDER)})")


def run_index(dataset: str, regimes: Sequence[str], replicates: int, methods: Iterable[str],
              reference_eps: float) -> list[dict]:
    """The per-model inputs of one dataset's rows: one entry per (base regime, replicate).

    Args:
        dataset: the dataset.
        regimes: its regimes (``clean`` first; replicate names ``R-r{k}`` are folded onto R).
        replicates: K, seeds per regime.
        methods: its ``attack.methods``.
        reference_eps: its ``attack.reference_eps``.
    Returns:
        Entries ``{"dataset", "regime" (the replicate's name, as in the paths), "base",
        "replicate", "method", "eps"}``, base regimes in the given order, replicates 1..K.
    Raises:
        RegimeNameError: a regime name or ``replicates`` is malformed (:func:`split_replicate`).
        RegimeTableError: no usable attack method (:func:`reference_method`).
    """
    method = reference_method(methods)
    bases = list(dict.fromkeys(split_replicate(r)[0] for r in regimes))
    return [{"dataset": dataset, "regime": name, "base": base, "replicate": k, "method": method,
             "eps": float(reference_eps)}
            for base in bases for k, name in enumerate(replicate_names(base, replicates), start=1)]


# ---------------------------------------------------------------------------------- cards

def card_config(config: dict, dataset: str, regime: str, control: bool) -> dict:
    """The config slices a card shows (the rule's params; canonicalise before use).

    Args:
        config: the validated workflow config (defaults filled).
        dataset, regime: the card's model.
        control: whether the dataset is a control.
    Returns:
        ``{"attack", "attacks", "sensitivity", "adversarial", "control"}``: the dataset's attack
        grid; the blocks of the attacks it ran (``worst``'s members included), ``early_exit`` when
        BIM or PGD ran, ``labels`` and ``health``; its sensitivity block; its adversarial-training
        block without the regime list (None for ``clean``); the control flag.
    Raises:
        CardError: the dataset is not in the config.
    """
    if dataset not in config.get("datasets", {}):
        raise CardError(f"dataset {dataset!r} is not under datasets: in the config")
    att = config.get("attacks", {})
    d = config["datasets"][dataset]
    methods = list(d.get("attack", {}).get("methods", []))
    used = [m for m in methods if m != "worst"]
    if "worst" in methods:
        used += [m for m in (att.get("worst") or {}).get("members", []) if m not in used]
    attacks = {m: dict(att.get(m) or {}) for m in used}
    if "worst" in methods:
        attacks["worst"] = dict(att.get("worst") or {})
    if {"bim", "pgd"} & set(used) and "early_exit" in att:
        attacks["early_exit"] = att["early_exit"]
    attacks["labels"] = att.get("labels", "predicted")
    attacks["health"] = dict(att.get("health") or {})
    attacks["budget"] = att.get("budget", "custom")
    adv = d.get("adversarial_training") or {}
    return {"attack": dict(d.get("attack", {})), "attacks": attacks, "sensitivity": dict(d.get("sensitivity") or {}),
            "adversarial": None if regime == "clean" else {k: v for k, v in adv.items() if k != "regimes"},
            "control": bool(control)}


def benchmark_files(results: str, dataset: str, regime: str, attack_jobs: list[tuple[str, str, str]],
                    per_eps: bool = False) -> dict[str, list[str]]:
    """The Snakemake benchmark files of one model's jobs, by stage (for :func:`read_benchmarks`).

    Args:
        results: the results folder (config ``results``).
        dataset, regime: the model.
        attack_jobs: its (regime, method, eps text) attack results, as the workflow names them.
        per_eps: one attack job per ε (config ``attacks.jobs: per_eps``); else one per regime and
            method runs every ε.
    Returns:
        Stage (train, attacks, health, sensitivity) → paths; some may never exist (a given model
        has no training job).
    """
    b = f"{results}/benchmarks"
    return {"train": [f"{b}/train/{dataset}/{regime}.tsv"],
            "attacks": ([f"{b}/attack/{dataset}/{r}/{m}/eps={e}.tsv" for (r, m, e) in attack_jobs] if per_eps else
                        [f"{b}/attack/{dataset}/{r}/{m}.tsv" for (r, m) in dict.fromkeys((r, m) for (r, m, _) in attack_jobs)]),
            "health": [f"{b}/health/{dataset}/{regime}.tsv"],
            "sensitivity": [f"{b}/sensitivity/{dataset}/{regime}.tsv"]}
