"""Checks on a workflow config: readable schema errors, and what JSON Schema cannot express.

``validate_config`` runs first (before Snakemake's own ``validate``, which fills the defaults but
reports a violation inside a dump of the whole schema); ``check_config`` then checks the
constraints that involve more than one key, or the working directory. Both raise
:class:`~oncorobust.errors.ConfigError` naming the key path and what to do. The helpers
``check_choice`` and ``check_fraction`` let the library's public functions validate their own
arguments with the same wording.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

from .errors import ConfigError

SYNTHETIC_FORMATS = {"lidc", "cbis_ddsm", "manifest"}
_NEEDS = {"lidc": "root", "cbis_ddsm": "root", "manifest": "manifest", "folder": "root", "mnist": "root",
          "cifar10": "root"}
_NEW_SOURCES = ("torchvision", "monai", "python", "torchscript")
ON_BAD_FILE = ("skip", "error")


def check_choice(value: object, allowed: tuple[str, ...] | list[str], key: str) -> None:
    """Raise ConfigError unless ``value`` is one of ``allowed``.

    Args:
        value: the configured value.
        allowed: the valid values.
        key: the config key path named in the message (e.g. ``on_bad_file``).

    Raises:
        ConfigError: naming ``key``, the bad value and the valid ones.
    """
    if value not in allowed:
        raise ConfigError(f"{key} = {value!r} is not valid: choose one of {list(allowed)}")


def check_fraction(value: object, key: str) -> float:
    """``value`` as a float strictly between 0 and 1, else a ConfigError naming ``key``.

    Args:
        value: the configured fraction.
        key: the config key path named in the message (e.g. ``datasets.ct.split.test_fraction``).

    Returns:
        The fraction as a float.

    Raises:
        ConfigError: when ``value`` is not a number in (0, 1).
    """
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ConfigError(f"{key} = {value!r} is not a number: give a fraction between 0 and 1") from None
    if not (0 < f < 1) or math.isnan(f):
        raise ConfigError(f"{key} = {value!r} must lie strictly between 0 and 1 (a fraction of the"
                          " patients); e.g. 0.33")
    return f


def _short(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters (a whole sub-config is not dumped into a message)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def validate_config(config: dict, schema_path: str | os.PathLike) -> None:
    """Validate ``config`` against the JSON Schema file; one line per violation.

    Unlike Snakemake's ``validate`` (which the workflow still calls afterwards, to fill defaults),
    the message names each offending key path, what was expected and, for an unknown key, the
    closest valid key.

    Args:
        config: the workflow config as loaded (defaults not yet filled).
        schema_path: the YAML (or JSON) schema, ``workflow/schemas/config.schema.yaml``.

    Raises:
        ConfigError: listing every violation, one per line.
    """
    import jsonschema
    import yaml

    with open(schema_path) as fh:
        schema = yaml.safe_load(fh)
    cls = jsonschema.validators.validator_for(schema)
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        return
    lines = []
    for err in errors:
        where = _key_path(err.absolute_path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            known = list(err.schema.get("properties", {}))
            extra = [k for k in err.instance if k not in known]
            hints = []
            for k in extra:
                close = difflib.get_close_matches(str(k), known, n=1)
                hints.append(f"{k!r}: did you mean {close[0]!r}?" if close
                             else f"{k!r}: valid keys are {known}")
            lines.append(f"{where}: {err.message}; " + "; ".join(hints))
        elif err.validator == "required":
            lines.append(f"{where}: {err.message} (see config/README.md)")
        else:
            lines.append(f"{where} = {_short(repr(err.instance))}: {_short(err.message)}")
    raise ConfigError(f"the config does not match {Path(schema_path).name} ({len(lines)} problem(s)):\n  "
                      + "\n  ".join(lines))


def _check_results(config: dict, workdir: str | os.PathLike | None) -> None:
    """The ``results`` folder must lie inside the working directory (Snakemake's lock), whether
    given absolute or relative: ``..`` and symlinks are resolved before the check."""
    results = Path(str(config.get("results", "results")))
    cwd = Path(workdir if workdir is not None else os.getcwd()).resolve()
    where = results.resolve() if results.is_absolute() else (cwd / results).resolve()
    if not where.is_relative_to(cwd):
        shown = str(results) if str(results) == str(where) else f"{results} (resolved: {where})"
        raise ConfigError(
            f"results = {shown} lies outside the working directory {cwd}. Snakemake's lock covers"
            " only its working directory, so two runs with different --directory could write the"
            " same results at once. Use a relative results path inside it (no '..', no symlink"
            f" leading out), or run snakemake with --directory at a parent of {where}.")


def _check_dataset(ds: str, entry: dict) -> None:
    """Cross-key constraints of one dataset entry (each a ConfigError naming the key path)."""
    key = f"datasets.{ds}"
    src = entry["source"]
    adv = entry.get("adversarial_training", {})
    if adv.get("regimes"):
        missing = [k for k in ("eps", "step", "epochs") if k not in adv]
        if missing:
            raise ConfigError(f"{key}.adversarial_training needs {missing} when regimes"
                              f" {adv['regimes']} are listed")
    att = entry.get("attack", {})
    if "methods" in att and not att["methods"]:
        from .attacks import METHODS  # here only: attacks imports torch

        raise ConfigError(f"{key}.attack.methods is empty: list at least one of {', '.join(METHODS)}"
                          " (the tables and figures need attack results), or remove the key for the"
                          " default methods")
    if "eps" in att and not any(abs(e - att.get("reference_eps", 0.002)) < 1e-12 for e in att["eps"]):
        raise ConfigError(f"{key}.attack.reference_eps = {att.get('reference_eps', 0.002)}"
                          f" is not one of attack.eps {att['eps']}")
    sens = entry.get("sensitivity", {})
    tol, eps_max = float(sens.get("tol", 1e-5)), float(sens.get("eps_max", 0.02))
    if tol >= eps_max:
        raise ConfigError(f"{key}.sensitivity.tol = {tol:g} is not smaller than sensitivity.eps_max ="
                          f" {eps_max:g}: the bisection could not narrow anything; make tol much"
                          " smaller (e.g. eps_max / 1000)")
    split = entry.get("split", {})
    for name in ("test_fraction", "val_fraction"):
        if name in split:
            check_fraction(split[name], f"{key}.split.{name}")
    prep = entry.get("preprocess", {})
    inten = prep.get("intensity", {})
    for name in ("window", "percentiles"):
        pair = inten.get(name)
        if pair is not None and len(pair) == 2 and not float(pair[0]) < float(pair[1]):
            raise ConfigError(f"{key}.preprocess.intensity.{name} = {list(pair)}: the low value must be"
                              " below the high one (otherwise every image becomes all zeros)")
    model = entry.get("model", {})
    _check_model_source(key, entry)
    arch, size = model.get("arch", "vgg_small"), prep.get("size")
    if arch == "vgg16" and size is not None and int(size) < 32:
        raise ConfigError(f"{key}.preprocess.size = {size}: model.arch vgg16 needs at least 32 px"
                          " (five 2x poolings); raise the size or use arch vgg_small")
    if arch == "vgg_small" and model.get("pretrained", "none") != "none":
        raise ConfigError(f"{key}.model.pretrained = {model['pretrained']!r}: vgg_small has no"
                          " pretrained weights; set model.pretrained: none or model.arch: vgg16")
    classes = [str(c).strip().lower() for c in src.get("classes", [])]
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise ConfigError(f"{key}.source.classes = {src['classes']}: {dup} listed twice (names are"
                          " compared case-insensitively); give each class once")
    label = src.get("label", {})
    hi, lo = float(label.get("malignant_above", 3)), float(label.get("benign_below", 3))
    if lo > hi:
        raise ConfigError(f"{key}.source.label.benign_below = {lo:g} is above label.malignant_above ="
                          f" {hi:g}: a rating in between would be both benign and malignant")


def given_model_file(model: dict) -> str | None:
    """The file of a dataset's given model (``model.checkpoint``, or a ``torchscript:`` arch's
    path), None when the workflow trains it."""
    if model.get("checkpoint"):
        return str(model["checkpoint"])
    kind, _, target = str(model.get("arch", "vgg_small")).partition(":")
    return target if kind == "torchscript" and target else None


def _check_model_source(key: str, entry: dict) -> None:
    """Given models (model.checkpoint / torchscript:) vs trained ones: train, adversarial
    regimes, model.input, model.pretrained."""
    model = entry.get("model", {})
    arch = str(model.get("arch", "vgg_small"))
    kind = arch.partition(":")[0] if ":" in arch else arch
    given = given_model_file(model)
    spec = model.get("input") or {}
    mode = spec.get("normalize", "dataset")
    if mode == "custom" and not (spec.get("mean") and spec.get("std")):
        raise ConfigError(f"{key}.model.input.normalize: custom needs model.input.mean and model.input.std")
    if mode != "custom" and (spec.get("mean") or spec.get("std")):
        raise ConfigError(f"{key}.model.input.mean/std are given but model.input.normalize is {mode!r};"
                          " set normalize: custom to use them")
    if spec.get("mean") and spec.get("std") and len(spec["mean"]) != len(spec["std"]):
        raise ConfigError(f"{key}.model.input: {len(spec['mean'])} mean values but {len(spec['std'])} std values")
    if kind in _NEW_SOURCES and model.get("pretrained", "none") != "none":
        raise ConfigError(f"{key}.model.pretrained = {model['pretrained']!r}: {arch} is built with random"
                          " weights (nothing is downloaded); give a state dict as model.weights (initial"
                          " weights) or model.checkpoint (a trained model) and set pretrained: none")
    if model.get("checkpoint"):
        if kind not in ("torchvision", "monai", "python"):
            raise ConfigError(f"{key}.model.checkpoint is a state dict of the network model.arch names;"
                              f" model.arch = {arch!r} cannot take one: use torchvision:<builder>,"
                              " monai:<Network> or python:<module>:<callable>, or torchscript:<file>"
                              " (without model.checkpoint) for a TorchScript model")
    if given:
        if "train" in entry:
            raise ConfigError(f"{key}.train: the model is given ({given}), so nothing is trained;"
                              " remove the train block (or remove model.checkpoint to train the arch)")
        regimes = entry.get("adversarial_training", {}).get("regimes") or []
        if regimes:
            raise ConfigError(f"{key}.adversarial_training.regimes = {regimes}: the model is given"
                              f" ({given}); adversarial training needs a trainable model. Remove the"
                              " regimes, or train the arch here (no model.checkpoint) to compare them")
        if not Path(given).is_file():
            raise ConfigError(f"{key}.model.{'checkpoint' if model.get('checkpoint') else 'arch'}: {given}:"
                              " no such file (paths are relative to the working directory)")
        return
    if "train" not in entry:
        raise ConfigError(f"{key}.train is required: the workflow trains model.arch {arch}; give a train"
                          " block (batch_size, epochs, lr), or model.checkpoint for a trained model")
    if mode != "dataset" or spec.get("channels"):
        raise ConfigError(f"{key}.model.input describes a given model (model.checkpoint or"
                          " torchscript:); a model trained here normalises its inputs with the"
                          " train-set mean/std and takes the data's channels: remove model.input")


def check_config(config: dict, workdir: str | os.PathLike | None = None) -> None:
    """Check what the schema cannot: sources, cross-key constraints, the results folder.

    Args:
        config: the (schema-validated) workflow config.
        workdir: Snakemake's working directory (default: the current directory, which is what
            ``--directory`` sets).

    Raises:
        ConfigError: naming the key path and what to do, e.g. a negative ``seed``,
            ``datasets.ct.sensitivity.tol`` >= ``eps_max``, a fraction outside (0, 1), an absolute
            ``results`` outside the working directory, or a source without its data path.
    """
    seed = config.get("seed", 0)
    if not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed = {seed!r}: give a non-negative integer (NumPy and scikit-learn"
                          " refuse negative seeds)")
    check_choice(config.get("on_bad_file", "skip"), ON_BAD_FILE, "on_bad_file")
    _check_results(config, workdir)
    for ds, entry in config["datasets"].items():
        _check_dataset(ds, entry)
        src = entry["source"]
        fmt = src["format"]
        key = f"datasets.{ds}.source"
        if "synthetic" in src:
            if fmt not in SYNTHETIC_FORMATS:
                raise ConfigError(f"{key}.synthetic: no synthetic generator for format {fmt!r}"
                                  f" (only {sorted(SYNTHETIC_FORMATS)}); remove the key")
            continue
        need = _NEEDS.get(fmt)
        if need and not src.get(need):
            raise ConfigError(f"{key}.{need} is required for format {fmt!r}: set it to the"
                              " folder/file that holds the data (see config/README.md)")


def resolve_source(config: dict, ds: str) -> dict:
    """The dataset's source config with root/manifest pointing at generated demo data if synthetic."""
    src = dict(config["datasets"][ds]["source"])
    if "synthetic" in src:
        root = f"{config.get('results', 'results')}/demo_data/{ds}"
        src["root"] = root
        src.pop("xml_root", None)
        src.pop("csv_root", None)
        if src["format"] == "manifest":
            src["manifest"] = f"{root}/manifest.csv"
    return src
