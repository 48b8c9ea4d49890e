"""What reruns after what (issue #12): canonical params, package edits, the training resume file.

The workflow tests here run a frozen copy of ``workflow/`` and ``src/oncorobust/`` (imported
through ``PYTHONPATH``, which comes before the editable install), so that edits made in the
checkout while the tests run cannot change what they see, and so that a package module can be
edited for real in the copy.
"""

import ast
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from oncorobust import spec
from oncorobust.pipeline import codehash
from oncorobust.training import train as train_mod
from oncorobust.pipeline.codehash import code_text, code_version, module_files
from oncorobust.training.train import TrainingError, fit, run_training

from conftest import load_test_config  # the .test/ configs, one definition for every test module

REPO = Path(__file__).resolve().parents[1]


# the digits control alone, one eps, short attacks and sensitivity search
TINY = load_test_config("config_one_dataset.yaml")


# ------------------------------------------------------------------------------ code_version
def _tree(tmp_path: Path) -> tuple[Path, Path]:
    """A fake package ``oncorobust`` and a script: script -> a -> b (relative), sub.c -> ..errors."""
    pkg = tmp_path / "src" / "oncorobust"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text('"""pkg"""\n')
    (pkg / "a.py").write_text("from .b import thing\n")
    (pkg / "b.py").write_text("thing = 1\n")
    (pkg / "errors.py").write_text("class E(Exception): pass\n")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "c.py").write_text("def f():\n    from ..errors import E\n    return E\n")
    (pkg / "unrelated.py").write_text("x = 1\n")
    script = tmp_path / "scripts" / "step.py"
    script.parent.mkdir()
    script.write_text("import numpy\nfrom oncorobust.a import thing\nimport oncorobust.sub.c\n")
    return pkg, script


def test_module_files_follow_imports_transitively(tmp_path):
    pkg, script = _tree(tmp_path)
    names = [f.relative_to(pkg).as_posix() for f in module_files(script, pkg)]
    assert names == ["__init__.py", "a.py", "b.py", "errors.py", "sub/__init__.py", "sub/c.py"]


def test_code_version_changes_with_imported_modules_only(tmp_path):
    pkg, script = _tree(tmp_path)
    before = code_version(script, pkg)
    assert re.fullmatch(r"[0-9a-f]{12}", before)
    (pkg / "unrelated.py").write_text("x = 2\n")
    codehash._cached.cache_clear()
    assert code_version(script, pkg) == before  # a module the script does not import
    (pkg / "b.py").write_text("thing = 2\n")  # imported through a.py (relative import)
    codehash._cached.cache_clear()
    after_b = code_version(script, pkg)
    assert after_b != before
    (pkg / "errors.py").write_text("class E(ValueError):\n    pass\n")  # ..errors inside a function
    codehash._cached.cache_clear()
    assert code_version(script, pkg) not in (before, after_b)


def test_code_version_ignores_docstrings_comments_and_layout(tmp_path):
    pkg, script = _tree(tmp_path)
    before = code_version(script, pkg)
    (pkg / "b.py").write_text('"""The thing."""\n\n# a comment\nthing = 1  # one\n')
    (pkg / "sub" / "c.py").write_text('def f():\n    """Returns E.\n\n    Returns:\n        the class\n    """\n'
                                      "    from ..errors import E  # lazily\n\n    return E\n")
    codehash._cached.cache_clear()
    assert code_version(script, pkg) == before  # documenting the code reruns nothing
    (pkg / "sub" / "c.py").write_text('def f():\n    """Returns E."""\n    from ..errors import E\n    return E, 1\n')
    codehash._cached.cache_clear()
    assert code_version(script, pkg) != before  # what runs changed
    (pkg / "b.py").write_text('thing = "The thing."\n')  # a string that is a value, not a docstring
    codehash._cached.cache_clear()
    assert code_text(pkg / "b.py") != b"" and code_version(script, pkg) != before


def test_code_version_is_the_same_for_a_copy(tmp_path):
    pkg, script = _tree(tmp_path / "one")
    pkg2, script2 = _tree(tmp_path / "two")
    assert code_version(script, pkg) == code_version(script2, pkg2)


def test_every_rule_that_runs_a_script_has_the_code_param():
    rules = "".join(p.read_text() for p in (REPO / "workflow" / "rules").glob("*.smk"))
    blocks = re.split(r"\nrule ", rules)[1:]
    for block in blocks:
        script = re.search(r'script:\n\s+"\.\./(scripts/\w+\.py)"', block)
        if script:
            assert f'code=code_version("{script.group(1)}")' in block, block.split(":")[0]


