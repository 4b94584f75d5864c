"""The paper's Table 1 trends judged on a Table 1 (latentebsd.table1.trend_verdicts,
trends_markdown): synthetic tables where each trend holds, fails or cannot be tested."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from latentebsd.table1 import (
    PAPER_TABLE1,
    TREND_TOLERANCES,
    run_table_rule,
    table1,
    trend_verdicts,
    trends_markdown,
)

# (metric id in the verdicts, Table 1 column, paper key)
COLUMNS = (("indexed", "Indexed", "indexed"), ("ci_ratio", "ci_ratio_q50", "ci_ratio"),
           ("iq_ratio", "iq_pq_ratio_q50", "iq_ratio"),
           ("sharpness_ratio", "sharpness_ratio_q50", "sharpness_ratio"),
           ("misorientation", "misorientation_deg_q50", "misorientation_deg"))
D_TREND = "more latent dimensions"


def _row(name: str, loss: str, d: int, beta: float = 1.0, **values: float) -> dict:
    label = {"vae": "VAE", "contrastive": "Contrastive"}.get(loss, f"beta-VAE ({beta:g})")
    row = {"variant": name, "Loss": label, "d": d, "loss": loss, "beta": beta}
    for metric, column, _ in COLUMNS:
        row[column] = values[metric]
    return row


def _table(rows: list[dict]) -> pd.DataFrame:
    """A Table 1 frame as :func:`table1` builds it: the "original" row first."""
    original = {"variant": "original", "Loss": "Original (preprocessed)", "d": "", "loss": "",
                "beta": np.nan, "Indexed": 99.0}
    return pd.DataFrame([original, *rows])


def _paper_table() -> pd.DataFrame:
    """The paper's own Table 1 (medians), on which every trend it states must hold."""
    rows = []
    for (loss, d, beta), paper in PAPER_TABLE1.items():
        values = {m: float(paper[k].split()[0]) if m == "indexed" else float(paper[k].split("/")[1])
                  for m, _, k in COLUMNS}
        rows.append(_row(f"{loss}{d}_{beta:g}", loss, d, beta, **values))
    return _table(rows)


def _by_trend(verdicts: list[dict]) -> dict[str, dict]:
    return {v["trend"]: v for v in verdicts}


def test_the_papers_own_table_shows_every_trend() -> None:
    verdicts = trend_verdicts(_paper_table())
    assert {v["verdict"] for v in verdicts} == {"holds"}
    trends = _by_trend(verdicts)
    assert len([t for t in trends if t.startswith(D_TREND)]) == 5
    assert "contrastive ~ VAE-128" in trends
    assert "larger beta -> fewer patterns indexed (d = 128)" in trends
    assert "larger beta -> lower median CI ratio (d = 128)" in trends
    # the IQ ratio dips 0.97 -> 0.96 from d = 128 to 256: a tie within the tolerance
    iq = trends["more latent dimensions -> higher median IQ ratio (PyEBSDIndex pq)"]
    assert iq["monotone"] and iq["tolerance"] == TREND_TOLERANCES["iq_ratio"]
    md = trends_markdown(verdicts)
    assert "VAE-16: 95.3" in md and "VAE-256: 100.0" in md
    assert "beta-VAE beta=50: 39.2" in md and "0.950 vs 0.970" in md
    assert "0.005 deg" in md  # the tolerances are stated


def _good(d: int) -> dict[str, float]:
    """Metrics that improve with d."""
    i = int(np.log2(d)) - 4
    return {"indexed": 90.0 + 2 * i, "ci_ratio": 0.2 + 0.2 * i, "iq_ratio": 0.6 + 0.1 * i,
            "sharpness_ratio": 0.1 + 0.05 * i, "misorientation": 0.5 - 0.1 * i}


