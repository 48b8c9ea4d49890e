"""Attack budgets of ``oncorobust audit`` (``--budget quick | standard | thorough``) and the
estimate of an audit's run time printed before it starts. No torch import (the command line plans
with it before loading anything heavy).

- ``quick``: APGD on the logit margin, 25 steps, as the only member of ``worst``; no Square in the
  health checks; the sensitivity search with one APGD-margin restart, no refinement, no FAB. A
  first look: the worst case is weaker, and the report says so.
- ``standard``: the workflow's defaults (``worst`` = APGD-CE, APGD-margin, FAB with 100 steps,
  Square with 5000 queries; Square with 1000 queries in the health checks; the default search).
- ``thorough``: AutoAttack's budgets with 3 restarts for APGD-CE, APGD-margin and FAB (Square
  5000 queries), Square with 5000 queries in the health checks, a 3-restart search.

The estimate multiplies each job's planned passes (:mod:`oncorobust.pipeline.resources`: forward = 1,
forward + backward = 3, per image) by the time of one pass measured on the user's model, plus a
start-up cost per job. Planned passes are an upper bound (early exit skips images once they flip),
so the estimate is one for a model that resists: :data:`EARLY_EXIT` scales each family by what it
used on the benchmark model (``benchmarks/audit_budgets.py``).
"""

from __future__ import annotations

import copy

from oncorobust.spec import CLI_METHODS, METHODS
from oncorobust.pipeline.passes import attack_passes, health_passes, sensitivity_passes

BUDGETS = ("quick", "standard", "thorough")

#: What each budget writes into the audit's config: ``attacks`` (merged into the top-level
#: block) and ``sensitivity`` (merged into the dataset's block). ``standard`` writes nothing.
PRESETS: dict[str, dict] = {
    "quick": {
        "attacks": {"apgd_margin": {"steps": 25}, "worst": {"members": ["apgd_margin"]},
                    "health": {"square_queries": 0}},
        "sensitivity": {"method": "apgd_margin", "restarts": 1, "refine_steps": 0, "rel_tol": 0.0,
                        "fab_check": False},
    },
    "standard": {"attacks": {}, "sensitivity": {}},
    "thorough": {
        "attacks": {"apgd_ce": {"steps": 100, "restarts": 3}, "apgd_margin": {"steps": 100, "restarts": 3},
                    "fab": {"steps": 100, "restarts": 3}, "square": {"queries": 5000, "restarts": 1},
                    "worst": {"members": ["apgd_ce", "apgd_margin", "fab", "square"]},
                    "health": {"square_queries": 5000}},
        "sensitivity": {"restarts": 3},
    },
}

#: Schema defaults the estimate needs when a block is not in the config.
DEFAULT_ATTACKS = {
    **{name: dict(m.defaults) for name, m in METHODS.items()},
    "health": {"max_images": 256, "square_queries": 1000},
}
DEFAULT_SENSITIVITY = {"eps_max": 0.02, "tol": 1e-5, "rel_tol": 0.005, "method": "apgd_t+apgd_margin+pgd",
                       "steps": 10, "restarts": 2, "refine_steps": 100, "fab_check": True, "fab_steps": 100}
#: Seconds each Snakemake job costs beyond its model passes (process start, imports, loading).
JOB_START_S = 3.0
#: Fraction of the planned passes each family is expected to use. The sensitivity search's plan
#: counts every bisection round's full attack for every image, but images that flip exit early and
#: its rounds shrink: on the benchmark audit (benchmarks/audit_budgets.py: a small CNN at 224 px,
#: 26 of 35 images not flipped at eps_max) it used 19% of its plan. The attacks' plans are kept
#: whole: their unflipped images use the full budget (Square dominates), and two jobs sharing two
#: cores run slower than the one-thread timing, which the remainder absorbs (measured: 0.69 of
#: the plan at the one-thread rate). A model that flips easily finishes sooner than estimated.
EARLY_EXIT = {"attack": 1.0, "health": 1.0, "sensitivity": 0.2}