# ------------------------------------------------------------------------------ workflow reruns
def _dump(config: dict, reverse: bool = False) -> str:
    """The config as YAML with keys sorted, or in reversed order at every level."""
    if not reverse:
        return yaml.safe_dump(config, sort_keys=True)

    def rev(v):
        if isinstance(v, dict):
            return {k: rev(v[k]) for k in reversed(list(v))}
        return [rev(x) for x in v] if isinstance(v, list) else v

    return yaml.safe_dump(rev(config), sort_keys=False)


class Run:
    """A tiny workflow run in ``work`` with a frozen copy of the workflow and package in ``code``."""

    def __init__(self, work: Path, code: Path):
        self.work, self.code = work, code
        self.env = {**os.environ, "PYTHONPATH": f"{code / 'src'}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

    def smk(self, config_text: str, *args: str, overrides: dict | None = None) -> subprocess.CompletedProcess:
        """snakemake with ``config_text`` as the config file, plus ``overrides`` as a second config
        file (Snakemake merges it over the first, as in ``--configfile base.yaml mine.yaml``)."""
        cfg = self.work / "config.yaml"
        cfg.write_text(config_text)
        files = [str(cfg)]
        if overrides is not None:
            (self.work / "override.yaml").write_text(yaml.safe_dump(overrides))
            files.append(str(self.work / "override.yaml"))
        out = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(self.code / "workflow" / "Snakefile"),
                              "--directory", str(self.work), "--configfile", *files, "--cores", "2", *args],
                             capture_output=True, text=True, env=self.env)
        out.text = out.stdout + out.stderr
        return out


