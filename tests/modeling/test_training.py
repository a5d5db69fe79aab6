"""train_model: every contract dtype trains, transforms are chosen and recorded, backtest windows, refit, decision."""

from __future__ import annotations

import math
from datetime import date, datetime, timedelta

import numpy as np
import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings as hsettings, strategies as st

from freshet.data.contracts import Contract
from freshet.data.generate import generate_retail_sales
from freshet.data.contracts import load_contract
from freshet.modeling import features as F
from freshet.modeling import forecast as FC
from freshet.modeling import model as M
from freshet.modeling import training as T
from freshet.settings import BUNDLED_CONTRACTS, Settings

RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)
# XGBoost alone: the model families (the statistical one, the ensemble) have their own tests, test_families.py
FAST = Settings(xgb_nthread=1, xgb_max_rounds=60, xgb_early_stopping_rounds=10, stats_models="")

MIXED = Contract(
    name="bikes",
    columns={"ts": pl.Datetime("us"), "station": pl.String(), "rides": pl.Float64(), "weather": pl.String(),
             "workday": pl.Boolean(), "wind": pl.Float64(), "holiday": pl.Int8()},
    time_column="ts", frequency="1h", series_keys=("station",), target="rides",
    exogenous=("weather", "workday", "holiday"), observed=("wind",), horizon=24, season_length=24,
    target_transform="auto",
)


def bikes(days: int = 40, seed: int = 0) -> pl.DataFrame:
    """Hourly rides with a String weather, a Boolean working day, a mostly-zero wind speed and a 0/1 holiday."""
    rng = np.random.default_rng(seed)
    times = [datetime(2024, 1, 1) + timedelta(hours=k) for k in range(24 * days)]
    rows = []
    for station in ("north", "south"):
        for t in times:
            weather = ["clear", "mist", "rain"][int(rng.integers(0, 3))]
            workday = t.weekday() < 5
            rides = max(0.0, (30 if workday else 15) * (1 + math.sin(t.hour / 24 * 2 * math.pi))
                        - (10 if weather == "rain" else 0) + rng.normal(0, 2))
            rows.append({"ts": t, "station": station, "rides": round(rides), "weather": weather, "workday": workday,
                         "wind": 0.0 if rng.random() < 0.7 else float(rng.integers(1, 20)),
                         "holiday": 0})
    return pl.DataFrame(rows, schema=MIXED.columns)


def test_string_boolean_and_zero_heavy_columns_train_and_beat_seasonal_naive() -> None:
    df = bikes()
    result = T.train_model(df, MIXED, None, FAST)
    meta = result.meta
    assert result.promote, result.reason
    assert meta["feature_spec"]["categories"] == {"station": ["north", "south"], "weather": ["clear", "mist", "rain"]}
    assert "wind_lag_24" in meta["features"] and "wind" not in meta["features"]  # observed: lagged only
    assert "weather" in meta["features"] and "cal_how" in meta["features"]      # known: at t; hour of week
    assert not {"cal_doy", "cal_week", "cal_month"} & set(meta["features"])    # 40 days: no yearly position
    assert [c["transform"] for c in meta["candidates"]] == ["none", "seasonal_difference", "level_scale"]
    assert meta["transform"] == min(meta["candidates"], key=lambda c: c["validation"]["wape"])["transform"]
    assert len(meta["backtest"]["windows"]) == 4 and all(w["model"]["rows"] == 2 * 24 for w in meta["backtest"]["windows"])
    assert result.scores["model"]["wape"] < result.scores["baseline"]["wape"]


def test_the_serving_model_continues_the_evaluated_one_on_the_rows_it_never_trained_on() -> None:
    df = generate_retail_sales(stores=2, items=2, days=150)
    result = T.train_model(df, RETAIL, None, FAST)
    ev, rows = result.meta["evaluation"], result.meta["rows"]
    best = ev["best_iteration"] + 1
    assert ev["refit"] == "continue" and 0 < rows["refit"] <= rows["valid"] + rows["holdout"]
    assert result.meta["rounds"] == T.refit_rounds(best, ev["train_rows"], ev["train_rows"] + rows["refit"],
                                                   FAST.xgb_max_rounds) > best
    assert result.booster.num_boosted_rounds() == result.meta["rounds"]
    # its first rounds are the evaluated model's best ones; the rest learnt from the newest rows
    assert result.booster[:best].get_dump() == result.eval_booster[:best].get_dump()
    assert result.eval_booster is not result.booster
    assert {"refit_seconds", "fit_eval_seconds", "fit_chosen_seconds"} <= set(result.timings)