def deep_merge(base: dict, extra: dict) -> dict:
    """``base`` updated by ``extra``, nested mappings merged (neither is changed).

    Args:
        base: the mapping to start from.
        extra: the mapping whose values win; a dict value merges into a dict of ``base`` at that key.
    Returns:
        A new dict (deep copies of the values of both).
    """
    out = copy.deepcopy(base)
    for k, v in extra.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def apply_budget(config: dict, budget: str, dataset: str) -> dict:
    """``config`` with the ``budget`` preset merged in (``attacks.budget`` records its name).

    Args:
        config: the audit's workflow config (one dataset).
        budget: ``quick``, ``standard`` or ``thorough``.
        dataset: the dataset whose ``sensitivity`` block the preset sets.

    Returns:
        A new config.

    Raises:
        ValueError: an unknown budget.
    """
    if budget not in PRESETS:
        raise ValueError(f"unknown budget {budget!r}; choose one of {BUDGETS}")
    preset = PRESETS[budget]
    out = deep_merge(config, {"attacks": {**preset["attacks"], "budget": budget}})
    out["datasets"][dataset] = deep_merge(out["datasets"][dataset], {"sensitivity": preset["sensitivity"]})
    return out


def planned_passes(config: dict, dataset: str, n_test: int, n_val: int, n_train: int = 0) -> dict[str, float]:
    """Planned passes (forward = 1, forward + backward = 3, summed over images) of each family of
    jobs of one dataset's audit: ``import`` (or ``train``), ``attack``, ``health``, ``sensitivity``;
    ``jobs`` is the number of Snakemake jobs.

    Args:
        config: the audit's config (schema defaults need not be filled in).
        dataset: its dataset.
        n_test, n_val, n_train: images per split.

    Returns:
        family → passes (and ``jobs`` → count).
    """
    att = deep_merge(DEFAULT_ATTACKS, {k: v for k, v in config.get("attacks", {}).items() if isinstance(v, dict)})
    entry = config["datasets"][dataset]
    methods = entry.get("attack", {}).get("methods", list(CLI_METHODS))
    eps = entry.get("attack", {}).get("eps", [])
    members = {m: att.get(m, {}) for m in att["worst"]["members"]}
    per_eps = sum(attack_passes(m, att.get(m, {}), members) + 3 for m in methods)
    sens = deep_merge(DEFAULT_SENSITIVITY, entry.get("sensitivity", {}))
    out = {
        "attack": n_test * per_eps * len(eps),
        "health": min(n_test, int(att["health"]["max_images"])) * health_passes(att["pgd"], att["health"]["square_queries"]),
        "sensitivity": (n_test + n_val) * (sensitivity_passes(sens) + 2),
    }
    train = entry.get("train")
    if train:
        out["train"] = 3.0 * int(train.get("epochs", 20)) * (n_train + n_val)
    else:
        out["import"] = float(n_test + n_val)
    per_job = len(eps) if config.get("attacks", {}).get("jobs") == "per_eps" else 1  # attack jobs per method
    out["jobs"] = 6 + len(methods) * per_job + 2  # data, import/train, attacks, health, sensitivity, tables, cards...
    return out


def estimate_seconds(passes: dict[str, float], seconds_per_pass: float, cores: int = 1,
                     early_exit: dict[str, float] | None = None) -> float:
    """Wall-clock seconds of the planned work, following the DAG: the model is imported (or
    trained), then the attack jobs and the sensitivity search run side by side on ``cores`` (one
    thread each), then the health checks (they read both), then the tables. Each family's passes
    × the measured time of one pass (one thread) × :data:`EARLY_EXIT`, plus :data:`JOB_START_S`
    per job shared among the cores.

    Args:
        passes: :func:`planned_passes`.
        seconds_per_pass: one image's forward pass on one thread (forward + backward = 3).
        cores: Snakemake's ``--cores``.
        early_exit: fractions of the plan per family (default :data:`EARLY_EXIT`; ``{}``: the
            whole plan, an upper bound).

    Returns:
        Seconds.
    """
    frac = EARLY_EXIT if early_exit is None else early_exit
    t = {k: v * frac.get(k, 1.0) * seconds_per_pass for k, v in passes.items() if k != "jobs"}
    cores = max(1, int(cores))
    middle = max((t.get("attack", 0) + t.get("sensitivity", 0)) / cores, t.get("sensitivity", 0))
    first = t.get("train", 0) + t.get("import", 0)
    return first + middle + t.get("health", 0) + JOB_START_S * passes.get("jobs", 0) / min(cores, 2)
