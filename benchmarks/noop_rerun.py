"""No-op rerun cost: `snakemake --cores 2` with nothing to do, as a ratio to a plain
`snakemake -n` of the same DAG (goal <= 1.5). Run after `make demo`; writes
results/benchmarks/noop_rerun.json.
"""

from __future__ import annotations

import subprocess
import sys
import time

from oncorobust.io import write_json

CMD = [sys.executable, "-m", "snakemake", "--configfile", "config/config.yaml", "-q"]


def best(args: list[str], repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = subprocess.run(CMD + args, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if out.returncode != 0:
            raise SystemExit(out.stdout + out.stderr)
        if "Nothing to be done" not in out.stdout + out.stderr and "-n" not in args:
            raise SystemExit("the DAG is not complete: run `make demo` first")
    return min(times)


def main() -> None:
    dry = best(["-n"])
    noop = best(["--cores", "2"])
    result = {"dry_run_s": dry, "noop_rerun_s": noop, "ratio": noop / dry}
    write_json(result, "results/benchmarks/noop_rerun.json")
    print(f"snakemake -n: {dry:.2f} s; no-op rerun: {noop:.2f} s; ratio {noop / dry:.2f} (goal <= 1.5)")


if __name__ == "__main__":
    main()