def test_capped_is_a_seeded_sample_spread_over_the_whole_span() -> None:
    frame = pl.DataFrame({"day": list(range(1000)), "y": [float(k % 7) for k in range(1000)]})
    got = T.capped(frame, 300)
    assert got.height == 300 and got["day"].n_unique() == 300
    assert got.equals(T.capped(frame, 300))                      # idempotent: the same rows every run
    assert (got["day"] // 100).n_unique() == 10                  # every tenth of the span is represented
    assert T.capped(frame, 0).equals(frame) and T.capped(frame, 1000).equals(frame)


def test_the_evaluated_fit_trains_on_at_most_the_cap_and_the_rest_still_count() -> None:
    df = generate_retail_sales(stores=2, items=2, days=150)
    whole = T.train_model(df, RETAIL, None, FAST)
    cap = whole.meta["rows"]["train"] // 2
    result = T.train_model(df, RETAIL, None, FAST.model_copy(update={"xgb_max_train_rows": cap}))
    assert result.meta["evaluation"]["train_rows"] == cap < whole.meta["evaluation"]["train_rows"]
    assert result.meta["rows"]["train"] == whole.meta["rows"]["train"]          # the cap only thins the fit's rows
    assert result.meta["rows"]["holdout"] == whole.meta["rows"]["holdout"]      # the backtest scores every row
    assert result.meta["rows"]["refit"] == whole.meta["rows"]["refit"] > 0      # the serving model sees the newest


@pytest.mark.parametrize(("best", "train", "everything", "cap", "want"),
                         [(100, 1000, 1200, 800, 120), (100, 1000, 5000, 800, 150), (600, 100, 150, 800, 800),
                          (1, 10, 10, 5, 1)])
def test_refit_rounds(best: int, train: int, everything: int, cap: int, want: int) -> None:
    assert T.refit_rounds(best, train, everything, cap) == want


def test_a_pinned_transform_and_objective_are_used_and_recorded() -> None:
    c = Contract(**{**RETAIL.__dict__, "target_transform": "level_scale", "objective": "poisson"})
    result = T.train_model(generate_retail_sales(stores=2, items=2, days=150), c, None, FAST)
    assert (result.meta["transform"], result.meta["objective"]) == ("level_scale", "poisson")
    assert result.meta["params"]["objective"] == "count:poisson"
    # poisson cannot learn a seasonal difference (negative labels): squared error there
    d = Contract(**{**c.__dict__, "target_transform": "seasonal_difference"})
    other = T.train_model(generate_retail_sales(stores=2, items=2, days=150), d, None, FAST)
    assert other.meta["objective"] == "squared_error"


def test_the_champion_is_scored_only_on_rows_it_never_saw() -> None:
    df = generate_retail_sales(stores=2, items=2, days=150)
    cut = df["date"].max() - timedelta(days=7)
    first = T.train_model(df.filter(pl.col("date") <= cut), RETAIL, None, FAST)
    second = T.train_model(df, RETAIL, (first.booster, first.meta), FAST)
    champ = second.scores["champion"]
    assert champ is not None and champ["rows"] == second.scores["model_on_champion_rows"]["rows"]
    assert champ["rows"] == df.filter(pl.col("date") > cut).height
    # the same data again: the champion has seen every backtest row, so only the baseline decides
    again = T.train_model(df, RETAIL, (second.booster, {**second.meta}), FAST)
    assert again.scores["champion"] is None and "trained on every backtest row" in again.reason


def test_too_little_history_names_the_spans() -> None:
    with pytest.raises(T.NotEnoughHistoryError, match="FRESHET_HOLDOUT_PERIODS"):
        T.train_model(generate_retail_sales(stores=1, items=1, days=40), RETAIL, None, FAST)


def test_negative_targets_are_not_clipped() -> None:
    df = generate_retail_sales(stores=1, items=2, days=150).with_columns(pl.col("units_sold") - 30)
    c = Contract(**{**RETAIL.__dict__, "rules": {}})
    result = T.train_model(df, c, None, FAST)
    assert result.meta["clip_at_zero"] is False
    fut = df.filter(pl.col("date") > df["date"].max() - timedelta(days=7)).with_columns(
        pl.col("date") + timedelta(days=7)).drop("units_sold")
    out, _ = FC.forecast_frame(df, c, result.booster, result.meta, future=fut)
    assert (out["forecast"] < 0).any()


# ----------------------------------------------------------------- property: any valid contract trains
FREQS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "2h": timedelta(hours=2), "1d": timedelta(days=1),
         "1w": timedelta(weeks=1)}
