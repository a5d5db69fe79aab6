"""Model families: the statistical family on the XGBoost backtest's rows, the choice recorded, a missing extra named,
a statistical champion served, and the naive baseline in the promotion gate."""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from freshet.data.contracts import Contract
from freshet.modeling import families as FAM
from freshet.modeling import forecast as FC
from freshet.modeling import intervals as I
from freshet.modeling.report import families_text
from freshet.modeling import training as T
from freshet.settings import Settings

WAVE = Contract(name="wave", columns={"ts": pl.Datetime("us"), "site": pl.String(), "load": pl.Float64()},
                time_column="ts", frequency="1h", series_keys=("site",), target="load", exogenous=(), horizon=24,
                season_length=24)
SETTINGS = Settings(xgb_nthread=1, xgb_max_rounds=200, xgb_early_stopping_rounds=20)
# XGBoost held to a few rounds: the statistical family then wins outright (the ensemble averages in a weak model),
# for the tests that need a statistical champion to serve and score
WEAK_XGB = Settings(xgb_nthread=1, xgb_max_rounds=3, xgb_early_stopping_rounds=2)
XGB_ONLY = Settings(xgb_nthread=1, xgb_max_rounds=200, xgb_early_stopping_rounds=20, stats_models="")


def wave(hours: int = 24 * 28, sites: tuple[str, ...] = ("a",), seed: int = 1) -> pl.DataFrame:
    """Four weeks of hourly load with a clean daily and weekly pattern plus noise: short and strongly seasonal."""
    rng = np.random.default_rng(seed)
    k = np.arange(hours)
    parts = [pl.DataFrame({"ts": [datetime(2024, 1, 1) + timedelta(hours=int(i)) for i in k], "site": site,
                           "load": 100 + 40 * np.sin(2 * np.pi * k / 24) + 25 * np.sin(2 * np.pi * k / 168)
                           + rng.normal(0, 3, hours)}) for site in sites]
    return pl.concat(parts)


def test_a_short_strongly_seasonal_series_gets_a_champion_that_beats_seasonal_naive_and_the_choice_is_recorded() -> None:
    result = T.train_model(wave(), WAVE, None, SETTINGS)
    meta, fams = result.meta, result.meta["families"]
    table = {(c["family"], c["model"]): c for c in fams["candidates"]}
    assert set(table) == {("xgboost", None), ("stats", "mstl"), ("ensemble", "mstl")}
    # every candidate is scored on the same backtest rows as the XGBoost model
    assert {c["rows"] for c in fams["candidates"]} == {result.scores["model"]["rows"]} == {96}
    best = min(fams["candidates"], key=lambda c: c["wape"])
    assert fams["chosen"] == {"family": best["family"], "model": best["model"]} and meta["family"] == best["family"]
    assert meta["family"] != "xgboost"  # XGBoost alone does not see the weekly season in 3 weeks of training rows
    assert result.scores["model"]["wape"] == best["wape"] < table[("xgboost", None)]["wape"]
    assert result.promote and result.scores["model"]["wape"] < result.scores["baseline"]["wape"], result.reason
    assert meta["recipe"] == {"model": "mstl", "seasons": [24, 168], "fit_periods": 6 * 168, "library": "statsforecast"}
    assert all(c["seconds"] > 0 and c["coverage"]["p10-p90"]["nominal"] == 0.8 for c in fams["candidates"])
    assert "(chosen)" in families_text(meta) and f"{best['wape']:.4f}" in families_text(meta)


