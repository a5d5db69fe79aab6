"""forecast_frame on hand-made frames: every series and period, the ladder's labels, ranges, no future target read."""

from __future__ import annotations

import dataclasses
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
import xgboost as xgb
from polars.testing import assert_frame_equal

from freshet.data.contracts import Contract
from freshet.modeling import features as F
from freshet.modeling import origins as O
from freshet.modeling import forecast as FC
from freshet.modeling import training as T
from freshet.settings import Settings

DAILY = Contract(
    name="shop",
    columns={"day": pl.Date(), "shop": pl.String(), "y": pl.Float64(), "promo": pl.Boolean(), "temp": pl.Float64()},
    time_column="day", frequency="1d", series_keys=("shop",), target="y", exogenous=("promo",),
    observed=("temp",), horizon=3, season_length=7,
)
# XGBoost alone: a statistical champion's serving is tested in test_families.py
SETTINGS = Settings(xgb_nthread=1, xgb_max_rounds=60, xgb_early_stopping_rounds=10, stats_models="")


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
    assert out.columns == ["shop", "day", "forecast", "p10", "p50", "p90", "method", "method_detail", "stale_periods"]
    assert skipped.height == 0 and out["method_detail"].str.starts_with("value 1 season(s) back; no champion").all()
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
    rows = fut.with_columns(pl.lit(df["day"].max()).alias(O.ORIGIN))  # every period forecast from the watermark
    feats = FC.model_frame(df, DAILY, spec, rows=rows).collect().sort(["shop", "day"])
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


@pytest.mark.parametrize("policy", ["missing", "fallback", "skip"])
def test_a_missing_future_known_value_follows_the_contracts_policy_and_is_labelled(trained, policy: str) -> None:
    df, result = trained
    contract = dataclasses.replace(DAILY, on_missing_future=policy)
    last = df["day"].max() + timedelta(days=3)
    fut = future(df).filter(~((pl.col("shop") == "b") & (pl.col("day") == last)))
    out, skipped = FC.forecast_frame(df, contract, result.booster, result.meta, future=fut)
    a, b = (out.filter(pl.col("shop") == s).sort("day") for s in ("a", "b"))
    assert a["method"].to_list() == ["model"] * 3
    if policy == "skip":  # left out, and named
        assert b.height == 0 and skipped["shop"].to_list() == ["b"] and "no future value of promo" in skipped["reason"][0]
        assert FC.coverage(out, skipped, contract)["not_forecast"] == 0.5
        return
    assert skipped.height == 0 and b["method"].to_list()[:2] == ["model", "model"]
    gap = b.row(2, named=True)
    if policy == "missing":
        assert gap["method"] == "model_missing_inputs" and "no future value of promo" in gap["method_detail"]
    else:
        week_back = df.filter((pl.col("shop") == "b") & (pl.col("day") == last - timedelta(days=7)))["y"].item()
        assert gap["method"] == "seasonal_naive" and gap["forecast"] == pytest.approx(week_back)
        assert "no future value of promo" in gap["method_detail"] and gap["method_detail"].startswith("value 1 season")
    shares = FC.coverage(out, skipped, contract)
    assert shares["model"] == pytest.approx(5 / 6) and shares["not_forecast"] == 0


def test_without_any_future_values_every_period_is_still_forecast_and_labelled(trained) -> None:
    df, result = trained
    out, skipped = FC.forecast_frame(df, DAILY, result.booster, result.meta, future=None)
    assert skipped.height == 0 and out.height == 6 and set(out["method"]) == {"model_missing_inputs"}
    assert out["forecast"].is_finite().all()


def test_an_unseen_category_is_forecast_as_missing_not_a_crash(trained) -> None:
    df, result = trained
    new_shop = history(days=120, shops=("z",)).with_columns(pl.col("y") * 3)
    both = pl.concat([df, new_shop])
    out, skipped = FC.forecast_frame(both, DAILY, result.booster, result.meta, future=future(both, ("a", "b", "z")))
    assert skipped.height == 0 and sorted(out["shop"].unique()) == ["a", "b", "z"]
    assert out["forecast"].is_finite().all()
    assert result.meta["feature_spec"]["categories"]["shop"] == ["a", "b"]


def test_a_brand_new_series_gets_the_mean_of_its_values_labelled_fallback_mean() -> None:
    df = history(days=30)
    wm = df["day"].max()
    fresh = pl.DataFrame({"day": [wm - timedelta(days=1), wm], "shop": ["new", "new"], "y": [4.0, 6.0],
                          "promo": [False, False], "temp": [1.0, 1.0]}, schema=DAILY.columns)
    out, skipped = FC.forecast_frame(pl.concat([df, fresh]), DAILY, None, None)
    assert skipped.height == 0 and out.height == 3 * DAILY.horizon
    new = out.filter(pl.col("shop") == "new")
    assert new["method"].to_list() == ["fallback_mean"] * 3 and new["forecast"].to_list() == [5.0] * 3
    assert new["method_detail"][0].startswith("mean of the series' newest 2 value(s): no value 1-8 seasons back")
    assert set(out.filter(pl.col("shop") != "new")["method"]) == {"seasonal_naive"}