EXO_DTYPES = {"Float64": pl.Float64(), "Int32": pl.Int32(), "Boolean": pl.Boolean(), "String": pl.String(),
              "UInt8": pl.UInt8()}


@st.composite
def contracts_and_data(draw):
    freq = draw(st.sampled_from(sorted(FREQS)))
    period = FREQS[freq]
    horizon = draw(st.integers(1, 6))
    season = draw(st.integers(1, 8))
    kinds = draw(st.lists(st.tuples(st.sampled_from(sorted(EXO_DTYPES)), st.booleans()), max_size=3))
    keys = draw(st.sampled_from([("s",), ("s", "k")]))
    key_dtype = draw(st.sampled_from([pl.Int32(), pl.String()]))
    target_dtype = draw(st.sampled_from([pl.Float64(), pl.Int64(), pl.Float32()]))
    zeros = draw(st.floats(0.0, 0.9))
    seed = draw(st.integers(0, 1000))
    transform = draw(st.sampled_from(["auto", "none", "seasonal_difference", "level_scale"]))
    objective = draw(st.sampled_from(["squared_error", "poisson", "tweedie", "absolute_error"]))
    time_dtype = pl.Datetime("us") if period < timedelta(days=1) else draw(st.sampled_from([pl.Date(), pl.Datetime("us")]))
    columns = {"t": time_dtype, **{k: key_dtype for k in keys}, "y": target_dtype}
    known, observed = [], []
    for i, (dtype, is_known) in enumerate(kinds):
        columns[f"x{i}"] = EXO_DTYPES[dtype]
        (known if is_known else observed).append(f"x{i}")
    contract = Contract(name="prop", columns=columns, time_column="t", frequency=freq, series_keys=keys, target="y",
                        exogenous=tuple(known), observed=tuple(observed), horizon=horizon, season_length=season,
                        objective=objective, target_transform=transform)
    rng = np.random.default_rng(seed)
    periods = contract.default_holdout() + contract.default_validation() + draw(st.integers(10, 60))
    start = datetime(2024, 1, 1) if time_dtype == pl.Datetime("us") else date(2024, 1, 1)
    frames = []
    for n_series in range(2):
        y = rng.poisson(5, periods).astype(float) * (rng.random(periods) > zeros)
        data: dict = {"t": [start + period * i for i in range(periods)]}
        for j, k in enumerate(keys):
            data[k] = [n_series + j] * periods if key_dtype == pl.Int32() else [f"{k}{n_series}"] * periods
        data["y"] = y
        for col in [*known, *observed]:
            dtype = columns[col]
            if dtype == pl.Boolean():
                vals = list(rng.random(periods) > 0.5)
            elif dtype == pl.String():
                vals = [["a", "b", "c"][v] for v in rng.integers(0, 3, periods)]
            else:
                vals = list(np.where(rng.random(periods) < zeros, 0, rng.integers(-3 if dtype != pl.UInt8() else 0, 9, periods)))
            data[col] = vals
        frames.append(pl.DataFrame(data).with_columns(pl.col(c).cast(columns[c]) for c in columns).select(list(columns)))
    df = pl.concat(frames)
    # some missing values in exogenous columns, some missing periods
    for col in [*known, *observed]:
        df = df.with_columns(pl.when(pl.int_range(pl.len()) % 11 == 3).then(None).otherwise(pl.col(col)).alias(col))
    df = df.filter(pl.int_range(pl.len()) % 17 != 5)
    return contract, df


