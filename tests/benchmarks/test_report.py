"""BENCHMARKS.md's generated part (``benchmarks/report.py``) from a hand-made results file."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
R = pytest.importorskip("report")
RUN = pytest.importorskip("run")


def results() -> dict:
    stages = lambda d: {"ingest": 2.0, "announce": 0.4, "pickup": 1.8, "debounce": d, "fit": 20.0}  # noqa: E731
    return {
        "started_at": "2026-12-03T21:00:00+00:00", "elapsed_s": 3600.0, "quick": False, "selected": ["freshness", "burst"],
        "machine": {"nproc": 2, "cpu": "test CPU", "memory_gib": 23.5, "os": "Linux", "python": "3.11.7",
                    "versions": {"prefect": "3.9.1", "pandas": "2.3.3"}},
        "uptime_before": "load average: 0.50", "uptime_after": "load average: 1.50",
        "command": "benchmarks/run.py", "commit": 'abc1234 "a subject"',
        "results": {
            "freshness": {"rows": 1_001_618, "bytes": 32_672_219, "lag_median_s": 36.5,
                          "runs": [{"lag_s": 33.0, "stages": stages(0.5), "detail": {"rounds": 284, "rows_train": 924_827,
                                                                                     "wape_model": 0.2432, "wape_baseline": 0.6033}},
                                   {"lag_s": 40.0, "stages": stages(0.1), "detail": {}}],
                          "stages_median": stages(0.3)},
            "burst": {"error": "RuntimeError: the stack died"},
        },
    }


def test_the_generated_part_carries_the_runs_figures_and_names_its_commit() -> None:
    doc = results()
    text = R.document(doc, RUN.render(RUN.table(doc["results"])))
    assert text.startswith(R.BEGIN) and text.endswith(R.END)
    assert 'at commit abc1234 "a subject"' in text and "pandas 2.3.3" in text and "2026-12-03 21:00-22:00 UTC" in text
    (headline,) = [line for line in text.splitlines() if line.startswith("| freshness lag")]
    assert [c.strip() for c in headline.strip("|").split("|")] == [
        "freshness lag", "1,001,618-row file lands -> champion promoted (median of 2)", "36 s", "< 45 s", "0.81", "yes"]
    # the per-run stage table: each run's total and the median of the totals
    assert "| **median** |" in text and "**36.5**" in text and "33.0" in text and "40.0" in text
    assert "284 boosting rounds on 924,827 training rows, backtest WAPE 0.2432" in text
    assert "**burst**: failed in this run: RuntimeError: the stack died" in text


def test_splice_replaces_only_the_generated_part(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text(f"# Benchmarks\nintro\n{R.BEGIN}\nold figures\n{R.END}\n## By hand\nkept\n")
    R.splice(path, f"{R.BEGIN}\nnew figures\n{R.END}")
    assert path.read_text() == f"# Benchmarks\nintro\n{R.BEGIN}\nnew figures\n{R.END}\n## By hand\nkept\n"
    path.write_text("no markers")
    with pytest.raises(SystemExit, match="no generated part"):
        R.splice(path, "x")


def test_a_benchmark_re_run_alone_replaces_the_runs_figures_and_is_named_beside_it() -> None:
    doc = results()
    rerun = {"started_at": "2026-12-04T01:00:00+00:00", "elapsed_s": 600.0, "selected": ["freshness"],
             "command": "benchmarks/run.py --only freshness --into x.json", "commit": "def5678",
             "uptime_before": "load average: 0.20", "uptime_after": "load average: 0.90"}
    fresh = {**doc["results"]["freshness"], "lag_median_s": 20.2}
    doc = RUN.merge(doc, {"freshness": fresh}, rerun)
    text = R.document(doc, RUN.render(doc["table"]))
    (headline,) = [line for line in text.splitlines() if line.startswith("| freshness lag")]
    assert "| 20 s" in headline and "36 s" not in headline
    assert "**burst**: failed in this run" in text  # what was not re-run stays as the run left it
    assert 'at commit abc1234 "a subject"' in text  # the full run's provenance, and the re-run's beside it
    (row,) = [line for line in text.splitlines() if line.startswith("| re-run")]
    assert "freshness: `benchmarks/run.py --only freshness --into x.json` at commit def5678" in row
    assert "2026-12-04 01:00-01:10 UTC" in row and "load average: 0.90" in row
