"""Live accuracy on a local lake with hand-made forecasts: the scoring span bounds what a landing reads."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.conftest import DATASET, LakeHandle
from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import admit_file
from freshet.data.lake import Lake
from freshet.modeling import live, publish
from freshet.modeling import scoring as S
from freshet.settings import BUNDLED_CONTRACTS

C = load_contract(DATASET, BUNDLED_CONTRACTS)  # daily, horizon 7, drift_window 7 periods
START = date(2024, 1, 1)
SPAN = timedelta(days=28)


def _publish(lake: Lake, sales: pl.DataFrame, watermark: date) -> str:
    """A hand-made forecast (version ``m``) of every series for the horizon after ``watermark``; its path."""
    covered = sales.filter((pl.col("date") > watermark) & (pl.col("date") <= watermark + timedelta(days=C.horizon)))
    frame = covered.select("date", *C.series_keys).with_columns(
        pl.lit(10.0).alias("forecast"), pl.lit(6.0).alias("p10"), pl.lit(14.0).alias("p90"),
        pl.lit("model").alias("method"), pl.lit("m").alias("model_version"),
        pl.lit(str(watermark)).alias("data_watermark"), pl.lit(datetime(2026, 1, 1)).alias("issued_at"))
    fid = f"f{watermark:%m%d}"
    path = publish.forecast_path(lake, DATASET, str(watermark), fid)
    publish.write_forecast(lake, path, frame)
    lake.write_json(path.removesuffix(".parquet") + ".json", {"forecast_id": fid, "path": path,
                                                              "watermark": str(watermark)})
    return path


def test_a_forecast_older_than_the_span_is_never_opened_and_the_drift_verdict_is_the_same(
        lake_env: LakeHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    lake = lake_env.lake
    sales = generate_retail_sales(seed=3, stores=1, items=2, days=120, start=START, missing_rate=0.0)
    for k in range(4):  # four landings of 30 days
        part = sales.filter(pl.col("date").is_between(START + timedelta(days=30 * k), START + timedelta(days=30 * k + 29)))
        assert admit_file(lake, C, lake_env.land(part, f"part{k}.csv")).ok
    paths = {w: _publish(lake, sales, w) for w in (START + timedelta(days=d) for d in range(13, 119, 7))}

    full = live.score_lake(lake, C, timedelta(days=3650))
    recent = live.score_lake(lake, C, SPAN)
    live.commit(lake, recent)
    start = date(2024, 4, 29) - SPAN
    assert recent.summary["span"] == {"start": "2024-04-01", "end": "2024-04-29", "days": 28.0}
    assert full.rows.height == 2 * (119 - 13) and recent.rows.height == 2 * 28  # every period forecast once
    assert_frame_equal(recent.rows, full.rows.filter(pl.col("date") > start))
    assert recent.path != full.path  # the span's bounds are part of the state scored
    # the champion's drift window (its newest 7 scored periods) is inside the span: the same verdict
    assert S.drift(recent.rows, C, "m", 0.1) == S.drift(full.rows, C, "m", 0.1)
    assert S.drift(recent.rows, C, "m", 0.1).rows == 2 * 7

    # forecasts whose horizon ends before the span (watermark <= 2024-03-25) are left unopened, even unreadable ones
    old = [p for w, p in paths.items() if w <= start - timedelta(days=C.horizon)]
    for path in old:
        lake.write_bytes(path, b"not parquet")
    with pytest.raises(live.UnreadableForecast, match=old[0]):
        live.score_lake(lake, C, timedelta(days=3650))
    opened = []
    read_bytes, read_json = Lake.read_bytes, Lake.read_json
    monkeypatch.setattr(Lake, "read_bytes", lambda self, path: opened.append(path) or read_bytes(self, path))
    monkeypatch.setattr(Lake, "read_json", lambda self, path: opened.append(path) or read_json(self, path))
    again = live.score_lake(lake, C, SPAN)
    assert again.new is False and again.path == recent.path  # the same state (committed above), found by its key
    forecasts_opened = {p.removesuffix(".json").removesuffix(".parquet") for p in opened
                        if p.startswith(lake.forecasts_dir(DATASET))}
    assert forecasts_opened == {p.removesuffix(".parquet") for w, p in paths.items() if p not in old}
    assert len(old) == 11 and len(forecasts_opened) == 5

    # a forecast inside the span that cannot be read fails scoring, naming it
    inside = paths[max(paths)]
    lake.write_bytes(inside, b"not parquet")
    with pytest.raises(live.UnreadableForecast, match=inside):
        live.score_lake(lake, C, SPAN)


@pytest.mark.parametrize("span, drift_window, days", [
    pytest.param(timedelta(days=28), 7, 28, id="the-setting"),
    pytest.param(timedelta(days=3), 7, 14, id="floor-drift-window-plus-horizon"),
    pytest.param(timedelta(days=28), 30, 37, id="floor-a-long-drift-window"),
])
def test_the_span_is_the_setting_but_at_least_the_drift_window_plus_the_horizon(
        span: timedelta, drift_window: int, days: int) -> None:
    contract = dataclasses.replace(C, drift_window_periods=drift_window)
    start, end = live.span_bounds([{"max_time": "2024-04-29"}, {"max_time": "2024-03-01"}], contract, span)
    assert end == datetime(2024, 4, 29) and end - start == timedelta(days=days)
