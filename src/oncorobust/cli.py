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
import shlex
import subprocess
import time
import sys
from pathlib import Path

from oncorobust import package_version
from oncorobust import spec as registry
from oncorobust.pipeline.budgets import BUDGETS, apply_budget, deep_merge, estimate_seconds, planned_passes
from oncorobust.epsilon import normalize_config_eps, parse_fraction
from oncorobust.errors import OncorobustError
from oncorobust.logs import fmt_seconds
from oncorobust.pipeline.workflow_files import find_snakefile, schema_file
from oncorobust.models.zipformat import is_exported_program, is_torchscript


def _version(args: argparse.Namespace) -> int:
    print(f"oncorobust {package_version()}")
    return 0


def audit_config(args: argparse.Namespace) -> dict:
    """The workflow config of ``oncorobust audit`` (one dataset ``args.name``), paths absolute.

    Args:
        args: the parsed ``audit`` arguments (``--model``, ``--weights``, ``--data``, ``--eps``...).

    Returns:
        The config dict (``results``, ``seed``, ``device``, ``datasets``, the budget's ``attacks``),
        with ``--config`` deep-merged in.

    Raises:
        OncorobustError: the model or data argument names nothing usable, or options of a given
            model are used with a model trained here (or ``--patient-pattern`` with a manifest).
        DataError: ``--data`` is a folder and its class sub-folders cannot be listed.
        ConfigError: the ``--config`` file is not valid YAML or repeats a key.
    """

    model_arg, data = args.model, Path(args.data).expanduser()
    model: dict = {}
    if Path(model_arg).expanduser().is_file():
        path = Path(model_arg).expanduser().resolve()
        if is_torchscript(path):
            kind = "torchscript"
        elif is_exported_program(path):
            kind = "export"
        else:
            raise OncorobustError(f"--model {model_arg}: a file that is neither a TorchScript model nor a"
                                  " torch.export program (.pt2); for a state dict or a training checkpoint"
                                  " give the architecture and the file: --model torchvision:resnet18"
                                  " --weights model.pt")
        if args.weights:
            raise OncorobustError(f"--weights is for a state dict of --model <arch>; a {kind} model"
                                  " carries its weights")
        model["arch"] = f"{kind}:{path}"
    else:
        if ":" not in model_arg and model_arg not in registry.BUILTIN_ARCHS:
            raise OncorobustError(f"--model {model_arg}: no such file, and not an architecture"
                                  " (vgg_small, torchvision:<builder>, monai:<Network>,"
                                  " python:<module>:<callable>, torchscript:<file>, export:<file.pt2>)")
        model["arch"] = registry.with_resolved_factory(model_arg)
        if args.weights:
            model["checkpoint"] = str(Path(args.weights).expanduser().resolve())
    given = registry.given_file(model) is not None
    if given:
        spec = {"normalize": args.normalize}
        if args.channels:
            spec["channels"] = args.channels
        model["input"] = spec
        model["output"] = args.output
        if args.positive_class is not None:
            model["positive_class"] = args.positive_class
        if args.checkpoint_key:
            model["checkpoint_key"] = args.checkpoint_key
    elif args.normalize != "dataset" or args.channels or args.output != "auto" or args.checkpoint_key:
        raise OncorobustError("--normalize/--channels/--output/--checkpoint-key describe a given model"
                              " (--weights, a TorchScript file or a .pt2 program); a model trained here"
                              " uses the data's statistics and returns logits")
    if data.is_dir():
        from oncorobust.data.sources.folder import class_folders

        source = {"format": "folder", "root": str(data.resolve()), "classes": args.classes or class_folders(data)}
        if args.patient_pattern:
            source["patient_pattern"] = args.patient_pattern
        # auto: integer images scaled by their bit depth (8-bit: [0, 255]; 12-bit values in 16-bit
        # PNGs: [0, 4095]); --intensity window uses --window
        intensity = {"mode": "bitdepth"} if args.intensity in ("auto", "bitdepth") else \
            {"mode": "window", "window": list(args.window)} if args.intensity == "window" else {"mode": args.intensity}
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
        "preprocess": {"size": args.size, "intensity": intensity, "color": args.color},
        "model": model,
        "attack": {"methods": args.methods, "eps": eps, "reference_eps": eps[(len(eps) - 1) // 2]},
        # natural corruptions are not part of an audit's budget (add them with --config:
        # dataset: {corruptions: {names: [gaussian_blur, jpeg]}})
        "corruptions": {"names": []},
    }
    if not given:
        entry["train"] = {"batch_size": 32, "epochs": args.epochs, "patience": 5, "lr": 0.01}
    config = {"results": "results", "seed": args.seed, "device": args.device, "datasets": {args.name: entry}}
    config = apply_budget(config, args.budget, args.name)
    if args.config:
        from oncorobust.config import load_yaml

        extra = load_yaml(Path(args.config).expanduser()) or {}
        ds_extra = extra.pop("dataset", None) or {}
        config = deep_merge(config, extra)
        config["datasets"][args.name] = deep_merge(config["datasets"][args.name], ds_extra)
        if extra.get("attacks") or ds_extra.get("sensitivity"):
            config["attacks"]["budget"] = f"{args.budget} + {Path(args.config).name}"
    return config


def _count_images(data: Path) -> int:
    """Image files under a folder (recursively, judged by content as the folder source reads them:
    DICOM without an ending, WebP... counted; hidden/system files and non-images not), or the rows
    of a manifest CSV."""
    if data.is_dir():
        from oncorobust.data.sources.folder import IGNORED_FOLDERS
        from oncorobust.data.sources.images import classify_file

        return sum(1 for p in data.rglob("*") if p.is_file()
                   and not any(part.startswith(".") or part.lower() in IGNORED_FOLDERS
                               for part in p.relative_to(data).parts)
                   and classify_file(p)[0] in ("dicom", "nifti", "pillow"))
    with open(data, newline="") as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)


