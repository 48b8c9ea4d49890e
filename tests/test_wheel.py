"""Where the workflow is found (oncorobust.pipeline.workflow_files), and a wheel of the package, installed
into a fresh virtual environment, auditing a tiny model from a directory outside the repository
without --snakefile (the workflow ships inside the wheel; the slow test).

Nothing is downloaded. The wheel is built from a copy of the packaging files (pyproject.toml,
setup.py, MANIFEST.in, README.md, src/, workflow/) with this environment's setuptools
(``--no-build-isolation --no-index``). The fresh venv (``python -m venv --without-pip``) sees the
dependencies installed here through a .pth line naming an *overlay*: a folder of links to this
environment's site-packages entries minus oncorobust itself (its editable install's dist-info and
.pth) and torchattacks. A .pth line adds a plain path, whose own .pth files are not run, so the
checkout's src/ can not reach the venv's sys.path. The wheel is then installed the way a pip user
does, with its dependencies resolved (all satisfied by the overlay, ``--no-index`` proves that
nothing is fetched), followed by the documented second command for torchattacks (pyproject.toml),
``pip install --no-deps torchattacks==3.5.1``; torchattacks comes from a local wheel made of the
files installed here (offline), so the route's point, that ``--no-deps`` installs it without
requests~=2.25.1, is what is tested.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import time
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
import yaml

from oncorobust.pipeline import workflow_files
from oncorobust.errors import OncorobustError

REPO = Path(__file__).resolve().parents[1]

#: what a wheel is built from (everything else in the checkout stays out of the copy)
PACKAGING = ("pyproject.toml", "setup.py", "MANIFEST.in", "README.md", "src", "workflow")
TORCHATTACKS = "3.5.1"
#: budgets shrunk as in tests/test_audit.py (one fgsm ε, health and sensitivity kept short)
EXTRA = {"attacks": {"health": {"square_queries": 50, "max_images": 32}, "pgd": {"steps": 5}},
         "dataset": {"sensitivity": {"eps_max": 0.05, "tol": 0.005, "steps": 5, "fab_steps": 5}}}


def _env() -> dict[str, str]:
    """The environment of the venv's commands: no PYTHONPATH, no workflow override, pip offline."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "ONCOROBUST_WORKFLOW", "VIRTUAL_ENV", "PYTHONHOME")}
    env["PIP_NO_INDEX"] = "1"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _run(cmd: list, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    out = subprocess.run([str(c) for c in cmd], cwd=cwd, env=_env(), capture_output=True, text=True,
                         timeout=timeout)
    assert out.returncode == 0, f"{cmd}\n{out.stdout[-4000:]}\n{out.stderr[-4000:]}"
    return out


def _build_wheel(tmp: Path) -> Path:
    src = tmp / "src_copy"
    src.mkdir()
    skip = shutil.ignore_patterns("__pycache__", "*.py[cod]", "*.egg-info", ".snakemake")
    for name in PACKAGING:
        p = REPO / name
        (shutil.copytree(p, src / name, ignore=skip) if p.is_dir() else shutil.copy2(p, src / name))
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
          "-w", tmp / "wheels", src], cwd=tmp)
    (wheel,) = (tmp / "wheels").glob("oncorobust-*.whl")
    return wheel


def _overlay(tmp: Path) -> Path:
    """Links to this environment's site-packages entries, less oncorobust and torchattacks."""
    overlay = tmp / "overlay"
    overlay.mkdir()
    hidden = ("oncorobust", "__editable__", "torchattacks", "_virtualenv")
    for d in dict.fromkeys(Path(sysconfig.get_path(k)) for k in ("purelib", "platlib")):
        for entry in d.iterdir():
            if entry.name.lower().startswith(hidden) or entry.suffix == ".pth" or entry.name == "__pycache__":
                continue
            if not (overlay / entry.name).exists():
                (overlay / entry.name).symlink_to(entry)
    return overlay


