"""Logging for workflow steps: everything to the rule's log file, user errors as one clear line;
durations written for people (:func:`fmt_seconds`). No torch import (the command line uses it)."""

from __future__ import annotations

import contextlib
import logging
import sys
from typing import Iterator

from oncorobust.errors import OncorobustError


@contextlib.contextmanager
def step_logging(log_path: str | None, name: str) -> Iterator[logging.Logger]:
    """Send the ``oncorobust`` loggers to ``log_path``; turn an OncorobustError into one line on
    stderr and in the log, then exit with status 1 (no traceback from deep inside a library).
    Any other exception is written to the log with its traceback and re-raised.

    Args:
        log_path: the rule's log file (overwritten), or None to log to the console only.
        name: the step's name; the logger yielded is ``oncorobust.{name}``.

    Yields:
        The step's logger.

    Raises:
        SystemExit: status 1, when the block raises an OncorobustError (logged as one line).
    """
    console = logging.StreamHandler(sys.stderr)
    console.setLevel(logging.INFO)
    # the full story goes to the log file; the console gets warnings and the progress lines
    console.addFilter(lambda r: r.levelno >= logging.WARNING or r.name == "oncorobust.progress")
    handlers: list[logging.Handler] = [console]
    if log_path:
        handlers.append(logging.FileHandler(log_path, mode="w"))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        handlers=handlers, force=True)
    log = logging.getLogger(f"oncorobust.{name}")
    try:
        yield log
    except OncorobustError as exc:
        _log_listed(log, exc)
        log.error("%s: %s", type(exc).__name__, exc)
        raise SystemExit(1) from None
    except Exception:
        # Not a user error (a bug, or a library's own exception): the rule's log must still hold
        # what stopped the step, with its traceback; it is then re-raised unchanged.
        log.exception("the step stopped on an unexpected error (please report it with this log)")
        raise


def _log_listed(log: logging.Logger, exc: OncorobustError) -> None:
    """Write the skip list an ingest/preprocess error carries (``exc.skipped``) into the log: the
    job's skipped.csv is an output, which Snakemake deletes when the job fails, so the log (kept)
    is where a user finds why each file was left out. ``exc.private`` (pseudonymised runs): the
    reasons are counted, no file or ID is written."""
    listed = getattr(exc, "skipped", None)
    if listed is None or not len(listed):
        return
    if getattr(exc, "private", False) or "reason" not in getattr(listed, "columns", ()):
        reasons = listed["reason"].astype(str).str.split(":").str[0].value_counts() if "reason" in listed else {}
        log.info("%d file(s) were left out before the error; by reason: %s", len(listed),
                 "; ".join(f"{k} ({v})" for k, v in dict(reasons).items()) or "not recorded")
        return
    log.info("%d file(s) were left out before the error (the job's skipped.csv is not kept when it fails):\n%s",
             len(listed), listed.to_string(index=False, max_rows=500, max_colwidth=200))


def fmt_seconds(s: float) -> str:
    """``1 h 02 min``, ``3 min 05 s``, ``42 s`` (``?`` when unknown).

    Args:
        s: a duration in seconds (NaN or inf when unknown).

    Returns:
        The duration rounded to the second, written for people.
    """
    if s != s or s == float("inf"):
        return "?"
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600} h {s % 3600 // 60:02d} min"
    if s >= 60:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s} s"