def time_one_pass(config: dict, name: str, batch: int) -> float:
    """Seconds of one image's forward pass (forward + backward = 3 passes) of the audit's model on
    one thread, from a forward + input-gradient pass of ``batch`` random images at the config's
    size (the median of three after a warm-up). Weights do not matter for the time, so a state
    dict's architecture is built with random ones.

    Args:
        config: the audit's config (as from :func:`audit_config`).
        name: the dataset's name in ``config["datasets"]``.
        batch: images per timed pass.

    Returns:
        Seconds per image and pass, on one CPU thread.

    Raises:
        OncorobustError: the model cannot be loaded or built (the import step would say the same).
    """
    import torch

    from oncorobust.models import architectures, heads

    entry = config["datasets"][name]
    size, model_cfg = int(entry["preprocess"]["size"]), entry["model"]
    channels = int(model_cfg.get("input", {}).get("channels") or (3 if entry["preprocess"].get("color") == "rgb" else 1))
    kind, target = registry.parse_arch(model_cfg["arch"])
    classes = len(entry["source"].get("classes") or ["benign", "malignant"])
    if kind in registry.SERIALIZED_SOURCES:
        net = architectures.load_serialized(kind, target)
    elif kind in registry.BUILT_SOURCES:
        net = architectures.build_net(model_cfg["arch"], classes=classes, in_channels=channels, size=size)
    else:
        net = architectures.build_model(model_cfg["arch"], classes=classes, in_channels=channels, size=size,
                                       mean=[0.5] * channels, std=[0.25] * channels, width=int(model_cfg.get("width", 32)))
    net.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workflow's jobs
    times = []
    try:
        for _ in range(4):
            x = torch.rand(batch, channels, size, size, requires_grad=True)
            start = time.perf_counter()
            out = heads.main_output(net(x))
            (grad,) = torch.autograd.grad(out.float().sum(), x)
            times.append(time.perf_counter() - start)
    except Exception as exc:  # noqa: BLE001 (the user's model may raise anything)
        raise OncorobustError(f"timing the model on {batch}x{channels}x{size}x{size} random images failed:"
                              f" {reason_line(exc)}") from None
    finally:
        torch.set_num_threads(threads)
    return sorted(times[1:])[1] / (3 * batch)


