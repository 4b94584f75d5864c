"""Per-stage wall times of one Snakemake run, from its log.

Reads ``.snakemake/log/<run>.snakemake.log`` (every job's start and ``Finished jobid``
lines, 1 s resolution) and prints, per rule: jobs, the sum of their wall times, the
longest one, and for the whole run the wall time and how busy the cores were (sum of
job wall times / (wall x cores)). Unlike the ``benchmark:`` tables this covers every
job, also the rules that have no ``benchmark:`` file.

This is a benchmark helper, not a test.

Example
-------
    python benchmarks/stage_times.py .snakemake/log/2026-12-02T061741.snakemake.log --cores 2
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)$")


def job_spans(log: Path) -> dict[int, tuple[str, datetime, datetime]]:
    """``jobid -> (rule, start, end)`` of every finished job in a Snakemake log."""
    stamp: datetime | None = None
    rule: str | None = None
    started: dict[int, tuple[str, datetime]] = {}
    spans: dict[int, tuple[str, datetime, datetime]] = {}
    for line in log.read_text().splitlines():
        if m := _STAMP.match(line):
            stamp = datetime.strptime(" ".join(m.group(1).split()), "%a %b %d %H:%M:%S %Y")
        elif m := _RULE.match(line):
            rule = m.group(1)
        elif (m := _JOBID.match(line)) and rule is not None and stamp is not None:
            started.setdefault(int(m.group(1)), (rule, stamp))
            rule = None
        elif (m := _DONE.match(line)) and stamp is not None:
            jobid = int(m.group(1))
            if jobid in started:
                spans[jobid] = (started[jobid][0], started[jobid][1], stamp)
    return spans


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("log", type=Path, help="a .snakemake/log/*.snakemake.log file")
    parser.add_argument("--cores", type=int, default=2, help="cores the run had")
    args = parser.parse_args()
    spans = job_spans(args.log)
    if not spans:
        raise SystemExit(f"{args.log}: no finished jobs found")
    per_rule: dict[str, list[float]] = defaultdict(list)
    for rule, start, end in spans.values():
        if rule != "all":
            per_rule[rule].append((end - start).total_seconds())
    first = min(s for _, s, _ in spans.values())
    last = max(e for _, _, e in spans.values())
    wall = (last - first).total_seconds()
    busy = sum(sum(v) for v in per_rule.values())
    print(f"{args.log.name}: {len(spans)} jobs, first start to last end {wall:.0f} s "
          f"({wall / 60:.1f} min); job time {busy:.0f} s = {busy / max(wall * args.cores, 1):.0%} "
          f"of {args.cores} cores")
    print("| rule | jobs | sum of job wall times, s | longest, s |")
    print("|---|---|---|---|")
    for rule, times in sorted(per_rule.items(), key=lambda kv: -sum(kv[1])):
        print(f"| {rule} | {len(times)} | {sum(times):.0f} | {max(times):.0f} |")


if __name__ == "__main__":
    main()
