"""Atomic writes: complete or absent, and readable by the group like any other file."""

import os
import stat

import pandas as pd
import pytest

from oncorobust.io import atomic_path, write_csv


def test_atomic_write_has_the_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        import importlib

        import oncorobust.io as io_mod
        importlib.reload(io_mod)
        io_mod.write_csv(pd.DataFrame({"a": [1]}), tmp_path / "x.csv")
    finally:
        os.umask(old)
        importlib.reload(io_mod)
    assert stat.S_IMODE((tmp_path / "x.csv").stat().st_mode) == 0o644


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError):
        with atomic_path(tmp_path / "y.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    write_csv(pd.DataFrame({"a": [1]}), tmp_path / "z.csv")
    assert [p.name for p in tmp_path.iterdir()] == ["z.csv"]