def test_dimension_trend_holds_partly_and_fails() -> None:
    rows = []
    for d in (16, 32, 64, 128):
        v = _good(d)
        v["ci_ratio"] = {16: 0.2, 32: 0.6, 64: 0.4, 128: 0.8}[d]  # up overall, one step down
        v["iq_ratio"] = 0.9  # flat: no gain
        v["sharpness_ratio"] = 0.4 - 0.05 * (int(np.log2(d)) - 4)  # falls
        v["misorientation"] = {16: 0.300, 32: 0.303, 64: 0.250, 128: 0.200}[d]  # tie within 0.005
        rows.append(_row(f"vae{d}", "vae", d, **v))
    trends = _by_trend(trend_verdicts(_table(rows)))
    assert trends["more latent dimensions -> more patterns indexed"]["verdict"] == "holds"
    ci = trends["more latent dimensions -> higher median CI ratio"]
    assert ci["verdict"] == "partly" and ci["beats"] and not ci["monotone"]
    assert "VAE-32 -> VAE-64" in ci["detail"]
    iq = trends["more latent dimensions -> higher median IQ ratio (PyEBSDIndex pq)"]
    assert iq["verdict"] == "does not hold" and iq["monotone"] and not iq["beats"]
    assert trends["more latent dimensions -> higher median sharpness ratio"]["verdict"] == "does not hold"
    mis = trends["more latent dimensions -> smaller median misorientation (deg)"]
    assert mis["verdict"] == "holds" and mis["difference"] == pytest.approx(-0.1)
    md = trends_markdown(list(trends.values()))
    assert "| more latent dimensions -> higher median CI ratio | **partly** |" in md
    assert "VAE-16: 0.200, VAE-32: 0.600, VAE-64: 0.400, VAE-128: 0.800" in md
    assert "VAE-16: 0.300, VAE-32: 0.303" in md


def test_contrastive_and_beta_trends_fail_with_their_differences() -> None:
    vae = _good(128)
    rows = [_row("vae32", "vae", 32, **_good(32)), _row("vae128", "vae", 128, **vae),
            _row("contrastive128", "contrastive", 128, **{**vae, "iq_ratio": vae["iq_ratio"] - 0.2}),
            # beta 15 indexes fewer, beta 50 more again: partly; the CI ratio rises: fails
            _row("betavae15", "beta_vae", 128, 15.0, **{**vae, "indexed": 70.0, "ci_ratio": 1.0}),
            _row("betavae50", "beta_vae", 128, 50.0, **{**vae, "indexed": 80.0, "ci_ratio": 1.2})]
    trends = _by_trend(trend_verdicts(_table(rows)))
    con = trends["contrastive ~ VAE-128"]
    assert con["verdict"] == "does not hold"
    assert "median IQ ratio (PyEBSDIndex pq) 0.700 vs 0.900 (-0.2, outside 0.05)" in con["detail"]
    assert "median CI ratio 0.800 vs 0.800 (+0, within 0.05)" in con["detail"]
    indexed = trends["larger beta -> fewer patterns indexed (d = 128)"]
    assert indexed["verdict"] == "partly"
    assert [lab for lab, _ in indexed["values"]] == ["VAE beta=1", "beta-VAE beta=15", "beta-VAE beta=50"]
    assert trends["larger beta -> lower median CI ratio (d = 128)"]["verdict"] == "does not hold"
    md = trends_markdown(list(trends.values()))
    assert "VAE beta=1: 96.0, beta-VAE beta=15: 70.0, beta-VAE beta=50: 80.0" in md


def test_untestable_trends_say_what_they_need() -> None:
    # one plain VAE, a contrastive VAE without a VAE of its d, no beta-VAE
    rows = [_row("vae16", "vae", 16, **_good(16)), _row("contrastive64", "contrastive", 64, **_good(64))]
    verdicts = trend_verdicts(_table(rows))
    assert {v["verdict"] for v in verdicts} == {"not testable"}
    trends = _by_trend(verdicts)
    assert "at least two plain VAE" in trends["more latent dimensions -> more patterns indexed"]["needs"]
    assert "d = 64" in trends["contrastive ~ VAE-64"]["needs"]
    assert "beta_vae" in trends["larger beta -> fewer patterns indexed"]["needs"]
    md = trends_markdown(verdicts)
    assert md.count("not testable in this config (needs ") == len(verdicts) == 8
    # no contrastive variant at all
    none = _by_trend(trend_verdicts(_table(rows[:1])))
    assert none["contrastive ~ VAE of the same d (paper: d = 128)"]["verdict"] == "not testable"


def test_trends_without_the_median_are_not_testable() -> None:
    table = _table([_row(f"vae{d}", "vae", d, **_good(d)) for d in (16, 32)]).drop(columns="ci_ratio_q50")
    trends = _by_trend(trend_verdicts(table))
    assert trends["more latent dimensions -> more patterns indexed"]["verdict"] == "holds"
    assert "quantiles" in trends["more latent dimensions -> higher median CI ratio"]["needs"]


def _fake_metrics(n: int, ci: float, indexed: float) -> dict[str, np.ndarray]:
    from latentebsd.io.metrics import METRICS

    m = {k: np.full(n, ci if k == "ci_ratio" else 0.5) for k in METRICS}
    m["indexed"] = np.arange(n) < indexed * n
    m["indexed_original"] = np.ones(n, bool)
    m["valid"] = np.ones(n, bool)
    return m


