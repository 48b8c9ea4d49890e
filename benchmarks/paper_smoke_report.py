"""Peak memory of each job of a workflow run against the mem_mb it declared (``make smoke-paper``).

Reads every ``benchmarks/**/*.tsv`` under the run's results folder (Snakemake's benchmark files:
``s`` wall seconds, ``max_rss`` peak resident memory in MB) and the ``mem_mb`` each job declared,
taken from the Snakemake logs of the run directory (``.snakemake/log/*.snakemake.log``: every job
is printed with its ``benchmark:`` path and its evaluated ``resources:``; the newest log that names
a benchmark file wins, so this is the value the job actually ran with). Prints one row per job and
a per-rule summary, writes ``<results>/benchmarks/paper_smoke_report.csv``, and exits 1 when a job
used more than it declared, when a benchmark file has no declared mem_mb, or when a heavy rule
(train, attack, health, sensitivity, fig1) wrote no benchmark at all.

Usage: python benchmarks/paper_smoke_report.py [RUN_DIR] [--results RESULTS]
(default RUN_DIR results-smoke, RESULTS ``results`` inside it).
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from pathlib import Path

HEAVY = {"train": "train", "attack": "attack_<dataset>", "health": "health", "sensitivity": "sensitivity",
         "figures": "fig1_examples"}  # benchmark folder -> rule (for the report's rule column)


def declared_from_logs(run_dir: Path) -> dict[str, dict]:
    """benchmark path (as Snakemake printed it) -> {"rule", "mem_mb", "runtime"} from the logs."""
    out: dict[str, dict] = {}
    logs = sorted((run_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    for log in logs:  # oldest first: a later run's value replaces an earlier one
        rule = bench = None
        for line in log.read_text(errors="replace").splitlines():
            m = re.match(r"^(?:local)?rule (\w+):", line)
            if m:
                rule, bench = m.group(1), None
                continue
            s = line.strip()
            if s.startswith("benchmark:"):
                bench = s.split(":", 1)[1].strip()
            elif s.startswith("resources:") and bench:
                res = dict(kv.split("=", 1) for kv in (p.strip() for p in s.split(":", 1)[1].split(",")) if "=" in kv)
                if "mem_mb" in res:
                    out[bench] = {"rule": rule, "mem_mb": float(res["mem_mb"]),
                                  "runtime": float(res["runtime"]) if "runtime" in res else float("nan")}
                bench = None
    return out


def last_run_wall_s(run_dir: Path) -> float | None:
    """Seconds from the first to the last job timestamp of the newest Snakemake log."""
    import datetime as dt

    logs = sorted((run_dir / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return None
    stamps = [dt.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
              for m in re.finditer(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$",
                                   logs[-1].read_text(errors="replace"), re.M)]
    return (max(stamps) - min(stamps)).total_seconds() if stamps else None


def read_tsv(path: Path) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    if not rows:
        raise ValueError(f"{path}: empty benchmark file")
    r = rows[-1]  # one row per repeat; the last one
    rss = r.get("max_rss", "")
    return {"s": float(r["s"]), "max_rss": float(rss) if rss not in ("", "-", "NA") else float("nan")}


def report(run_dir: Path, results: str = "results") -> int:
    bench_root = run_dir / results / "benchmarks"
    tsvs = sorted(bench_root.rglob("*.tsv"))
    if not tsvs:
        print(f"no benchmark files under {bench_root}", file=sys.stderr)
        return 1
    declared = declared_from_logs(run_dir)
    rows, problems = [], []
    for tsv in tsvs:
        rel = tsv.relative_to(run_dir).as_posix()
        meas = read_tsv(tsv)
        dec = declared.get(rel) or declared.get(str(tsv))
        job = tsv.relative_to(bench_root).with_suffix("").as_posix()
        rule = dec["rule"] if dec else HEAVY.get(job.split("/")[0], job.split("/")[0])
        row = {"rule": rule, "job": job, "max_rss_mb": meas["max_rss"], "mem_mb": dec["mem_mb"] if dec else float("nan"),
               "wall_s": meas["s"], "runtime_min": dec["runtime"] if dec else float("nan")}
        row["used_pct"] = 100 * row["max_rss_mb"] / row["mem_mb"] if dec else float("nan")
        rows.append(row)
        if dec is None:
            problems.append(f"{job}: no declared mem_mb found in {run_dir}/.snakemake/log")
        elif not row["max_rss_mb"] == row["max_rss_mb"]:
            problems.append(f"{job}: the benchmark has no max_rss")
        elif row["max_rss_mb"] > row["mem_mb"]:
            problems.append(f"{job}: max_rss {row['max_rss_mb']:.0f} MB > declared mem_mb {row['mem_mb']:.0f}")
    seen = {r["job"].split("/")[0] for r in rows}
    for folder, rule in HEAVY.items():
        if folder not in seen:
            problems.append(f"rule {rule}: no benchmark file under {bench_root}/{folder}")

    w = max(len(r["job"]) for r in rows)
    print(f"{'job':<{w}}  {'max_rss MB':>10}  {'mem_mb':>7}  {'used':>5}  {'wall s':>7}  {'runtime min':>11}")
    for r in rows:
        print(f"{r['job']:<{w}}  {r['max_rss_mb']:>10.0f}  {r['mem_mb']:>7.0f}  {r['used_pct']:>4.0f}%"
              f"  {r['wall_s']:>7.1f}  {r['runtime_min']:>11.0f}")
    print("\nper rule (peak over its jobs):")
    by_rule: dict[str, list[dict]] = {}
    for r in rows:
        by_rule.setdefault(r["rule"], []).append(r)
    print(f"{'rule':<18}  {'jobs':>4}  {'peak max_rss MB':>15}  {'its mem_mb':>10}  {'max used':>8}  {'wall s (sum)':>12}")
    for rule, rs in sorted(by_rule.items()):
        top = max(rs, key=lambda r: r["max_rss_mb"])
        print(f"{rule:<18}  {len(rs):>4}  {top['max_rss_mb']:>15.0f}  {top['mem_mb']:>10.0f}"
              f"  {max(r['used_pct'] for r in rs):>7.0f}%  {sum(r['wall_s'] for r in rs):>12.1f}")
    out = bench_root / "paper_smoke_report.csv"
    with open(out, "w", newline="") as fh:
        wr = csv.DictWriter(fh, fieldnames=list(rows[0]))
        wr.writeheader()
        wr.writerows(rows)
    wall = last_run_wall_s(run_dir)
    print(f"\n{len(rows)} jobs; table written to {out}")
    if wall is not None:
        print(f"wall time of the last run (first to last job timestamp of its log): {wall / 60:.1f} min")
    if problems:
        print("FAILED:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 1
    print("every job stayed within its declared mem_mb")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", default="results-smoke", help="the run's working directory")
    ap.add_argument("--results", default="results", help="the config's results folder, relative to run_dir")
    args = ap.parse_args(argv)
    return report(Path(args.run_dir), args.results)


if __name__ == "__main__":
    sys.exit(main())