def test_the_statistical_backtest_reads_no_target_after_each_windows_origin() -> None:
    df = wave(hours=24 * 21)
    rows = df.filter(pl.col("ts") > df["ts"].max() - timedelta(hours=48)).with_columns(
        ((df["ts"].max() - pl.col("ts")).dt.total_hours() // 24).alias("window"))
    base = FAM.stats_values(df.lazy(), WAVE, rows, df["ts"].max(), "mstl", clip=True)
    origin1 = FAM.window_origin(WAVE, df["ts"].max(), 1)
    after = df.with_columns(pl.when(pl.col("ts") > origin1).then(pl.col("load") * 5).otherwise("load").alias("load"))
    before = df.with_columns(pl.when(pl.col("ts") <= origin1).then(pl.col("load") * 5).otherwise("load").alias("load"))
    older = (rows["window"] == 1).to_numpy()
    got_after = FAM.stats_values(after.lazy(), WAVE, rows, df["ts"].max(), "mstl", clip=True)
    got_before = FAM.stats_values(before.lazy(), WAVE, rows, df["ts"].max(), "mstl", clip=True)
    assert not np.isnan(base).any()
    np.testing.assert_allclose(got_after[older], base[older])          # window 1 never reads past its origin
    assert not np.allclose(got_after[~older], base[~older])            # window 0's origin is later: it does
    assert not np.allclose(got_before[older], base[older])             # positive control: its own past matters


@pytest.mark.parametrize(("settings", "series", "periods", "reason"), [
    (Settings(stats_models=""), 1, 1000, "turned off"),
    (Settings(stats_max_series=3), 4, 1000, "more than FRESHET_STATS_MAX_SERIES (3)"),
    (Settings(), 1, 40, "too little history: 40 periods"),
    (Settings(), 1, 1000, None),
])
def test_why_the_statistical_family_cannot_run(settings, series, periods, reason) -> None:
    got = FAM.stats_unavailable(WAVE, series, periods, settings)
    assert got == reason if reason is None else reason in got


def test_unknown_statistical_models_are_an_error_naming_the_setting() -> None:
    with pytest.raises(ValueError, match="FRESHET_STATS_MODELS.*'arima'"):
        FAM.stats_models(Settings(stats_models="mstl, arima"))


def test_without_the_stats_extra_the_family_is_named_unavailable_and_xgboost_still_trains(monkeypatch) -> None:
    # A real uninstall cannot happen inside the suite: the venv is shared by every test (and by other runs);
    # a None entry in sys.modules makes `import statsforecast` raise ImportError, as a missing package does.
    monkeypatch.setitem(sys.modules, "statsforecast", None)
    result = T.train_model(wave(hours=24 * 21), WAVE, None, SETTINGS)
    fams = result.meta["families"]
    assert fams["unavailable"] == [{"family": "stats", "model": "mstl",
                                    "reason": "the extra is not installed: pip install freshet[stats]"}]
    assert [c["family"] for c in fams["candidates"]] == ["xgboost"] and result.meta["family"] == "xgboost"
    assert result.meta["recipe"] is None and result.scores["model"]["rows"] == 96
    assert "not run: stats (the extra is not installed: pip install freshet[stats])" in families_text(result.meta)


def test_a_statistical_champion_is_served_every_series_every_period_and_short_series_take_the_ladder() -> None:
    df = pl.concat([wave(), wave(hours=36, sites=("new",))]).sort("site", "ts")
    df = df.with_columns(pl.when(pl.col("site") == "new").then(pl.col("ts") + timedelta(hours=24 * 28 - 36))
                         .otherwise("ts").alias("ts"))
    result = T.train_model(df.filter(pl.col("site") == "a"), WAVE, None, WEAK_XGB)
    assert result.meta["family"] == "stats"
    out, skipped = FC.forecast_frame(df, WAVE, result.booster, result.meta)
    assert out.height == 2 * 24 and skipped.height == 0
    a, new = out.filter(pl.col("site") == "a"), out.filter(pl.col("site") == "new")
    assert set(a["method"]) == {"model"} and set(a["method_detail"]) == {"stats: mstl (seasons 24, 168)"}
    expected = FAM.stats_forecast(df.lazy(), WAVE, df["ts"].max(), "mstl").filter(pl.col("site") == "a")
    np.testing.assert_allclose(a["forecast"].to_numpy(), expected.sort("ts")["forecast"].to_numpy())
    assert (a["p10"] < a["forecast"]).all() and (a["forecast"] < a["p90"]).all()
    assert set(new["method"]) == {"seasonal_naive"}  # 36 hours: less than two days, the family cannot fit it
    # as a champion, the recipe is refit per window: scored on every backtest row (it saw none of them)
    again = T.train_model(df.filter(pl.col("site") == "a"), WAVE, (result.booster, result.meta), WEAK_XGB)
    stats = next(c for c in again.meta["families"]["candidates"] if c["family"] == "stats")
    assert again.scores["champion"]["rows"] == again.scores["model"]["rows"] == 96
    assert again.scores["champion"]["wape"] == pytest.approx(stats["wape"]) and again.champion_note is None


def test_a_statistical_champions_range_pools_its_own_forecasts_of_the_validation_span() -> None:
    # four backtest days alone are 96 correlated residuals: the validation span's 96 hours join, each forecast by
    # MSTL refit at its day's origin (not by the weak booster, whose errors are tens of percent)
    result = T.train_model(wave(), WAVE, None, WEAK_XGB)
    assert result.meta["family"] == "stats"
    table = result.meta["intervals"]["table"]
    assert table["rows"] == 96 + 96
    unit = float(I.row_scale(np.array([100.0]), np.array([100.0]))[0])  # the table's unit at a load of 100
    p10, p90 = unit * np.interp([0.1, 0.9], I.GRID, table["pooled"])
    assert -10 < p10 < 0 < p90 < 10  # noise of 3 on a load near 100: a few percent either way


@pytest.mark.parametrize(("model", "promote", "named"), [
    (0.5, False, "naive (last value) baseline 0.4000"),   # beats seasonal naive (0.8) but not naive
    (0.3, True, "naive (last value) baseline 0.4000"),
])
def test_the_gate_needs_the_better_of_seasonal_naive_and_naive(model, promote, named) -> None:
    ok, reason = T.decide({"model": {"wape": model}, "champion": None, "baseline": {"wape": 0.8},
                           "naive": {"wape": 0.4}}, 0.0)
    assert ok is promote and named in reason


def test_on_a_random_walk_naive_beats_seasonal_naive_and_is_the_bar() -> None:
    rng = np.random.default_rng(4)
    hours = 24 * 21
    df = pl.DataFrame({"ts": [datetime(2024, 1, 1) + timedelta(hours=i) for i in range(hours)], "site": "a",
                       "load": 500 + np.cumsum(rng.normal(0, 10, hours))})
    result = T.train_model(df, WAVE, None, XGB_ONLY)
    s = result.scores
    assert s["naive"]["wape"] < s["baseline"]["wape"] and s["naive"]["rows"] == s["model"]["rows"]
    assert result.promote is (s["model"]["wape"] < s["naive"]["wape"])
    assert "naive (last value) baseline" in result.reason
    assert all(w["naive"]["rows"] == w["model"]["rows"] for w in result.windows)