def test_verdicts_from_table1_and_its_csv_and_the_rule_output(tmp_path) -> None:
    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.metrics import write_metrics

    variants = {"vae16": {"loss": "vae", "latent_dim": 16}, "vae64": {"loss": "vae", "latent_dim": 64},
                "betavae15": {"loss": "beta_vae", "latent_dim": 64, "beta": 15}}
    metrics = {"vae16": [_fake_metrics(10, 0.3, 0.8)], "vae64": [_fake_metrics(10, 0.9, 1.0)],
               "betavae15": [_fake_metrics(10, 0.5, 0.6)]}
    frame = table1(metrics, variants)
    assert list(frame["loss"]) == ["", "vae", "vae", "beta_vae"] and frame["beta"].iloc[-1] == 15.0
    trends = _by_trend(trend_verdicts(frame))
    assert trends["more latent dimensions -> more patterns indexed"]["verdict"] == "holds"
    assert trends["more latent dimensions -> higher median CI ratio"]["verdict"] == "holds"
    assert trends["larger beta -> fewer patterns indexed (d = 64)"]["verdict"] == "holds"
    # the same verdicts from the CSV read back, and from a table without loss / beta columns
    frame.to_csv(tmp_path / "t.csv", index=False)
    back = pd.read_csv(tmp_path / "t.csv")
    assert trend_verdicts(back) == trend_verdicts(frame)
    assert trend_verdicts(frame.drop(columns=["loss", "beta"])) == trend_verdicts(frame)
    # the rule writes trends.md beside Table 1
    paths = {}
    for name, (m,) in metrics.items():
        write_metrics(tmp_path / f"{name}.h5", m, ScanGeometry(2, 5, 1.0, (16, 16)), {"variant": name, "scan": "s"})
        paths[name] = [str(tmp_path / f"{name}.h5")]
    run_table_rule(paths, variants, None, str(tmp_path / "t1.csv"), str(tmp_path / "t1.md"),
                   str(tmp_path / "t1.html"), str(tmp_path / "trends.md"))
    md = (tmp_path / "trends.md").read_text()
    assert md.startswith("# Table 1 trends")
    assert "VAE-16: 80.0, VAE-64: 100.0" in md
    assert "| larger beta -> fewer patterns indexed (d = 64) | **holds** |" in md


def test_every_table1_column_is_explained_and_the_paper_cited_not_a_missing_file():
    """docs/metrics.md explains each Table 1 column by its rendered header (and the
    settings that control it); CITATION.cff cites the paper's DOI; no tracked text
    cites PAPER.md, which is not part of the repository."""
    import subprocess

    import yaml

    from conftest import REPO
    from latentebsd.table1 import _HEADERS

    doc = (REPO / "docs" / "metrics.md").read_text()
    for header in _HEADERS[3:]:
        assert f"**{header}**" in doc, header
    for key in ("min_nmatch", "screen_window", "controls.patterns", "agree_deg"):
        assert key in doc, key
    cff = yaml.safe_load((REPO / "CITATION.cff").read_text())
    assert cff["preferred-citation"]["doi"] == "10.1038/s41524-025-01770-8"
    tracked = subprocess.run(["git", "grep", "-l", "PAPER.md", "--", ".", ":!tests/test_table1.py"],
                             cwd=REPO, capture_output=True, text=True).stdout.split()
    assert tracked == []


