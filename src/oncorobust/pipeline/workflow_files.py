"""Where the Snakemake workflow is (no Snakemake import).

The workflow (``Snakefile``, ``rules/``, ``scripts/``, ``schemas/``, ``report/``, ``envs/``) lives at
the root of a source checkout as ``workflow/``. A wheel carries a copy of it inside the package as
``oncorobust/workflow/`` (setup.py's build step copies it), so that ``oncorobust audit`` runs from
any directory after ``pip install``. An editable install (``pip install -e .``) runs from ``src/``
and uses the checkout's own ``workflow/``.
"""

from __future__ import annotations

import os
from importlib import resources
from pathlib import Path

from oncorobust.errors import OncorobustError

#: the environment variable naming a workflow (its Snakefile, its folder or a checkout's root)
ENV_VAR = "ONCOROBUST_WORKFLOW"
#: the config schema, relative to the Snakefile's folder
SCHEMA = Path("schemas") / "config.schema.yaml"


def _given(value: str | os.PathLike) -> Path:
    """The Snakefile a user named: the file itself, a workflow folder, or a checkout's root."""
    p = Path(value).expanduser()
    if p.is_dir():
        return p / "Snakefile" if (p / "Snakefile").is_file() else p / "workflow" / "Snakefile"
    return p


def checkout_snakefile() -> Path:
    """The Snakefile of the source checkout this module would run from (``<root>/workflow/``).

    Returns:
        ``<checkout>/workflow/Snakefile`` when this module is ``<checkout>/src/oncorobust/…``; for an
        installed package the path names a folder next to site-packages that normally does not
        exist (the caller checks).
    """
    return Path(__file__).resolve().parents[3] / "workflow" / "Snakefile"  # src/oncorobust/pipeline/ -> root


def packaged_snakefile() -> Path | None:
    """The Snakefile of the workflow copy shipped inside the installed package.

    Returns:
        ``<site-packages>/oncorobust/workflow/Snakefile`` as a file-system path, or None when the
        package carries no copy (an editable install or a source tree) or is not on a file system
        (e.g. imported from a zip, where Snakemake could not read it).
    """
    try:
        res = resources.files("oncorobust") / "workflow" / "Snakefile"
    except (ModuleNotFoundError, TypeError):  # pragma: no cover - oncorobust is importable here
        return None
    if not isinstance(res, Path):  # a zip or other non-file-system loader
        return None
    return res if res.is_file() else None


def snakefile_candidates(given: str | os.PathLike | None = None) -> list[Path]:
    """The places :func:`find_snakefile` looks at, in its order, without duplicates.

    Args:
        given: an explicit Snakefile, workflow folder or checkout root (``--snakefile``), or None.

    Returns:
        The candidate Snakefile paths, first match wins (they may not exist).
    """
    candidates: list[Path] = []
    for value in (given, os.environ.get(ENV_VAR)):
        if value:
            candidates.append(_given(value))
            break
    candidates.append(checkout_snakefile())
    packaged = packaged_snakefile()
    if packaged is not None:
        candidates.append(packaged)
    candidates.append(Path.cwd() / "workflow" / "Snakefile")
    return list(dict.fromkeys(candidates))


def find_snakefile(given: str | os.PathLike | None = None) -> Path:
    """The workflow's Snakefile, found in this order (the first that exists wins):

    1. ``given`` (``--snakefile``): the Snakefile, its folder or a checkout's root; else
       ``$ONCOROBUST_WORKFLOW`` (same forms);
    2. the source checkout this package runs from (``<checkout>/workflow/Snakefile``: an editable
       install or ``PYTHONPATH=src``);
    3. the copy shipped inside the installed package (``oncorobust/workflow/Snakefile`` of a wheel,
       ``importlib.resources.files("oncorobust") / "workflow" / "Snakefile"``);
    4. ``./workflow/Snakefile`` in the working directory.

    Args:
        given: an explicit Snakefile, workflow folder or checkout root, or None.

    Returns:
        The Snakefile's absolute path (its folder holds ``rules/``, ``scripts/``, ``schemas/``, …).

    Raises:
        OncorobustError: none of the candidates exists; the message lists the paths tried.
    """
    candidates = snakefile_candidates(given)
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise OncorobustError("the oncorobust workflow (workflow/Snakefile) was not found: reinstall the"
                          " package from a wheel or a checkout (pip install oncorobust / pip install .),"
                          " run from a clone of the repository, or give --snakefile / set"
                          f" {ENV_VAR} to its workflow folder (looked at {[str(c) for c in candidates]})")


def schema_file(snakefile: str | os.PathLike | None = None) -> Path:
    """The config schema of a workflow (``schemas/config.schema.yaml`` next to its Snakefile).

    Args:
        snakefile: the workflow's Snakefile (default: :func:`find_snakefile` ``()``).

    Returns:
        The schema's absolute path.

    Raises:
        OncorobustError: no workflow is found, or its folder has no schema (an incomplete copy).
    """
    snakefile = Path(snakefile) if snakefile is not None else find_snakefile()
    schema = snakefile.resolve().parent / SCHEMA
    if not schema.is_file():
        raise OncorobustError(f"the workflow next to {snakefile} has no {SCHEMA.as_posix()}: an incomplete"
                              " copy of the workflow folder; reinstall oncorobust or point --snakefile /"
                              f" {ENV_VAR} at a complete workflow folder")
    return schema
