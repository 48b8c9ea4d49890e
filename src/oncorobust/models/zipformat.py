"""TorchScript archives and ``torch.export`` programs (``.pt2``): file-format sniffing that needs no
torch import (the command line uses it before loading torch), and :func:`export_archive_problems`,
the check that loading a ``.pt2`` file runs none of its content as code (it imports torch when
called)."""

from __future__ import annotations

import ast
import io
import json
import os
import posixpath
import re
import zipfile
from pathlib import Path


def is_torchscript(path: str | Path) -> bool:
    """Whether ``path`` is a TorchScript archive (a zip holding ``constants.pkl`` or ``code/``),
    as opposed to a pickled state dict; False for anything unreadable.

    Args:
        path: the file.

    Returns:
        True for a TorchScript archive.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.endswith("/constants.pkl") or "/code/" in n for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def is_exported_program(path: str | Path) -> bool:
    """Whether ``path`` is a ``torch.export`` program saved with ``torch.export.save`` (a ``.pt2``
    zip holding ``archive_format`` and ``models/*.json``); False for anything unreadable.

    Args:
        path: the file.

    Returns:
        True for a ``torch.export`` program.
    """
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/archive_format") for n in names) and any("/models/" in n and n.endswith(".json")
                                                                     for n in names)


# ----------------------------------------------------------------------------------------------
# What torch.export.load would run: checked before it is called
# ----------------------------------------------------------------------------------------------

#: Members of a ``.pt2`` archive (relative to its root folder) that torch reads as text or JSON.
_PT2_TEXT = ("archive_format", "archive_version", "byteorder", "version")
#: Where ``torch.export.load`` finds each part of a program in a ``.pt2`` archive (torch 2.6+).
_PT2_WEIGHTS, _PT2_CONSTANTS, _PT2_AOTI = "data/weights/", "data/constants/", "data/aotinductor/"
#: Members of the pre-2.8 ``torch.export`` zip (top level) that torch reads as JSON.
_LEGACY_PROGRAM = "serialized_exported_program.json"
#: The ``torch.export`` 2.7 format's tensor files, read with an unrestricted fallback.
_LEGACY_ARTIFACTS = ("serialized_state_dict.pt", "serialized_state_dict.json", "serialized_constants.pt",
                     "serialized_constants.json", "serialized_example_inputs.pt")
#: Methods and functions a shape guard of an exported program may call (torch's guard printer).
_GUARD_METHODS = frozenset({"size", "stride", "storage_offset", "dim", "numel"})
_GUARD_CALLS = frozenset({"int", "float", "abs", "min", "max", "round", "bool",
                          "IsNonOverlappingAndDenseIndicator", "cast_symbool_to_symint_guardless"})
_GUARD_MODULE_CALLS = {"math": frozenset({"floor", "ceil", "trunc", "isnan", "isinf", "sqrt", "log2", "pow"}),
                       "torch": frozenset({"sym_max", "sym_min", "sym_sum", "sym_float", "sym_int", "sym_not",
                                           "sym_ite", "sym_sqrt"})}
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
#: Characters that would end a string literal or a line of the guard code torch compiles.
_UNSAFE_CHARS = ("'", '"', "\\", "\n", "\r")
#: Constant arguments of a serialized graph, pasted into its guard code as ``L[...] == <value>``
#: when they are program inputs; the value types each may hold in a program torch wrote.
_CONSTANT_ARGS = {"as_int": (int,), "as_bool": (bool,), "as_float": (int, float, str), "as_string": (str,),
                  "as_ints": (list,), "as_bools": (list,), "as_floats": (list,), "as_strings": (list,)}
#: What to do about a refused ``.pt2`` file.
REEXPORT_HINT = ("re-export it with plain tensor example inputs: torch.export.save(torch.export.export("
                 "model.eval(), (torch.rand(1, C, H, W),)), 'model.pt2')")


def _weights_only_problem(data: bytes, inputs: bool = False) -> str | None:
    """Why ``data`` does not load under ``torch.load(weights_only=True)`` (None when it does); for
    sample inputs (``inputs``) also why their names could not be pasted into guard code."""
    import warnings  # noqa: PLC0415

    import torch  # noqa: PLC0415 (sniffing above must not import torch)

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            loaded = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 (the weights-only unpickler raises several kinds)
        text = " ".join(str(exc).split())
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if found:
            return f"it holds the Python object {found.group(1)}"
        if "WeightsUnpickler error:" in text:
            text = text.split("WeightsUnpickler error:", 1)[1].strip()
        return f"it is not a file of plain tensors ({type(exc).__name__}: {text[:100]})"
    return _inputs_problem(loaded) if inputs else None


def _inputs_problem(obj) -> str | None:
    """Why sample inputs hold a name or string that torch could not paste safely into the guard
    code it compiles (input names become code there): a key that is no identifier, a string
    with quotes or line breaks."""
    stack, seen = [obj], 0
    while stack and seen < 100_000:
        item, seen = stack.pop(), seen + 1
        if isinstance(item, dict):
            for key, value in item.items():
                if not (isinstance(key, int) or isinstance(key, str) and _IDENTIFIER.match(key)):
                    return f"its input name {str(key)[:60]!r} is no Python identifier"
                stack.append(value)
        elif isinstance(item, (list, tuple, set)):
            stack.extend(item)
        elif isinstance(item, str) and any(c in item for c in _UNSAFE_CHARS):
            return f"its string input {item[:60]!r} holds quotes or line breaks"
    return None


def _constant_node_ok(node: ast.AST, strings_ok: bool) -> bool:
    """A literal a guard or a symbolic size may hold: a number, True/False/None, or a name-like string."""
    value = node.value
    if isinstance(value, str):
        return strings_ok and bool(_IDENTIFIER.match(value))
    return value is None or isinstance(value, (bool, int, float))


_OPERATOR_NODES = (ast.Expression, ast.Load, ast.BinOp, ast.UnaryOp, ast.Compare, ast.BoolOp, ast.operator,
                   ast.unaryop, ast.cmpop, ast.boolop)


def _sympy_name(name: str):
    """What ``name`` means to ``sympy.sympify`` in torch's deserializer: sympy's namespace, then
    torch's sympy functions; None when it names neither (sympify makes it a Symbol)."""
    import sympy  # noqa: PLC0415
    import torch.utils._sympy.functions as torch_sympy  # noqa: PLC0415

    return getattr(torch_sympy, name, None) if getattr(sympy, name, None) is None else getattr(sympy, name)


def _is_sympy_basic(obj) -> bool:
    """A sympy expression class (``Integer``, ``Mul``, ``FloorDiv``, ...) or value (``oo``, ``true``)."""
    import sympy  # noqa: PLC0415

    return isinstance(obj, sympy.Basic) or (isinstance(obj, type) and issubclass(obj, sympy.Basic))


def _sym_expr_problem(text: str) -> str | None:
    """Why a symbolic size expression (``expr_str``, given to ``sympy.sympify``, which evaluates
    it as Python) is not a plain sympy expression; None when it is."""
    import builtins  # noqa: PLC0415

    if not isinstance(text, str) or len(text) > 10_000:
        return "not a short string"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return "not a sympy expression"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            if not (isinstance(node.func, ast.Name) and _is_sympy_basic(_sympy_name(node.func.id))):
                return f"it calls {ast.unparse(node.func)[:60]}, not a sympy constructor"
            if any(k.arg is None or not isinstance(k.value, ast.Constant) for k in node.keywords):
                return "a call with computed keyword arguments"
        elif isinstance(node, ast.Name):
            if node.id.startswith("_"):
                return f"the name {node.id}"
            if node.id in ("True", "False", "None"):
                continue
            meaning = _sympy_name(node.id)
            if meaning is None and hasattr(builtins, node.id) or meaning is not None and not _is_sympy_basic(meaning):
                return f"the name {node.id} (not a sympy expression)"
        elif isinstance(node, ast.Constant):
            if not _constant_node_ok(node, strings_ok=True):
                return "a string that is no symbol name"
        elif not isinstance(node, (*_OPERATOR_NODES, ast.keyword, ast.Tuple)):
            return f"Python syntax ({type(node).__name__}) that is no sympy expression"
    return None


def _guard_problem(text: str) -> str | None:
    """Why a shape guard (``guards_code``, compiled into the program's module by ``exec``) is not
    a plain comparison of input sizes; None when it is."""
    if not isinstance(text, str) or len(text) > 10_000 or any(c in text for c in "\n\r#\"\\;"):
        return "not a one-line expression"
    try:
        tree = ast.parse(text, mode="eval")
    except (SyntaxError, ValueError):
        return "not a Python expression"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            if node.keywords:
                return "a call with keyword arguments"
            if isinstance(func, ast.Name) and func.id in _GUARD_CALLS:
                continue
            if isinstance(func, ast.Attribute):
                owner = func.value
                if func.attr in _GUARD_METHODS and not isinstance(owner, ast.Name):
                    continue
                if isinstance(owner, ast.Name) and func.attr in _GUARD_MODULE_CALLS.get(owner.id, ()):
                    continue
            return f"it calls {ast.unparse(func)[:60]}"
        if isinstance(node, ast.Attribute):
            ok = (node.attr in _GUARD_METHODS or (isinstance(node.value, ast.Name)
                                                  and node.attr in _GUARD_MODULE_CALLS.get(node.value.id, ()))
                  or (isinstance(node.value, ast.Name) and node.value.id == "math" and node.attr in ("inf", "pi")))
            if not ok:
                return f"the attribute {node.attr}"
        elif isinstance(node, ast.Name):
            if node.id not in ("L", "math", "torch", "inf", *_GUARD_CALLS):
                return f"the name {node.id}"
        elif isinstance(node, ast.Constant):
            if not _constant_node_ok(node, strings_ok=True):
                return "a string that is no input name"
        elif not isinstance(node, (*_OPERATOR_NODES, ast.Subscript, ast.Slice)):
            return f"Python syntax ({type(node).__name__}) that is no shape comparison"
    return None


def _program_problems(data: bytes) -> list[str]:
    """Why a program's JSON (``models/<name>.json``) would run code: its shape guards
    (``guards_code``) and symbolic sizes (every ``expr_str``) are evaluated as Python by torch."""
    try:
        program = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return []  # torch cannot parse it either: the load fails without running anything
    problems: list[str] = []
    guards = program.get("guards_code") if isinstance(program, dict) else None
    for guard in guards if isinstance(guards, list) else ([] if guards is None else [guards]):
        why = _guard_problem(guard)
        if why:
            problems.append(f"its shape guard {str(guard)[:80]!r} is not a plain size comparison ({why}),"
                            " and torch.export compiles the guards as Python code")
    stack = [program]
    while stack and len(problems) < 5:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                if key == "expr_str":
                    why = _sym_expr_problem(value)
                    if why:
                        problems.append(f"its symbolic size {str(value)[:80]!r} is not a sympy expression ({why}),"
                                        " and torch.export evaluates it as Python (sympy.sympify)")
                elif key in _CONSTANT_ARGS:
                    why = _constant_arg_problem(key, value)
                    if why:
                        problems.append(f"its constant {key} {str(value)[:80]!r} {why}, and torch.export pastes"
                                        " constant inputs into the guard code it compiles")
                else:
                    stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)
    return problems


def _constant_arg_problem(key: str, value) -> str | None:
    """Why a serialized constant (``as_int``, ``as_string``, ...) is not what torch writes there."""
    values = value if isinstance(value, list) and key.endswith("s") else [value]
    kinds = _CONSTANT_ARGS[key[:-1] if key.endswith("s") and isinstance(value, list) else key]
    for v in values:
        if not isinstance(v, kinds) or (isinstance(v, bool) and bool not in kinds):
            return f"is a {type(v).__name__}"
        if isinstance(v, str) and (any(c in v for c in _UNSAFE_CHARS)
                                   or key.startswith("as_float") and v not in ("Infinity", "-Infinity", "NaN")):
            return "holds quotes or line breaks" if key.startswith("as_string") else "is no number"
    return None


def _payloads(data: bytes, folder: str) -> tuple[set[str], set[str], dict[str, str]]:
    """A weights/constants config's members, as lower-cased paths relative to the archive root
    joined as torch joins them (``folder`` + ``path_name``): (read as raw bytes, unpickled,
    {member: why it is refused outright} for TorchBind and opaque-object constants)."""
    raw: set[str] = set()
    pickled: set[str] = set()
    refused: dict[str, str] = {}
    try:
        items = list(json.loads(data)["config"].items())
    except (ValueError, UnicodeDecodeError, KeyError, TypeError, AttributeError):
        return raw, pickled, refused  # unparsable: torch fails too, and no payload is exempted
    for fqn, meta in items:
        if not isinstance(meta, dict) or not isinstance(meta.get("path_name"), str):
            continue
        name = meta["path_name"]
        member = posixpath.join(folder, name).lower()
        if folder == _PT2_CONSTANTS and name.startswith(("custom_obj_", "opaque_obj_")):
            kind = "a TorchBind object" if name.startswith("custom_obj_") else "a pickled Python object"
            refused[member] = (f"the constant {fqn} is {kind}, which torch.export.load unpickles without"
                               " restriction: it would run code on load")
        elif meta.get("use_pickle") or (folder == _PT2_CONSTANTS and not name.startswith("tensor_")):
            pickled.add(member)
        else:
            raw.add(member)
    return raw, pickled, refused


def _root_problems(zf: zipfile.ZipFile, inside: dict[str, str]) -> list[str]:
    """:func:`export_archive_problems` for the members under one root folder ({relative: name})."""
    problems: list[str] = []
    raw: set[str] = set()
    pickled: set[str] = set()
    refused: dict[str, str] = {}
    for rel, name in inside.items():  # the configs first: which payloads are read as raw bytes
        low = rel.lower()
        for folder, suffix in ((_PT2_WEIGHTS, "_weights_config.json"), (_PT2_CONSTANTS, "_constants_config.json")):
            if low.startswith(folder) and low.endswith(suffix):
                r, p, why = _payloads(zf.read(name), folder)
                raw, pickled, refused = raw | r, pickled | p, {**refused, **why}
    for rel, name in inside.items():
        low = rel.lower()
        config = low.startswith((_PT2_WEIGHTS, _PT2_CONSTANTS)) and low.endswith("_config.json")
        if low in refused:
            problems.append(f"{name}: {refused[low]}")
        elif low.startswith(_PT2_AOTI):
            problems.append(f"{name}: compiled AOTInductor code, which torch.export.load runs as native"
                            " code; give the program without it (torch.export.save, not aoti_compile_and_package)")
        elif low.startswith("models/"):
            problems += [f"{name}: {why}" for why in _program_problems(zf.read(name))]
        elif low in pickled or not (low in _PT2_TEXT or low.startswith((".data/", "extra/")) or low in raw or config):
            why = _weights_only_problem(zf.read(name), inputs=low.startswith("data/sample_inputs/"))
            if why:
                problems.append(f"{name}: {why}, which torch.export.load would unpickle without"
                                " restriction: it would run code on load")
    return problems


def export_archive_problems(source: str | os.PathLike | bytes) -> list[str]:
    """Why ``torch.export.load(source)`` could run code: one line per member at fault; empty when
    it is safe to call.

    ``torch.export.load`` unpickles parts of a ``.pt2`` archive without restriction: its sample
    inputs and ``serialized_*`` files when they are not plain tensors (a fallback after
    ``weights_only=True`` fails, pytorch/pytorch#153410), weights and constants saved as pickles
    (``torch.load(weights_only=False)``) and TorchBind/opaque constants (``pickle.loads``); it
    evaluates the program's symbolic sizes with ``sympy.sympify`` and compiles its shape guards,
    with its constant inputs and input names pasted in, with ``exec``; an AOTInductor package
    loads native code. This check reads the archive as torch does (members relative to their
    top-level folder, names compared without case; two members of one name are refused) and
    finds each of these: every member torch would unpickle must load under
    ``torch.load(weights_only=True)``, the symbolic sizes must be sympy expressions, the guards
    plain comparisons of input sizes, the constants of the types torch writes (strings without
    quotes or line breaks), the input names identifiers, and no AOTInductor code may be present.
    A file that is no zip at all gives no problem here (torch refuses it without unpickling
    anything).

    Args:
        source: the ``.pt2`` file, or its bytes.

    Returns:
        ``"<member>: <why>"`` lines, empty when loading runs no code of the file.
    """
    try:
        zf = zipfile.ZipFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else source)
    except (zipfile.BadZipFile, OSError, ValueError):
        return []
    with zf:
        names = [info.filename for info in zf.infolist()]
        if not names:
            return []
        seen: dict[str, str] = {}
        for name in names:
            if name.lower() in seen:
                alike = "" if seen[name.lower()] == name else f" (and {seen[name.lower()]})"
                return [f"{name}: the archive holds two members of this name{alike}; torch reads only one of"
                        " them, this check could read the other"]
            seen[name.lower()] = name
        problems: list[str] = []
        # torch reads the members under one root folder (the first member's); check under each
        for root in dict.fromkeys(n.split("/", 1)[0].lower() + "/" for n in names if "/" in n):
            problems += _root_problems(zf, {n[len(root):]: n for n in names if n.lower().startswith(root)})
        if "version" in seen:  # the torch 2.7 format, read from the top level by name
            for name in names:
                if name == _LEGACY_PROGRAM:
                    problems += [f"{name}: {why}" for why in _program_problems(zf.read(name))]
                elif name in _LEGACY_ARTIFACTS:
                    why = _weights_only_problem(zf.read(name), inputs=name == "serialized_example_inputs.pt")
                    if why:
                        problems.append(f"{name}: {why}, which torch.export.load would unpickle without"
                                        " restriction: it would run code on load")
    return list(dict.fromkeys(problems))
