"""The one registry: every attack method, training regime, model source and output head.

This module imports neither torch nor Snakemake, so the config checks, the Snakefile and the
command line read the same facts the attack and training code use. Everything that lists
methods or regimes derives from here: the wildcard constraints and transfer jobs
(``workflow/rules/common.smk``), the attack dispatch (:mod:`oncorobust.attacks.methods`), the
per-job resource formulas (:mod:`oncorobust.pipeline.resources`), the health checks' lists
(:mod:`oncorobust.evaluation.health`), the figure labels and colours
(:mod:`oncorobust.reporting.figures`), the cards' strength order and the CLI's defaults. The
schema (``workflow/schemas/config.schema.yaml``) is plain YAML for Snakemake's validator;
``tests/test_spec.py`` checks its enums and defaults against this registry.

Adding an attack method (the README's recipe; ``tests/test_recipe.py`` follows it with a toy method):

1. write its implementation in a module of your own (e.g. ``src/oncorobust/attacks/mine.py``):
   a function ``run(model, x, y, e, p, seeds, **context)`` returning adversarial images,
   float32 N×C×H×W in [0,1], each within its ε (``e``: N×1×1×1; ``p``: the method's parameters,
   its :attr:`Method.options` included; ``seeds``: one int per image; ``context``: ``early_exit``,
   ``trace``, ``member_params``, which it may ignore);
2. add a :class:`Method` entry to :data:`METHODS` below: name, family, label, colour, ``run``
   (``"module:function"``), every default parameter and its gradient cost.

Nothing else: the attack dispatch, the config's enums and parameter checks (the schema's
``x-registry`` markers, :func:`oncorobust.config.validate_config`), the wildcard constraints, the
resource formulas, ``worst`` membership, the health checks, the tables, figures and cards read
this entry. A schema block ``attacks.<name>`` with descriptions is optional (its defaults must then
equal the entry's: ``tests/test_spec.py``).

Adding a training regime: write its loss in :mod:`oncorobust.training` and add a
:class:`Regime` entry to :data:`REGIMES`, then the schema's regime enum.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable

from oncorobust.errors import ModelError

#: what only the tables, figures, cards and the CLI's budgets read: left out of the code hash of
#: every job that runs a model or reads data (:mod:`oncorobust.pipeline.codehash`), so that a label,
#: a colour, the strength order or a cost formula reruns no training, attack or search. The
#: defaults reach the jobs through the validated config (the schema's defaults, which
#: ``tests/test_spec.py`` checks against these), as their params.
__rerun_exempt__ = {
    "fields": {"Method": ("label", "color", "strength", "passes"), "Regime": ("label", "reference")},
    "names": ("_CB", "STRENGTH_ORDER", "CLI_METHODS", "method_label", "_iterative_passes", "_square_passes"),
    # the tables themselves: each job receives the entries it reads as its ``registry`` param
    # (:func:`oncorobust.pipeline.codehash.registry_key`), so that editing or adding one entry
    # reruns only the jobs that read that entry
    "tables": ("METHODS", "REGIMES"),
}
#: the fields of an entry that say how it is shown or what it costs, not what it computes: left
#: out of :func:`entry_params` (and so of every job's rerun key but the reporting jobs')
PRESENTATION_FIELDS = {"Method": ("label", "color", "strength", "passes"), "Regime": ("label", "reference")}

# ----------------------------------------------------------------------------------------------
# Attack methods
# ----------------------------------------------------------------------------------------------


def _iterative_passes(factor: float) -> Callable[[dict], float]:
    """Forward-pass equivalents per image of a gradient attack: ``factor`` × 3 (one forward and
    a backward of about twice its cost) per step and restart, plus the clean and final checks."""
    def passes(params: dict) -> float:
        return 3.0 * float(params.get("steps", 10)) * float(params.get("restarts", 1)) * factor + 2
    return passes


def _square_passes(params: dict) -> float:
    return float(params.get("queries", 5000)) * float(params.get("restarts", 1))


@dataclass(frozen=True)
class Method:
    """One attack method.

    Attributes:
        name: the config and path name (``results/{ds}/attacks/{regime}/{name}/eps=….csv``).
        family: ``sign`` (signed-gradient steps), ``apgd``, ``minimum_norm``, ``query`` (no
            gradient) or ``ensemble``.
        label: the name in figures and tables.
        color: the figure colour (a seaborn ``colorblind`` palette entry).
        paper: one of Joel et al.'s three attacks (FGSM, BIM, PGD): also run as transfer attacks
            from the clean model against every adversarially trained one.
        iterative: more than one step (the health check's "iterative beats one-step").
        early_exit_option: ``attacks.early_exit`` applies (other iterative methods always stop
            attacking an image once it flipped).
        run: the implementation, ``"module:function"`` (imported when the method first runs:
            this module stays torch-free); see the module docstring for its signature.
        defaults: every parameter and its default (``attacks.<name>`` in the config).
        options: fixed arguments of ``run`` that are not config parameters (APGD's loss, which
            torchattacks attack an adapter runs, BIM's clean start).
        aliases: further parameter names accepted besides ``defaults`` (BIM/PGD: ``alpha``, an
            absolute step instead of ``alpha_ratio``).
        passes: forward-pass equivalents per image as a function of the parameters (an upper
            bound: early exit stops on flipped images); ``worst`` is summed over its members by
            :func:`oncorobust.pipeline.passes.attack_passes`.
        strength: rank in the cards' "strongest attack" tie-break (lower = stronger).
    """

    name: str
    family: str
    label: str
    color: str
    paper: bool = False
    iterative: bool = True
    early_exit_option: bool = False
    run: str = ""
    defaults: dict = field(default_factory=dict)
    options: dict = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    passes: Callable[[dict], float] = field(default=_iterative_passes(1.0), compare=False)
    strength: int = 0


# seaborn's "colorblind" palette (figures.PALETTE), spelled out so that this module needs no seaborn
_CB = ["#0173b2", "#de8f05", "#029e73", "#d55e00", "#cc78bc", "#ca9161", "#fbafe4", "#949494",
       "#ece133", "#56b4e9"]

_M = "oncorobust.attacks.methods:"
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("fgsm", "sign", "FGSM", _CB[0], paper=True, iterative=False, run=_M + "run_fgsm", defaults={},
           passes=lambda p: 4.0, strength=7),
    Method("bim", "sign", "BIM", _CB[2], paper=True, early_exit_option=True, run=_M + "run_sign",
           defaults={"steps": 10, "alpha_ratio": 0.1}, options={"random_start": False}, aliases=("alpha",),
           passes=_iterative_passes(1.0), strength=6),
    Method("pgd", "sign", "PGD", _CB[3], paper=True, early_exit_option=True, run=_M + "run_sign",
           defaults={"steps": 10, "alpha_ratio": 0.25, "random_start": True, "restarts": 1}, aliases=("alpha",),
           passes=_iterative_passes(1.0), strength=5),
    Method("apgd_ce", "apgd", "APGD-CE", _CB[4], run=_M + "run_apgd",
           defaults={"steps": 100, "restarts": 1, "rho": 0.75}, options={"loss": "ce"},
           passes=_iterative_passes(2.0), strength=2),
    Method("apgd_margin", "apgd", "APGD-margin", _CB[5], run=_M + "run_apgd",
           defaults={"steps": 100, "restarts": 1, "rho": 0.75}, options={"loss": "margin"},
           passes=_iterative_passes(2.0), strength=1),
    Method("fab", "minimum_norm", "FAB", _CB[8], run="oncorobust.attacks.adapters:run_fab",
           defaults={"steps": 100, "restarts": 1, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9},
           passes=_iterative_passes(2.0), strength=3),
    Method("square", "query", "Square", _CB[9], run="oncorobust.attacks.adapters:run_square",
           defaults={"queries": 5000, "restarts": 1, "p_init": 0.8}, passes=_square_passes, strength=4),
    Method("worst", "ensemble", "worst case", "black", run=_M + "run_worst",
           defaults={"members": ["apgd_ce", "apgd_margin", "fab", "square"]},
           passes=lambda p: 5000.0 + 3 * 100 * 3, strength=0),
)}

#: the paper's attacks (Table S1), in its order
PAPER_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.paper)
#: every method name, ``worst`` last
METHOD_NAMES: tuple[str, ...] = tuple(METHODS)
#: the methods ``worst`` may combine (every method but the ensemble itself)
MEMBER_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.family != "ensemble")
#: gradient-free methods (the health check compares them with the white-box ones)
GRADIENT_FREE_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.family == "query")
#: methods whose run at ε = 0 returns the clean images exactly (the others are checked with PGD)
EXACT_AT_ZERO_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.family in ("sign", "apgd"))
#: what checks ε = 0 for the other methods (a cheap deterministic-at-zero attack)
ZERO_CHECK_METHOD = "pgd"
#: iterative methods (the health check compares them with FGSM)
ITERATIVE_METHODS: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.iterative)
#: methods whose early exit is a config option (``attacks.early_exit``)
EARLY_EXIT_OPTION: tuple[str, ...] = tuple(n for n, m in METHODS.items() if m.early_exit_option)
#: strongest first, for tie-breaks between equally successful attacks
STRENGTH_ORDER: tuple[str, ...] = tuple(sorted(METHODS, key=lambda n: METHODS[n].strength))
#: the attacks the CLI runs by default
CLI_METHODS: tuple[str, ...] = (*PAPER_METHODS, "worst")
TRANSFER_PREFIX = "transfer_"


def entry_params(entry: Method | Regime, defaults: bool = True) -> dict:
    """What a registry entry computes, as plain data: its fields but the presentation ones
    (:data:`PRESENTATION_FIELDS`); the part of a job's rerun key that the entry contributes.

    Args:
        entry: a :class:`Method` or :class:`Regime`.
        defaults: keep a method's ``defaults`` (a job that passes every parameter explicitly
            leaves them out).
    Returns:
        A dict of the entry's other fields (lists for tuples), ready for a Snakemake param.
    """
    skip = set(PRESENTATION_FIELDS[type(entry).__name__]) | (set() if defaults else {"defaults"})
    return {f.name: list(v) if isinstance(v := getattr(entry, f.name), tuple) else v
            for f in fields(entry) if f.name not in skip}


def methods_read(method: str, members: tuple[str, ...] | list[str] = ()) -> tuple[str, ...]:
    """The registry entries an attack job on ``method`` reads: the method (without ``transfer_``),
    the members it runs (``worst``), and :data:`ZERO_CHECK_METHOD` where the ε = 0 sanity check
    cannot run the method itself.

    Args:
        method: a result name (a method or ``transfer_<method>``).
        members: ``attacks.worst.members`` when ``method`` is an ensemble.
    Returns:
        Method names, sorted.
    """
    base = base_method(method)
    names = {base} | (set(members) if METHODS[base].family == "ensemble" else set())
    if base not in EXACT_AT_ZERO_METHODS:
        names.add(ZERO_CHECK_METHOD)
    return tuple(sorted(names))


def base_method(method: str) -> str:
    """The attack behind a result name: ``transfer_pgd`` → ``pgd``.

    Args:
        method: a result name (a method, or ``transfer_`` + a method).
    Returns:
        ``method`` without the ``transfer_`` prefix (not checked against :data:`METHODS`).
    """
    return method.removeprefix(TRANSFER_PREFIX)


def is_transfer(method: str) -> bool:
    """Whether a result name is a transfer attack (``transfer_pgd``: crafted on the clean model).

    Args:
        method: a result name.
    Returns:
        True when it starts with :data:`TRANSFER_PREFIX`.
    """
    return str(method).startswith(TRANSFER_PREFIX)


def method_wildcard() -> str:
    """The regular expression of the ``{method}`` wildcard: every method, and transfer attacks
    of the paper's methods.

    Returns:
        The pattern, e.g. ``transfer_(fgsm|bim|pgd)|fgsm|bim|…|worst``.
    """
    return f"{TRANSFER_PREFIX}({'|'.join(PAPER_METHODS)})|" + "|".join(METHOD_NAMES)


def method_label(method: str) -> str:
    """The figure/table label of a result name (``transfer_pgd`` → ``PGD (transfer)``).

    Args:
        method: a result name (a method, or ``transfer_`` + a method).
    Returns:
        The method's :attr:`Method.label` (the name itself for one not in :data:`METHODS`), plus
        `` (transfer)`` for a transfer attack.
    """
    base = base_method(method)
    label = METHODS[base].label if base in METHODS else base
    return f"{label} (transfer)" if method.startswith(TRANSFER_PREFIX) else label


# ----------------------------------------------------------------------------------------------
# Training regimes
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Regime:
    """One training regime.

    Attributes:
        name: the config and path name (``results/{ds}/models/{name}.pt``).
        label: the name in figures and tables.
        adversarial: trained on adversarial images (listed in ``adversarial_training.regimes``).
        reference: the method and where it comes from.
    """

    name: str
    label: str
    adversarial: bool
    reference: str


REGIMES: dict[str, Regime] = {r.name: r for r in (
    Regime("clean", "clean", False, "standard training (Joel et al.)"),
    Regime("adv_pgd", "PGD-AT", True, "Madry et al. 2018; Joel et al.'s adversarial training"),
    Regime("adv_fast", "fast AT", True, "Wong et al. 2020, FGSM with a random start"),
    Regime("adv_free", "free AT", True, "Shafahi et al. 2019, replayed minibatches"),
    Regime("adv_trades", "TRADES", True, "Zhang et al. 2019, KL to the clean prediction"),
    Regime("adv_mart", "MART", True, "Wang et al. 2020, misclassification-aware boosted loss"),
)}
REGIME_NAMES: tuple[str, ...] = tuple(REGIMES)
ADVERSARIAL_REGIMES: tuple[str, ...] = tuple(n for n, r in REGIMES.items() if r.adversarial)

#: replicate k >= 2 of regime R is the model ``R-r{k}`` (replicate 1 keeps the name R, so
#: ``replicates: 1`` keeps every path); its training seed is ``seed + REPLICATE_SEED_STEP * (k - 1)``
REPLICATE_SEP = "-r"
REPLICATE_SEED_STEP = 1000


def replicate_name(regime: str, k: int) -> str:
    """The model name of replicate ``k`` (1-based) of ``regime``: ``clean``, ``clean-r2``, …

    Args:
        regime: the base regime name.
        k: the replicate number, 1-based.
    Returns:
        ``regime`` for k = 1, else ``{regime}-r{k}``.
    """
    return regime if int(k) == 1 else f"{regime}{REPLICATE_SEP}{int(k)}"


def split_replicate_name(name: str) -> tuple[str, int]:
    """``adv_pgd-r3`` → ``("adv_pgd", 3)``; ``clean`` → ``("clean", 1)`` (no validation: see
    :func:`oncorobust.pipeline.plan.split_replicate` for the strict form).

    Args:
        name: a model name, with or without a ``-r<k>`` suffix.
    Returns:
        (base regime, replicate number); replicate 1 when there is no ``-r<digits>`` suffix.
    """
    base, sep, k = str(name).rpartition(REPLICATE_SEP)
    return (base, int(k)) if sep and k.isdigit() else (str(name), 1)


def replicate_seed(seed: int, k: int) -> int:
    """The training seed of replicate ``k`` (replicate 1: ``seed`` itself).

    Args:
        seed: the configured training seed.
        k: the replicate number, 1-based.
    Returns:
        ``seed + REPLICATE_SEED_STEP * (k - 1)``.
    """
    return int(seed) + REPLICATE_SEED_STEP * (int(k) - 1)


def regime_wildcard(regimes: tuple[str, ...] = REGIME_NAMES) -> str:
    """The regular expression of the ``{regime}`` wildcard: a regime, optionally ``-r<k>``.

    Args:
        regimes: the regime names allowed; default: every regime of :data:`REGIMES`.
    Returns:
        The pattern, e.g. ``(clean|adv_pgd)(-r[0-9]+)?``.
    """
    return f"({'|'.join(regimes)})({REPLICATE_SEP}[0-9]+)?"


# ----------------------------------------------------------------------------------------------
# Model sources and output heads
# ----------------------------------------------------------------------------------------------

#: the paper's networks, built and trained here
BUILTIN_ARCHS: tuple[str, ...] = ("vgg16", "vgg_small")
#: ``model.arch`` prefixes: ``<source>:<target>``
MODEL_SOURCES: tuple[str, ...] = ("torchvision", "monai", "python", "torchscript", "export")
#: sources of serialized models, used as they are (never built or trained here)
SERIALIZED_SOURCES: tuple[str, ...] = ("torchscript", "export")
#: sources that build a network whose state dict ``model.checkpoint`` / ``model.weights`` can fill
BUILT_SOURCES: tuple[str, ...] = ("torchvision", "monai", "python")
#: ``model.output``: what the model's forward returns (``auto`` detects it at import)
OUTPUT_HEADS: tuple[str, ...] = ("logits", "logit", "probabilities")
OUTPUT_CHOICES: tuple[str, ...] = ("auto", *OUTPUT_HEADS)


def parse_arch(arch: str) -> tuple[str, str]:
    """``model.arch`` as (source, target): ``("vgg16", "")``, ``("torchvision", "resnet18")``,
    ``("python", "pkg.mod:factory")``, ``("torchscript", "model.ts")``, ``("export", "model.pt2")``.

    Args:
        arch: the ``model.arch`` string.

    Returns:
        (source, target); target is "" for the built-in networks.

    Raises:
        ModelError: an unknown source prefix, an empty target, or a ``python:`` arch without
            ``:<callable>``.
    """
    if arch in BUILTIN_ARCHS:
        return arch, ""
    kind, sep, target = str(arch).partition(":")
    if not sep or kind not in MODEL_SOURCES or not target.strip():
        raise ModelError(f"unknown model.arch {arch!r}; choose vgg16, vgg_small, torchvision:<builder>"
                         " (e.g. torchvision:resnet18), monai:<Network> (e.g. monai:DenseNet121),"
                         " torchscript:<file>, export:<file.pt2> or python:<module>:<callable>")
    if kind == "python" and ":" not in target.rstrip(":"):
        raise ModelError(f"model.arch {arch!r}: write python:<module or file.py>:<callable>,"
                         " e.g. python:my_models:build")
    return kind, target


def arch_source(arch: str) -> str:
    """The source of ``model.arch`` without validating it (the name itself for the built-ins,
    e.g. ``vgg_small``; the prefix before ``:`` otherwise).

    Args:
        arch: the ``model.arch`` string.
    Returns:
        The part before the first ``:``, or the whole string when it has none.
    """
    arch = str(arch)
    return arch.partition(":")[0] if ":" in arch else arch


def factory_file(arch: str) -> str | None:
    """The user's Python file of a ``python:<file.py>:<callable>`` arch, else None.

    Args:
        arch: the ``model.arch`` string.
    Returns:
        The file path as written (ending in ``.py``), or None for any other arch (also ``python:<module>:…``).
    """
    arch = str(arch)
    if not arch.startswith("python:"):
        return None
    module = arch[len("python:"):].rsplit(":", 1)[0]
    return module if module.endswith(".py") else None


def with_resolved_factory(arch: str) -> str:
    """``python:<file.py>:<callable>`` with the file made absolute (the CLI runs the workflow
    from another folder); any other arch unchanged.

    Args:
        arch: the ``model.arch`` string.
    Returns:
        The arch with its ``.py`` file (``~`` expanded) made absolute; any other arch as given.
    """
    path = factory_file(arch)
    if path is None:
        return arch
    return f"python:{Path(path).expanduser().resolve()}:{arch.rsplit(':', 1)[1]}"


def given_file(model_cfg: dict) -> str | None:
    """The file of a given (not trained here) model: ``model.checkpoint``, else the path of a
    ``torchscript:``/``export:`` arch; None when the workflow trains the model.

    Args:
        model_cfg: a dataset's ``model`` block.

    Returns:
        The path as written in the config, or None.
    """
    if model_cfg.get("checkpoint"):
        return str(model_cfg["checkpoint"])
    kind, _, target = str(model_cfg.get("arch", "vgg_small")).partition(":")
    return target if kind in SERIALIZED_SOURCES and target else None


# ----------------------------------------------------------------------------------------------
# Natural corruptions (the torch-free facts the config checks and the workflow's job list need;
# the transforms themselves are :data:`oncorobust.evaluation.corruptions.CORRUPTIONS`, which
# checks at import that it agrees with :data:`CORRUPTION_KINDS`)
# ----------------------------------------------------------------------------------------------

#: the imaging modalities corruptions are chosen for; ``control`` = natural-image control sets
MODALITIES: tuple[str, ...] = ("ct", "mammo", "mri", "control")
#: result name of a corruption: ``results/{ds}/attacks/{regime}/corrupt_{name}/severity={s}.csv``
CORRUPT_PREFIX = "corrupt_"
#: grey levels per [0,1] of the array sources (their ε × levels = grey levels of the stored data)
ARRAY_LEVELS: dict[str, float] = {"digits": 16.0, "mnist": 255.0, "cifar10": 255.0}


@dataclass(frozen=True)
class CorruptionKind:
    """What the config and the job list need to know of one natural corruption.

    Attributes:
        name: registry key (``corrupt_{name}`` in result paths).
        modalities: where it makes physical sense (a subset of :data:`MODALITIES`).
        severities: the five default severities, mildest first (stored-unit ones in HU, for CT).
        stored_units: the severity is in stored units (HU on CT, grey levels otherwise).
        fractions: stored-unit corruptions off CT: default severities = these × the stored units
            per [0,1] intensity.
        low, high, low_open, high_open, integer: the valid severity range.
    """

    name: str
    modalities: tuple[str, ...]
    severities: tuple[float, ...]
    low: float
    high: float
    stored_units: bool = False
    fractions: tuple[float, ...] | None = None
    low_open: bool = False
    high_open: bool = False
    integer: bool = False

    def valid(self, severity: float) -> bool:
        """Whether ``severity`` (a finite float) lies in the valid range.

        Args:
            severity: the severity, in this corruption's units (HU on CT for stored-unit ones).
        Returns:
            True when within ``low``/``high`` (open or closed as set) and whole if ``integer``.
        """
        s = float(severity)
        return ((s > self.low if self.low_open else s >= self.low)
                and (s < self.high if self.high_open else s <= self.high)
                and (not self.integer or s == int(s)))

    def valid_range(self) -> str:
        """The valid severity range as text, e.g. ``[1, 100] (whole numbers)`` or ``[0, inf)``.

        Returns:
            The interval in math notation (open ends in parentheses), noting whole numbers if ``integer``.
        """
        lo = f"{'(' if self.low_open else '['}{self.low:g}"
        hi = f"{self.high:g}{')' if self.high_open or self.high == float('inf') else ']'}"
        return f"{lo}, {hi}{' (whole numbers)' if self.integer else ''}"


_INF = float("inf")
_NOISE_FRACTIONS = (0.01, 0.02, 0.04, 0.08, 0.16)
CORRUPTION_KINDS: dict[str, CorruptionKind] = {k.name: k for k in (
    CorruptionKind("gaussian_noise", ("ct", "mammo", "control"), (5.0, 10.0, 20.0, 40.0, 80.0), 0.0, _INF,
                   stored_units=True, fractions=_NOISE_FRACTIONS),
    CorruptionKind("rician_noise", ("mri",), (5.0, 10.0, 20.0, 40.0, 80.0), 0.0, _INF,
                   stored_units=True, fractions=_NOISE_FRACTIONS),
    CorruptionKind("gaussian_blur", MODALITIES, (1.0, 1.5, 2.0, 3.0, 4.0), 0.0, _INF),
    CorruptionKind("contrast", MODALITIES, (0.8, 0.6, 0.4, 0.3, 0.2), 0.0, _INF),
    CorruptionKind("window_shift", ("ct", "mammo"), (10.0, 25.0, 50.0, 100.0, 200.0), -_INF, _INF,
                   stored_units=True, fractions=(0.01, 0.025, 0.05, 0.1, 0.2), low_open=True),
    CorruptionKind("bias_field", ("mri",), (0.05, 0.1, 0.2, 0.3, 0.5), 0.0, _INF),
    CorruptionKind("gibbs_ringing", ("mri",), (0.4, 0.5, 0.6, 0.7, 0.8), 0.0, 1.0),
    CorruptionKind("kspace_spike", ("mri",), (0.01, 0.02, 0.05, 0.1, 0.2), 0.0, _INF),
    CorruptionKind("motion", ("mri",), (0.5, 1.0, 2.0, 4.0, 8.0), 0.0, _INF),
    CorruptionKind("ghosting", ("mri",), (0.2, 0.4, 0.6, 0.8, 1.0), 0.0, 1.0),
    CorruptionKind("downsample", MODALITIES, (1.5, 2.0, 3.0, 4.0, 6.0), 1.0, _INF),
    CorruptionKind("jpeg", MODALITIES, (75.0, 50.0, 30.0, 15.0, 7.0), 1.0, 100.0, integer=True),
    CorruptionKind("jpeg2000", ("ct", "mammo", "mri"), (45.0, 40.0, 35.0, 30.0, 25.0), 0.0, 100.0, low_open=True),
)}
CORRUPTION_NAMES: tuple[str, ...] = tuple(CORRUPTION_KINDS)

#: what runs when a dataset's ``corruptions.names`` is not given: a small set per modality
#: (ImageNet-C / MedMNIST-C style families: noise, blur, an intensity change, compression or an
#: MR artefact) at :data:`DEFAULT_SEVERITY_PICKS` of the five default severities
DEFAULT_CORRUPTION_SETS: dict[str | None, tuple[str, ...]] = {
    "ct": ("gaussian_noise", "gaussian_blur", "window_shift", "jpeg"),
    "mammo": ("gaussian_noise", "gaussian_blur", "contrast", "jpeg"),
    "mri": ("rician_noise", "gaussian_blur", "bias_field", "gibbs_ringing"),
    "control": ("gaussian_noise", "gaussian_blur", "contrast"),
    None: ("gaussian_blur", "contrast", "jpeg"),  # modality unknown: what applies to every modality
}
#: the default severities run: mildest, middle and most severe of the five
DEFAULT_SEVERITY_PICKS: tuple[int, ...] = (0, 2, 4)
#: ``paper_dataset`` → modality
PAPER_MODALITY: dict[str, str] = {"ct": "ct", "mammogram": "mammo", "mri": "mri", "mnist": "control",
                                  "cifar10": "control"}
#: ``source.format`` → modality, where the format says it
FORMAT_MODALITY: dict[str, str] = {"lidc": "ct", "cbis_ddsm": "mammo", "digits": "control", "mnist": "control",
                                   "cifar10": "control"}


def dataset_modality(entry: dict) -> str | None:
    """A dataset's modality: ``corruptions.modality`` if given, else from ``paper_dataset``, else
    from ``source.format`` (lidc → ct, cbis_ddsm → mammo, arrays → control); None when unknown
    (``manifest`` / ``folder`` sources without either).

    Args:
        entry: the dataset's config block (``corruptions``, ``paper_dataset``, ``source`` read).
    Returns:
        ``ct``, ``mammo``, ``mri``, ``control`` (or the given ``corruptions.modality``), or None.
    """
    given = (entry.get("corruptions") or {}).get("modality")
    if given:
        return str(given)
    paper = entry.get("paper_dataset")
    if paper in PAPER_MODALITY:
        return PAPER_MODALITY[paper]
    return FORMAT_MODALITY.get((entry.get("source") or {}).get("format"))


def corruption_method(name: str) -> str:
    """The result name of a corruption: ``gaussian_noise`` → ``corrupt_gaussian_noise``.

    Args:
        name: the corruption's registry name (not checked).
    Returns:
        ``corrupt_`` + ``name``.
    """
    return f"{CORRUPT_PREFIX}{name}"


def severity_str(severity: float) -> str:
    """The canonical text of a severity in file names (20.0 → '20', 0.05 → '0.05').

    Args:
        severity: the severity, in its corruption's units (e.g. HU for CT noise).
    Returns:
        ``f"{float(severity):g}"``.
    """
    return f"{float(severity):g}"
