"""Shared fixtures: tiny native-format datasets written by the project's own generators."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from oncorobust.data.sources.synthetic import generate


REPO = Path(__file__).resolve().parents[1]


def load_test_config(name: str) -> dict:
    """A config of .test/ (written as a user would, runnable with ``--directory .test``) as a dict,
    without its results folder: the tests run in a temporary working directory with the default
    ``results/``. Test modules import it (``from conftest import load_test_config``)."""
    config = yaml.safe_load((REPO / ".test" / name).read_text())
    config.pop("results", None)
    return config


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """Small synthetic LIDC / CBIS-DDSM / MRI-manifest trees (a few dozen lesions each)."""
    root = tmp_path_factory.mktemp("demo")
    generate("lidc", root / "lidc", n_patients=24, seed=1)
    generate("cbis_ddsm", root / "cbis", n_patients=40, seed=1)
    generate("manifest", root / "mri", n_patients=20, seed=1)
    return root


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``full`` (long end-to-end runs) run only with ``ONCOROBUST_FULL_TESTS=1``:
    ``.ci/run`` sets it, a plain ``make test`` stays within its time budget without them.

    The modules holding ``slow`` tests (workflow runs of minutes) run first, each module's tests
    kept together and in order (module fixtures are set up once per worker): with ``-n 2`` the
    long runs start at once and the short tests fill the other worker, instead of the longest
    run (``test_workflow.py``, last in name order) starting near the end."""
    import os

    slow_modules = {item.module.__name__ for item in items if "slow" in item.keywords and item.module is not None}
    items.sort(key=lambda item: item.module is None or item.module.__name__ not in slow_modules)  # stable
    if os.environ.get("ONCOROBUST_FULL_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="long end-to-end run: set ONCOROBUST_FULL_TESTS=1 (.ci/run does)")
    for item in items:
        if "full" in item.keywords:
            item.add_marker(skip)


#: the model fingerprint test frames are stamped with (no model file beside them: not compared)
TEST_MODEL_FP = "0" * 16


def write_result(df, path, model_fp: str = TEST_MODEL_FP, data_fp: str = "") -> None:
    """Write a per-image result frame as the workflow does (provenance columns appended)."""
    from oncorobust.io import write_result_csv

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_result_csv(df, path, model_fp=model_fp, data_fp=data_fp)


def restamp(path, data_fp: str, model_fp: str = TEST_MODEL_FP) -> None:
    """Re-write a per-image CSV written by :func:`write_result` with other fingerprints (e.g. of a
    test.pt made after it)."""
    import pandas as pd

    from oncorobust.provenance import PROVENANCE_COLUMNS

    df = pd.read_csv(path, dtype={"sample_id": str}).drop(columns=list(PROVENANCE_COLUMNS))
    write_result(df, path, model_fp=model_fp, data_fp=data_fp)
