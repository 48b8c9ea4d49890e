"""The ``oncorobust`` command (pyproject's console script).

The workflow itself runs through Snakemake (see the README); this command holds the helpers that
are useful outside it. Subcommands:

- ``version``: print the installed package version.
"""

from __future__ import annotations

import argparse
import sys
from importlib import metadata

from . import __version__


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
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