def reason_line(exc: BaseException, limit: int = 400) -> str:
    """An exception as one line that leads with its reason: TorchScript and autograd errors put a
    40-line trace before the reason on their last line; that line comes first here.

    Args:
        exc: the exception.
        limit: the most characters kept.

    Returns:
        ``"<Type>: <last non-empty line of the message>"`` (cut to ``limit``).
    """
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not set(ln.strip()) <= set("~^ ")]
    text = lines[-1] if lines else ""
    text = text.removeprefix(f"{type(exc).__name__}: ")
    return f"{type(exc).__name__}: {text}"[:limit]


def print_estimate(config: dict, name: str, data: Path, cores: int) -> float:
    """Time the model, then print the planned work and the estimated total before the run.

    Args:
        config: the audit's config (as from :func:`audit_config`).
        name: the dataset's name in ``config["datasets"]``.
        data: the image folder or manifest CSV (its images or rows are counted).
        cores: CPU cores the run will use.

    Returns:
        The estimate in seconds.

    Raises:
        OncorobustError: the model cannot be loaded, built or run (from :func:`time_one_pass`).
    """
    entry = config["datasets"][name]
    n = _count_images(data)
    test_fraction = float(entry.get("split", {}).get("test_fraction", 0.33))
    n_test = int(round(n * test_fraction))
    n_val = int(round((n - n_test) * float(entry.get("split", {}).get("val_fraction", 0.15))))
    batch = max(1, min(int(config.get("attacks", {}).get("batch_size", 128)), n_test or 1))
    t = time_one_pass(config, name, batch)
    passes = planned_passes(config, name, n_test, n_val, n - n_test - n_val)
    total = estimate_seconds(passes, t, cores)
    bound = estimate_seconds(passes, t, cores, early_exit={})
    work = ", ".join(f"{k} {v:,.0f}" for k, v in passes.items() if k != "jobs")
    print(f"oncorobust audit: one forward + backward pass of {batch} images at"
          f" {entry['preprocess']['size']} px takes {3 * batch * t:.2f} s on one thread; about"
          f" {n} images ({n_test} test, {n_val} validation); planned passes (images × passes) per"
          f" family: {work}; budget {config['attacks'].get('budget', 'standard')}: estimated total"
          f" {fmt_seconds(total)} on {cores} core(s) (at most {fmt_seconds(bound)} if no image flips"
          " early)", file=sys.stderr)
    return total


def _eps_arg(text: str) -> float:
    value = parse_fraction(text)
    if value is None:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r}: give a number (0.002) or a fraction (8/255)") from None
    return value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value}: give at least 1 core")
    return value


