"""What the lab's test modules share: training settings stated here, and one replay of every default policy
(a recording source and recorded adapters) computed once for the package."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales
from freshet.lab import engine as E
from freshet.lab.engine import LabConfig, Replay, lab_settings
from freshet.lab.metrics import summarize
from freshet.lab.policies import Trace, default_policies
from freshet.lab.traces import synthetic_trace
from freshet.settings import BUNDLED_CONTRACTS, Settings

REPO = Path(__file__).resolve().parents[2]
RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)
MINUTE = timedelta(minutes=1)


def settings() -> Settings:
    """Training settings stated here, not taken from the developer's shell."""
    return lab_settings(Settings(holdout_periods=28, validation_periods=28, min_improvement=0.0))


@dataclass
class RecordingSource:
    """Wraps a source and records every read the replay makes."""

    inner: Any
    reads: list[tuple[str, tuple[str, ...], datetime, Any]] = field(default_factory=list)

    @property
    def plans(self) -> dict[str, pl.DataFrame]:  # known-in-advance columns only: no target to record
        return self.inner.plans

    def load(self, dataset: str, batches, as_of: datetime) -> pl.DataFrame:
        frame = self.inner.load(dataset, batches, as_of)
        time_col = self.inner.contracts[dataset].time_column
        self.reads.append((dataset, tuple(batches), as_of, frame[time_col].max() if frame.height else None))
        return frame


@dataclass
class Lab:
    trace: Trace
    source: RecordingSource
    engine: Replay
    results: list
    report: dict
    calls: list  # (adapter, the last read's as_of, its input frames), in call order


@pytest.fixture(scope="package")
def lab() -> Lab:
    """Every default policy replayed on a small irregular trace of two datasets, the adapters' inputs recorded."""
    trace, source, contracts = synthetic_trace(datasets=2, days=10, seed=11, history_days=150)
    recording = RecordingSource(source)
    calls: list = []
    train, forecast = E.lab_train, E.lab_forecast

    def recorded_train(data, contract, s, champion):
        calls.append(("train", recording.reads[-1], data, None))
        return train(data, contract, s, champion)

    def recorded_forecast(history, contract, model, future):
        calls.append(("forecast", recording.reads[-1], history, future))
        return forecast(history, contract, model, future)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(E, "lab_train", recorded_train)
        mp.setattr(E, "lab_forecast", recorded_forecast)
        engine = Replay(trace, recording, contracts, settings(), LabConfig())
        results = [engine.run_policy(p) for p in default_policies()]
        report = summarize(engine, results, source="synthetic")
    return Lab(trace, recording, engine, results, report, calls)


def by_name(report: dict) -> dict[tuple[str, str], dict]:
    return {(p["retrain"], p["forecast"]): p for p in report["policies"]}


def watermark(trace: Trace, dataset: str, moment: datetime):
    return max(a.max_time for a in trace.landed_by(dataset, moment))


def write_daily_files(folder: Path, days: int = 130, last: int = 6) -> pl.DataFrame:
    """A history file, then one CSV per day for the last ``last`` days (2 stores x 2 items)."""
    frame = generate_retail_sales(seed=4, stores=2, items=2, days=days)
    folder.mkdir()
    cut = frame["date"].max() - timedelta(days=last - 1)
    frame.filter(pl.col("date") < cut).write_csv(folder / "history.csv")
    for day in frame.filter(pl.col("date") >= cut)["date"].unique().sort():
        frame.filter(pl.col("date") == day).write_csv(folder / f"{day}.csv")
    return frame
