"""A short hash of the package code a workflow script runs (no Snakemake import).

Snakemake's code rerun trigger sees only the file named by a rule's ``script:`` directive, so an
edit of ``src/oncorobust/attacks/methods.py`` would rerun nothing. :func:`code_version` follows the
script's imports of ``oncorobust`` modules transitively (``import oncorobust.x``,
``from oncorobust.x import …``, ``from oncorobust import x`` and, inside the package, relative
imports such as ``from .x import …`` or ``from ..errors import …``; imports inside functions
count too), hashes the code of every module reached (and of the package ``__init__`` files
that importing it runs), and the workflow passes the result as the rule parameter ``code``: an
edit of the code of any of those files changes the parameter, and Snakemake's params trigger
reruns the rule's jobs. Modules outside the package (torch, numpy, …) are not followed.

What is hashed is each module's syntax tree without docstrings (:func:`code_text`): comments,
docstrings, blank lines and line breaks do not enter it, so documenting the code reruns nothing,
while any change of what runs (a constant, a default, an expression) does. The tree's text is
that of the running Python's ``ast`` module; a new Python minor version may change it (and rerun
the jobs once).

Presentation never enters the rerun key of a job that runs a model or reads data. A module may
declare, as a literal, ``__rerun_exempt__ = {"fields": {class: (field, …)}, "names": (name, …)}``:
the fields of its registry dataclasses and the module-level names that only the tables, figures
and cards read (:mod:`oncorobust.spec`: the labels, colours, strength order and cost model of
each attack). For every script not in :data:`REPORTING_SCRIPTS`, those fields' values in the
calls that build the entries and in the class definitions are blanked, and those names'
definitions dropped, before hashing: a label or colour edit reruns only the reporting jobs, while
an edit of anything else in the module (a family, a flag, a function) reruns every job that
imports it. ``tests/test_reruns.py`` checks that no module a non-reporting script reaches reads
an exempt field or name.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import os
from pathlib import Path

PACKAGE = "oncorobust"
#: the workflow scripts that make tables, figures, cards and the report: they hash the whole of
#: every module, presentation included (the rest hash it without ``__rerun_exempt__``)
REPORTING_SCRIPTS = frozenset({"attack_tables", "cards", "corruption_tables", "deferral_tables", "figures",
                               "health_table", "regimes_table", "robustness"})


def _module_file(package_dir: Path, parts: list[str]) -> Path | None:
    """The file of module ``package.<parts>`` (a .py file or a sub-package's __init__.py)."""
    base = package_dir.joinpath(*parts) if parts else package_dir
    if parts and base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    return None


def _with_parents(parts: list[str]) -> list[list[str]]:
    """``parts`` and every enclosing package (importing a.b.c runs a/__init__ and a/b/__init__)."""
    return [parts[:i] for i in range(len(parts) + 1)]


def _imported(tree: ast.AST, current: list[str] | None, is_package: bool) -> list[list[str]]:
    """Module paths (relative to the package, as lists of parts) that ``tree`` imports.

    ``current``: the module's own parts inside the package (None for a script outside it), used
    to resolve relative imports; ``is_package``: the module is an ``__init__.py``.
    """
    found: list[list[str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names = alias.name.split(".")
                if names[0] == PACKAGE:
                    found.append(names[1:])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                names = (node.module or "").split(".")
                if names[0] != PACKAGE:
                    continue
                base = names[1:]
            else:
                if current is None:
                    continue  # a relative import in a script: not ours
                here = current if is_package else current[:-1]
                up = node.level - 1
                if up > len(here):
                    continue
                base = here[: len(here) - up] + ((node.module or "").split(".") if node.module else [])
            found.append(base)
            # `from pkg import name`: name may be a submodule
            found += [base + [alias.name] for alias in node.names if alias.name != "*"]
    return found


def _imports_of(path: Path, parts: list[str] | None, is_pkg: bool) -> list[list[str]]:
    """:func:`_imported` of one file, parsed once per version of the file (the workflow follows the
    same modules from every one of its scripts)."""
    st = path.stat()
    found = _imports_cached(str(path.resolve()), st.st_mtime_ns, st.st_size,
                            None if parts is None else tuple(parts), is_pkg)
    return [list(m) for m in found]


@functools.lru_cache(maxsize=None)
def _imports_cached(path: str, mtime_ns: int, size: int, parts: tuple[str, ...] | None,
                    is_pkg: bool) -> tuple[tuple[str, ...], ...]:
    tree = ast.parse(Path(path).read_bytes(), filename=path)
    return tuple(tuple(m) for m in _imported(tree, None if parts is None else list(parts), is_pkg))


def module_files(script: str | os.PathLike, package_dir: str | os.PathLike | None = None) -> list[Path]:
    """Every file of the package that ``script`` imports, directly or through other modules,
    sorted; the package ``__init__`` files on the way are included.

    Args:
        script: the Python file (a workflow script or a module) whose imports are followed.
        package_dir: the ``oncorobust`` package directory; default: the one this module is in.
    Returns:
        Sorted paths of the package files reached (``script`` itself only if it imports itself).
    Raises:
        OSError: ``script`` or a reached file cannot be read.
        SyntaxError: one of them does not parse.
    """
    package_dir = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]  # the package, above pipeline/
    todo: list[tuple[Path, list[str] | None, bool]] = [(Path(script), None, False)]
    seen: set[Path] = set()
    files: set[Path] = set()
    while todo:
        path, parts, is_pkg = todo.pop()
        for mod in _imports_of(path, parts, is_pkg):
            for sub in _with_parents(mod):
                f = _module_file(package_dir, sub)
                if f is None or f in seen:
                    continue
                seen.add(f)
                files.add(f)
                todo.append((f, sub, f.name == "__init__.py"))
    return sorted(files)


def _strip_docstrings(tree: ast.AST) -> ast.AST:
    """``tree`` with the docstring of the module and of every class and function removed (in place)."""
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if (body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
    return tree


def code_text(path: str | os.PathLike, exempt: bool = False) -> bytes:
    """What :func:`code_version` hashes of one module: its syntax tree without docstrings, dumped
    without positions (comments, docstrings and layout do not enter it).

    Args:
        path: a Python source file.
        exempt: blank what the module's ``__rerun_exempt__`` declares (see the module docstring).
    Returns:
        ``ast.dump`` of the stripped tree, UTF-8 encoded.
    Raises:
        OSError: the file cannot be read.
        SyntaxError: it does not parse.
        ValueError: ``__rerun_exempt__`` is not a literal.
    """
    p = Path(path)
    st = p.stat()
    return _code_text(str(p.resolve()), st.st_mtime_ns, st.st_size, bool(exempt))


def rerun_exempt(tree: ast.Module) -> dict:
    """The module's ``__rerun_exempt__`` literal (``{}`` when it declares none).

    Args:
        tree: the module's parsed syntax tree.
    Returns:
        ``{"fields": {class name: field names}, "names": module-level names}`` (keys optional).
    Raises:
        ValueError: the assignment is not a literal.
    """
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__rerun_exempt__"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    return {}


def _defined(node: ast.stmt) -> set[str]:
    """Names a module-level statement defines (assignments, functions, classes)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return {t.id for t in targets if isinstance(t, ast.Name)}


def _blank_exempt(tree: ast.Module, exempt: dict) -> ast.Module:
    """``tree`` with ``exempt``'s fields blanked in every call building those classes (positional
    or keyword) and in the class bodies, its names' definitions removed and its tables emptied
    (in place)."""
    drop = {c: set(f) for c, f in (exempt.get("fields") or {}).items()}
    names = set(exempt.get("names") or ())
    tables = set(exempt.get("tables") or ())
    for node in tree.body:  # a registry table's entries reach each job as its ``registry`` param
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and _defined(node) & tables:
            node.value = ast.Dict(keys=[], values=[])
    order: dict[str, list[str]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name in drop:
            order[node.name] = [st.target.id for st in node.body
                                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name)]
            for st in node.body:
                if isinstance(st, ast.AnnAssign) and isinstance(st.target, ast.Name) \
                        and st.target.id in drop[node.name] and st.value is not None:
                    st.value = ast.Constant(None)
    tree.body = [n for n in tree.body if not _defined(n) & names]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in order:
            fields, gone = order[node.func.id], drop[node.func.id]
            node.args = [ast.Constant(None) if i < len(fields) and fields[i] in gone else a
                         for i, a in enumerate(node.args)]
            for kw in node.keywords:
                if kw.arg in gone:
                    kw.value = ast.Constant(None)
    return tree


@functools.lru_cache(maxsize=None)
def _code_text(path: str, mtime_ns: int, size: int, exempt: bool = False) -> bytes:
    """:func:`code_text` of one version of a file (its modification time and size key the cache:
    the workflow hashes the same modules for many scripts)."""
    source = Path(path).read_bytes()
    if exempt and b"__rerun_exempt__" not in source:
        return _code_text(path, mtime_ns, size, False)  # nothing to leave out: the same text, computed once
    tree = _strip_docstrings(ast.parse(source, filename=path))
    if exempt:
        tree = _blank_exempt(tree, rerun_exempt(tree))
    return ast.dump(tree, include_attributes=False).encode()


@functools.lru_cache(maxsize=None)
def _cached(script: str, package_dir: str, length: int, exempt: bool) -> str:
    pkg = Path(package_dir)
    h = hashlib.sha256()
    for f in module_files(script, pkg):
        h.update(f.relative_to(pkg).as_posix().encode() + b"\0" + code_text(f, exempt) + b"\0")
    return h.hexdigest()[:length]


def code_version(script: str | os.PathLike, package_dir: str | os.PathLike | None = None,
                 length: int = 12, exempt: bool | None = None) -> str:
    """A short hash of the code of every ``oncorobust`` module ``script`` imports, transitively.

    Computed once per (script, package) in a process (the workflow calls it at load time). File
    paths enter the hash relative to the package, so two checkouts of the same code agree.

    Args:
        script: the Python file (a workflow script) whose imports are followed.
        package_dir: the ``oncorobust`` package directory; default: the one this module is in.
        length: number of hex digits kept of the SHA-256.
        exempt: leave out what the modules' ``__rerun_exempt__`` declares (presentation); default:
            yes unless the script's name is in :data:`REPORTING_SCRIPTS`.
    Returns:
        The first ``length`` hex digits of the SHA-256 over the reached files' relative paths and
        :func:`code_text` (their code without docstrings and comments).
    Raises:
        OSError: ``script`` or a reached file cannot be read.
        SyntaxError: one of them does not parse.
    """
    package_dir = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]  # the package, above pipeline/
    if exempt is None:
        exempt = Path(script).stem not in REPORTING_SCRIPTS
    return _cached(str(Path(script).resolve()), str(package_dir.resolve()), length, bool(exempt))


def module_version(module: str, package_dir: str | os.PathLike | None = None, length: int = 12) -> str:
    """A short hash of one module's code and of every package module it imports, transitively.

    Args:
        module: a dotted module name, e.g. ``oncorobust.attacks.methods`` (a module outside the
            package is located with :func:`importlib.util.find_spec`, which may import its parents).
        package_dir: the ``oncorobust`` package directory; default: the one this module is in.
        length: number of hex digits kept.
    Returns:
        The hex digest, or ``""`` when the module's source cannot be found.
    """
    import importlib.util

    package_dir = Path(package_dir) if package_dir else Path(__file__).resolve().parents[1]
    parts = module.split(".")
    path = _module_file(package_dir, parts[1:]) if parts[0] == PACKAGE else None
    if path is None and parts[0] != PACKAGE:
        try:
            found = importlib.util.find_spec(module)
        except (ImportError, ValueError):
            found = None
        path = Path(found.origin) if found is not None and found.origin and found.origin.endswith(".py") else None
    if path is None:
        return ""
    h = hashlib.sha256(code_text(path) + b"\0" + code_version(path, package_dir, length).encode())
    return h.hexdigest()[:length]


def registry_key(methods=(), regimes=(), *, method_defaults: bool = True,
                 package_dir: str | os.PathLike | None = None) -> dict:
    """The registry entries a job reads, as the job's ``registry`` param (its rerun key's share of
    :mod:`oncorobust.spec`, whose tables every non-reporting script's code hash leaves out).

    Args:
        methods: method names (of :data:`oncorobust.spec.METHODS`) the job runs or reads.
        regimes: regime names (of :data:`oncorobust.spec.REGIMES`, replicates stripped).
        method_defaults: keep the methods' defaults (False for a job that passes every parameter
            explicitly, as training does for its PGD).
        package_dir: the package whose code the entries' ``run`` modules are hashed in.
    Returns:
        ``{"methods": {name: entry + "code"}, "regimes": {name: entry}}`` with names sorted;
        ``code`` is :func:`module_version` of the module of the method's ``run``.
    """
    from oncorobust import spec

    out: dict = {}
    if methods:
        out["methods"] = {m: {**spec.entry_params(spec.METHODS[m], method_defaults),
                              "code": module_version(spec.METHODS[m].run.partition(":")[0], package_dir)}
                          for m in sorted(set(methods))}
    if regimes:
        out["regimes"] = {r: spec.entry_params(spec.REGIMES[r]) for r in sorted(set(regimes))}
    return out
