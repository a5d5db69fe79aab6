"""forecast_frame on hand-made frames: horizon rows after the watermark, no future target read, known exogenous required."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from polars.testing import assert_frame_equal

from freshet.data.contracts import Contract
from freshet.modeling import features as F
from freshet.modeling import forecast as FC
from freshet.modeling import training as T
from freshet.settings import Settings

DAILY = Contract(
    name="shop",
    columns={"day": pl.Date(), "shop": pl.String(), "y": pl.Float64(), "promo": pl.Boolean(), "temp": pl.Float64()},
    time_column="day", frequency="1d", series_keys=("shop",), target="y", exogenous=("promo",),
    observed=("temp",), horizon=3, season_length=7,
)
SETTINGS = Settings(xgb_nthread=1, xgb_max_rounds=60, xgb_early_stopping_rounds=10)


def history(days: int = 120, shops: tuple[str, ...] = ("a", "b")) -> pl.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i, s in enumerate(shops):
        for k in range(days):
            promo = k % 5 == 0
            rows.append({"day": date(2024, 1, 1) + timedelta(days=k), "shop": s,
                         "y": 10.0 * (i + 1) + 5.0 * (k % 7 == 5) + 8.0 * promo + rng.normal(0, 0.5),
                         "promo": promo, "temp": float(rng.integers(0, 3))})
    return pl.DataFrame(rows, schema=DAILY.columns)


def future(df: pl.DataFrame, shops: tuple[str, ...] = ("a", "b"), days: int = 3) -> pl.DataFrame:
    wm = df["day"].max()
    return pl.DataFrame(
        {"shop": [s for s in shops for _ in range(days)],
         "day": [wm + timedelta(days=k) for _ in shops for k in range(1, days + 1)],
         "promo": [k == 1 for _ in shops for k in range(1, days + 1)]},
        schema={"shop": pl.String(), "day": pl.Date(), "promo": pl.Boolean()},
    )


@pytest.fixture(scope="module")
def trained() -> tuple[pl.DataFrame, T.TrainingResult]:
    df = history()
    return df, T.train_model(df, DAILY, None, SETTINGS)


def test_seasonal_naive_forecasts_the_value_one_season_back() -> None:
    df = history(days=30)
    out, skipped = FC.forecast_frame(df, DAILY, None, None)
    wm = df["day"].max()
    assert out.columns == ["shop", "day", "forecast", "method"] and skipped.height == 0
    assert out.height == 2 * DAILY.horizon and set(out["method"]) == {"seasonal_naive"}
    assert out["day"].unique().sort().to_list() == [wm + timedelta(days=k) for k in (1, 2, 3)]
    a = out.filter(pl.col("shop") == "a").sort("day")
    expected = df.filter((pl.col("shop") == "a") & (pl.col("day") > wm - timedelta(days=7))).sort("day")["y"].head(3)
    assert a["forecast"].to_list() == expected.to_list()


def test_the_model_forecast_equals_predicting_on_features_of_the_same_rows(trained) -> None:
    df, result = trained
    fut = future(df)
    out, skipped = FC.forecast_frame(df, DAILY, result.booster, result.meta, future=fut)
    assert skipped.height == 0 and out.height == 6 and set(out["method"]) == {"model"}
    assert out["forecast"].is_finite().all()
    # the same rows through the training feature path, predicted directly
    spec = F.FeatureSpec.from_json(result.meta["feature_spec"])
    rows = pl.concat([df, fut], how="diagonal_relaxed")
    feats = FC.model_frame(rows, DAILY, spec).filter(pl.col("day") > df["day"].max()).collect().sort(["shop", "day"])
    direct = FC.predict_target(result.booster, feats, DAILY, spec, clip=result.meta["clip_at_zero"])
    np.testing.assert_allclose(out.sort(["shop", "day"])["forecast"].to_numpy(), direct, rtol=1e-6)


def test_no_target_value_after_the_watermark_is_read(trained) -> None:
    df, result = trained
    fut = future(df)
    clean, _ = FC.forecast_frame(df, DAILY, result.booster, result.meta, future=fut)
    # a future frame that carries target values (and observed values) for the forecast periods: ignored
    leaky = fut.with_columns(y=pl.lit(1e6), temp=pl.lit(99.0))
    out, _ = FC.forecast_frame(df, DAILY, result.booster, result.meta, future=leaky)
    assert_frame_equal(out, clean)
    assert out["day"].min() == df["day"].max() + timedelta(days=1)
    # while changing the newest history does change the forecast (the check can fail)
    bumped = df.with_columns(pl.when(pl.col("day") >= df["day"].max() - timedelta(days=6)).then(pl.col("y") * 5)
                             .otherwise(pl.col("y")).alias("y"))
    moved, _ = FC.forecast_frame(bumped, DAILY, result.booster, result.meta, future=fut)
    assert not np.allclose(moved["forecast"].to_numpy(), clean["forecast"].to_numpy())


def test_a_series_without_future_known_values_is_left_out_and_named(trained) -> None:
    df, result = trained
    fut = future(df).filter(~((pl.col("shop") == "b") & (pl.col("day") == pl.col("day").max())))
    out, skipped = FC.forecast_frame(df, DAILY, result.booster, result.meta, future=fut)
    assert set(out["shop"]) == {"a"} and out.height == 3
    assert skipped["shop"].to_list() == ["b"] and "known exogenous" in skipped["reason"][0]
    none, skipped_all = FC.forecast_frame(df, DAILY, result.booster, result.meta, future=None)
    assert none.height == 0 and sorted(skipped_all["shop"]) == ["a", "b"]


def test_an_unseen_category_is_forecast_as_missing_not_a_crash(trained) -> None:
    df, result = trained
    new_shop = history(days=120, shops=("z",)).with_columns(pl.col("y") * 3)
    both = pl.concat([df, new_shop])
    out, skipped = FC.forecast_frame(both, DAILY, result.booster, result.meta, future=future(both, ("a", "b", "z")))
    assert skipped.height == 0 and sorted(out["shop"].unique()) == ["a", "b", "z"]
    assert out["forecast"].is_finite().all()
    assert result.meta["feature_spec"]["categories"]["shop"] == ["a", "b"]


def test_a_series_without_seasonal_history_is_named_not_filled() -> None:
    df = history(days=30)
    fresh = pl.DataFrame({"day": [df["day"].max()], "shop": ["new"], "y": [4.0], "promo": [False], "temp": [1.0]},
                         schema=DAILY.columns)
    out, skipped = FC.forecast_frame(pl.concat([df, fresh]), DAILY, None, None)
    assert set(out["shop"]) == {"a", "b"}
    assert skipped["shop"].to_list() == ["new"] and "seasonal lag" in skipped["reason"][0]


def test_hourly_forecast_steps_by_the_hour_after_the_watermark() -> None:
    c = Contract(name="load", columns={"ts": pl.Datetime("us"), "m": pl.Int32(), "kw": pl.Float64()},
                 time_column="ts", frequency="1h", series_keys=("m",), target="kw", exogenous=(), horizon=5,
                 season_length=24)
    times = [datetime(2024, 3, 1) + timedelta(hours=k) for k in range(24 * 20)]
    df = pl.DataFrame({"ts": times, "m": [7] * len(times), "kw": [float(10 + t.hour) for t in times]}, schema=c.columns)
    result = T.train_model(df, c, None, SETTINGS)
    out, skipped = FC.forecast_frame(df, c, result.booster, result.meta)
    wm = df["ts"].max()
    assert skipped.height == 0
    assert out["ts"].to_list() == [wm + timedelta(hours=k) for k in range(1, 6)]
    np.testing.assert_allclose(out["forecast"].to_numpy(), [10 + (wm + timedelta(hours=k)).hour for k in range(1, 6)],
                               atol=1.0)


def test_a_legacy_booster_without_spec_uses_the_contract_default() -> None:
    df = history(days=60)
    spec = F.default_spec(DAILY, categories=F.fit_categories(df.lazy(), DAILY))
    frame = FC.model_frame(df, DAILY, spec).collect().filter(pl.col(F.BASELINE).is_not_null())
    cols = F.feature_columns(DAILY, spec)
    from freshet.modeling import model as M

    fitted = M.fit(frame, frame, cols, F.TARGET, M.xgb_params(SETTINGS), 20, 5, feature_types=F.feature_types(spec, DAILY))
    assert isinstance(fitted.booster, xgb.Booster)
    out, _ = FC.forecast_frame(df, DAILY, fitted.booster, {"feature_spec": spec.to_json()}, future=future(df))
    assert out.height == 6 and out["forecast"].is_finite().all()
