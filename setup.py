"""Build step that ships the Snakemake workflow inside the package (all metadata is in pyproject.toml).

The workflow lives at the repository root (``workflow/``: the README, the Makefile, the tests and
``snakemake`` run from the checkout use it there). A wheel (``pip install .``, ``pip wheel .``,
``python -m build``) gets a copy of it as ``oncorobust/workflow/`` so that ``oncorobust audit``
finds it after a non-editable install (``oncorobust.pipeline.workflow_files.find_snakefile``). An editable
install (``pip install -e .``) copies nothing: the package then runs from ``src/`` and finds the
checkout's own ``workflow/``. The sdist carries ``workflow/`` through MANIFEST.in, so a wheel built
from it gets the same copy.
"""

from __future__ import annotations

import os
import shutil

from setuptools import setup
from setuptools.command.build_py import build_py as _build_py

HERE = os.path.dirname(os.path.abspath(__file__))
WORKFLOW = os.path.join(HERE, "workflow")
#: never shipped: caches a run from the checkout may leave next to the workflow files
SKIP = shutil.ignore_patterns("__pycache__", "*.py[cod]", ".snakemake", ".DS_Store", "*~")


class build_py(_build_py):
    """``build_py`` that also copies ``workflow/`` to ``<build_lib>/oncorobust/workflow/``."""

    def _workflow_target(self) -> str:
        return os.path.join(self.build_lib, "oncorobust", "workflow")

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return  # editable: the package runs from src/ and uses the checkout's workflow/
        if not os.path.isfile(os.path.join(WORKFLOW, "Snakefile")):
            raise SystemExit(f"oncorobust build: {WORKFLOW}/Snakefile not found: build from a checkout"
                             " of the repository or from its sdist (MANIFEST.in grafts workflow/)")
        target = self._workflow_target()
        if os.path.isdir(target):
            shutil.rmtree(target)  # a stale build/ must not ship files deleted since
        shutil.copytree(WORKFLOW, target, ignore=SKIP)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        outputs = list(super().get_outputs(include_bytecode))
        target = self._workflow_target()
        if not getattr(self, "editable_mode", False) and os.path.isdir(target):
            for root, _dirs, files in os.walk(target):
                outputs += [os.path.join(root, f) for f in files]
        return outputs


setup(cmdclass={"build_py": build_py})
