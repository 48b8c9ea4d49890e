"""Checks on a workflow config: readable schema errors, and what JSON Schema cannot express.

``validate_config`` runs first (before Snakemake's own ``validate``, which fills the defaults but
reports a violation inside a dump of the whole schema); ``check_config`` then checks the
constraints that involve more than one key, or the working directory. Both raise
:class:`~oncorobust.errors.ConfigError` naming the key path and what to do, with the wording of
:mod:`oncorobust.checks` (``check_choice``, ``check_fraction``), which the library's public
functions use to validate their own arguments.
"""

from __future__ import annotations

import difflib
import math
import os
from pathlib import Path

from oncorobust.epsilon import eps_key, parse_fraction, same_eps
from oncorobust.checks import ON_BAD_FILE, check_choice, check_fraction
from oncorobust.errors import ConfigError
from oncorobust.spec import (ADVERSARIAL_REGIMES, BUILT_SOURCES, MEMBER_METHODS, METHOD_NAMES, METHODS, MODEL_SOURCES,
                             arch_source, given_file)
from oncorobust.spec import (ARRAY_LEVELS, CORRUPTION_KINDS, CORRUPTION_NAMES, DEFAULT_CORRUPTION_SETS,
                             DEFAULT_SEVERITY_PICKS, MODALITIES, dataset_modality, severity_str)

SYNTHETIC_FORMATS = {"lidc", "cbis_ddsm", "manifest"}
_NEEDS = {"lidc": "root", "cbis_ddsm": "root", "manifest": "manifest", "folder": "root", "mnist": "root",
          "cifar10": "root"}
