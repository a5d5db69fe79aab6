"""Live accuracy's pure functions on hand-made frames: which forecast was in hand, the measures, drift."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from freshet.data.contracts import load_contract
from freshet.modeling import scoring as S
from freshet.settings import BUNDLED_CONTRACTS

C = dataclasses.replace(load_contract("retail_sales", BUNDLED_CONTRACTS), drift_window_periods=2, drift_tolerance=0.5)
D = date(2024, 3, 1)


def fc(watermark: date, days: list[int], value: float, version: str, fid: str, issued: str = "2026-01-01T00:00:00") -> pl.DataFrame:
    """A published forecast of series (1, 1) for ``D + days``, made on data to ``watermark``."""
    n = len(days)
    return pl.DataFrame({"store_id": [1] * n, "item_id": [1] * n, "date": [D + timedelta(days=k) for k in days],
                         "forecast": [value] * n, "p10": [value - 2] * n, "p90": [value + 2] * n,
                         "method": ["model"] * n, "model_version": [version] * n, "data_watermark": [str(watermark)] * n,
                         "issued_at": [issued] * n, "forecast_id": [fid] * n},
                        schema_overrides={"store_id": pl.Int32, "item_id": pl.Int32})


def actuals(days: list[int], value: float) -> pl.DataFrame:
    return pl.DataFrame({"store_id": [1] * len(days), "item_id": [1] * len(days),
                         "date": [D + timedelta(days=k) for k in days], "units_sold": [value] * len(days)},
                        schema_overrides={"store_id": pl.Int32, "item_id": pl.Int32})


def test_the_forecast_in_hand_is_the_latest_made_before_the_period_began() -> None:
    early = fc(D, [1, 2, 3], 10.0, "m1", "a")  # data to D: in hand from D+1
    later = fc(D + timedelta(days=1), [2, 3], 20.0, "m1", "b")  # data to D+1: in hand from D+2, replaces a
    same_data_newer_issue = fc(D + timedelta(days=1), [3], 30.0, "m2", "c", issued="2026-01-02T00:00:00")
    rows, unforecast = S.score(actuals([0, 1, 2, 3, 4], 12.0), pl.concat([early, later, same_data_newer_issue]), C)
    assert rows.select("date", "forecast_id", "step").to_dicts() == [
        {"date": D + timedelta(days=1), "forecast_id": "a", "step": 1},
        {"date": D + timedelta(days=2), "forecast_id": "b", "step": 1},
        {"date": D + timedelta(days=3), "forecast_id": "c", "step": 2}]
    # D is before the first forecast's data ended (history, not counted); D+4 was never forecast: counted
    assert unforecast == 1


def test_measures_pool_absolute_error_bias_and_coverage() -> None:
    scored = pl.DataFrame({"actual": [10.0, 20.0, 10.0], "forecast": [12.0, 14.0, 10.0], "lo": [9.0, 15.0, None],
                           "hi": [13.0, 18.0, None]})
    out = S.summarize(scored)
    expected = pl.DataFrame({"rows": [3], "wape": [8 / 40], "mae": [8 / 3], "bias": [-4 / 40], "coverage": [0.5]},
                            schema_overrides={"rows": pl.UInt32})
    assert_frame_equal(out, expected)


@pytest.mark.parametrize(("actual", "degraded"), [(10.0, False), (13.0, False), (20.0, True)])
def test_drift_compares_the_champions_newest_window_with_its_backtest(actual: float, degraded: bool) -> None:
    # the champion forecast 10 everywhere; backtest WAPE 0.2 and tolerance 0.5: degraded beyond WAPE 0.3
    old = fc(D, [1, 2, 3, 4], 10.0, "champ", "a")
    rows, _ = S.score(pl.concat([actuals([1, 2], 100.0), actuals([3, 4], actual)]), old, C)
    verdict = S.drift(rows, C, "champ", 0.2)
    assert verdict.degraded is degraded
    assert (verdict.window_start, verdict.window_end, verdict.rows) == (str(D + timedelta(days=3)), str(D + timedelta(days=4)), 2)
    assert verdict.live_wape == pytest.approx(abs(actual - 10) / actual)
    assert ("DEGRADED" in verdict.describe()) is degraded


def test_no_drift_verdict_without_a_scored_forecast_by_the_champion() -> None:
    rows, _ = S.score(actuals([1], 50.0), fc(D, [1], 10.0, "old", "a"), C)
    verdict = S.drift(rows, C, "new", 0.1)
    assert (verdict.degraded, verdict.live_wape, verdict.rows) == (False, None, 0)
    assert "no drift verdict" in verdict.describe()