@hsettings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(contracts_and_data())
def test_any_valid_contract_trains_with_only_finite_features(case) -> None:
    contract, df = case
    s = Settings(xgb_nthread=1, xgb_max_rounds=15, xgb_early_stopping_rounds=5, stats_models="")
    prep = T.prepare(df, contract, s)
    cols = F.feature_columns(contract, prep.spec)
    for frame in (prep.train, prep.valid, prep.backtest):
        floats = frame.select(pl.col(cols).cast(pl.Float64))
        assert not floats.select(pl.any_horizontal(pl.all().is_infinite())).to_series().any()
    result = T.train_model(df, contract, None, s)
    assert result.meta["transform"] in F.TRANSFORMS
    assert np.isfinite(result.scores["model"]["mae"])
    fut = None
    if contract.known:
        wm = df["t"].max()
        keys = df.select(contract.series_keys).unique()
        times = pl.DataFrame({"t": [wm + contract.period * i for i in range(1, contract.horizon + 1)]},
                             schema={"t": contract.columns["t"]})
        fut = keys.join(times, how="cross").join(
            df.group_by(contract.series_keys).agg(pl.col(c).drop_nulls().last() for c in contract.known),
            on=list(contract.series_keys))
    out, skipped = FC.forecast_frame(df, contract, result.booster, result.meta, future=fut)
    keys = list(contract.series_keys)
    # every series is forecast for the whole horizon, or named in `skipped` (left out or cut short)
    complete = df.select(keys).unique().join(skipped.select(keys), on=keys, how="anti")
    per_series = out.group_by(keys).len()
    assert per_series["len"].max() is None or per_series["len"].max() <= contract.horizon
    assert complete.join(per_series.filter(pl.col("len") == contract.horizon), on=keys, how="anti").height == 0
    assert out["forecast"].is_finite().all()


def test_the_backtest_calibrates_a_range_that_covers_later_actuals_at_about_its_nominal_rate() -> None:
    full = generate_retail_sales(stores=4, items=6, days=187)
    cut = full["date"].max() - timedelta(days=RETAIL.horizon)
    history, later = full.filter(pl.col("date") <= cut), full.filter(pl.col("date") > cut)
    result = T.train_model(history, RETAIL, None, FAST)
    iv = result.meta["intervals"]
    # residuals of the backtest rows and of the validation span (neither was trained on)
    backtest_rows, valid_rows = result.scores["model"]["rows"], result.meta["rows"]["valid"]
    assert iv["quantiles"] == [0.1, 0.5, 0.9] and backtest_rows < iv["table"]["rows"] <= backtest_rows + valid_rows
    assert 0.6 <= iv["coverage"]["p10-p90"]["empirical"] <= 0.95  # cross-fitted over the 4 windows
    assert all(w["intervals"]["coverage"]["p10-p90"]["nominal"] == 0.8 for w in result.meta["backtest"]["windows"])
    assert "intervals" not in result.meta["metrics"]  # the table stays out of events' metrics
    future = later.select(*RETAIL.series_keys, "date", "price", "on_promo")
    out, _ = FC.forecast_frame(history, RETAIL, result.booster, result.meta, future=future)
    got = out.join(later, on=[*RETAIL.series_keys, "date"])
    # the generator leaves out 2% of days: those rows have no actual, and no future price either
    assert out.height == 24 * 7 and got.height == later.height and set(out["method"]) <= {"model", "seasonal_naive"}
    inside = ((got["units_sold"] >= got["p10"]) & (got["units_sold"] <= got["p90"])).mean()
    assert 0.6 <= inside <= 0.95, inside


# ----------------------------------------------------------------- the promotion gate fails closed
def promo_sales(days: int = 150, seed: int = 3) -> pl.DataFrame:
    """Daily sales of two store-items driven by a random promotion (+40 units): seasonal naive
    guesses the promotion wrong half the time, and a model that cannot see it misses it."""
    rng = np.random.default_rng(seed)
    rows = []
    for store in (1, 2):
        for k in range(days):
            day, promo = date(2024, 1, 1) + timedelta(days=k), bool(rng.random() < 0.5)
            units = 20.0 + 5.0 * (day.weekday() >= 5) + (40.0 if promo else 0.0) + rng.normal(0, 1)
            rows.append({"date": day, "store_id": store, "item_id": 1, "units_sold": round(max(units, 0.0)),
                         "price": 2.5, "on_promo": promo})
    return pl.DataFrame(rows, schema=RETAIL.columns)


