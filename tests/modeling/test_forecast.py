"""forecast_frame on hand-made frames: it predicts what the champion predicts, and sees nothing after its watermark."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from polars.testing import assert_frame_equal

from freshet.data.contracts import load_contract
from freshet.modeling import features as F
from freshet.modeling import model as M
from freshet.modeling.forecast import forecast_frame
from freshet.settings import BUNDLED_CONTRACTS

RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)
KEYS = ["store_id", "item_id"]
START = date(2026, 1, 1)
DAYS = 70


def history(days: int = DAYS, series: tuple[tuple[int, int], ...] = ((1, 1), (1, 2), (2, 1))) -> pl.DataFrame:
    rows = []
    for s, i in series:
        for d in range(days):
            rows.append({"date": START + timedelta(days=d), "store_id": s, "item_id": i,
                         "units_sold": float(10 * s + i + (d % 7) * 3 + d * 0.1 + 4 * (d % 5)),
                         "price": 2.0 + (d % 5) + i, "on_promo": d % 9 == 0})
    return pl.DataFrame(rows, schema=RETAIL.columns)


def future_for(hist: pl.DataFrame, drop: tuple[int, int] | None = None, price: float = 2.0) -> pl.DataFrame:
    w = hist["date"].max()
    rows = [{"date": w + timedelta(days=j), "store_id": s, "item_id": i, "price": price + j * 0.01, "on_promo": j == 3}
            for s, i in hist.select(KEYS).unique().sort(KEYS).iter_rows() if (s, i) != drop
            for j in range(1, RETAIL.horizon + 1)]
    return pl.DataFrame(rows, schema={c: RETAIL.columns[c] for c in ["date", *KEYS, "price", "on_promo"]})


@pytest.fixture(scope="module")
def champion() -> tuple[xgb.Booster, dict]:
    feats = F.build_features(history().lazy(), RETAIL).collect()
    cols = F.feature_columns(RETAIL)
    params = {"objective": "reg:squarederror", "tree_method": "hist", "max_depth": 3, "eta": 0.3, "nthread": 1, "seed": 0}
    booster = xgb.train(params, xgb.DMatrix(M.to_matrix(feats, cols), label=feats["units_sold"].to_numpy(),
                                            feature_names=cols), num_boost_round=20)
    return booster, {"features": cols, "version": "v1"}


def test_the_forecast_is_what_the_champion_predicts_on_its_own_features(champion) -> None:
    booster, meta = champion
    hist, fut = history(), future_for(history())
    out, missing = forecast_frame(hist, RETAIL, booster, meta, future=fut)

    rows = fut.with_columns(pl.lit(None, dtype=pl.Float64).alias("units_sold")).select(RETAIL.columns.keys())
    feats = (F.build_features(pl.concat([hist, rows]).lazy(), RETAIL)
             .filter(pl.col("date") > hist["date"].max()).collect())
    expected = feats.select(*KEYS, "date").with_columns(
        pl.Series("forecast", M.predict(booster, feats, meta["features"]), dtype=pl.Float64),
        pl.lit("model").alias("method"),
    ).sort([*KEYS, "date"])

    assert out.height == 3 * RETAIL.horizon
    assert out["date"].min() == hist["date"].max() + timedelta(days=1)
    assert out["date"].max() == hist["date"].max() + timedelta(days=RETAIL.horizon)
    assert_frame_equal(out.select(expected.columns), expected)
    assert missing.height == 0
    # the known-in-advance values reach the model: other prices, another forecast
    other, _ = forecast_frame(hist, RETAIL, booster, meta, future=future_for(hist, price=7.0))
    assert not np.allclose(other["forecast"].to_numpy(), out["forecast"].to_numpy())


def test_no_target_value_after_the_watermark_reaches_the_forecast(champion) -> None:
    booster, meta = champion
    hist = history()
    base, _ = forecast_frame(hist, RETAIL, booster, meta, future=future_for(hist))
    # a future file that (wrongly) carries target values: they are ignored
    poisoned = future_for(hist).with_columns(pl.lit(1e6).alias("units_sold"))
    out, _ = forecast_frame(hist, RETAIL, booster, meta, future=poisoned)
    assert_frame_equal(out, base)
    # a forecast issued at an earlier watermark covers the periods right after it
    w = hist["date"].max()
    earlier = hist.filter(pl.col("date") <= w - timedelta(days=7))
    back, _ = forecast_frame(earlier, RETAIL, booster, meta, future=future_for(earlier))
    assert back["date"].min() == w - timedelta(days=6) and back["date"].max() == w
    # and the newest target values do matter: the forecast is not stale
    bumped = hist.with_columns(pl.when(pl.col("date") > w - timedelta(days=7)).then(pl.col("units_sold") * 5)
                               .otherwise(pl.col("units_sold")).alias("units_sold"))
    moved, _ = forecast_frame(bumped, RETAIL, booster, meta, future=future_for(hist))
    assert not np.allclose(moved["forecast"].to_numpy(), base["forecast"].to_numpy())


def test_series_without_future_values_are_named_and_not_forecast(champion) -> None:
    booster, meta = champion
    hist = history()
    out, missing = forecast_frame(hist, RETAIL, booster, meta, future=future_for(hist, drop=(1, 2)))
    assert_frame_equal(missing, pl.DataFrame({"store_id": [1], "item_id": [2]}, schema={k: RETAIL.columns[k] for k in KEYS}))
    assert sorted(set(out.select(KEYS).iter_rows())) == [(1, 1), (2, 1)]
    # a series with one missing day is missing too (nothing is filled in)
    holey = future_for(hist).filter(~((pl.col("store_id") == 2) & (pl.col("date") == hist["date"].max() + timedelta(days=4))))
    out, missing = forecast_frame(hist, RETAIL, booster, meta, future=holey)
    assert missing.rows() == [(2, 1)] and out.height == 2 * RETAIL.horizon
    # no future values at all: every series is missing, nothing is forecast
    out, missing = forecast_frame(hist, RETAIL, booster, meta, future=None)
    assert out.height == 0 and missing.height == 3


def test_seasonal_naive_without_a_champion_repeats_the_last_season() -> None:
    hist = history(days=21, series=((1, 1),))
    out, missing = forecast_frame(hist, RETAIL, None, None)
    w = hist["date"].max()
    expected = pl.DataFrame({
        "store_id": [1] * 7, "item_id": [1] * 7,
        "date": [w + timedelta(days=j) for j in range(1, 8)],
        "forecast": [hist.filter(pl.col("date") == w + timedelta(days=j - 7))["units_sold"].item() for j in range(1, 8)],
        "method": ["seasonal_naive"] * 7,
    }, schema={"store_id": pl.Int32, "item_id": pl.Int32, "date": pl.Date, "forecast": pl.Float64, "method": pl.String})
    assert_frame_equal(out.select(expected.columns), expected)
    assert missing.height == 0


def test_hourly_contract_forecasts_the_next_hours() -> None:
    hourly = dataclasses.replace(RETAIL, frequency="hourly", horizon=3, season_length=24,
                                 columns={**RETAIL.columns, "date": pl.Datetime("us")})
    hist = history(days=48, series=((1, 1),)).with_columns(
        (pl.datetime(2026, 1, 1) + pl.duration(hours=pl.int_range(pl.len()))).alias("date"))
    out, _ = forecast_frame(hist, hourly, None, None)
    w = hist["date"].max()
    assert out["date"].to_list() == [w + timedelta(hours=j) for j in (1, 2, 3)]
    assert out["forecast"].to_list() == hist["units_sold"].to_list()[-24:-21]