def test_seed_rule_and_findings_from_metrics_files(tmp_path) -> None:
    """Rules evaluate_seeds and findings on metrics files: seed 0 shows the d trend,
    seed 1 (its replicates) does not, so findings.md calls it inconclusive."""
    from latentebsd.geometry import ScanGeometry
    from latentebsd.io.metrics import write_metrics
    from latentebsd.findings import run_findings_rule
    from latentebsd.table1 import run_seeds_rule

    variants = {"vae16": {"loss": "vae", "latent_dim": 16}, "vae64": {"loss": "vae", "latent_dim": 64}}
    fractions = {"vae16": (0.3, 0.8), "vae64": (0.9, 1.0),
                 "vae16@seed1": (0.9, 1.0), "vae64@seed1": (0.3, 0.8)}
    paths = {}
    for name, (a, b) in fractions.items():
        path = tmp_path / f"{name}.h5"
        write_metrics(path, _fake_metrics(10, a, b), ScanGeometry(2, 5, 1.0, (16, 16)),
                      {"variant": name, "scan": "s"})
        paths[name] = [str(path)]
    groups = {0: {"vae16": "vae16", "vae64": "vae64"},
              1: {"vae16": "vae16@seed1", "vae64": "vae64@seed1"}}
    run_seeds_rule(paths, groups, variants, None, str(tmp_path / "seeds.csv"),
                   str(tmp_path / "trends.csv"))
    table = pd.read_csv(tmp_path / "seeds.csv")
    assert list(table["seed"]) == ["0", "0", "1", "1", "spread", "spread"]
    trends = pd.read_csv(tmp_path / "trends.csv").set_index("trend")
    row = trends.loc["more latent dimensions -> more patterns indexed"]
    assert row["verdict"].startswith("inconclusive (seeds disagree: seed 0 holds, seed 1 does not")
    text = run_findings_rule(str(tmp_path / "trends.csv"), str(tmp_path / "seeds.csv"), None,
                             str(tmp_path / "findings.md"), groups)
    assert text.startswith("# Findings") and "Inconclusive: the seeds disagree" in text
    assert "more latent dimensions -> more patterns indexed" in text


# -- guards on the numbers (issue 26) ----------------------------------------------------
def _metrics_with(values: np.ndarray) -> dict:
    """Per-pattern metrics of one scan whose every ratio is ``values``."""
    from latentebsd.io.metrics import METRICS

    n = len(values)
    m = {k: np.asarray(values, np.float64).copy() for k in METRICS}
    m.update(indexed=np.ones(n, bool), indexed_original=np.ones(n, bool), valid=np.ones(n, bool),
             wrong_phase=np.zeros(n, bool))
    return m


def test_table1_quantiles_of_skewed_values_are_their_10_50_90_percent_points() -> None:
    """The cells are the quantiles themselves: of 0, 0.01, ..., 1 squared (skewed, so a
    mirrored quantile is a different number) the 10/50/90 % points are 0.01/0.25/0.81."""
    values = np.linspace(0.0, 1.0, 101) ** 2
    from latentebsd.table1 import format_quantiles

    assert format_quantiles(values, [0.1, 0.5, 0.9]) == "0.01/0.25/0.81"
    row = table1({"v": [_metrics_with(values)]},
                 {"v": {"loss": "vae", "latent_dim": 8}}).set_index("variant").loc["v"]
    assert row["Sharpness ratio"] == "0.01/0.25/0.81"
    assert row["sharpness_ratio_q10"] == pytest.approx(0.01)
    assert row["sharpness_ratio_q50"] == pytest.approx(0.25)
    assert row["sharpness_ratio_q90"] == pytest.approx(0.81)
    assert row["sharpness_ratio_q10"] < row["sharpness_ratio_q50"] < row["sharpness_ratio_q90"]


def test_indexed_needs_min_nmatch_matched_bands() -> None:
    """A solution that 3 or 4 bands agree on is what noise gets: not indexed; 5 or more
    (``evaluation.min_nmatch``) is. No solution (phase -1) is never indexed."""
    from latentebsd.config import section
    from latentebsd.io.index import is_indexed
    from latentebsd.metrics import pattern_metrics

    assert section("evaluation")["min_nmatch"] == 5
    nmatch = np.array([0, 3, 4, 5, 6, 9, 9])
    phase = np.array([0, 0, 0, 0, 0, 0, -1])
    want = np.array([False, False, False, True, True, True, False])
    np.testing.assert_array_equal(is_indexed({"phase": phase, "nmatch": nmatch}, 5), want)
    n = len(nmatch)
    quat = np.tile([1.0, 0.0, 0.0, 0.0], (n, 1))
    index = {"quat": quat, "pq": np.ones(n), "cm": np.ones(n), "nmatch": nmatch, "phase": phase,
             "iq_kp": np.ones(n), "sharpness": np.ones(n)}
    full = {**index, "nmatch": np.full(n, 9), "phase": np.zeros(n, int)}
    m = pattern_metrics(full, index)  # the default criterion, from the config
    np.testing.assert_array_equal(m["indexed"], want)
    np.testing.assert_array_equal(pattern_metrics(index, full)["indexed_original"], want)
    # Table 1's "Indexed" counts only those: 3 of 7
    row = table1({"v": [m]}, {"v": {"loss": "vae", "latent_dim": 8}}).set_index("variant").loc["v"]
    assert row["Indexed"] == pytest.approx(round(100 * 3 / 7, 1))