def test_a_champion_that_cannot_be_scored_is_never_replaced_by_a_worse_model() -> None:
    df = promo_sales()
    cut = df["date"].max() - timedelta(days=14)
    first = T.train_model(df.filter(pl.col("date") <= cut), RETAIL, None, FAST)
    champion = (first.booster, {**first.meta, "version": "v-champion"})
    # the promotion column stops arriving and the contract drops it: the champion needs it
    columns = {k: v for k, v in RETAIL.columns.items() if k != "on_promo"}
    rules = {k: v for k, v in RETAIL.rules.items() if k != "on_promo"}
    blind = Contract(**{**RETAIL.__dict__, "columns": columns, "exogenous": ("price",), "rules": rules})
    second = T.train_model(df.drop("on_promo"), blind, champion, FAST)

    # the new model beats seasonal naive (today's gate promoted on that alone) ...
    assert second.scores["model"]["wape"] < second.scores["baseline"]["wape"]
    # ... but is worse than the champion on the rows the champion never saw (scored where it can be)
    full, fresh = T.prepare(df, RETAIL, FAST), pl.col("date") > cut
    rows = full.backtest.filter(fresh & pl.col(F.BASELINE).is_not_null())
    champ_pred, note = T.champion_predictions(full, champion, rows)
    new_pred, _ = T.champion_predictions(T.prepare(df.drop("on_promo"), blind, FAST),
                                         (second.eval_booster, second.meta), rows)
    assert note is None and rows.height > 0
    actual = rows["units_sold"].to_numpy()
    assert M.metrics(actual, champ_pred)["wape"] < 0.5 * M.metrics(actual, new_pred)["wape"]

    assert second.promote is False and second.meta["decision"]["promote"] is False
    assert second.scores["champion"] is None
    assert second.reason.startswith("not promoted: champion v-champion cannot be scored on this data")
    assert "on_promo" in second.reason and second.meta["decision"]["reason"] == second.reason


@pytest.mark.parametrize(("note", "model", "promote"), [
    (None, 0.5, True),                                       # no champion: beating the baseline is enough
    ("champion v1 predates feature specs", 0.5, False),     # a champion that cannot be scored: closed
    ("the champion could not forecast every backtest row", 0.5, False),
    ("the champion was trained on every backtest row", 0.5, False),
    ("champion v1 predates feature specs", 0.9, False),     # worse than the baseline: closed either way
])
def test_decide_fails_closed_when_a_champion_exists_but_was_not_scored(note, model, promote) -> None:
    scores = {"model": {"wape": model}, "champion": None, "baseline": {"wape": 0.8}}
    ok, reason = T.decide(scores, 0.0, note)
    assert ok is promote
    if note:
        assert reason.startswith(f"not promoted: {note}") and "registry.promote" in reason


@pytest.mark.parametrize(("model", "on_champion_rows", "champion", "promote"), [
    (0.7, 0.7, 0.75, True),    # beats the baseline and the champion
    (0.7, 0.7, 0.65, False),   # beats the baseline, not the champion: the champion keeps serving
    (0.85, 0.85, 0.9, True),   # misses the baseline but beats the champion that would keep serving
    (0.85, 0.85, 0.8, False),  # misses both
])
def test_a_refit_that_beats_the_serving_champion_replaces_it(model, on_champion_rows, champion, promote) -> None:
    scores = {"model": {"wape": model}, "model_on_champion_rows": {"wape": on_champion_rows},
              "champion": {"wape": champion, "rows": 96}, "baseline": {"wape": 0.8}}
    ok, reason = T.decide(scores, 0.0)
    assert ok is promote
    assert ("does not beat the seasonal-naive baseline 0.8000" in reason) is (model > 0.8)


def test_reported_metrics_are_the_evaluated_models_not_the_refits() -> None:
    df = generate_retail_sales(stores=2, items=2, days=150)
    result = T.train_model(df, RETAIL, None, FAST)
    prep = T.prepare(df, RETAIL, FAST)
    rows = prep.backtest.filter(pl.col(F.BASELINE).is_not_null() & pl.col(F.BASELINE).is_not_nan())
    actual = rows["units_sold"].to_numpy()

    def scored(booster) -> dict:
        return M.metrics(actual, FC.predict_target(booster, rows, RETAIL, prep.spec, clip=prep.clip_at_zero))

    assert result.meta["transform"] == "none" and result.scores["model"]["rows"] == rows.height
    assert result.scores["model"] == pytest.approx(scored(result.eval_booster))
    # the refit trained on the backtest rows: its in-sample error is lower, and it is not what is reported
    assert scored(result.booster)["wape"] < 0.9 * result.scores["model"]["wape"]
