"""Compare two ``results/`` trees file by file: does a change alter what the workflow makes?

    python benchmarks/compare_results.py results_before results_after [--figures]

Every file present in either tree is compared byte for byte, except:

- figures (``.png``) are left out unless ``--figures`` is given (matplotlib embeds its
  version, and a figure's pixels may change on purpose with the code that draws it);
- the encoding throughput that the encode stage records beside its sizes
  (``encode_seconds``, ``patterns_per_second`` in ``*_reduction.json`` and
  ``latent/summary.csv``) is a measured time, not a result: those two fields are dropped
  before comparing.

Both runs must have been made in the same directory path: the latent cubes and the
preprocessed scans record the absolute path of their inputs. Prints one line per
differing or missing file and a summary; exits 1 if anything differs.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path

import pandas as pd

TIMING_FIELDS = ("encode_seconds", "patterns_per_second")


def _without_timing(path: Path) -> bytes:
    if path.name.endswith("_reduction.json"):
        data = json.loads(path.read_text())
        for key in TIMING_FIELDS:
            data.pop(key, None)
        return json.dumps(data, sort_keys=True).encode()
    if path.name == "summary.csv" and path.parent.name == "latent":
        frame = pd.read_csv(path).drop(columns=list(TIMING_FIELDS), errors="ignore")
        buf = io.StringIO()
        frame.to_csv(buf, index=False)
        return buf.getvalue().encode()
    return path.read_bytes()


def compare(a: Path, b: Path, figures: bool = False) -> tuple[int, list[str]]:
    """``(files compared, problems)`` for the trees ``a`` and ``b``."""
    def files(root: Path) -> set[Path]:
        return {p.relative_to(root) for p in root.rglob("*")
                if p.is_file() and (figures or p.suffix != ".png")}

    fa, fb = files(a), files(b)
    problems = [f"only in {a}: {p}" for p in sorted(fa - fb)]
    problems += [f"only in {b}: {p}" for p in sorted(fb - fa)]
    both = sorted(fa & fb)
    problems += [f"differs: {p}" for p in both if _without_timing(a / p) != _without_timing(b / p)]
    return len(both), problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    parser.add_argument("--figures", action="store_true", help="compare the PNG figures too")
    args = parser.parse_args()
    n, problems = compare(args.a, args.b, args.figures)
    for line in problems:
        print(line)
    print(f"{n} files compared, {len(problems)} differ or are missing "
          f"({'figures included' if args.figures else 'figures left out'})")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