def _drop(df: pl.DataFrame, shop: str, days: list[date]) -> pl.DataFrame:
    return df.filter(~((pl.col("shop") == shop) & pl.col("day").is_in(days)))


def test_a_missing_seasonal_lag_value_takes_the_newest_available_season_back() -> None:
    df = history(days=60)
    wm = df["day"].max()
    first = wm + timedelta(days=1)
    gappy = _drop(df, "a", [first - timedelta(days=7)])
    out, _ = FC.forecast_frame(gappy, DAILY, None, None)
    row = out.filter((pl.col("shop") == "a") & (pl.col("day") == first)).row(0, named=True)
    two_back = df.filter((pl.col("shop") == "a") & (pl.col("day") == first - timedelta(days=14)))["y"].item()
    assert row["method"] == "seasonal_naive" and row["forecast"] == two_back
    assert row["method_detail"].startswith("value 2 season(s) back")


def test_a_gap_of_several_seasons_reaches_further_back_and_says_how_far() -> None:
    df = history(days=90)
    first = df["day"].max() + timedelta(days=1)
    gappy = _drop(df, "b", [first - timedelta(days=7 * k) for k in (1, 2, 3, 4)])
    out, _ = FC.forecast_frame(gappy, DAILY, None, None)
    row = out.filter((pl.col("shop") == "b") & (pl.col("day") == first)).row(0, named=True)
    five_back = df.filter((pl.col("shop") == "b") & (pl.col("day") == first - timedelta(days=35)))["y"].item()
    assert row["forecast"] == five_back and row["method_detail"].startswith("value 5 season(s) back")


def test_a_stopped_series_is_forecast_by_the_ladder_and_flagged_then_retired(trained) -> None:
    df, result = trained
    wm = df["day"].max()
    stopped = df.filter((pl.col("shop") == "a") | (pl.col("day") <= wm - timedelta(days=10)))
    out, skipped = FC.forecast_frame(stopped, DAILY, result.booster, result.meta, future=future(df))
    b = out.filter(pl.col("shop") == "b")
    assert skipped.height == 0 and b.height == 3 and set(b["stale_periods"]) == {10}
    assert set(b["method"]) == {"seasonal_naive"} and b["method_detail"].str.contains("stale: the series' newest row "
                                                                                       "is 10 periods").all()
    assert set(out.filter(pl.col("shop") == "a")["method"]) == {"model"}
    assert set(out.filter(pl.col("shop") == "a")["stale_periods"]) == {0}
    retiring = dataclasses.replace(DAILY, retire_after_periods=10)
    out, skipped = FC.forecast_frame(stopped, retiring, result.booster, result.meta, future=future(df))
    assert set(out["shop"]) == {"a"} and skipped["shop"].to_list() == ["b"] and skipped["retired"].to_list() == [True]
    assert skipped["reason"][0].startswith("retired: no row since")
    assert FC.coverage(out, skipped, retiring) == {"model": 1.0, "model_missing_inputs": 0.0, "seasonal_naive": 0.0,
                                                    "fallback_mean": 0.0, "not_forecast": 0.0}


@pytest.mark.parametrize("with_model", [False, True])
def test_the_quantiles_are_monotone_and_bracket_the_point(trained, with_model: bool) -> None:
    df, result = trained
    wm = df["day"].max()
    gappy = pl.concat([_drop(df, "a", [wm + timedelta(days=1) - timedelta(days=7)]),
                       pl.DataFrame({"day": [wm], "shop": ["new"], "y": [3.0], "promo": [True], "temp": [0.0]},
                                    schema=DAILY.columns)])
    booster, meta = (result.booster, result.meta) if with_model else (None, None)
    out, _ = FC.forecast_frame(gappy, DAILY, booster, meta, future=future(df))
    assert out.height == 9 and out.select(pl.all().is_null().sum()).drop("method_detail").sum_horizontal().item() == 0
    assert ((out["p10"] <= out["p50"]) & (out["p50"] <= out["p90"])).all()
    assert (out["p90"] > out["p10"]).all()  # a real range, not the point repeated
    assert (out["p10"] <= out["forecast"] + 1e-9).all() and (out["forecast"] <= out["p90"] + 1e-9).all()
    assert (out["p10"] >= 0).all()  # the target is never negative: the range is clipped like the point


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