def _short(text: str, limit: int = 100) -> str:
    """``text`` cut to ``limit`` characters (a whole sub-config is not dumped into a message)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key_path(parts) -> str:
    return ".".join(str(p) for p in parts) or "(top level)"


def _as_number(value: object) -> float | None:
    """``value`` as a float when it is a string that reads as a number (YAML's ``1e-3``), else None."""
    if not isinstance(value, str):
        return None
    try:
        return float(value.strip())
    except ValueError:
        return None


def _yaml_float_text(value: str) -> str:
    """How to write the number ``value`` (a string such as ``1e-3``) so that YAML reads a number:
    PyYAML (YAML 1.1) needs a dot in the mantissa and a sign in the exponent (``1.0e-3``)."""
    text = value.strip()
    mantissa, _, exponent = text.lower().partition("e")
    if exponent:
        if "." not in mantissa:
            mantissa += ".0"
        if exponent[0] not in "+-":
            exponent = "+" + exponent
        return f"{mantissa}e{exponent}"
    return f"{float(text)!r}"


def _numeric_string_hint(err) -> str:
    """For a type error on a string that reads as a number: the hint to write it as one."""
    if err.validator != "type" or _as_number(err.instance) is None:
        return ""
    wanted = err.validator_value if isinstance(err.validator_value, str) else "number"
    if wanted not in ("number", "integer") and not (isinstance(err.validator_value, list)
                                                    and {"number", "integer"} & set(err.validator_value)):
        return ""
    return (f"; YAML read {err.instance!r} as a string (PyYAML needs a dot and a signed exponent in a"
            f" number): write {_yaml_float_text(err.instance)}")


# ------------------------------------------------------------------------- strict YAML loading


def yaml_duplicate_keys(path: str | os.PathLike) -> list[tuple[str, str, int, int]]:
    """The keys that a YAML file gives twice in one mapping (PyYAML keeps the last silently).

    Args:
        path: a YAML (or JSON) config file.

    Returns:
        ``(key path of the mapping, key, first line, second line)`` per duplicate, lines 1-based;
        ``<<`` merge keys are not duplicates. Empty when the file is not YAML (e.g. JSON with
        tabs): its loader reports that.
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as fh:
            root = yaml.compose(fh, Loader=yaml.SafeLoader)
    except (yaml.YAMLError, UnicodeDecodeError):
        return []
    found: list[tuple[str, str, int, int]] = []
    seen_nodes: set[int] = set()

    def walk(node, parts: tuple) -> None:
        if node is None or id(node) in seen_nodes:
            return
        seen_nodes.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    walk(value_node, parts)
                    continue
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                line = key_node.start_mark.line + 1
                if key is not None:
                    if key in first:
                        found.append((_key_path(parts), str(key), first[key], line))
                    else:
                        first[key] = line
                walk(value_node, parts + (key if key is not None else "?",))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                walk(item, parts[:-1] + (f"{parts[-1]}[{i}]",) if parts else (f"[{i}]",))

    walk(root, ())
    return found


def check_yaml_files(paths) -> None:
    """Refuse config files that give a key twice in one mapping.

    YAML loaders (PyYAML, and so Snakemake's ``configfile:`` / ``--configfile``) keep the last of
    two equal keys silently, e.g. a second ``attack:`` block replacing the first. Call this with
    the files the config was loaded from (in a Snakefile: ``workflow.configfiles``).

    Args:
        paths: the config files (str or Path); files that do not exist are ignored.

    Raises:
        ConfigError: naming the file, the key (with its key path) and both line numbers.
    """
    problems = []
    for path in paths or []:
        if not Path(path).is_file():
            continue
        for where, key, first, second in yaml_duplicate_keys(path):
            inside = "" if where == "(top level)" else f" inside {where}"
            problems.append(f"{path}: key {key!r}{inside} is given twice, on lines {first} and {second};"
                            " YAML would keep only the second silently. Merge the two into one")
    if problems:
        raise ConfigError("\n".join(problems))


def load_yaml(path: str | os.PathLike):
    """Load a YAML config file with PyYAML's safe loader, refusing duplicate keys.

    Args:
        path: the file.

    Returns:
        The loaded object (None for an empty file).

    Raises:
        ConfigError: a key is given twice in one mapping (naming the key and both lines), or the
            file is not valid YAML (naming the line).
    """
    import yaml

    check_yaml_files([path])
    try:
        with open(path, encoding="utf-8") as fh:
            return yaml.safe_load(fh)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}: {getattr(exc, 'problem', None) or exc}") from None


#: what each ``x-registry`` marker of the schema stands for (:func:`with_registry`)
REGISTRY_ENUMS = {"methods": METHOD_NAMES, "member_methods": MEMBER_METHODS, "adversarial_regimes": ADVERSARIAL_REGIMES}
_JSON_TYPES = ((bool, "boolean"), (int, "integer"), (float, "number"), (str, "string"), (list, "array"),
               (dict, "object"))


def _param_schema(value) -> dict:
    """The JSON Schema of one registry default: its JSON type (an int default accepts whole numbers only)."""
    return {"type": next(name for t, name in _JSON_TYPES if isinstance(value, t))}


def with_registry(schema: dict) -> dict:
    """The schema with the registry filled in where it says ``x-registry``.

    ``methods``, ``member_methods`` and ``adversarial_regimes`` become the enums of
    :data:`oncorobust.spec.METHOD_NAMES`, :data:`~oncorobust.spec.MEMBER_METHODS` and
    :data:`~oncorobust.spec.ADVERSARIAL_REGIMES`; ``method_params`` (the ``attacks`` block) gains a
    block for every method without one, typed from its defaults and aliases, and refuses any other
    key. So adding a method to the registry needs no schema edit (the file's enum-free spelling is
    what Snakemake's own ``validate`` sees).

    Args:
        schema: the loaded schema (changed in place).
    Returns:
        ``schema``.
    """
    def walk(node):
        if isinstance(node, dict):
            mark = node.get("x-registry")
            if mark in REGISTRY_ENUMS:
                node["enum"] = list(REGISTRY_ENUMS[mark])
            elif mark == "method_params":
                props = node.setdefault("properties", {})
                for name, method in METHODS.items():
                    if name not in props:
                        params = {k: _param_schema(v) for k, v in method.defaults.items()}
                        params.update({a: {"type": "number"} for a in method.aliases})
                        props[name] = {"type": "object", "additionalProperties": False, "default": {},
                                       "properties": params, "x-generated": True}
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def _fill_registry_defaults(config: dict, schema: dict) -> None:
    """The defaults of the ``attacks`` blocks :func:`with_registry` generated (Snakemake's
    ``validate`` fills those of the file's blocks)."""
    attacks = config.setdefault("attacks", {})
    blocks = schema.get("properties", {}).get("attacks", {}).get("properties", {})
    for name, block in blocks.items():
        if block.get("x-generated"):
            attacks[name] = {**METHODS[name].defaults, **(attacks.get(name) or {})}


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
        schema = with_registry(yaml.safe_load(fh))
    cls = jsonschema.validators.validator_for(schema)
    errors = sorted(cls(schema).iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path])
    if not errors:
        _fill_registry_defaults(config, schema)
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
            lines.append(f"{where} = {_short(repr(err.instance))}: {_short(err.message)}"
                         + _numeric_string_hint(err))
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
        raise ConfigError(f"{key}.attack.methods is empty: list at least one of {', '.join(METHOD_NAMES)}"
                          " (the tables and figures need attack results), or remove the key for the"
                          " default methods")
    _check_eps(key, att)
    if "eps" in att and not any(same_eps(e, att.get("reference_eps", 0.002)) for e in att["eps"]):
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
    if size is not None and int(size) > MAX_SIZE:
        mib = int(size) ** 2 * 4 / 2**20
        raise ConfigError(f"{key}.preprocess.size = {size}: each image would be a {size}x{size} float32 tensor"
                          f" ({mib:,.0f} MiB per channel, {mib * 1000 / 1024:,.0f} GiB per thousand images in"
                          f" tensors/*.pt, more in every attack's memory); at most {MAX_SIZE} px is accepted."
                          " Lesion classifiers use crops of 32-512 px: give a size your model takes")
    if arch == "vgg16" and size is not None and int(size) < 32:
        raise ConfigError(f"{key}.preprocess.size = {size}: model.arch vgg16 needs at least 32 px"
                          " (five 2x poolings); raise the size or use arch vgg_small")
    if arch == "vgg_small" and model.get("pretrained", "none") != "none":
        raise ConfigError(f"{key}.model.pretrained = {model['pretrained']!r}: vgg_small has no"
                          " pretrained weights; set model.pretrained: none or model.arch: vgg16")
    classes = [str(c).strip().lower() for c in src.get("classes", [])]
    pos = entry.get("positive_class")
    if pos is not None and classes and str(pos).strip().lower() not in classes:
        raise ConfigError(f"{key}.positive_class = {pos!r} is not one of source.classes {src['classes']}; give"
                          " the class whose miss is the harm (e.g. malignant), compared case-insensitively")
    dup = sorted({c for c in classes if classes.count(c) > 1})
    if dup:
        raise ConfigError(f"{key}.source.classes = {src['classes']}: {dup} listed twice (names are"
                          " compared case-insensitively); give each class once")
    label = src.get("label", {})
    hi, lo = float(label.get("malignant_above", 3)), float(label.get("benign_below", 3))
    if lo > hi:
        raise ConfigError(f"{key}.source.label.benign_below = {lo:g} is above label.malignant_above ="
                          f" {hi:g}: a rating in between would be both benign and malignant")


def _eps_value(value: object, key: str) -> float:
    """One ε as a float: a finite number in (0, 1] (pixel units), else a ConfigError naming ``key``."""
    if parse_fraction(value) is not None:
        value = parse_fraction(value)
    if isinstance(value, str) and _as_number(value) is not None:
        raise ConfigError(f"{key} = {value!r} is a string, not a number: YAML reads it so (PyYAML needs a"
                          f" dot and a signed exponent); write {_yaml_float_text(value)}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} = {value!r} is not a number: give an L-inf budget in (0, 1], e.g. 0.002 or"
                          " \"8/255\" (a fraction, quoted)")
    eps = float(value)
    if not math.isfinite(eps) or not 0 < eps <= 1:
        raise ConfigError(f"{key} = {value!r}: an ε must be a finite number in (0, 1] (pixel units of"
                          " the [0, 1] images), e.g. 0.002")
    return eps


def _check_eps(key: str, att: dict) -> None:
    """``attack.eps`` and ``attack.reference_eps``: finite, in (0, 1], and no two ε that are the same
    budget (:func:`oncorobust.epsilon.same_eps`: their results would be one file or indistinguishable)."""
    seen: list[tuple[int, float]] = []
    for i, value in enumerate(att.get("eps") or []):
        eps = _eps_value(value, f"{key}.attack.eps[{i}]")
        for j, other in seen:
            if same_eps(eps, other):
                raise ConfigError(f"{key}.attack.eps: {other!r} (item {j}) and {eps!r} (item {i}) are the same"
                                  f" budget (result file eps={eps_key(eps)}.csv); list each ε once")
        seen.append((i, eps))
    if "reference_eps" in att:
        _eps_value(att["reference_eps"], f"{key}.attack.reference_eps")


def _check_model_source(key: str, entry: dict) -> None:
    """Given models (model.checkpoint / torchscript:) vs trained ones: train, adversarial
    regimes, model.input, model.pretrained."""
    model = entry.get("model", {})
    arch = str(model.get("arch", "vgg_small"))
    kind = arch_source(arch)
    given = given_file(model)
    if given and int(entry.get("replicates", 1)) > 1:
        raise ConfigError(f"{key}.replicates = {entry['replicates']}: the model is given ({given}), not"
                          " trained here, so there is nothing to replicate; remove the key (or train"
                          " the architecture here by removing model.checkpoint)")
    spec = model.get("input") or {}
    mode = spec.get("normalize", "dataset")
    if mode == "custom" and not (spec.get("mean") and spec.get("std")):
        raise ConfigError(f"{key}.model.input.normalize: custom needs model.input.mean and model.input.std")
    if mode != "custom" and (spec.get("mean") or spec.get("std")):
        raise ConfigError(f"{key}.model.input.mean/std are given but model.input.normalize is {mode!r};"
                          " set normalize: custom to use them")
    if spec.get("mean") and spec.get("std") and len(spec["mean"]) != len(spec["std"]):
        raise ConfigError(f"{key}.model.input: {len(spec['mean'])} mean values but {len(spec['std'])} std values")
    if kind in MODEL_SOURCES and model.get("pretrained", "none") != "none":
        raise ConfigError(f"{key}.model.pretrained = {model['pretrained']!r}: {arch} is built with random"
                          " weights (nothing is downloaded); give a state dict as model.weights (initial"
                          " weights) or model.checkpoint (a trained model) and set pretrained: none")
    if model.get("checkpoint"):
        if kind not in BUILT_SOURCES:
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
    if str(model.get("output", "auto")) not in ("auto", "logits"):
        raise ConfigError(f"{key}.model.output = {model['output']!r} describes a given model (model.checkpoint,"
                          " torchscript: or export:); a model trained here returns logits: remove the key")
    if "train" not in entry:
        raise ConfigError(f"{key}.train is required: the workflow trains model.arch {arch}; give a train"
                          " block (batch_size, epochs, lr), or model.checkpoint for a trained model")
    if mode != "dataset" or spec.get("channels"):
        raise ConfigError(f"{key}.model.input describes a given model (model.checkpoint or"
                          " torchscript:); a model trained here normalises its inputs with the"
                          " train-set mean/std and takes the data's channels: remove model.input")


#: The source and model keys that hold a path (``~`` is expanded in them, as the shell and the CLI do).
PATH_KEYS = {"source": ("root", "xml_root", "csv_root", "manifest"), "model": ("checkpoint", "weights")}

#: Prefixes of ``model.arch`` that name a file (``torchscript:~/m.pt``, ``python:~/nets.py:make``).
_ARCH_FILE_PREFIXES = ("torchscript:", "export:", "python:")


def expand_user_paths(config: dict) -> dict:
    """Expand a leading ``~`` in every path of the config (in place), as a shell would: ``results``,
    each dataset's ``source`` root/xml_root/csv_root/manifest, ``model`` checkpoint/weights and the
    file of a ``torchscript:``/``export:``/``python:`` arch. YAML does not expand ``~``, so a
    config path ``~/data/LIDC-IDRI`` was read as a folder literally named ``~``.

    Args:
        config: the workflow config (as loaded, before validation).

    Returns:
        The same dict, paths expanded.
    """
    def expand(value):
        return os.path.expanduser(value) if isinstance(value, str) and value.startswith("~") else value

    if "results" in config:
        config["results"] = expand(config["results"])
    for entry in (config.get("datasets") or {}).values():
        if not isinstance(entry, dict):
            continue
        for block, keys in PATH_KEYS.items():
            sub = entry.get(block)
            if isinstance(sub, dict):
                for k in keys:
                    if k in sub:
                        sub[k] = expand(sub[k])
        model = entry.get("model")
        arch = model.get("arch") if isinstance(model, dict) else None
        if isinstance(arch, str):
            for prefix in _ARCH_FILE_PREFIXES:
                if arch.startswith(prefix + "~"):
                    model["arch"] = prefix + os.path.expanduser(arch[len(prefix):])
    return config


#: The largest ``preprocess.size`` accepted (pixels per side). A 2048 px single-channel float32
#: crop is 16 MiB; above it the tensor files and the attacks' memory grow past what a study of
#: thousands of lesions can hold (4096 px: 64 MiB an image, 64 GiB per thousand).
MAX_SIZE = 2048


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
        corruption_plan(ds, entry)  # unknown or modality-inappropriate corruptions, bad severities
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
    """The dataset's source config with root/manifest pointing at generated demo data if synthetic.

    Args:
        config: the workflow config.
        ds: the dataset key in ``config["datasets"]``.

    Returns:
        A copy of ``datasets.<ds>.source``; for a synthetic source ``root`` is
        ``{results}/demo_data/{ds}`` (``manifest`` its ``manifest.csv``), ``xml_root``/``csv_root`` dropped.
    """
    src = dict(config["datasets"][ds]["source"])
    if "synthetic" in src:
        root = f"{config.get('results', 'results')}/demo_data/{ds}"
        src["root"] = root
        src.pop("xml_root", None)
        src.pop("csv_root", None)
        if src["format"] == "manifest":
            src["manifest"] = f"{root}/manifest.csv"
    return src


def stored_units_per_pixel(entry: dict) -> float | None:
    """Stored units per [0,1] intensity of a dataset as far as its config says, before any data
    is read: the window width (``intensity.mode: window``), the levels of an array source; None
    when only the data know it (``percentile``: each image's own range; ``bitdepth``).

    Args:
        entry: one ``datasets.<ds>`` block.

    Returns:
        The stored units per [0,1] intensity (e.g. HU per unit for a CT window), or None.
    """
    inten = (entry.get("preprocess") or {}).get("intensity") or {}
    mode = inten.get("mode", "percentile")
    fmt = (entry.get("source") or {}).get("format")
    if mode == "window":
        lo, hi = inten.get("window", [-1350, 150])
        return float(hi) - float(lo)
    if fmt in ARRAY_LEVELS:
        return ARRAY_LEVELS[fmt]
    return None


def _round3(v: float) -> float:
    return float(f"{v:.3g}")


def corruption_plan(ds: str, entry: dict) -> dict[str, list[float]]:
    """The natural corruptions and severities a dataset runs (``datasets.<ds>.corruptions``).

    ``names`` not given: the modality's small default set (:data:`oncorobust.spec.DEFAULT_CORRUPTION_SETS`)
    at its default severities :data:`~oncorobust.spec.DEFAULT_SEVERITY_PICKS` (mildest, middle,
    most severe of five). Stored-unit corruptions (gaussian_noise, rician_noise, window_shift)
    default to HU on CT and to fractions of the stored units per [0,1] elsewhere; where those are
    known only from the data (``intensity.mode`` percentile or bitdepth) they need explicit
    ``severities`` and are left out of the default set. ``names: []`` runs none.

    Args:
        ds: the dataset key (named in messages).
        entry: its ``datasets.<ds>`` block.

    Returns:
        {name: [severity, ...]} in ``names`` order, severities in the corruption's unit.

    Raises:
        ConfigError: naming the key: an unknown corruption name (listing the valid ones), one
            that does not fit the dataset's modality (e.g. bias_field on CT), a severity outside
            its range or two severities with one file name, severities of an unknown corruption, or a
            stored-unit corruption without severities where the units are known only from the data.
    """
    key = f"datasets.{ds}.corruptions"
    block = entry.get("corruptions") or {}
    modality = dataset_modality(entry)
    if modality is not None and modality not in MODALITIES:
        raise ConfigError(f"{key}.modality = {modality!r} is not valid: choose one of {list(MODALITIES)}")
    upp = stored_units_per_pixel(entry)
    given = block.get("severities") or {}
    explicit = block.get("names")
    if explicit is None:
        names = [n for n in DEFAULT_CORRUPTION_SETS[modality]
                 if not (CORRUPTION_KINDS[n].stored_units and modality != "ct" and upp is None and n not in given)]
    else:
        names = list(explicit)
    for i, n in enumerate(names):
        if n not in CORRUPTION_KINDS:
            hint = difflib.get_close_matches(str(n), CORRUPTION_NAMES, n=1)
            raise ConfigError(f"{key}.names[{i}] = {n!r} is not a known corruption"
                              f"{f' (did you mean {hint[0]!r}?)' if hint else ''}: choose from {', '.join(CORRUPTION_NAMES)}")
        kind = CORRUPTION_KINDS[n]
        if modality is not None and modality not in kind.modalities:
            fits = [m for m in CORRUPTION_NAMES if modality in CORRUPTION_KINDS[m].modalities]
            raise ConfigError(f"{key}.names[{i}] = {n!r} does not apply to {modality} images (it is for"
                              f" {', '.join(kind.modalities)}): for {modality} choose from {', '.join(fits)}"
                              " (the modality comes from corruptions.modality, paper_dataset or source.format)")
    if len(set(names)) != len(names):
        raise ConfigError(f"{key}.names = {names}: a corruption listed twice")
    for n in given:  # severities of a known corruption not in names are kept for later (a config
        # merged over another, e.g. paper.yaml over config.yaml, may list fewer names); a typo is not
        if n not in CORRUPTION_KINDS:
            hint = difflib.get_close_matches(str(n), CORRUPTION_NAMES, n=1)
            raise ConfigError(f"{key}.severities.{n}: not a known corruption"
                              f"{f' (did you mean {hint[0]!r}?)' if hint else ''}: choose from {', '.join(CORRUPTION_NAMES)}")
    plan: dict[str, list[float]] = {}
    for n in names:
        kind = CORRUPTION_KINDS[n]
        if n in given:
            sevs = given[n]
            if not isinstance(sevs, (list, tuple)) or not sevs:
                raise ConfigError(f"{key}.severities.{n} = {sevs!r}: give a non-empty list of severities")
            out, seen = [], {}
            for j, v in enumerate(sevs):
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)) \
                        or not kind.valid(v):
                    raise ConfigError(f"{key}.severities.{n}[{j}] = {v!r} is outside {n}'s valid range"
                                      f" {kind.valid_range()}")
                name = severity_str(v)
                if name in seen:
                    raise ConfigError(f"{key}.severities.{n}: {seen[name]!r} and {v!r} give one file name"
                                      f" severity={name}.csv; give severities that differ within 6 significant digits")
                seen[name] = v
                out.append(float(v))
            plan[n] = out
            continue
        if kind.stored_units and modality != "ct":
            if upp is None:
                raise ConfigError(f"{key}.severities.{n} is required: {n}'s severity is in stored units (grey"
                                  f" levels) and datasets.{ds}.preprocess.intensity.mode"
                                  f" {(entry.get('preprocess') or {}).get('intensity', {}).get('mode', 'percentile')}"
                                  " learns the images' range only from the data; give severities in grey levels"
                                  " (tensors/stats.json eps_units.per_eps is the median range)")
            five = [_round3(f * upp) for f in kind.fractions]
        else:
            five = list(kind.severities)
        plan[n] = [five[k] for k in DEFAULT_SEVERITY_PICKS]
    return plan
