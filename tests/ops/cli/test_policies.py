"""``freshet policies``: the policy lab's table and files, from a generated trace, the lake or a folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from freshet.ops.cli import main

from tests.conftest import LakeHandle
from tests.lab.conftest import REPO, write_daily_files


def test_cli_prints_the_table_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["policies", "--datasets", "1", "--days", "4", "--seed", "2", "--threshold-hours", "12",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    # progress names each policy as it runs, and the table has a row for each (on drift included)
    assert "[4/8] event-driven:" in out and "[7/8] on drift:" in out
    assert "| event-driven" in out and "| on drift" in out and "| on landing" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["threshold_hours"] == 12 and list(report["trace"]["datasets"]) == ["shop_a"]
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_cli_from_an_empty_lake_explains(lake_env: LakeHandle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["policies", "--from-lake", "--out", str(tmp_path)]) == 1
    assert "land and ingest data first" in capsys.readouterr().err


def test_cli_replays_a_folder_with_its_contract(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_daily_files(tmp_path / "files", last=3)
    # price and promotion as observed: the folder holds no plan of their future values
    contract = tmp_path / "retail_sales.toml"
    contract.write_text((REPO / "src/freshet/data/bundled_contracts/retail_sales.toml").read_text()
                        .replace('known = ["price", "on_promo"]\nobserved = []', 'known = []\nobserved = ["price", "on_promo"]'))
    assert main(["policies", "--from-dir", str(tmp_path / "files"), "--contract", str(contract), "--days", "3",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| event-driven" in out and "| on landing" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"].startswith("folder ") and report["trace"]["datasets"]["retail_sales"]["arrivals"] == 2
    event = next(p for p in report["policies"] if p["name"] == "event-driven / forecast on landing")
    assert event["total"]["staleness"]["p50_h"] == pytest.approx(1 / 60)
    assert main(["policies", "--from-dir", str(tmp_path / "files"), "--out", str(tmp_path / "out")]) == 2
