"""Trace sources: the lake's manifest, a folder of files, and sources that refuse batches not yet landed."""

from __future__ import annotations

import os
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import admit_file
from freshet.lab.engine import Replay
from freshet.lab.policies import EventDriven, Weekly
from freshet.lab.traces import FutureDataError, LabError, dir_trace, lake_trace
from freshet.settings import BUNDLED_CONTRACTS

from tests.conftest import LakeHandle
from tests.lab.conftest import MINUTE, REPO, RETAIL, Lab, settings, write_daily_files


def test_sources_refuse_batches_that_had_not_landed(lab: Lab) -> None:
    future = lab.trace.new_arrivals("shop_a")[-1]
    with pytest.raises(FutureDataError, match="landed after"):
        lab.source.inner.load("shop_a", ["history", future.batch], future.landed_at - MINUTE)


def test_lake_trace_replays_the_manifest(lake_env: LakeHandle) -> None:
    frame = generate_retail_sales(seed=9, stores=2, items=2, days=134)
    first = datetime(2025, 6, 2, 6, tzinfo=timezone.utc)
    cut = date(2024, 1, 1) + timedelta(days=120)
    pieces = [("history.csv", frame.filter(pl.col("date") < cut), first)]
    pieces += [(f"week{k}.csv", frame.filter((pl.col("date") >= cut + timedelta(days=7 * k))
                                             & (pl.col("date") < cut + timedelta(days=7 * k + 7))),
                first + timedelta(days=2 + 3 * k)) for k in range(2)]
    lake = lake_env.lake
    for name, part, landed in pieces:
        uri = lake_env.land(part, name)
        os.utime(lake.path("landing", "retail_sales", name), (landed.timestamp(), landed.timestamp()))
        assert admit_file(lake, RETAIL, uri).ok
    now = first + timedelta(days=10)
    trace, source, contracts = lake_trace(lake, BUNDLED_CONTRACTS, now=now)
    assert (trace.start, trace.end, trace.datasets) == (first, now, ("retail_sales",))
    assert [(a.landed_at, a.rows, a.max_time) for a in trace.of("retail_sales")] == [
        (landed, part.height, part["date"].max()) for _, part, landed in pieces]
    engine = Replay(trace, source, contracts, settings())
    runs = engine.run_policy(EventDriven()).runs
    assert [(r.outcome, r.started_at, r.batches) for r in runs] == [
        ("trained", first + timedelta(days=2), 2), ("trained", first + timedelta(days=5), 3)]
    monday = datetime(2025, 6, 2, 9, tzinfo=timezone.utc)  # three hours after the history landed
    assert [(r.outcome, r.started_at, r.batches) for r in engine.run_policy(Weekly()).runs] == [
        ("nothing-new", monday, 0), ("trained", monday + timedelta(days=7), 3)]


def test_an_empty_lake_is_a_lab_error(lake_env: LakeHandle) -> None:
    with pytest.raises(LabError, match="no manifest entries"):
        lake_trace(lake_env.lake, BUNDLED_CONTRACTS)


def test_dir_trace_lands_each_file_when_its_data_is_complete_plus_a_delay(tmp_path: Path) -> None:
    frame = write_daily_files(tmp_path / "files")
    contract = REPO / "src/freshet/data/bundled_contracts/retail_sales.toml"
    trace, source, contracts = dir_trace(tmp_path / "files", contract, days=4, delay=timedelta(hours=2))
    newest = frame["date"].max()
    day = lambda d: datetime(d.year, d.month, d.day, tzinfo=timezone.utc)  # noqa: E731
    assert [(a.batch, a.landed_at) for a in trace.of("retail_sales")][-2:] == [
        (f"{newest - timedelta(days=1)}.csv", day(newest) + timedelta(hours=2)),
        (f"{newest}.csv", day(newest) + timedelta(days=1, hours=2))]
    assert trace.end == day(newest) + timedelta(days=2, hours=2) and trace.start == trace.end - timedelta(days=4)
    assert len(trace.new_arrivals("retail_sales")) == 3 and [a.batch for a in trace.history("retail_sales")][0] == "history.csv"
    assert source.load("retail_sales", ["history.csv"], trace.start).height == frame.filter(
        pl.col("date") < newest - timedelta(days=5)).height
    # landing times from a CSV instead; a file it names that is not there, or a bad header, is refused
    (tmp_path / "times.csv").write_text("file,landed_at\n" + "".join(
        f"{p.name},2025-01-{k + 1:02d}T08:00:00\n" for k, p in enumerate(sorted((tmp_path / "files").iterdir()))))
    trace, _, _ = dir_trace(tmp_path / "files", contract, days=3, landed_at=tmp_path / "times.csv")
    assert trace.end == datetime(2025, 1, 8, 8, tzinfo=timezone.utc) and len(trace.new_arrivals("retail_sales")) == 2
    (tmp_path / "files" / "odd.csv").write_text("date,store_id\n2024-01-01,1\n")
    with pytest.raises(LabError, match="odd.csv.*'item_id' is required"):
        dir_trace(tmp_path / "files", contract)
