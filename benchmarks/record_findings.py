"""Record a finished study's findings, and put them in the README from its own tables.

The README's "What it finds" must come from a run's tables, never be copied by hand
(issue 24). This script copies what rule ``findings`` and its inputs wrote in a finished
run into ``benchmarks/findings/<name>/`` - ``findings.md``, the per-seed tables it was
rendered from (``trends_seeds.csv``, ``table1_seeds.csv``, ``detection_seeds.csv``),
Table 1 and the detection tables - with ``run.json`` (machine, commit, wall time,
command), and rewrites the README block between
``<!-- findings:<name>:begin -->`` and ``<!-- findings:<name>:end -->`` from them.
``tests/test_recorded_findings.py`` checks both directions: the recorded
``findings.md`` is what :func:`latentebsd.findings.findings_markdown` renders from the
recorded tables, and the README block is what :func:`readme_block` renders from the
record. ::

    python benchmarks/record_findings.py /tmp/run --name default --wall-s 1500 \\
        --command "snakemake --cores all --resources gpu=1"
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd

try:
    import latentebsd  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from latentebsd.findings import findings_markdown  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RECORDS = REPO / "benchmarks" / "findings"

#: run-relative path -> name in the record
FILES = {"results/findings.md": "findings.md",
         "results/evaluation/trends_seeds.csv": "trends_seeds.csv",
         "results/evaluation/table1_seeds.csv": "table1_seeds.csv",
         "results/benchmark/detection_seeds.csv": "detection_seeds.csv",
         "results/evaluation/table1.md": "table1.md",
         "results/evaluation/table1.csv": "table1.csv",
         "results/benchmark/detection.md": "detection.md",
         "results/benchmark/detection_limits.md": "detection_limits.md"}
REQUIRED = ("findings.md", "trends_seeds.csv", "table1_seeds.csv")


def seed_groups_of(table: pd.DataFrame) -> dict[int, dict[str, str]]:
    """``{seed: {variant: model}}`` as the run's plan had it, from ``table1_seeds.csv``."""
    groups: dict[int, dict[str, str]] = {}
    for r in table[table["seed"].astype(str) != "spread"].to_dict("records"):
        groups.setdefault(int(r["seed"]), {})[str(r["variant"])] = str(r["model"])
    return groups


def render_findings(record: Path) -> str:
    """``findings.md`` rendered again from the record's per-seed tables."""
    table = pd.read_csv(record / "table1_seeds.csv")
    detection = record / "detection_seeds.csv"
    return findings_markdown(pd.read_csv(record / "trends_seeds.csv"), table,
                             pd.read_csv(detection) if detection.exists() else None,
                             seed_groups_of(table))


def readme_block(record: Path) -> str:
    """The README text of one record: where and how it ran, then its findings (headings
    one level down, under the README's own)."""
    run = json.loads((record / "run.json").read_text())
    wall = run.get("wall_s")
    head = (f"*Recorded by `benchmarks/record_findings.py` from the run's own tables "
            f"(`benchmarks/findings/{record.name}/`): `{run['command']}` at commit "
            f"{run['commit']}, {run['date']}, on {run['machine']}"
            + (f", {wall / 60:.1f} min wall time (cold)" if wall else "") + ".*")
    body = (record / "findings.md").read_text().strip().splitlines()
    if body and body[0].startswith("# "):
        body = body[1:]
    body = [("###" + line[2:]) if line.startswith("## ") else line for line in body]
    return head + "\n\n" + "\n".join(body).strip() + "\n"


def markers(name: str) -> tuple[str, str]:
    return f"<!-- findings:{name}:begin -->", f"<!-- findings:{name}:end -->"


def readme_section(readme_text: str, name: str) -> str | None:
    """The text between the README's markers of record ``name`` (None without them)."""
    begin, end = markers(name)
    m = re.search(re.escape(begin) + r"\n(.*?)" + re.escape(end), readme_text, re.S)
    return m.group(1) if m else None


def machine() -> str:
    """CPU model, cores and memory of this machine, and whether torch sees a GPU."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f", {kb / 2**20:.0f} GB"
    except (OSError, ValueError, IndexError):
        pass
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    except ImportError:
        gpu = "no torch"
    return f"{model}, {os.cpu_count()} cores{mem}, {gpu}"


def record(run_dir: Path, name: str, command: str, wall_s: float | None,
           machine_text: str | None = None, readme: Path = REPO / "README.md") -> Path:
    """Copy the run's tables into ``benchmarks/findings/<name>/`` and rewrite its README block."""
    missing = [src for src, dst in FILES.items() if dst in REQUIRED and not (run_dir / src).exists()]
    if missing:
        raise SystemExit(f"{run_dir}: not a finished study, missing {', '.join(missing)}")
    out = RECORDS / name
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for src, dst in FILES.items():
        if (run_dir / src).exists():
            shutil.copy(run_dir / src, out / dst)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=run_dir,
                            capture_output=True, text=True).stdout.strip() or "unknown"
    date = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    (out / "run.json").write_text(json.dumps(
        {"command": command, "commit": commit, "date": date, "wall_s": wall_s,
         "machine": machine_text or machine()}, indent=1) + "\n")
    if render_findings(out) != (out / "findings.md").read_text():
        raise SystemExit(f"{run_dir}: findings.md is not what its tables render (another version?)")
    text = readme.read_text()
    begin, end = markers(name)
    if readme_section(text, name) is None:
        raise SystemExit(f"{readme}: no {begin} ... {end} markers to write between")
    text = re.sub(re.escape(begin) + r"\n.*?" + re.escape(end),
                  lambda _: f"{begin}\n{readme_block(out)}{end}", text, flags=re.S)
    readme.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path, help="the working directory of a finished study")
    ap.add_argument("--name", default="default", help="record name (README markers)")
    ap.add_argument("--command", default="snakemake --cores all --resources gpu=1")
    ap.add_argument("--wall-s", type=float, default=None, help="the run's wall time")
    ap.add_argument("--machine", default=None, help="default: this machine's CPU / cores / GPU")
    args = ap.parse_args(argv)
    out = record(args.run_dir, args.name, args.command, args.wall_s, args.machine)
    print(f"recorded {out}; README block findings:{args.name} rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