@pytest.fixture(scope="module")
def done(tmp_path_factory) -> Run:
    """The tiny config run to completion (about 2 minutes on 2 cores)."""
    code = tmp_path_factory.mktemp("code")
    shutil.copytree(REPO / "workflow", code / "workflow")
    shutil.copytree(REPO / "src" / "oncorobust", code / "src" / "oncorobust",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    run = Run(tmp_path_factory.mktemp("work"), code)
    out = run.smk(yaml.safe_dump(TINY))
    assert out.returncode == 0, out.text[-3000:]
    return run


def planned_jobs(text: str) -> list[dict]:
    """The jobs of a dry run: rule, output and reason of each (group jobs are indented)."""
    jobs = []
    for m in re.finditer(r"^\s*(?:local)?rule (\w+):\n(.*?)(?=^\s*(?:local)?rule \w+:|^\[|^Job stats|\Z)",
                         text, re.M | re.S):
        out = re.search(r"^\s+output: (.+)$", m.group(2), re.M)
        reason = re.search(r"^\s+reason: (.+)$", m.group(2), re.M)
        jobs.append({"rule": m.group(1), "output": out.group(1) if out else "",
                     "reason": reason.group(1) if reason else ""})
    return jobs


@pytest.mark.slow
def test_reordered_config_plans_nothing(done):
    """Same values, keys sorted / reversed at every level: every param is canonical."""
    for text in (_dump(TINY), _dump(TINY, reverse=True)):
        out = done.smk(text, "-n")
        assert out.returncode == 0, out.text[-2000:]
        assert "Nothing to be done" in out.text, [j["rule"] + ": " + j["reason"] for j in planned_jobs(out.text)]
        s = summary(done, text)
        assert len(s) > 30 and {status for _, status, _ in s.values()} == {"ok"}
        assert {plan for _, _, plan in s.values()} == {"no update"}


def summary(run: Run, *args: str, **kw) -> dict[str, tuple[str, str, str]]:
    """`snakemake --summary`: {output: (rule, status, plan)}. The status says why each output is
    outdated by itself ("params changed", ...); a dry run shows only the first reason of a job
    (downstream jobs: "input files updated by another job")."""
    out = run.smk(*args, "--summary", **kw)
    assert out.returncode == 0, out.text[-2000:]
    rows = [line.split("\t") for line in out.stdout.splitlines() if line.startswith("results/")]
    return {r[0]: (r[2], r[4], r[5]) for r in rows}


def params_changed(s: dict) -> set[str]:
    return {f for f, (_, status, _) in s.items() if status == "params changed"}


def pending_rules(s: dict) -> set[str]:
    return {rule for rule, _, plan in s.values() if plan != "no update"}


@pytest.mark.slow
def test_config_override_replans_only_dependent_jobs(done):
    """`--config on_bad_file=error` (Snakemake's --config parses only top-level values; nested
    ones arrive as strings, which the schema refuses): exactly the outputs of ingest and
    preprocess, the rules that take on_bad_file, have changed params; the rest is pending only
    because its inputs will change."""
    s = summary(done, yaml.safe_dump(TINY), "--config", "on_bad_file=error")
    # and the record of the configuration used (results/config.used.yaml), which every change rewrites
    assert {s[f][0] for f in params_changed(s)} == {"ingest", "preprocess", "config_used"}
    assert params_changed(s) == {f for f, (rule, _, _) in s.items() if rule in ("ingest", "preprocess", "config_used")}
    plan = done.smk(yaml.safe_dump(TINY), "-n", "--config", "on_bad_file=error")
    jobs = planned_jobs(plan.text)
    assert sorted(j["rule"] for j in jobs if "params have changed" in j["reason"].lower()) == ["config_used", "ingest"]


@pytest.mark.slow
def test_one_attack_param_replans_only_its_method(done):
    """attacks.pgd.steps in an override config file: the PGD attack, the health check and the
    Figure 1 example (the rules that take PGD's parameters) have changed params; FGSM, training,
    data and sensitivity (whose inner-attack steps are its own key) stay as they are."""
    s = summary(done, yaml.safe_dump(TINY), overrides={"attacks": {"pgd": {"steps": 4}}})
    # the card states the budgets of the attacks it ran
    assert params_changed(s) == {"results/digits/attacks/clean/pgd/eps=0.1.csv", "results/digits/health/clean.csv",
                                 "results/figures/fig1_examples.png", "results/figures/fig1_examples.pdf",
                                 "results/cards/digits_clean.md", "results/cards/digits_clean.html",
                                 "results/config.used.yaml"}
    assert {"attack_digits", "health", "fig1_examples", "tables", "health_table", "fig2_fig3"} <= pending_rules(s)
    assert not pending_rules(s) & {"ingest", "preprocess", "train_clean", "sensitivity", "deferral_tables"}
    assert s["results/digits/attacks/clean/fgsm/eps=0.1.csv"][2] == "no update"


@pytest.mark.slow
def test_package_edit_reruns_the_jobs_that_import_it(done):
    """Snakemake's code trigger sees only workflow/scripts/; the `code` param (codehash) covers
    the package. Here a real edit of a module of the (copied, PYTHONPATH-imported) package:
    evaluate.py is imported by the attack script (and the corruption script, not run here) only, so exactly the attack outputs have
    changed params (Snakemake's params trigger), the aggregates after them are pending because
    their inputs will change, and nothing upstream or beside (training, sensitivity) moves. The
    edit is undone afterwards, and then nothing is planned again."""
    module = done.code / "src" / "oncorobust" / "evaluation" / "evaluate.py"
    original = module.read_text()
    try:
        # a comment and a docstring do not change what runs: nothing is planned (codehash hashes
        # the syntax tree without docstrings)
        assert original.startswith('"""')
        module.write_text(original.replace('"""', '"""Reworded. ', 1) + "\n# a comment\n")  # module docstring
        assert "Nothing to be done" in done.smk(yaml.safe_dump(TINY), "-n").text
        module.write_text(original + "\n_EDITED = 1  # a code edit\n")
        s = summary(done, yaml.safe_dump(TINY))
        assert params_changed(s) == {"results/digits/attacks/clean/fgsm/eps=0.1.csv",
                                     "results/digits/attacks/clean/pgd/eps=0.1.csv"}
        assert {"attack_digits", "tables", "health", "health_table", "fig2_fig3"} <= pending_rules(s)
        assert not pending_rules(s) & {"ingest", "preprocess", "train_clean", "sensitivity", "fig1_examples"}
        jobs = planned_jobs(done.smk(yaml.safe_dump(TINY), "-n").text)
        assert {j["rule"] for j in jobs if "params have changed" in j["reason"].lower()} == {"attack_digits"}
    finally:
        module.write_text(original)
    assert "Nothing to be done" in done.smk(yaml.safe_dump(TINY), "-n").text


@pytest.mark.slow
def test_training_edit_reruns_training_not_the_attack_params(done):
    """train.py holds the training loop only (resolve_device moved to device.py): editing it
    changes the params of the training jobs alone; attacks, health and sensitivity wait for the
    new model (their inputs) but their own params (code hash) stay as they are."""
    module = done.code / "src" / "oncorobust" / "training" / "train.py"
    original = module.read_text()
    try:
        module.write_text(original + "\n_EDITED = 1  # a code edit\n")
        s = summary(done, yaml.safe_dump(TINY))
        assert params_changed(s) and {s[f][0] for f in params_changed(s)} == {"train_clean"}
        assert {"attack_digits", "health", "sensitivity"} <= pending_rules(s)
    finally:
        module.write_text(original)
    assert "Nothing to be done" in done.smk(yaml.safe_dump(TINY), "-n").text


# ------------------------------------------------------------------------------ training resume file
def _toy(n: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = torch.rand(n, 1, 8, 8, generator=g) * 0.3 + y.view(-1, 1, 1, 1) * 0.5
    return {"x": x, "y": y, "ids": [str(i) for i in range(n)]}


TRAIN = {"batch_size": 16, "epochs": 3, "patience": 3, "lr": 0.05, "momentum": 0.9}
STATS = {"size": 8, "channels": 1, "classes": ["benign", "malignant"], "mean": [0.4], "std": [0.3]}


class Killed(Exception):
    """Stands for SIGKILL right after a resume file was written."""


def _train(tmp_path, code="v1", kill=False, monkeypatch=None):
    paths = {s: tmp_path / f"{s}.pt" for s in ("train", "val")}
    out = tmp_path / "models" / "clean.pt"
    if kill:
        orig = train_mod._checkpoint

        def killer(*a, **k):
            orig(*a, **k)
            raise Killed

        monkeypatch.setattr(train_mod, "_checkpoint", killer)
    try:
        return run_training(paths, STATS, regime="clean", model_cfg={"arch": "vgg_small", "width": 4},
                            train_cfg=TRAIN, adv_cfg=None, seed=0, device="cpu", out_model=out,
                            progress=False, code=code)
    finally:
        monkeypatch.undo() if kill else None


@pytest.fixture
def tensors(tmp_path):
    torch.save(_toy(64, 0), tmp_path / "train.pt")
    torch.save(_toy(32, 1), tmp_path / "val.pt")
    return tmp_path


def test_resume_file_hash_covers_code_and_data(tensors, monkeypatch):
    ckpt = tensors / "models" / "clean.pt.ckpt.pt"
    with pytest.raises(Killed):
        _train(tensors, "v1", kill=True, monkeypatch=monkeypatch)
    assert ckpt.exists()
    with pytest.raises(TrainingError, match=r"clean\.pt\.ckpt\.pt was written by another configuration, code or data"
                                            r".*delete it"):
        _train(tensors, "v2")  # other code
    saved = (tensors / "train.pt").read_bytes()
    data = _toy(64, 0)
    data["y"][0] = 1 - data["y"][0]
    torch.save(data, tensors / "train.pt")
    with pytest.raises(TrainingError, match="another configuration, code or data"):
        _train(tensors, "v1")  # other data
    (tensors / "train.pt").write_bytes(saved)
    history = _train(tensors, "v1")  # same code and data: resumes after epoch 1
    assert [r["epoch"] for r in history] == [1, 2, 3] and not ckpt.exists()


def test_truncated_resume_file_is_a_clear_error(tensors, monkeypatch):
    ckpt = tensors / "models" / "clean.pt.ckpt.pt"
    with pytest.raises(Killed):
        _train(tensors, kill=True, monkeypatch=monkeypatch)
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    with pytest.raises(TrainingError, match=r"clean\.pt\.ckpt\.pt: the training resume file is truncated or corrupt"
                                            r".*delete it to start training afresh"):
        _train(tensors)
    ckpt.write_bytes(b"")
    with pytest.raises(TrainingError, match="truncated or corrupt"):
        _train(tensors)


def test_resume_file_with_missing_state_is_a_clear_error(tmp_path):
    data = {"train": _toy(64, 0), "val": _toy(32, 1)}
    ckpt = tmp_path / "m.ckpt.pt"
    torch.save({"config_hash": "h", "model": {}}, ckpt)
    from oncorobust.models.architectures import build_model
    model = build_model("vgg_small", classes=2, in_channels=1, size=8, mean=[0.4], std=[0.3], width=4)
    with pytest.raises(TrainingError, match=r"m\.ckpt\.pt: the training resume file is truncated or corrupt"):
        fit(model, data, train=TRAIN, progress=False, ckpt_path=ckpt, hash_="h")


# Which workflow scripts hash each module (their jobs rerun when it is edited): one module per
# stage. Model-running scripts: attack, corrupt, figures (Figure 1), health, import_model,
# sensitivity, train. A source adapter also reruns the demo-data writer (data/sources/__init__
# imports every adapter).
MODEL_RUNNING = {"attack", "corrupt", "figures", "health", "import_model", "sensitivity", "train"}
REPORTING_STEMS = {"attack_tables", "cards", "corruption_tables", "deferral_tables", "health_table", "regimes_table",
                   "robustness"}
STAGE_EDITS = {
    "data/preprocess.py": {"preprocess"},
    "data/sources/lidc.py": {"demo_data", "ingest", "preprocess"},
    "models/checkpoints.py": MODEL_RUNNING | {"cards"},
    "models/architectures.py": MODEL_RUNNING,
    "training/losses.py": {"train"},
    "attacks/kernels.py": {"attack", "corrupt", "figures", "health", "health_table", "sensitivity", "train"},
    "evaluation/sensitivity.py": {"sensitivity"},
    "evaluation/deferral.py": {"deferral_tables"},
    "evaluation/corruptions.py": {"corrupt"},
    # the per-image visibility columns: the jobs that write them (and the tables, for their names);
    # the visibility table's summary and markdown: the tables job alone
    "evaluation/visibility.py": {"attack", "attack_tables", "corrupt", "figures"},  # figures: Figure 1's numbers
    "reporting/visibility.py": {"attack_tables"},
    "reporting/regimes.py": {"regimes_table"},
    "reporting/figures.py": {"corruption_tables", "figures", "robustness"},
    # a table edit replans no health check (the per-image readers live in evaluation.results)
    "reporting/tables.py": {"attack_tables", "cards", "deferral_tables", "figures", "robustness"},
    # the widest modules. The config checks and the job plan and resources run when the workflow
    # is parsed: no job imports them (a config edit reaches jobs as their params)
    "config.py": set(),
    "pipeline/dag.py": set(),
    "pipeline/resources.py": set(),
    # the registry: every job but the config record and the demo data imports it; its tables
    # (METHODS, REGIMES) are left out of the non-reporting jobs' code hash, which get the entries
    # they read as their registry param (test_registry_key_holds_the_entries_a_job_reads)
    "spec.py": MODEL_RUNNING | REPORTING_STEMS | {"preprocess"},
    # the atomic writers: every job that writes a file (one module; a writer's edit reruns them all)
    "io.py": (MODEL_RUNNING | REPORTING_STEMS | {"config_used", "ingest", "preprocess"}),
}


@pytest.mark.parametrize("module", sorted(STAGE_EDITS))
def test_a_module_edit_reruns_exactly_its_stage(module):
    """An edit of one module changes the code param of exactly the scripts whose stage uses it
    (and their downstream aggregates), not the rest: e.g. a Table 2 edit (deferral.py) replans no
    sensitivity search, a training-loss edit no attack."""
    pkg = REPO / "src" / "oncorobust"
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    importing = {s.stem for s in scripts if pkg / module in module_files(s, pkg)}
    assert importing == STAGE_EDITS[module]


def test_default_package_dir_is_the_package_and_the_checkout_is_found():
    """The defaults that the workflow relies on: code_version without a package_dir hashes the
    whole package (not just pipeline/, where codehash lives), and the checkout's Snakefile is found."""
    from oncorobust.pipeline.workflow_files import checkout_snakefile

    names = {f.relative_to(REPO / "src" / "oncorobust").as_posix()
             for f in module_files(REPO / "workflow" / "scripts" / "attack.py")}
    assert {"attacks/kernels.py", "evaluation/evaluate.py", "models/loading.py", "spec.py"} <= names
    assert checkout_snakefile() == REPO / "workflow" / "Snakefile"


# ------------------------------------------------------------------ presentation and resources
NON_REPORTING = sorted(s for s in (REPO / "workflow" / "scripts").glob("*.py")
                       if s.stem not in codehash.REPORTING_SCRIPTS)


def _edited_copy(tmp_path: Path, module: str, old: str, new: str) -> Path:
    """A copy of the package with one textual edit of ``module`` (which must contain ``old``)."""
    pkg = tmp_path / "oncorobust"
    shutil.copytree(REPO / "src" / "oncorobust", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    path = pkg / module
    text = path.read_text()
    assert old in text, (module, old)
    path.write_text(text.replace(old, new, 1))
    return pkg


def _changed_scripts(tmp_path: Path, module: str, old: str, new: str) -> set[str]:
    """The workflow scripts whose code param (the rerun key) a one-line edit of ``module`` changes."""
    pkg = REPO / "src" / "oncorobust"
    edited = _edited_copy(tmp_path, module, old, new)
    scripts = sorted((REPO / "workflow" / "scripts").glob("*.py"))
    return {s.stem for s in scripts if code_version(s, pkg) != code_version(s, edited)}


REPORTING = set(codehash.REPORTING_SCRIPTS)


@pytest.mark.parametrize("module, old, new, expected", [
    # a method's label or colour, a regime's label, the strength order: the reporting jobs only
    ("spec.py", 'Method("fgsm", "sign", "FGSM", _CB[0]', 'Method("fgsm", "sign", "Fast gradient", _CB[1]', REPORTING),
    ("spec.py", 'Regime("adv_pgd", "PGD-AT"', 'Regime("adv_pgd", "PGD adversarial training"', REPORTING),
    ("spec.py", "passes=lambda p: 4.0, strength=7", "passes=lambda p: 4.0, strength=9", REPORTING),
    # an entry's defaults, what an attack *is* (its family decides how it runs), a new entry: the
    # code key of the reporting jobs only; the jobs that read the entry get it as their
    # ``registry`` param (test_registry_key_holds_the_entries_a_job_reads)
    ('spec.py', 'defaults={"steps": 10, "alpha_ratio": 0.25, "random_start": True, "restarts": 1}',
     'defaults={"steps": 20, "alpha_ratio": 0.25, "random_start": True, "restarts": 1}', REPORTING),
    ('spec.py', 'Method("fab", "minimum_norm"', 'Method("fab", "apgd"', REPORTING),
    ('spec.py', '    Method("worst", "ensemble"', '    Method("toy", "sign", "toy", "grey", run="x:y"),\n'
     '    Method("worst", "ensemble"', REPORTING),
    ('spec.py', 'Regime("adv_mart", "MART", True', 'Regime("adv_mart", "MART", False', REPORTING),
    # a function of the registry (not an entry): every job whose scripts import it
    ('spec.py', 'return (base, int(k)) if sep and k.isdigit()', 'return (base, int(k)) if sep and k.isdecimal()',
     {"attack", "corrupt", "health", "import_model", "preprocess", "sensitivity", "train"} | REPORTING),
    # a memory constant, a run-time constant: no job at all
    ("pipeline/resources.py", "SAFETY = 1.25", "SAFETY = 1.5", set()),
    ("pipeline/resources.py", "RATE_GMACS = {\"cpu\": 20.0", "RATE_GMACS = {\"cpu\": 25.0", set()),
    # the plan (which jobs exist, in which order): no job's code param either
    ("pipeline/dag.py", 'PAPER_ORDER = ("ct", "mammogram", "mri"', 'PAPER_ORDER = ("mri", "ct", "mammogram"', set()),
    # the argument checks the data stage shares with the config: the data stage, not the rest
    ("checks.py", "(a fraction of the", "(the fraction of the", {"ingest", "preprocess"}),
])
def test_an_edit_reruns_only_the_jobs_that_read_it(tmp_path, module, old, new, expected):
    """The rerun key (code param) of each workflow script after a one-line edit: presentation
    (labels, colours, strength order, the CLI's defaults) reaches only reporting jobs, resource
    formulas none, a change of what an attack is every job that imports the registry."""
    assert _changed_scripts(tmp_path, module, old, new) == expected


def test_registry_key_holds_the_entries_a_job_reads(monkeypatch):
    """The ``registry`` param of a job changes with the entries it reads, and only with those:
    FAB's family reaches the worst case (FAB is a member) and not PGD's jobs; a label no job;
    a new entry none of the existing jobs; a regime's entry its trainings."""
    import dataclasses

    from oncorobust import spec
    from oncorobust.pipeline.codehash import registry_key

    members = ["apgd_ce", "apgd_margin", "fab", "square"]
    jobs = {"pgd": spec.methods_read("pgd"), "worst": spec.methods_read("worst", members),
            "transfer_fgsm": spec.methods_read("transfer_fgsm"), "square": spec.methods_read("square")}
    assert jobs["worst"] == ("apgd_ce", "apgd_margin", "fab", "pgd", "square", "worst")
    assert jobs["square"] == ("pgd", "square") and jobs["transfer_fgsm"] == ("fgsm",)
    before = {j: registry_key(m) for j, m in jobs.items()}
    before_train = registry_key(["pgd"], ["adv_pgd"], method_defaults=False)

    def changed(table, name, **edit):
        with monkeypatch.context() as mp:
            mp.setitem(table, name, dataclasses.replace(table[name], **edit))
            after = {j: registry_key(m) for j, m in jobs.items()}
            train = registry_key(["pgd"], ["adv_pgd"], method_defaults=False)
        return {j for j in jobs if after[j] != before[j]} | ({"train"} if train != before_train else set())

    assert changed(spec.METHODS, "fab", family="apgd") == {"worst"}
    assert changed(spec.METHODS, "fab", label="Fast adaptive boundary", color="red", strength=9) == set()
    assert changed(spec.METHODS, "pgd", defaults={**spec.METHODS["pgd"].defaults, "steps": 20}) == {"pgd", "worst", "square"}
    assert changed(spec.METHODS, "pgd", options={"x": 1}) == {"pgd", "worst", "square", "train"}
    assert changed(spec.REGIMES, "adv_pgd", label="Madry") == set()
    assert changed(spec.REGIMES, "adv_pgd", adversarial=False) == {"train"}
    with monkeypatch.context() as mp:
        mp.setitem(spec.METHODS, "toy", dataclasses.replace(spec.METHODS["fgsm"], name="toy"))
        assert {j: registry_key(m) for j, m in jobs.items()} == before


def _reads(tree: ast.AST, fields: set[str], tables: set[str]) -> list[str]:
    """Reads of ``fields`` on registry entries in ``tree``: ``METHODS[x].label`` and ``m.label``
    where ``m`` iterates a registry table (``for n, m in METHODS.items()``)."""
    entry_vars: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.comprehension, ast.For)) and any(t in ast.unparse(node.iter) for t in tables):
            entry_vars |= {n.id for n in ast.walk(node.target) if isinstance(n, ast.Name)}
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in fields:
            base = ast.unparse(node.value)
            if any(t in base for t in tables) or base in entry_vars:
                found.append(ast.unparse(node))
    return found


def test_no_job_but_reporting_reads_what_its_rerun_key_leaves_out():
    """What ``spec.__rerun_exempt__`` keeps out of the rerun key of the model-running and data jobs
    must be something those jobs never read: no module they reach reads an exempt field of a
    registry entry or uses an exempt name (the cost model ``Method.passes`` is read by
    pipeline/passes.py for the progress lines only, the one documented exception)."""
    spec_file = REPO / "src" / "oncorobust" / "spec.py"
    exempt = codehash.rerun_exempt(ast.parse(spec_file.read_text()))
    assert {c: tuple(f) for c, f in exempt["fields"].items()} == spec.PRESENTATION_FIELDS  # one list, two spellings
    fields = {f for fs in exempt["fields"].values() for f in fs}
    names = set(exempt["names"])
    reached = {f for s in NON_REPORTING for f in module_files(s)}
    assert spec_file in reached  # the check below looks at something
    bad = []
    for f in sorted(reached):
        tree = ast.parse(f.read_text())
        if f == spec_file:  # inside the registry: what survives the blanking must not use a dropped name
            tree = codehash._blank_exempt(tree, exempt)
        rel = f.relative_to(REPO / "src" / "oncorobust").as_posix()
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} | \
               {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        bad += [f"{rel}: {n}" for n in sorted(used & names)]
        bad += [f"{rel}: {r}" for r in _reads(tree, fields, {"METHODS", "REGIMES"})
                if not (rel == "pipeline/passes.py" and r.endswith(".passes"))]
    assert not bad, bad


def test_the_reporting_scripts_are_the_workflow_scripts_that_exist():
    """REPORTING_SCRIPTS names real scripts (a renamed one would silently lose its labels' key)."""
    stems = {s.stem for s in (REPO / "workflow" / "scripts").glob("*.py")}
    assert codehash.REPORTING_SCRIPTS <= stems
