"""Mutation testing: do the fast tests guard the numbers? (issue 26)

Each mutant is a small, realistic bug planted in one source file - an inverted ratio, a
dropped criterion, a quantile on the wrong scale, training on the scored fold. The
runner copies the repository (tracked and untracked source, no ``.git``, no results) to
a temporary folder once, then for each mutant: plants it (the original text must occur
exactly once), runs the mutant's fast tests there (``-x -m "not slow"``, stopping at
the first failure), and puts the file back. A mutant is **killed** when a test fails,
**survived** when all pass; **error** when pytest could not run (exit code other than
0 / 1). Before the mutants, the same tests run on the unmutated copy: they must pass,
or every kill would be meaningless.

Usage (from the repository root; about 3 min on 2 cores)::

    python benchmarks/mutants.py                # every mutant
    python benchmarks/mutants.py --list         # the mutants and their tests
    python benchmarks/mutants.py ratio_inverted bin_mask_any   # some of them
    python benchmarks/mutants.py --markdown out.md             # the report as a table

Each mutant names the whole fast test files that guard it (a ``keyword`` may narrow
them with ``-k``; none does now). The whole list runs in about 3 minutes with a warm
numba cache (the first PyEBSDIndex call on a machine compiles for ~90 s). Not part of
every CI run. ``--tests-from REF`` runs the mutants against the test files as they were
at git ``REF``: which mutants the suite survived before its guards.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: Not copied: history, outputs, caches (top-level names; caches anywhere).
TOP_IGNORE = {".git", "results", "resources", ".snakemake", "logs", "data", "build", "wheelhouse",
              "shared"}
ANY_IGNORE = shutil.ignore_patterns("__pycache__", ".pytest_cache", "*.egg-info")


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = set(ANY_IGNORE(folder, names))
    if Path(folder).resolve() == REPO:
        skip |= TOP_IGNORE & set(names)
    return skip


@dataclass(frozen=True)
class Mutant:
    """One planted bug: ``edits`` (old, new) in ``path``, guarded by ``tests``."""

    name: str
    path: str
    edits: tuple[tuple[str, str], ...]
    tests: tuple[str, ...]
    why: str
    keyword: str | None = None

    @property
    def module(self) -> str:
        return self.path.removeprefix("src/").removesuffix(".py").replace("/", ".")


MUTANTS: tuple[Mutant, ...] = (
    # -- metrics / index: the per-pattern numbers of Table 1
    Mutant("ratio_inverted", "src/latentebsd/metrics.py",
           (("np.divide(num, den, out=out, where=ok)", "np.divide(den, num, out=out, where=ok)"),),
           ("tests/test_evaluate.py",), "ratios original / decoded instead of decoded / original"),
    Mutant("indexed_ignores_nmatch", "src/latentebsd/io/index.py",
           (('return (np.asarray(result["phase"]) >= 0) & (np.asarray(result["nmatch"]) >= min_nmatch)',
             'return np.asarray(result["phase"]) >= 0'),),
           ("tests/test_table1.py",), "'indexed' = any solution, whatever the matched bands"),
    Mutant("indexed_nmatch_off_by_one", "src/latentebsd/io/index.py",
           (('(np.asarray(result["nmatch"]) >= min_nmatch)', '(np.asarray(result["nmatch"]) > min_nmatch)'),),
           ("tests/test_table1.py",), "indexed needs min_nmatch + 1 bands"),
    Mutant("metrics_indexed_any_solution", "src/latentebsd/metrics.py",
           (("idx_d = is_indexed(decoded, min_nmatch)", "idx_d = is_indexed(decoded, 0)"),),
           ("tests/test_table1.py",), "a decoded pattern counts as indexed with any solution"),
    Mutant("index_stores_blank_quality", "src/latentebsd/index.py",
           (("for key, values in pattern_quality(patterns, window, sharp).items():",
             "for key, values in pattern_quality(np.broadcast_to(np.where(mask, np.float32(0.5), "
             "np.float32(0.0)), patterns.shape), window, sharp).items():"),),
           ("tests/test_evaluate.py",), "the index stage stores the quality of a band-free disc"),
    Mutant("image_quality_constant", "src/latentebsd/index.py",
           (("out[i] = get_image_quality(pattern,", "out[i] = 0.5 or get_image_quality(pattern,"),),
           ("tests/test_evaluate.py",), "Krieger-Lassen IQ 0.5 for every non-constant pattern"),
    Mutant("quality_window_ignored", "src/latentebsd/index.py",
           (("inner = np.asarray(patterns)[:, window[0], window[1]]", "inner = np.asarray(patterns)"),),
           ("tests/test_evaluate.py",), "quality measured on the full frame, screen edge included"),
    # -- table1: pooling
    Mutant("quantile_as_percentile", "src/latentebsd/table1.py",
           (("np.quantile(v, list(quantiles))", "np.percentile(v, list(quantiles))"),
            ("float(np.quantile(finite, q))", "float(np.percentile(finite, q))")),
           ("tests/test_table1.py",), "np.percentile(v, [0.1, 0.5, 0.9]): the 0.1 % point, not 10 %"),
    Mutant("quantile_mirrored", "src/latentebsd/table1.py",
           (("np.quantile(v, list(quantiles))", "np.quantile(v, [1 - q for q in quantiles])"),
            ("float(np.quantile(finite, q))", "float(np.quantile(finite, 1 - q))")),
           ("tests/test_table1.py",), "quantile q reported as 1 - q"),
    Mutant("agree_reversed", "src/latentebsd/table1.py",
           (('nan=np.inf) < agree_deg)', 'nan=np.inf) > agree_deg)'),),
           ("tests/test_evaluate.py",), "'indexed and agreeing' counts the disagreeing"),
    # -- benchmark: detection
    Mutant("detection_trains_on_scored_fold", "src/latentebsd/benchmark.py",
           (("test, train = fold_of == fold, fold_of != fold",
             "test, train = fold_of == fold, fold_of >= 0"),),
           ("tests/test_benchmark.py",), "every fold, the scored one included, trains"),
    Mutant("single_map_chosen_on_test", "src/latentebsd/benchmark.py",
           (("single, row, sign = single_map_prediction(train_ranks, features, t, kind, train, test)",
             "single, row, sign = single_map_prediction(average_ranks(features[:, test]), features, t, "
             "kind, test, test)"),),
           ("tests/test_benchmark.py",), "the single map chosen on the held-out pixels"),
    Mutant("fold_guard_dropped", "src/latentebsd/benchmark.py",
           (("folds = np.where(near, -1, folds)", "folds = folds"),),
           ("tests/test_benchmark.py",), "no guard band between folds (gradients leak across)"),
    Mutant("probe_standardised_on_all", "src/latentebsd/benchmark.py",
           (("mean, std = x_train.mean(axis=0), x_train.std(axis=0)",
             "mean, std = features.T.mean(axis=0), features.T.std(axis=0)"),),
           ("tests/test_benchmark.py",), "probe inputs standardised with the scored pixels"),
    # -- novelty
    Mutant("novelty_r2_on_all_pixels", "src/latentebsd/novelty.py",
           (("train, test = fold != f, fold == f", "train, test = np.ones(len(fold), bool), fold == f"),),
           ("tests/test_benchmark.py",), "conventional R^2 fitted on all pixels, held-out included"),
    Mutant("novelty_grain_mean_leaks", "src/latentebsd/novelty.py",
           (("inside = train & (grain >= 0)", "inside = grain >= 0"),),
           ("tests/test_benchmark.py",), "per-grain means include held-out points"),
    Mutant("novelty_inverted", "src/latentebsd/novelty.py",
           (("* (1.0 - np.clip(np.asarray(r2, np.float64), 0.0, 1.0))",
             "* np.clip(np.asarray(r2, np.float64), 0.0, 1.0)"),),
           ("tests/test_benchmark.py",), "novelty = structure x R^2 (explained ranks first)"),
    # -- training
    Mutant("resume_noop", "src/latentebsd/train.py",
           (("state = _load_checkpoint(s.checkpoint_path, s.fingerprint)\n", "state = None\n"),),
           ("tests/test_train.py",), "training never resumes (restarts from epoch 0)"),
    # -- preprocessing
    Mutant("bin_mask_any", "src/latentebsd/preprocess.py",
           ((".all(axis=(1, 3))", ".any(axis=(1, 3))"),),
           ("tests/test_preprocess.py",), "a binned pixel on screen if any source pixel is"),
)


def copy_repo(dest: Path) -> Path:
    """The working tree (sources, tests, config) under ``dest``."""
    target = dest / "repo"
    shutil.copytree(REPO, target, ignore=_ignore, symlinks=True)
    return target


def run_tests(root: Path, tests: tuple[str, ...], keyword: str | None, timeout: float,
              stop: bool = True) -> tuple[int, str, float]:
    """pytest on ``tests`` in ``root`` (its ``src`` first on the path; ``stop``: at the
    first failure): (exit code, the failed tests or the last line, seconds)."""
    env = {**os.environ, "PYTHONPATH": str(root / "src"), "PYTHONDONTWRITEBYTECODE": "1"}
    env.setdefault("LATENTEBSD_NUMBA_CACHE_DIR", str(Path(tempfile.gettempdir()) / "numba-mutants"))
    cmd = [sys.executable, "-m", "pytest", "-q", *(["-x"] if stop else []), "-m", "not slow",
           "-p", "no:cacheprovider", "-p", "no:randomly", *tests]
    if keyword:
        cmd += ["-k", keyword]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 124, "timed out", time.perf_counter() - t0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.strip()]
    failed = [ln.split(" - ")[0].removeprefix("FAILED ").removeprefix("ERROR ")
              for ln in lines if ln.startswith(("FAILED", "ERROR"))]
    return proc.returncode, "; ".join(failed) or (lines[-1] if lines else ""), time.perf_counter() - t0


def plant(root: Path, mutant: Mutant) -> str:
    """Apply ``mutant`` in ``root``; returns the file's original text."""
    path = root / mutant.path
    text = path.read_text()
    new = text
    for old, repl in mutant.edits:
        if new.count(old) != 1:
            raise ValueError(f"{mutant.name}: {old!r} occurs {new.count(old)} times in {mutant.path}")
        new = new.replace(old, repl)
    path.write_text(new)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="mutants to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the mutants and exit")
    parser.add_argument("--markdown", help="also write the report as a Markdown table here")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pytest run")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run")
    parser.add_argument("--every-failure", action="store_true",
                        help="run each mutant's tests to the end and name every test it fails "
                             "(default: stop at the first)")
    parser.add_argument("--tests-from", metavar="REF",
                        help="run the test files as they were at git REF (which mutants did the "
                             "suite survive before its guards?); a -k that selects nothing "
                             "there runs the whole files")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTANTS if not args.names or m.name in args.names]
    unknown = set(args.names) - {m.name for m in MUTANTS}
    if unknown:
        parser.error(f"unknown mutants: {', '.join(sorted(unknown))}")
    if args.list:
        for m in chosen:
            print(f"{m.name:34s} {m.module:24s} {' '.join(m.tests)}"
                  f"{' -k ' + repr(m.keyword) if m.keyword else ''}\n    {m.why}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="latentebsd-mutants-") as tmp:
        root = copy_repo(Path(tmp))
        if args.tests_from:
            for path in sorted({t for m in chosen for t in m.tests}):
                old = subprocess.run(["git", "show", f"{args.tests_from}:{path}"], cwd=REPO,
                                     capture_output=True, text=True, check=True).stdout
                (root / path).write_text(old)
        if not args.no_baseline:
            groups = {}
            for m in chosen:
                groups.setdefault((m.tests, m.keyword), m)
            for (tests, keyword), _ in groups.items():
                rc, tail, secs = run_tests(root, tests, keyword, args.timeout)
                print(f"baseline {' '.join(tests)}{' -k ' + repr(keyword) if keyword else ''}: "
                      f"rc {rc} ({secs:.0f} s) {tail}", flush=True)
                if rc != 0:
                    print("the unmutated tests do not pass: no mutant can be judged", file=sys.stderr)
                    return 2
        for m in chosen:
            original = plant(root, m)
            try:
                rc, tail, secs = run_tests(root, m.tests, m.keyword, args.timeout,
                                           stop=not args.every_failure)
                if rc == 5 and m.keyword:  # no test of that name (--tests-from): whole files
                    rc, tail, secs = run_tests(root, m.tests, None, args.timeout,
                                               stop=not args.every_failure)
            finally:
                (root / m.path).write_text(original)
            status = "killed" if rc == 1 else "survived" if rc == 0 else f"error (rc {rc})"
            results.append((m, status, tail, secs))
            print(f"{status:9s} {m.name:34s} {secs:5.0f} s  {tail}", flush=True)
    per_module = {}
    for m, status, _, _ in results:
        per_module.setdefault(m.module, Counter())[status.split()[0]] += 1
    print("\nper module:")
    for module, counts in per_module.items():
        print(f"  {module:26s} " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    if args.markdown:
        lines = ["| Mutant | Module | Planted bug | Result | Killed by |", "|---|---|---|---|---|"]
        for m, status, tail, _ in results:
            lines.append(f"| `{m.name}` | `{m.module}` | {m.why} | {status} | "
                         f"{tail.replace('|', '/') if status == 'killed' else ''} |")
        Path(args.markdown).write_text("\n".join(lines) + "\n")
    return 0 if all(s == "killed" for _, s, _, _ in results) else 1


if __name__ == "__main__":
    sys.exit(main())