def lock_out_folder(out: Path):
    """Hold ``out``'s audit lock (``.oncorobust-audit.lock``) until the returned file is closed or the
    process ends: a second audit into the same folder is refused instead of overwriting the first's
    ``config.yaml`` while it runs.

    Args:
        out: the audit's output folder (exists).

    Returns:
        The open lock file (keep it open for the whole audit).

    Raises:
        OncorobustError: another audit holds the lock (its pid is named).
    """
    import errno
    import fcntl

    fh = open(out / ".oncorobust-audit.lock", "a+")
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):  # a file system without locks (NFS nolock)
            print(f"oncorobust audit: warning: cannot lock {out} ({exc.strerror}); make sure no other audit"
                  " runs into it", file=sys.stderr)
            return fh
        fh.seek(0)
        holder = fh.read().strip() or "unknown"
        fh.close()
        raise OncorobustError(f"--out {out}: another `oncorobust audit` is running into this folder ({holder});"
                              " wait for it to finish or give another --out") from None
    fh.seek(0)
    fh.truncate()
    fh.write(f"pid {os.getpid()}, started {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
    fh.flush()
    return fh


def _death_signal():
    """Linux: a function for the child (between fork and exec) that asks for SIGTERM when the audit
    dies, even by SIGKILL (PR_SET_PDEATHSIG); None elsewhere. libc is looked up here, in the parent,
    so that the child only makes the system call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes
        import signal

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent, sigterm = os.getpid(), int(signal.SIGTERM)

    def _arm() -> None:  # pragma: no cover (runs in the child)
        prctl(1, sigterm)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the audit died before the call: go too
            os._exit(1)

    return _arm


def run_child(cmd: list[str], env: dict) -> int:
    """Run ``cmd`` (Snakemake) and return its exit status; it never outlives the audit: a SIGTERM,
    SIGHUP or Ctrl-C of the audit stops it (SIGTERM, then SIGKILL after 30 s) and, on Linux, so does
    the audit's own death.

    Args:
        cmd: the command line.
        env: its environment.

    Returns:
        The child's exit status (128 + the signal number when the audit was stopped by one).
    """
    import signal

    proc = subprocess.Popen(cmd, env=env, preexec_fn=_death_signal())
    stopped = []

    def _stop(signum, _frame):
        stopped.append(signum)
        raise KeyboardInterrupt

    # a signal the audit was told to ignore (nohup: SIGHUP) stays ignored
    old = {sig: signal.signal(sig, _stop) for sig in (signal.SIGTERM, signal.SIGHUP)
           if signal.getsignal(sig) is not signal.SIG_IGN}
    try:
        return proc.wait()
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return 128 + int(stopped[0] if stopped else signal.SIGINT)
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def _audit(args: argparse.Namespace) -> int:
    import yaml

    from oncorobust.config import check_config, validate_config

    if not re.fullmatch(r"[A-Za-z0-9_]+", args.name):
        raise OncorobustError(f"--name {args.name!r}: use letters, digits and _ (it names result folders)")
    if args.snakefile and not Path(args.snakefile).expanduser().exists():
        raise OncorobustError(f"--snakefile {args.snakefile}: no such file or folder")
    snakefile = find_snakefile(args.snakefile)
    out = Path(args.out).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    lock = lock_out_folder(out)  # noqa: F841 (held until the audit ends)
    config = normalize_config_eps(audit_config(args))  # "k/255" from --config files
    validate_config(config, schema_file(snakefile))
    cwd = os.getcwd()
    os.chdir(out)  # check_config resolves results (and relative paths) against the working directory
    try:
        check_config(config, workdir=out)
    finally:
        os.chdir(cwd)
    cfg_file = out / "config.yaml"
    rerun = shlex.join([sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(out),
                        "--configfile", str(cfg_file), "--cores", str(args.cores)])
    cfg_file.write_text(f"# written by `oncorobust audit` (budget {config['attacks']['budget']}); rerun with:\n"
                        f"# {rerun}\n" + yaml.safe_dump(config, sort_keys=False))
    print(f"oncorobust audit: config written to {cfg_file}", file=sys.stderr)
    if importlib.util.find_spec("snakemake") is None:
        raise OncorobustError(f"snakemake is not installed in {sys.executable}'s environment:"
                              " pip install 'snakemake>=9,<10'")
    if not args.no_estimate:
        print_estimate(config, args.name, Path(args.data).expanduser(), args.cores)
    base = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(out),
            "--configfile", str(cfg_file), "--cores", str(args.cores)]
    run = base + (["-n"] if args.dry_run else []) + list(args.snakemake_args or [])
    # the workflow runs in --out: a python:<module>:<callable> model is imported from here
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (cwd, os.environ.get("PYTHONPATH")) if p)}
    rc = run_child(run, env)
    if rc != 0 or args.dry_run:
        return rc
    if not args.no_report:
        # written beside, then renamed: a failed report (a full disk) leaves no 0-byte report.html
        partial = out / ".report.partial.html"
        rc = run_child(base + ["--report", str(partial)], env)
        if rc != 0 or not partial.is_file() or partial.stat().st_size == 0:
            partial.unlink(missing_ok=True)
            if rc == 0:
                raise OncorobustError(f"snakemake --report wrote nothing to {out / 'report.html'} (a full disk?);"
                                      " free space and rerun the audit (the results are kept)")
            return rc
        os.replace(partial, out / "report.html")
    print(f"oncorobust audit: tables in {out / 'results' / 'tables'}, figures in"
          f" {out / 'results' / 'figures'}" + ("" if args.no_report else f", report {out / 'report.html'}"),
          file=sys.stderr)
    from oncorobust.reporting.cards import find_cards, verdict_line

    for card in find_cards(out / config.get("results", "results")):
        print(f"oncorobust audit: robustness card {verdict_line(card)}", file=sys.stderr)
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
                            " python:<module|file.py>:<callable>; trained on the data unless --weights),"
                            " a TorchScript file or a torch.export program (.pt2), used as-is")
    audit.add_argument("--weights", help="a state dict or training checkpoint of --model's architecture"
                                         " (read with weights_only=True): audited as given, not trained")
    audit.add_argument("--output", choices=["auto", "logits", "logit", "probabilities"], default="auto",
                       help="what a given model returns: logits (N x classes), logit (one value per image,"
                            " a sigmoid/BCE head), probabilities (softmax or sigmoid); auto: detected at"
                            " import and logged (default: %(default)s)")
    audit.add_argument("--positive-class", type=int, choices=[0, 1],
                       help="one-output heads: the class index a high output means (default 1)")
    audit.add_argument("--checkpoint-key", help="the key of a training checkpoint holding the weights"
                                                " (default: found, e.g. model, state_dict, model_ema)")
    audit.add_argument("--budget", choices=list(BUDGETS), default="standard",
                       help="attack budget: quick (APGD-margin 25 steps, no Square), standard (the"
                            " defaults), thorough (AutoAttack budgets, 3 restarts) (default: %(default)s)")
    audit.add_argument("--data", required=True,
                       help="a manifest CSV (config/README.md) or a folder with one sub-folder per class")
    audit.add_argument("--eps", type=_eps_arg, nargs="+", default=[0.001, 0.002, 0.004, 0.008],
                       help="L-inf budgets in [0,1] pixel units, numbers or fractions such as 8/255"
                            " (default: %(default)s)")
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
    audit.add_argument("--intensity", choices=["auto", "bitdepth", "window", "percentile", "none"], default="auto",
                       help="intensity scaling (auto: a folder's integer images by their bit depth, e.g."
                            " [0, 255] for 8-bit and [0, 4095] for 12-bit values; a manifest by percentiles)")
    audit.add_argument("--window", type=float, nargs=2, default=[0.0, 255.0], metavar=("LOW", "HIGH"),
                       help="raw values mapped to 0 and 1 by --intensity window (default: %(default)s)")
    audit.add_argument("--color", choices=["luminance", "rgb"], default="luminance",
                       help="colour images: rgb keeps three channels (for a 3-channel model), luminance"
                            " reads them as grey (default: %(default)s)")
    audit.add_argument("--methods", nargs="+", default=list(registry.CLI_METHODS),
                       help="attack methods (default: %(default)s)")
    audit.add_argument("--test-fraction", type=float, default=0.33,
                       help="patients held out for testing (default: %(default)s)")
    audit.add_argument("--epochs", type=int, default=20, help="training epochs when the model is trained here")
    audit.add_argument("--seed", type=int, default=0)
    audit.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: %(default)s)")
    audit.add_argument("--cores", type=_positive_int, default=max(1, min(4, os.cpu_count() or 1)),
                       help="CPU cores for the workflow, at least 1 (default: %(default)s)")
    audit.add_argument("--config", help="a YAML file deep-merged into the generated config (its key"
                                        " 'dataset' into the dataset's entry), e.g. sensitivity or attacks settings")
    audit.add_argument("--snakefile", help="the workflow's Snakefile (default: found automatically)")
    audit.add_argument("--dry-run", action="store_true", help="write the config and show what would run")
    audit.add_argument("--no-report", action="store_true", help="skip the HTML report")
    audit.add_argument("--no-estimate", action="store_true", help="skip timing the model and the estimate")
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
