"""Origin-relative features: no target after the origin is read, gaps never slide a value, and the
backtest and the served forecast build the same features for the same origin."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from freshet.data.contracts import Contract
from freshet.modeling import features as F
from freshet.modeling import forecast as FC
from freshet.modeling import model as M
from freshet.modeling import origins as O
from freshet.modeling import training as T
from tests.modeling.test_forecast import DAILY, SETTINGS

# horizon 3 longer than the season 2: every origin feature is in play (olag_season too)
SHOP = Contract(**{**DAILY.__dict__, "season_length": 2})


def d(day: int) -> date:
    return date(2024, 1, 1) + timedelta(days=day - 1)


def shop_days(days: int, skip: tuple[int, ...] = (), seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = [{"day": d(k), "shop": s, "y": 10.0 * (i + 1) + 4.0 * (k % 2) + 6.0 * (k % 5 == 0) + rng.normal(0, 0.5),
             "promo": k % 5 == 0, "temp": float(rng.integers(0, 4))}
            for i, s in enumerate(("a", "b")) for k in range(1, days + 1) if k not in skip]
    return pl.DataFrame(rows, schema=SHOP.columns)


def forecast_rows(history: pl.DataFrame, origin: date) -> pl.DataFrame:
    """The rows after ``origin`` (targets included: the features must not read them), forecast from ``origin``."""
    t = pl.col("day")
    return history.filter((t > origin) & (t <= origin + timedelta(days=SHOP.horizon))).with_columns(
        pl.lit(origin).alias(O.ORIGIN))


def features_of(history: pl.DataFrame, origin: date, spec: F.FeatureSpec) -> pl.DataFrame:
    cols = F.feature_columns(SHOP, spec)  # REF too, under a transform
    return (F.build_features(history.lazy(), SHOP, spec, rows=forecast_rows(history, origin).lazy())
            .select("shop", "day", *cols).collect().sort("shop", "day"))


@pytest.mark.parametrize("transform", ["none", "seasonal_difference", "level_scale"])
def test_no_target_or_observed_value_after_the_origin_is_read(transform: str) -> None:
    history, origin = shop_days(40), d(30)
    spec = F.default_spec(SHOP, transform=transform)
    rng = np.random.default_rng(1)
    after = pl.col("day") > origin
    garbage = history.with_columns(
        pl.when(after).then(pl.Series(rng.uniform(1e5, 1e6, history.height))).otherwise(pl.col(c)).alias(c)
        for c in ("y", "temp"))
    clean = features_of(history, origin, spec)
    assert clean.height == 6 and clean["step"].to_list() == [1.0, 2.0, 3.0] * 2
    assert_frame_equal(features_of(garbage, origin, spec), clean)
    # positive control: the value AT the origin is read, by step 1 as by every step
    bumped = history.with_columns(pl.when(pl.col("day") == origin).then(pl.col("y") + 100.0).otherwise(pl.col("y")))
    moved = features_of(bumped, origin, spec)
    assert (moved["olag_0"] - clean["olag_0"]).abs().min() > 0
    step1 = (pl.col("step") == 1.0)
    assert not moved.filter(step1).equals(clean.filter(step1))


def test_origin_lags_read_exact_periods_across_gaps() -> None:
    history = shop_days(10, skip=(6,)).with_columns((pl.col("day").dt.day() * 10.0).alias("y"))
    got = features_of(history, d(7), F.default_spec(SHOP)).filter(pl.col("shop") == "a")
    # day 6 is missing: its lags are null, never the neighbouring day's value
    assert got["step"].to_list() == [1.0, 2.0, 3.0]
    assert got["olag_0"].to_list() == [70.0] * 3
    assert got["olag_1"].to_list() == [None] * 3
    assert got["olag_2"].to_list() == [50.0] * 3
    # whole seasons (2 days) back from t, at or before the origin: days 6 (missing), 7, 6 (missing)
    assert got[O.SEASON_LAG].to_list() == [None, 70.0, None]
    # lags from t stay at least the horizon (3) old: days 5, 6 (missing), 7
    assert got["lag_3"].to_list() == [50.0, None, 70.0]
    # the 2-day rolling mean ends at the origin: days 6 (missing) and 7
    assert got["roll_mean_2"].to_list() == [70.0] * 3


def test_a_model_from_before_origins_reads_every_row_from_t_minus_horizon() -> None:
    old = F.FeatureSpec.from_json({k: v for k, v in F.default_spec(SHOP).to_json().items()
                                   if k not in ("direct", "origin_lags", "observed_origin_lags", "origin_season")})
    assert not old.direct and "step" not in F.feature_columns(SHOP, old)
    history = shop_days(20)
    got = features_of(history, d(17), old).filter(pl.col("shop") == "a")
    ys = dict(zip(history.filter(pl.col("shop") == "a")["day"], history.filter(pl.col("shop") == "a")["y"]))
    # the origin given is ignored: the 2-day rolling max of day t ends at t - 3 (days t-4, t-3)
    assert got["roll_max_2"].to_list() == [max(ys[t - timedelta(days=4)], ys[t - timedelta(days=3)])
                                           for t in got["day"]]


@pytest.mark.parametrize("steps_per_row", [1, 2, 3])
def test_training_origins_cover_every_step_and_stack_only_training_rows(steps_per_row: int) -> None:
    history = shop_days(30).filter(pl.col("shop") == "a")
    max_time, stack_before = d(30), d(19)
    got = O.training_origins(history.lazy(), SHOP, max_time, stack_before, steps_per_row).collect()
    step = (got["day"] - got[O.ORIGIN]).dt.total_days()
    assert step.min() == 1 and step.max() == SHOP.horizon
    early = got.filter(pl.col("day") < stack_before)
    assert early.height == steps_per_row * history.filter(pl.col("day") < stack_before).height
    assert early.select("day", O.ORIGIN).n_unique() == early.height  # distinct origins per row
    # validation and backtest rows: one origin each, just before their window of 3 days ending at max_time
    late = got.filter(pl.col("day") >= stack_before).sort("day")
    assert late.height == 12 and late[O.ORIGIN].to_list()[-6:] == [d(24)] * 3 + [d(27)] * 3


def test_the_backtest_and_the_served_forecast_build_the_same_features_for_the_same_origin() -> None:
    history = shop_days(120)
    prep = T.prepare(history, SHOP, SETTINGS)
    spec, t = prep.spec, pl.col("day")
    origin = prep.stats["max"] - timedelta(days=SHOP.horizon)  # the newest backtest window
    window = prep.backtest.filter(pl.col(O.ORIGIN) == origin).sort("shop", "day")
    assert window.height == 6
    cols = F.feature_columns(SHOP, spec)
    future = history.filter(t > origin).select("shop", "day", "promo")
    served = FC.model_frame(history.filter(t <= origin), SHOP, spec,
                            rows=future.with_columns(pl.lit(origin).alias(O.ORIGIN))).collect().sort("shop", "day")
    assert_frame_equal(served.select("shop", "day", *cols), window.select("shop", "day", *cols))
    # and forecast_frame, given that history and future, predicts what the backtest scored
    chosen, _ = T.fit_candidates(prep, SETTINGS)
    meta = {"feature_spec": chosen.spec.to_json(), "clip_at_zero": prep.clip_at_zero}
    out, _ = FC.forecast_frame(history.filter(t <= origin), SHOP, chosen.fit.booster, meta, future=future)
    backtested = FC.predict_target(chosen.fit.booster, window, SHOP, chosen.spec, clip=prep.clip_at_zero)
    assert set(out["method"]) == {"model"}
    np.testing.assert_allclose(out.sort("shop", "day")["forecast"].to_numpy(), backtested, rtol=1e-6)


def test_a_champion_from_before_origins_is_still_scored_by_the_gate_and_served() -> None:
    history = shop_days(120)
    new_fields = ("direct", "origin_lags", "observed_origin_lags", "origin_season")
    stored = {k: v for k, v in F.default_spec(SHOP).to_json().items() if k not in new_fields}
    old = F.FeatureSpec.from_json(stored)
    rows = FC.model_frame(history.filter(pl.col("day") <= d(90)), SHOP, old).collect()
    rows = rows.filter(pl.col(F.TARGET).is_not_null())
    fit = M.fit(rows, None, F.feature_columns(SHOP, old), F.TARGET, M.xgb_params(SETTINGS), 20, None,
                feature_types=F.feature_types(old, SHOP))
    meta = {"version": "v-old", "feature_spec": stored, "clip_at_zero": True, "data_watermark": str(d(90))}
    result = T.train_model(history, SHOP, (fit.booster, meta), SETTINGS)
    assert result.scores["champion"] is not None and result.scores["champion"]["rows"] == result.scores["model"]["rows"]
    assert "could not be compared" not in result.reason
    future = pl.DataFrame({"shop": ["a", "b"] * 3, "day": [d(121 + k // 2) for k in range(6)], "promo": [False] * 6})
    out, _ = FC.forecast_frame(history, SHOP, fit.booster, meta, future=future)
    assert out.height == 6 and set(out["method"]) == {"model"} and out["forecast"].is_finite().all()


def test_spread_validation_holds_out_every_kth_training_window_whole() -> None:
    history = shop_days(60)
    max_time = d(60)
    train, valid, back = F.training_frames(history.lazy(), SHOP, max_time, 6, 6, spread_every=4)
    base_train, base_valid, _ = F.training_frames(history.lazy(), SHOP, max_time, 6, 6)
    age = (max_time - pl.col("day")).dt.total_days()
    moved = valid.filter(pl.col("day") < d(49))
    # the windows of 3 days counted back from the newest row with index 3, 7, 11, ...: whole windows, both series
    assert moved.height > 0 and moved.select((age // 3) % 4 == 3).to_series().all()
    assert train.height + moved.height == base_train.height and valid.height == base_valid.height + moved.height
    assert train.select((age // 3) % 4 != 3).to_series().all() and back.height == 12
