"""Features: hand-computed frames, missing days, and the no-leakage guarantee."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from freshet.modeling import features as F
from freshet.modeling import origins as O
from freshet.data.contracts import Contract, load_contract
from freshet.data.generate import generate_retail_sales
from freshet.settings import BUNDLED_CONTRACTS

RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)

# horizon 1, season 2: lags [1, 2, 4, 6, 8], rolling windows [2, 8], seasonal lag 2
TOY = Contract(
    name="toy",
    columns={"day": pl.Date(), "shop": pl.Int32(), "y": pl.Float64(), "price": pl.Float64()},
    time_column="day",
    frequency="daily",
    series_keys=("shop",),
    target="y",
    exogenous=("price",),
    horizon=1,
    season_length=2,
)


def d(day: int) -> date:
    return date(2024, 1, day)


def toy(days: list[int], ys: list[float], shop: int = 1, prices: list[float] | None = None) -> pl.DataFrame:
    return pl.DataFrame(
        {"day": [d(x) for x in days], "shop": [shop] * len(days), "y": ys, "price": prices or [1.0] * len(days)},
        schema=TOY.columns,
    )


def by_key(df: pl.DataFrame, contract: Contract = TOY) -> pl.DataFrame:
    return df.sort([*contract.series_keys, contract.time_column])


@pytest.mark.parametrize(
    ("horizon", "season", "lags", "seasonal"),
    [(7, 7, [7, 8, 14, 21, 28], 7), (1, 7, [1, 2, 7, 14, 21, 28], 7), (8, 7, [8, 9, 14, 21, 28], 14),
     (1, 2, [1, 2, 4, 6, 8], 2), (24, 24, [24, 25, 48, 72, 96], 24)],
)
def test_every_lag_is_at_or_beyond_the_horizon(horizon: int, season: int, lags: list[int], seasonal: int) -> None:
    c = Contract(**{**RETAIL.__dict__, "horizon": horizon, "season_length": season})
    assert F.lags_for(c) == lags
    assert F.seasonal_lag(c) == seasonal
    assert min(F.lags_for(c)) >= horizon and seasonal >= horizon


def test_lags_are_the_target_k_days_earlier_in_the_same_series() -> None:
    df = pl.concat([toy([1, 2, 3, 4, 5], [1, 2, 4, 8, 16]), toy([1, 2, 3], [100, 200, 300], shop=2)])
    out = by_key(F.add_lag_features(df.lazy(), TOY).collect())
    expected = pl.concat([
        toy([1, 2, 3, 4, 5], [1, 2, 4, 8, 16]).with_columns(
            lag_1=pl.Series([None, 1.0, 2.0, 4.0, 8.0]),
            lag_2=pl.Series([None, None, 1.0, 2.0, 4.0]),
            lag_4=pl.Series([None, None, None, None, 1.0]),
            lag_6=pl.lit(None, pl.Float64),
            lag_8=pl.lit(None, pl.Float64),
        ),
        toy([1, 2, 3], [100, 200, 300], shop=2).with_columns(
            lag_1=pl.Series([None, 100.0, 200.0]),
            lag_2=pl.Series([None, None, 100.0]),
            lag_4=pl.lit(None, pl.Float64),
            lag_6=pl.lit(None, pl.Float64),
            lag_8=pl.lit(None, pl.Float64),
        ),
    ])
    assert_frame_equal(out, expected)


def test_a_missing_day_gives_a_null_lag_not_a_neighbours_value() -> None:
    # day 3 is missing: the lag_1 of day 4 must be null, not day 2's value
    df = toy([1, 2, 4, 5], [10, 20, 40, 50])
    out = by_key(F.add_lag_features(df.lazy(), TOY).collect())
    assert out["lag_1"].to_list() == [None, 10.0, None, 40.0]
    assert out["lag_2"].to_list() == [None, None, 20.0, None]
    assert out["lag_4"].to_list() == [None, None, None, 10.0]


def test_rows_in_any_order_give_the_same_lags() -> None:
    df = toy([1, 2, 4, 5, 6], [10, 20, 40, 50, 60])
    shuffled = df.sample(fraction=1.0, shuffle=True, seed=3)
    assert_frame_equal(
        by_key(F.build_features(shuffled.lazy(), TOY).collect()),
        by_key(F.build_features(df.lazy(), TOY).collect()),
    )


def test_rolling_stats_cover_windows_ending_at_t_minus_horizon() -> None:
    df = toy([1, 2, 3, 4, 5], [1, 2, 4, 8, 16])
    out = by_key(F.add_rolling_features(df.lazy(), TOY).collect())
    # the row for day t sees y up to day t-1: window 2 = days t-2..t-1, window 8 = days t-8..t-1
    expected = df.with_columns(
        roll_mean_2=pl.Series([None, 1.0, 1.5, 3.0, 6.0]),
        roll_std_2=pl.Series([None, None, np.std([1, 2], ddof=1), np.std([2, 4], ddof=1), np.std([4, 8], ddof=1)]),
        roll_max_2=pl.Series([None, 1.0, 2.0, 4.0, 8.0]),
        roll_mean_8=pl.Series([None, 1.0, 1.5, 7 / 3, 3.75]),
        roll_std_8=pl.Series([None, None, np.std([1, 2], ddof=1), np.std([1, 2, 4], ddof=1), np.std([1, 2, 4, 8], ddof=1)]),
        roll_max_8=pl.Series([None, 1.0, 2.0, 4.0, 8.0]),
    )
    assert_frame_equal(out, expected)


def test_rolling_windows_are_by_time_not_by_row_count() -> None:
    # days 1, 2 then a gap to 9: the 2-day window ending on day 9 holds day 9 only
    df = toy([1, 2, 9, 10], [1, 2, 9, 10])
    out = by_key(F.add_rolling_features(df.lazy(), TOY).collect())
    assert out["roll_mean_2"].to_list() == [None, 1.0, None, 9.0]
    # the 8-day window ending on day 9 reaches back to day 2 (days 2..9), not day 1
    assert out["roll_mean_8"].to_list() == [None, 1.0, None, 5.5]


def test_rolling_stats_do_not_mix_series() -> None:
    df = pl.concat([toy([1, 2, 3], [1, 1, 1]), toy([1, 2, 3], [1000, 1000, 1000], shop=2)])
    out = by_key(F.add_rolling_features(df.lazy(), TOY).collect())
    assert out.filter(pl.col("shop") == 1)["roll_max_8"].to_list() == [None, 1.0, 1.0]
    assert out.filter(pl.col("shop") == 2)["roll_max_8"].to_list() == [None, 1000.0, 1000.0]


def test_known_exogenous_is_used_at_t_and_observed_only_at_the_origin_or_a_seasonal_lag() -> None:
    c = Contract(**{**TOY.__dict__, "exogenous": (), "observed": ("price",), "horizon": 1})
    df = toy([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], prices=[1.0, 2.0, 0.0, -1.0, None])
    out = by_key(F.add_exogenous_features(df.lazy(), c).collect())
    # observed: the seasonal lag (2) from t, and the value at the origin (t - 1 here); never the value at t
    assert out["price_lag_2"].to_list() == [None, None, 1.0, 2.0, 0.0]
    at_origin = by_key(F.build_features(df.lazy(), c).collect(), c)
    assert at_origin["price_olag_0"].to_list() == [None, 1.0, 2.0, 0.0, -1.0]
    assert "price" not in F.feature_columns(c) and "price_olag_0" in F.feature_columns(c)
    known = by_key(F.add_exogenous_features(df.lazy(), TOY).collect())
    assert_frame_equal(known, df)  # known: the value at t itself, zeros, negatives and nulls as they are
    assert "price" in F.feature_columns(TOY) and not [x for x in F.feature_columns(TOY) if "ratio" in x]


def test_boolean_exogenous_is_a_zero_one_number() -> None:
    df = generate_retail_sales(stores=1, items=1, days=10, missing_rate=0.0)
    out = F.add_exogenous_features(df.lazy(), RETAIL).collect().sort("date")
    assert out["on_promo"].dtype == pl.Float64
    assert out["on_promo"].to_list() == [float(v) for v in df["on_promo"].to_list()]


STRINGY = Contract(
    name="bikes",
    columns={"ts": pl.Datetime("us"), "city": pl.String(), "n": pl.Float64(), "weather": pl.String(),
             "workday": pl.Boolean(), "wind": pl.Float64()},
    time_column="ts", frequency="1h", series_keys=("city",), target="n", exogenous=("weather", "workday"),
    observed=("wind",), horizon=2, season_length=24,
)


def test_string_columns_are_categories_with_training_codes_and_unseen_values_are_missing() -> None:
    times = [datetime(2024, 3, 1) + timedelta(hours=h) for h in range(4)]
    df = pl.DataFrame({"ts": times, "city": ["b", "b", "a", "a"], "n": [1.0, 2.0, 3.0, 4.0],
                       "weather": ["rain", "sun", None, "snow"], "workday": [True, False, True, None],
                       "wind": [0.0, 0.0, 3.0, 0.0]}, schema=STRINGY.columns)
    cats = F.fit_categories(df.head(2).lazy(), STRINGY)
    assert cats == {"city": ["b"], "weather": ["rain", "sun"]}
    spec = F.default_spec(STRINGY, categories=cats)
    out = F.build_features(df.lazy(), STRINGY, spec).collect().sort("ts")
    assert out["weather"].to_list() == [0.0, 1.0, None, None]  # "snow" was never seen: missing, not a crash
    assert out["key_city"].to_list() == [0.0, 0.0, None, None]
    assert out["workday"].to_list() == [1.0, 0.0, 1.0, None]
    types = dict(zip(F.feature_columns(STRINGY, spec), F.feature_types(spec, STRINGY)))
    assert (types["weather"], types["key_city"], types["workday"], types["wind_olag_0"]) == ("c", "c", "q", "q")


def test_an_infinite_feature_fails_naming_the_column() -> None:
    df = toy([1, 2, 3], [1, 2, 3], prices=[1.0, 1e300, 2.0])  # beyond float32: inf once cast
    with pytest.raises(F.NonFiniteFeatureError, match="'price'"):
        F.training_frames(df.lazy(), TOY, d(3), 1, 1)


def test_calendar_features_without_two_years_have_no_yearly_position() -> None:
    df = pl.DataFrame(
        {"day": [date(2024, 1, 1), date(2024, 2, 29), date(2024, 12, 31)], "shop": [1, 1, 1],
         "y": [0.0, 0.0, 0.0], "price": [1.0, 1.0, 1.0]},
        schema=TOY.columns,
    )
    short = F.add_calendar_features(df.lazy(), TOY, F.default_spec(TOY, span=timedelta(days=729))).collect()
    assert_frame_equal(short, df.with_columns(cal_dow=pl.Series([1.0, 4.0, 2.0]), cal_dom=pl.Series([1.0, 29.0, 31.0])))
    out = F.add_calendar_features(df.lazy(), TOY, F.default_spec(TOY, span=timedelta(days=730))).collect()
    expected = df.with_columns(
        cal_dow=pl.Series([1.0, 4.0, 2.0]),  # Monday, Thursday, Tuesday
        cal_dom=pl.Series([1.0, 29.0, 31.0]),
        cal_month=pl.Series([1.0, 2.0, 12.0]),
        cal_week=pl.Series([1.0, 9.0, 1.0]),  # ISO week: 2024-12-31 is in 2025-W01
        cal_doy=pl.Series([1.0, 60.0, 366.0]),
    )
    assert_frame_equal(out, expected)


def test_hourly_contracts_lag_by_hours_and_add_the_hour_and_hour_of_week() -> None:
    hourly = Contract(
        name="load",
        columns={"ts": pl.Datetime("us"), "meter": pl.Int32(), "kw": pl.Float64()},
        time_column="ts", frequency="hourly", series_keys=("meter",), target="kw", exogenous=(),
        horizon=1, season_length=24,
    )
    assert F.lags_for(hourly) == [1, 2, 24, 48, 72, 96, 168]  # a week back for sub-daily data
    start = datetime(2024, 3, 1)  # a Friday
    times = [start + timedelta(hours=h) for h in (0, 1, 2, 4)]
    df = pl.DataFrame({"ts": times, "meter": [1] * 4, "kw": [1.0, 2.0, 3.0, 5.0]}, schema=hourly.columns)
    out = by_key(F.build_features(df.lazy(), hourly).collect(), hourly)
    assert out["lag_1"].to_list() == [None, 1.0, 2.0, None]
    assert out["lag_2"].to_list() == [None, None, 1.0, 3.0]
    assert out["cal_tod"].to_list() == [0, 1, 2, 4]
    assert out["cal_how"].to_list() == [96, 97, 98, 100]  # Friday is day 4 of the week (from 0)
    assert set(F.feature_columns(hourly)) <= set(out.columns)


@pytest.mark.parametrize(("frequency", "lag_hours", "tod"), [("15m", 0.25, [0, 1, 2, 4]), ("2h", 2, [0, 1, 2, 4])])
def test_sub_hourly_and_multi_hour_frequencies_step_by_their_period(frequency: str, lag_hours: float, tod: list) -> None:
    c = Contract(name="x", columns={"ts": pl.Datetime("us"), "m": pl.Int32(), "y": pl.Float64()}, time_column="ts",
                 frequency=frequency, series_keys=("m",), target="y", exogenous=(), horizon=1, season_length=4)
    times = [datetime(2024, 3, 4) + timedelta(hours=lag_hours * k) for k in (0, 1, 2, 4)]
    df = pl.DataFrame({"ts": times, "m": [1] * 4, "y": [1.0, 2.0, 3.0, 5.0]}, schema=c.columns)
    out = by_key(F.build_features(df.lazy(), c).collect(), c)
    assert out["lag_1"].to_list() == [None, 1.0, 2.0, None]
    assert out["cal_tod"].to_list() == tod


def test_build_features_keeps_every_row_and_every_feature_column() -> None:
    df = generate_retail_sales(stores=2, items=2, days=60)
    out = F.build_features(df.lazy(), RETAIL).collect()
    assert out.height == df.height
    # known exogenous columns are model inputs in place (Booleans as 0/1); everything else is untouched
    assert_frame_equal(out.select(df.columns).sort(["date", "store_id", "item_id"]),
                       df.with_columns(pl.col("on_promo").cast(pl.Float64)))
    assert set(F.feature_columns(RETAIL)) <= set(out.columns)
    assert out.select(["store_id", "item_id", "date"]).is_duplicated().sum() == 0
    # the seasonal-naive baseline is the target one season back
    naive = out.select(F.seasonal_naive_forecast(out.lazy(), RETAIL)).to_series()
    assert naive.name == "lag_7"


# ----------------------------------------------------------------- leakage
FeatureBuilder = Callable[..., pl.LazyFrame]


def leaked_rows(build: FeatureBuilder, df: pl.DataFrame, contract: Contract, cutoff: date,
                spec: F.FeatureSpec | None = None) -> tuple[int, int]:
    """Rebuild features after overwriting every target (and observed-only) value after ``cutoff`` with garbage.

    Returns (rows at or before cutoff + horizon whose features changed, rows after it whose features changed).
    """
    t, y = contract.time_column, contract.target
    rng = np.random.default_rng(0)
    garbage = df.with_columns(
        pl.when(pl.col(t) > cutoff).then(pl.Series(rng.uniform(1e5, 1e6, df.height))).otherwise(pl.col(c)).alias(c)
        for c in (y, *contract.observed)
    )
    assert garbage.filter(pl.col(t) > cutoff)[y].to_list() != df.filter(pl.col(t) > cutoff)[y].to_list()
    key = [*contract.series_keys, t]
    spec = spec or F.default_spec(contract)
    feats = [c for c in F.feature_columns(contract, spec) if c not in key]
    cols = [*key, *feats]
    clean = build(df.lazy(), contract, spec).collect().select(cols).sort(key)
    dirty = build(garbage.lazy(), contract, spec).collect().select(cols).sort(key)
    edge = cutoff + timedelta(days=contract.horizon)
    changed = pl.any_horizontal(
        [pl.col(c).ne_missing(pl.col(f"{c}_dirty")) for c in feats]
    )
    joined = clean.join(dirty, on=key, suffix="_dirty").with_columns(changed.alias("changed"))
    before = joined.filter((pl.col(t) <= edge) & pl.col("changed")).height
    after = joined.filter((pl.col(t) > edge) & pl.col("changed")).height
    return before, after


@pytest.fixture(scope="module")
def sales() -> pl.DataFrame:
    return generate_retail_sales(stores=3, items=3, days=150, missing_rate=0.05)


@pytest.mark.parametrize("cutoff", [date(2024, 2, 15), date(2024, 4, 1), date(2024, 5, 20)])
def test_no_future_target_value_leaks_into_any_feature(sales: pl.DataFrame, cutoff: date) -> None:
    before, after = leaked_rows(F.build_features, sales, RETAIL, cutoff)
    assert before == 0, f"{before} row(s) at or before {cutoff} + horizon see target values after {cutoff}"
    assert after > 0, "the garbage never reached a feature: this check would not catch a leak"


def test_the_leakage_check_catches_a_leaky_feature(sales: pl.DataFrame) -> None:
    def leaky(lf: pl.LazyFrame, contract: Contract, spec: F.FeatureSpec) -> pl.LazyFrame:
        # a rolling mean that ends at t instead of t - horizon
        out = F.build_features(lf, contract, spec)
        return out.with_columns(
            pl.col(contract.target).rolling_mean_by(contract.time_column, window_size="7d")
            .over(list(contract.series_keys)).alias("roll_mean_7")
        )

    before, _ = leaked_rows(leaky, sales, RETAIL, date(2024, 4, 1))
    assert before > 0


def test_leakage_holds_for_a_longer_horizon(sales: pl.DataFrame) -> None:
    c = Contract(**{**RETAIL.__dict__, "horizon": 10})
    before, after = leaked_rows(F.build_features, sales, c, date(2024, 3, 10))
    assert before == 0 and after > 0


@pytest.mark.parametrize("transform", ["none", "seasonal_difference", "level_scale"])
def test_no_leak_with_target_transforms_and_observed_exogenous(sales: pl.DataFrame, transform: str) -> None:
    c = Contract(**{**RETAIL.__dict__, "exogenous": ("on_promo",), "observed": ("price",), "horizon": 3})
    spec = F.default_spec(c, span=timedelta(days=800), transform=transform)  # yearly features too
    before, after = leaked_rows(F.build_features, sales, c, date(2024, 3, 10), spec)
    assert before == 0 and after > 0


# ----------------------------------------------------------------- time split
@pytest.mark.parametrize(("holdout", "validation"), [(28, 28), (7, 14), (1, 1)])
def test_time_split_is_time_ordered_disjoint_and_complete(sales: pl.DataFrame, holdout: int, validation: int) -> None:
    max_time = sales["date"].max()
    train, valid, test = (x.collect() for x in F.time_split(sales.lazy(), RETAIL, max_time, holdout, validation))
    assert train.height + valid.height + test.height == sales.height
    assert train["date"].max() < valid["date"].min()
    assert valid["date"].max() < test["date"].min()
    assert test["date"].max() == max_time
    assert test["date"].n_unique() == holdout
    assert valid["date"].n_unique() == validation
    assert test["date"].min() == max_time - timedelta(days=holdout - 1)
    assert_frame_equal(pl.concat([train, valid, test]).sort(["date", "store_id", "item_id"]), sales)


# ----------------------------------------------------------------- slice-wise training frames
@pytest.mark.parametrize("partitions", [1, 3])
def test_training_frames_in_slices_equal_the_whole_build(sales: pl.DataFrame, partitions: int) -> None:
    max_time = sales["date"].max()
    cols, key = F.feature_columns(RETAIL), ["store_id", "item_id", "date"]
    rows = O.training_origins(sales.lazy(), RETAIL, max_time)
    feats = F.build_features(sales.lazy(), RETAIL, rows=rows).with_columns(pl.col(cols).cast(pl.Float32))
    expected = [x.collect() for x in F.time_split(feats, RETAIL, max_time, 28, 14)]
    got = F.training_frames(sales.lazy(), RETAIL, max_time, 28, 14, partitions=partitions)
    keep = [*key, RETAIL.target, *cols, O.ORIGIN, F.TARGET, F.BASELINE]
    for want, have in zip(expected, got):
        assert have.height == want.height > 0
        want = want.select(keep)
        assert_frame_equal(have.sort(key), want.sort(key))
    assert got[2].sort(key)["date"].max() == max_time
