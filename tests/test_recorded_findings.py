"""The README's findings come from a run's own tables, never from a hand edit.

``benchmarks/record_findings.py`` copies a finished study's per-seed tables and its
``findings.md`` into ``benchmarks/findings/<name>/`` and writes the README block
between ``<!-- findings:<name>:begin/end -->`` from them. Here, for every record:
``findings.md`` is what :func:`latentebsd.findings.findings_markdown` renders from the
recorded tables (a number edited in either fails), and the README block is what the
record renders (a hand edit of the README fails).
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import record_findings as rf  # noqa: E402

RECORDS = sorted(p for p in (REPO / "benchmarks" / "findings").glob("*/") if (p / "run.json").exists())


def test_the_default_study_is_recorded_and_in_the_readme():
    """The embedded default's record exists and the README has its block."""
    assert (REPO / "benchmarks" / "findings" / "default" / "run.json").exists()
    assert rf.readme_section((REPO / "README.md").read_text(), "default") is not None


@pytest.mark.parametrize("record", RECORDS, ids=[p.name for p in RECORDS])
def test_recorded_findings_are_what_their_tables_render(record: Path):
    assert (record / "findings.md").read_text() == rf.render_findings(record)


@pytest.mark.parametrize("record", RECORDS, ids=[p.name for p in RECORDS])
def test_readme_block_is_what_the_record_renders(record: Path):
    section = rf.readme_section((REPO / "README.md").read_text(), record.name)
    assert section == rf.readme_block(record), (
        f"README findings:{record.name} differs from benchmarks/findings/{record.name}: "
        "rerun benchmarks/record_findings.py instead of editing the README")


def test_an_edited_number_no_longer_renders_the_recorded_findings(tmp_path):
    """The check above can fail: one seed's score changed in the table changes the text."""
    record = tmp_path / "r"
    record.mkdir()
    trends = pd.DataFrame([{"trend": "more latent dimensions -> more patterns indexed",
                            "metric": "Indexed", "verdict": "holds", "agreed": True, "n_seeds": 2,
                            "seed0_verdict": "holds", "seed0_values": "95.0 -> 97.0",
                            "seed1_verdict": "holds", "seed1_values": "94.0 -> 96.5"}])
    table = pd.DataFrame([{"seed": "0", "model": "vae16", "variant": "vae16", "Indexed": 95.0},
                          {"seed": "1", "model": "vae16@seed1", "variant": "vae16", "Indexed": 94.0},
                          {"seed": "spread", "model": "2 seeds", "variant": "vae16",
                           "Indexed_min": 94.0, "Indexed_max": 95.0}])
    trends.to_csv(record / "trends_seeds.csv", index=False)
    table.to_csv(record / "table1_seeds.csv", index=False)
    (record / "findings.md").write_text(rf.render_findings(record))
    assert rf.seed_groups_of(table) == {0: {"vae16": "vae16"}, 1: {"vae16": "vae16@seed1"}}
    assert "94.0 -> 96.5" in (record / "findings.md").read_text()
    trends.loc[0, "seed1_values"] = "94.0 -> 99.9"
    trends.to_csv(record / "trends_seeds.csv", index=False)
    assert (record / "findings.md").read_text() != rf.render_findings(record)
