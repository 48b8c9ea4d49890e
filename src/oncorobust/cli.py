"""The ``oncorobust`` command (pyproject's console script).

The workflow itself runs through Snakemake (see the README); this command holds the helpers that
are useful outside it. Subcommands:

- ``version``: print the installed package version.
- ``audit``: audit any model on any data: writes a validated config for one dataset (a manifest
  CSV or an ImageFolder-style folder) and one model (an arch to train, an arch + a state dict, or
  a TorchScript file) into the output folder and runs the workflow there through a ``snakemake``
  subprocess (this package never imports Snakemake), leaving the usual tables, figures and report.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from . import __version__
from .errors import OncorobustError
from .zipformat import is_torchscript


def package_version() -> str:
    """The installed distribution's version, else the source tree's ``__version__``.

    Returns:
        A version string such as ``0.1.0``.
    """
    try:
        return metadata.version("oncorobust")
    except metadata.PackageNotFoundError:
        return __version__


def _version(args: argparse.Namespace) -> int:
    print(f"oncorobust {package_version()}")
    return 0


def find_snakefile(given: str | None = None) -> Path:
    """The workflow's Snakefile: ``--snakefile``, else ``$ONCOROBUST_WORKFLOW`` (the Snakefile or
    its folder), else the source checkout this package runs from, else ``./workflow/Snakefile``.

    Raises:
        OncorobustError: none of them exists.
    """
    candidates = []
    for value in (given, os.environ.get("ONCOROBUST_WORKFLOW")):
        if value:
            p = Path(value)
            candidates.append(p / "Snakefile" if p.is_dir() and (p / "Snakefile").is_file() else
                              p / "workflow" / "Snakefile" if p.is_dir() else p)
            break
    candidates += [Path(__file__).resolve().parents[2] / "workflow" / "Snakefile",
                   Path.cwd() / "workflow" / "Snakefile"]
    candidates = list(dict.fromkeys(candidates))
    for c in candidates:
        if c.is_file():
            return c.resolve()
    raise OncorobustError("the oncorobust workflow (workflow/Snakefile) was not found: run from a"
                          " clone of the repository, or give --snakefile / set ONCOROBUST_WORKFLOW"
                          f" to its workflow folder (looked at {[str(c) for c in candidates]})")


def _deep_merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for k, v in extra.items():
        out[k] = _deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def audit_config(args: argparse.Namespace) -> dict:
    """The workflow config of ``oncorobust audit`` (one dataset ``args.name``), paths absolute.

    Raises:
        OncorobustError: the model or data argument names nothing usable.
    """
    import yaml

    model_arg, data = args.model, Path(args.data).expanduser()
    model: dict = {}
    if Path(model_arg).expanduser().is_file():
        path = Path(model_arg).expanduser().resolve()
        if not is_torchscript(path):
            raise OncorobustError(f"--model {model_arg}: a file that is not a TorchScript model; for a"
                                  " state dict give the architecture and the file: --model"
                                  " torchvision:resnet18 --weights model.pt")
        if args.weights:
            raise OncorobustError("--weights is for a state dict of --model <arch>; a TorchScript"
                                  " model carries its weights")
        model["arch"] = f"torchscript:{path}"
    else:
        if ":" not in model_arg and model_arg not in ("vgg16", "vgg_small"):
            raise OncorobustError(f"--model {model_arg}: no such file, and not an architecture"
                                  " (vgg_small, torchvision:<builder>, monai:<Network>,"
                                  " python:<module>:<callable>, torchscript:<file>)")
        model["arch"] = model_arg
        if model_arg.startswith("python:"):
            module = model_arg[len("python:"):].rsplit(":", 1)[0]
            if module.endswith(".py"):
                model["arch"] = f"python:{Path(module).expanduser().resolve()}:{model_arg.rsplit(':', 1)[1]}"
        if args.weights:
            model["checkpoint"] = str(Path(args.weights).expanduser().resolve())
    given = "checkpoint" in model or model["arch"].startswith("torchscript:")
    if given:
        spec = {"normalize": args.normalize}
        if args.channels:
            spec["channels"] = args.channels
        model["input"] = spec
    elif args.normalize != "dataset" or args.channels:
        raise OncorobustError("--normalize/--channels describe a given model (--weights or a"
                              " TorchScript file); a model trained here uses the data's statistics")
    if data.is_dir():
        folders = sorted(p.name for p in data.iterdir() if p.is_dir() and not p.name.startswith("."))
        source = {"format": "folder", "root": str(data.resolve()), "classes": args.classes or folders}
        if args.patient_pattern:
            source["patient_pattern"] = args.patient_pattern
        intensity = {"mode": "window", "window": list(args.window)} if args.intensity in ("auto", "window") \
            else {"mode": args.intensity}
    elif data.is_file():
        source = {"format": "manifest", "manifest": str(data.resolve())}
        if args.classes:
            source["classes"] = args.classes
        if args.patient_pattern:
            raise OncorobustError("--patient-pattern is for a folder of images; a manifest has patient_id")
        intensity = {"mode": "window", "window": list(args.window)} if args.intensity == "window" \
            else {"mode": "percentile" if args.intensity == "auto" else args.intensity}
    else:
        raise OncorobustError(f"--data {args.data}: no such manifest CSV or image folder")
    eps = sorted(set(args.eps))
    entry: dict = {
        "source": source,
        "split": {"test_fraction": args.test_fraction},
        "preprocess": {"size": args.size, "intensity": intensity},
        "model": model,
        "attack": {"methods": args.methods, "eps": eps, "reference_eps": eps[(len(eps) - 1) // 2]},
    }
    if not given:
        entry["train"] = {"batch_size": 32, "epochs": args.epochs, "patience": 5, "lr": 0.01}
    config = {"results": "results", "seed": args.seed, "device": args.device, "datasets": {args.name: entry}}
    if args.config:
        extra = yaml.safe_load(Path(args.config).read_text()) or {}
        ds_extra = extra.pop("dataset", None) or {}
        config = _deep_merge(config, extra)
        config["datasets"][args.name] = _deep_merge(config["datasets"][args.name], ds_extra)
    return config


def _audit(args: argparse.Namespace) -> int:
    import yaml

    from .config import check_config, validate_config

    if not re.fullmatch(r"[A-Za-z0-9_]+", args.name):
        raise OncorobustError(f"--name {args.name!r}: use letters, digits and _ (it names result folders)")
    snakefile = find_snakefile(args.snakefile)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = audit_config(args)
    validate_config(config, snakefile.parent / "schemas" / "config.schema.yaml")
    cwd = os.getcwd()
    os.chdir(out)  # check_config resolves results (and relative paths) against the working directory
    try:
        check_config(config, workdir=out)
    finally:
        os.chdir(cwd)
    cfg_file = out / "config.yaml"
    cfg_file.write_text("# written by `oncorobust audit`; rerun with:\n# snakemake -s"
                        f" {snakefile} --directory {out} --configfile {cfg_file} --cores {args.cores}\n"
                        + yaml.safe_dump(config, sort_keys=False))
    print(f"oncorobust audit: config written to {cfg_file}", file=sys.stderr)
    if importlib.util.find_spec("snakemake") is None:
        raise OncorobustError(f"snakemake is not installed in {sys.executable}'s environment:"
                              " pip install 'snakemake>=9,<10'")
    base = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(out),
            "--configfile", str(cfg_file), "--cores", str(args.cores)]
    run = base + (["-n"] if args.dry_run else []) + list(args.snakemake_args or [])
    # the workflow runs in --out: a python:<module>:<callable> model is imported from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH")) if p)}
    rc = subprocess.call(run, env=env)
    if rc != 0 or args.dry_run:
        return rc
    if not args.no_report:
        rc = subprocess.call(base + ["--report", str(out / "report.html")], env=env)
        if rc != 0:
            return rc
    print(f"oncorobust audit: tables in {out / 'results' / 'tables'}, figures in"
          f" {out / 'results' / 'figures'}" + ("" if args.no_report else f", report {out / 'report.html'}"),
          file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``oncorobust`` with its subcommands.

    Returns:
        An ``argparse.ArgumentParser``; each subcommand sets ``func(args) -> int``.
    """
    parser = argparse.ArgumentParser(
        prog="oncorobust",
        description="Adversarial robustness of medical-imaging classifiers (Joel et al.)."
                    " The workflow runs through Snakemake: snakemake --cores 4 (see README.md).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    version = sub.add_parser("version", help="print the oncorobust version",
                             description="Print the installed oncorobust version.")
    version.set_defaults(func=_version)
    audit = sub.add_parser(
        "audit", help="audit a model on a data set (any model source, manifest or image folder)",
        description="Audit one model on one data set with the whole workflow (attacks, evaluation"
                    " health, per-image sensitivity, tables, figures, report). Writes config.yaml into"
                    " --out and runs snakemake there.",
        epilog="examples: oncorobust audit --model torchvision:resnet18 --weights resnet.pt --data"
               " images/ --normalize imagenet --channels 3 --size 224;  oncorobust audit --model"
               " model.ts --data manifest.csv --eps 0.002 0.004")
    audit.add_argument("--model", required=True,
                       help="an architecture (vgg_small, torchvision:<builder>, monai:<Network>,"
                            " python:<module|file.py>:<callable>; trained on the data unless --weights)"
                            " or a TorchScript file (used as-is)")
    audit.add_argument("--weights", help="a state dict of --model's architecture (read with"
                                         " weights_only=True): audited as given, not trained")
    audit.add_argument("--data", required=True,
                       help="a manifest CSV (config/README.md) or a folder with one sub-folder per class")
    audit.add_argument("--eps", type=float, nargs="+", default=[0.001, 0.002, 0.004, 0.008],
                       help="L-inf budgets in [0,1] pixel units (default: %(default)s)")
    audit.add_argument("--out", default="results/audit", help="output folder (default: %(default)s)")
    audit.add_argument("--name", default="audit", help="the dataset's name in results (default: %(default)s)")
    audit.add_argument("--size", type=int, default=224, help="model input side in pixels (default: %(default)s)")
    audit.add_argument("--normalize", choices=["dataset", "imagenet", "none"], default="dataset",
                       help="what a given model expects: the train-set mean/std, ImageNet's, or [0,1]"
                            " pixels (default: %(default)s)")
    audit.add_argument("--channels", type=int, help="input channels of a given model (default: the data's)")
    audit.add_argument("--classes", nargs="+", help="class names in label order (default: a folder's"
                                                     " sub-folders, sorted; a manifest's benign malignant)")
    audit.add_argument("--patient-pattern", help="folder: regular expression whose group 'patient' (or"
                                                 " first group) in the file path is the patient ID")
    audit.add_argument("--intensity", choices=["auto", "window", "percentile", "none"], default="auto",
                       help="intensity scaling (auto: a fixed --window for a folder, percentile for a manifest)")
    audit.add_argument("--window", type=float, nargs=2, default=[0.0, 255.0], metavar=("LOW", "HIGH"),
                       help="raw values mapped to 0 and 1 by --intensity window (default: %(default)s)")
    audit.add_argument("--methods", nargs="+", default=["fgsm", "bim", "pgd", "worst"],
                       help="attack methods (default: %(default)s)")
    audit.add_argument("--test-fraction", type=float, default=0.33,
                       help="patients held out for testing (default: %(default)s)")
    audit.add_argument("--epochs", type=int, default=20, help="training epochs when the model is trained here")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    audit.add_argument("--cores", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    audit.add_argument("--config", help="a YAML file deep-merged into the generated config (its key"
                                        " 'dataset' into the dataset's entry), e.g. sensitivity or attacks settings")
    audit.add_argument("--snakefile", help="the workflow's Snakefile (default: found automatically)")
    audit.add_argument("--dry-run", action="store_true", help="write the config and show what would run")
    audit.add_argument("--no-report", action="store_true", help="skip the HTML report")
    audit.add_argument("snakemake_args", nargs="*", metavar="-- SNAKEMAKE_ARGS",
                       help="extra arguments for snakemake after --")
    audit.set_defaults(func=_audit)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``oncorobust`` command.

    Args:
        argv: the arguments without the program name (default ``sys.argv[1:]``).

    Returns:
        The exit status (0 on success; 2 for a missing subcommand, as argparse uses for usage
        errors).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args))
    except OncorobustError as exc:
        print(f"oncorobust {args.command}: error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