def _torchattacks_wheel(tmp: Path) -> Path:
    """torchattacks as a wheel, made offline from the files installed here (RECORD rewritten)."""
    dist = metadata.distribution("torchattacks")
    assert dist.version == TORCHATTACKS, f"this environment has torchattacks {dist.version}"
    info = f"torchattacks-{TORCHATTACKS}.dist-info"
    out = tmp / "torchattacks_wheel" / f"torchattacks-{TORCHATTACKS}-py3-none-any.whl"
    out.parent.mkdir()
    record = []
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        for f in dist.files:
            name = f.as_posix()
            if (name.startswith("..") or "__pycache__" in name or name.endswith(".pyc")
                    or name in (f"{info}/{x}" for x in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json"))):
                continue
            data = Path(dist.locate_file(f)).read_bytes()
            zf.writestr(name, data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
            record.append((name, f"sha256={digest}", str(len(data))))
        record.append((f"{info}/RECORD", "", ""))
        buf = io.StringIO()
        csv.writer(buf, lineterminator="\n").writerows(record)
        zf.writestr(f"{info}/RECORD", buf.getvalue())
    return out


def _inputs(root: Path) -> tuple[Path, Path]:
    """A tiny TorchScript CNN (1 channel, 2 logits) and 2×20 16×16 8-bit PNGs in class folders."""
    import torch
    from PIL import Image
    from test_audit import _Tiny  # the audit tests' tiny CNN

    torch.manual_seed(0)
    model = root / "tiny.ts"
    torch.jit.script(_Tiny().eval()).save(str(model))
    rng = np.random.default_rng(0)
    data = root / "png"
    yy, xx = np.mgrid[:16, :16]
    for c, cls in enumerate(["benign", "malignant"]):
        (data / cls).mkdir(parents=True)
        for i in range(20):
            r = 3 + 2.5 * c + rng.normal(0, 0.5)
            img = 60 + 120 * (((yy - 8) ** 2 + (xx - 8) ** 2) < r * r) + rng.normal(0, 15, (16, 16))
            Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(data / cls / f"{cls}_{i:02d}.png")
    return model, data


def _workflow(root: Path) -> Path:
    (root / "schemas").mkdir(parents=True)
    (root / "schemas" / "config.schema.yaml").write_text("{}\n")
    (root / "Snakefile").write_text("# test\n")
    return root / "Snakefile"


def test_find_snakefile_order(tmp_path, monkeypatch):
    """--snakefile (file, workflow folder or checkout root), then $ONCOROBUST_WORKFLOW, then the
    checkout, then the packaged copy, then ./workflow."""
    monkeypatch.delenv(workflow_files.ENV_VAR, raising=False)
    given, env, packaged, cwd = (_workflow(tmp_path / n / "workflow") for n in ("given", "env", "pkg", "cwd"))
    assert workflow_files.find_snakefile() == REPO / "workflow" / "Snakefile"  # this checkout
    for form in (given, given.parent, given.parent.parent):
        assert workflow_files.find_snakefile(str(form)) == given
    monkeypatch.setenv(workflow_files.ENV_VAR, str(env.parent))
    assert workflow_files.find_snakefile() == env
    assert workflow_files.find_snakefile(str(given)) == given  # the explicit one wins
    monkeypatch.delenv(workflow_files.ENV_VAR)
    # an installed wheel: no checkout around the module, the copy inside the package
    monkeypatch.setattr(workflow_files, "checkout_snakefile", lambda: tmp_path / "none" / "Snakefile")
    monkeypatch.setattr(workflow_files, "packaged_snakefile", lambda: packaged)
    monkeypatch.chdir(cwd.parent.parent)
    assert workflow_files.find_snakefile() == packaged
    assert workflow_files.schema_file(packaged) == packaged.parent / "schemas" / "config.schema.yaml"
    monkeypatch.setattr(workflow_files, "packaged_snakefile", lambda: None)
    assert workflow_files.find_snakefile() == cwd
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OncorobustError, match="--snakefile") as err:
        workflow_files.find_snakefile()
    assert str(tmp_path / "none" / "Snakefile") in str(err.value)


def test_schema_file_of_the_checkout_and_of_an_incomplete_copy(tmp_path):
    assert workflow_files.schema_file() == REPO / "workflow" / "schemas" / "config.schema.yaml"
    (tmp_path / "Snakefile").write_text("# no schemas/ next to it\n")
    with pytest.raises(OncorobustError, match="schemas/config.schema.yaml"):
        workflow_files.schema_file(tmp_path / "Snakefile")


def test_source_tree_carries_no_packaged_copy():
    """src/oncorobust/workflow/ exists only in a built wheel (setup.py copies it there)."""
    assert workflow_files.packaged_snakefile() is None
    assert not (REPO / "src" / "oncorobust" / "workflow").exists()


@pytest.mark.slow
@pytest.mark.full  # about 3 min (a fresh venv and an audit): .ci/run runs it
def test_wheel_in_a_fresh_venv_audits_from_another_directory(tmp_path):
    t0 = time.time()
    wheel = _build_wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    for f in ("Snakefile", "rules/common.smk", "rules/attack.smk", "scripts/attack.py",
              "schemas/config.schema.yaml", "report/table1.rst", "envs/oncorobust.yaml"):
        assert f"oncorobust/workflow/{f}" in names, f
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=tmp_path)
    py = venv / "bin" / "python"
    site = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=tmp_path)
                .stdout.strip())
    (site / "_oncorobust_test_overlay.pth").write_text(f"{_overlay(tmp_path)}\n")

    # the documented route: the package with its dependencies, then torchattacks without its pins
    _run([py, "-m", "pip", "install", "--no-index", wheel], cwd=tmp_path)
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "--find-links",
          _torchattacks_wheel(tmp_path).parent, f"torchattacks=={TORCHATTACKS}"], cwd=tmp_path)
    check = subprocess.run([py, "-m", "pip", "check"], env=_env(), capture_output=True, text=True)
    for line in check.stdout.splitlines():  # the wheel's requirements are met; torchattacks lacks
        assert not line.lower().startswith("oncorobust "), line  # only its ancient requests pin
        assert not line.lower().startswith("torchattacks ") or "requests" in line, line

    work = tmp_path / "elsewhere"  # outside the repository: no ./workflow, no src/
    work.mkdir()
    probe = _run([py, "-c", "import json, sys, oncorobust, torchattacks, requests;"
                            " from oncorobust.pipeline.workflow_files import find_snakefile;"
                            " print(oncorobust.__file__); print(torchattacks.__file__);"
                            " print(find_snakefile()); print(requests.__version__); print(json.dumps(sys.path))"],
                 cwd=work).stdout.splitlines()
    pkg_file, ta_file, snakefile, requests_version, path = probe[:5]
    assert Path(pkg_file).is_relative_to(site), pkg_file
    assert Path(ta_file).is_relative_to(site), ta_file  # installed by the route, not the overlay's
    assert Path(snakefile) == site / "oncorobust" / "workflow" / "Snakefile"
    assert not [p for p in json.loads(path) if p.startswith(str(REPO))], path  # the checkout is not on it
    assert tuple(int(x) for x in requests_version.split(".")[:2]) > (2, 25)  # not downgraded

    # the rules' `code` param (oncorobust.pipeline.codehash) follows the scripts' imports into site-packages
    # and hashes the same as the checkout the wheel was built from
    scripts = sorted(p.name for p in (tmp_path / "src_copy" / "workflow" / "scripts").glob("*.py"))
    hashes = _run([py, "-c", "import json, sys; from pathlib import Path; from oncorobust.pipeline import codehash as c;"
                             " site, src = Path(sys.argv[1]) / 'oncorobust', Path(sys.argv[2]);"
                             " print(json.dumps([[c.code_version(site / 'workflow/scripts' / s),"
                             " c.code_version(src / 'workflow/scripts' / s, src / 'src/oncorobust'),"
                             " all(f.is_relative_to(site) for f in c.module_files(site / 'workflow/scripts' / s)),"
                             " len(c.module_files(site / 'workflow/scripts' / s))] for s in sys.argv[3:]]))",
                   site, tmp_path / "src_copy", *scripts], cwd=work).stdout
    for name, (packaged, checkout, inside, n) in zip(scripts, json.loads(hashes)):
        assert packaged == checkout and inside and n > 0, (name, packaged, checkout, inside, n)

    model, data = _inputs(tmp_path)
    (tmp_path / "extra.yaml").write_text(yaml.safe_dump(EXTRA))
    out = work / "audit"
    t1 = time.time()
    run = subprocess.run([venv / "bin" / "oncorobust", "audit", "--model", model, "--data", data, "--size", "16",
                          "--eps", "0.02", "--methods", "fgsm", "--config", tmp_path / "extra.yaml",
                          "--out", "audit", "--cores", "2", "--device", "cpu"],
                         cwd=work, env=_env(), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-6000:]
    tables = out / "results" / "tables"
    for f in ("table1.csv", "table1.md", "evaluation_health.csv", "table2.csv", "deferral_auc.csv"):
        assert (tables / f).is_file(), f
    t1_rows = {(r["method"], r["eps"]) for r in csv.DictReader((tables / "table1.csv").open())}
    assert {("baseline", "0.0"), ("fgsm", "0.02")} <= t1_rows, t1_rows
    assert (out / "report.html").stat().st_size > 10_000
    # the workflow that ran is the packaged copy (its path is in the config's rerun line)
    assert f"snakemake -s {site / 'oncorobust' / 'workflow' / 'Snakefile'}" in (out / "config.yaml").read_text()
    # nothing the run printed names the checkout's package or workflow
    for own in (REPO / "src", REPO / "workflow"):
        assert str(own) not in run.stdout + run.stderr, own
    print(f"wheel test: build+venv+install {t1 - t0:.1f} s, audit {time.time() - t1:.1f} s")
