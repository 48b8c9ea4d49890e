"""Every public function and method of the package is documented: a docstring, and an ``Args:``
section when it takes parameters (the project's convention, as MONAI's: one line per parameter,
with units and shapes). nn.Module overrides (``forward``, ``train``, ``extra_repr``) need only a
docstring. Read from the source (ast): no import, no torch."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "src" / "oncorobust"
#: torch.nn.Module methods a subclass overrides: their contract is torch's
MODULE_OVERRIDES = {"forward", "train", "extra_repr"}


def _public_functions(tree: ast.Module):
    """(name, node) of module-level public functions and of public methods of public classes."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and not node.name.startswith("_"):
            yield node.name, node
        elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and not item.name.startswith("_"):
                    yield f"{node.name}.{item.name}", item


def _params(fn: ast.FunctionDef) -> list[str]:
    args = fn.args.posonlyargs + fn.args.args + fn.args.kwonlyargs
    return [a.arg for a in args if a.arg not in ("self", "cls")]


def audit(root: Path = PACKAGE) -> tuple[list[str], list[str]]:
    """(functions without a docstring, functions with parameters but no ``Args:``) under ``root``."""
    missing, no_args = [], []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name, fn in _public_functions(tree):
            where = f"{path.relative_to(root)}:{fn.lineno} {name}"
            doc = ast.get_docstring(fn)
            if not doc:
                missing.append(where)
            elif _params(fn) and "Args:" not in doc and name.split(".")[-1] not in MODULE_OVERRIDES:
                no_args.append(where)
    return missing, no_args


def test_every_public_function_has_a_docstring_with_args():
    missing, no_args = audit()
    assert not missing, "public functions without a docstring:\n" + "\n".join(missing)
    assert not no_args, "public functions whose docstring has no Args: section:\n" + "\n".join(no_args)


def test_the_audit_can_fail(tmp_path):
    (tmp_path / "m.py").write_text(
        "def documented(x):\n    '''Doc.\n\n    Args:\n        x: a value.\n    '''\n\n"
        "def bare(x):\n    return x\n\n"
        "def no_args(x, y):\n    '''Doc without sections.'''\n\n"
        "def _private(x):\n    return x\n\n"
        "class Net:\n    def forward(self, x):\n        '''Logits.'''\n\n    def helper(self, x):\n        return x\n")
    missing, no_args = audit(tmp_path)
    assert [m.split()[-1] for m in missing] == ["bare", "Net.helper"]
    assert [m.split()[-1] for m in no_args] == ["no_args"]


def _private_uses(path: Path) -> list[str]:
    """Private names of other oncorobust modules that ``path`` uses: ``from oncorobust.x import _y``
    (or a relative import) and ``alias._y`` where ``alias`` was imported from the package."""
    tree = ast.parse(path.read_text(), str(path))
    aliases, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("oncorobust")):
            for a in node.names:
                if a.name.startswith("_") and not a.name.startswith("__"):
                    found.append(f"from {node.module} import {a.name}")
                aliases.add(a.asname or a.name)
        elif isinstance(node, ast.Import):
            aliases |= {a.asname or a.name.split(".")[0] for a in node.names if a.name.startswith("oncorobust")}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name) and node.value.id in aliases):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def test_no_module_uses_another_modules_private_names(tmp_path):
    """A private name stays inside its module (internals move freely); the package and the workflow
    scripts use only public names of each other. The check itself finds both forms."""
    probe = tmp_path / "probe.py"
    probe.write_text("from oncorobust.reporting import figures as F\nfrom .x import _y\nF._style()\n")
    assert _private_uses(probe) == ["from x import _y", "F._style"]
    files = [*(REPO / "src" / "oncorobust").rglob("*.py"), *(REPO / "workflow" / "scripts").glob("*.py")]
    bad = {f.relative_to(REPO).as_posix(): u for f in files if (u := _private_uses(f))}
    assert not bad, bad
