"""The accuracy benchmark's methods: freshet through its public path, and the peers in their documented setup.

A method is ``fn(frame, contract, ds, windows, refit) -> (forecasts, info)``: forecasts has keys, time,
``origin`` and one column per model (``forecast`` for a one-model method; ``p10``/``p90`` when it has them): it forecasts every window of ``windows`` from its origin, reading no target after
that origin. ``refit=True`` fits at every origin (the short protocol); ``refit=False`` fits once at the first
origin and only feeds the newer rows to that model at later origins (the long protocol).

- ``freshet``: ``train_model`` then ``forecast_frame``, on the raw rows (no gap filled), as the ``train``
  flow runs them: each refit faces the current champion and is served only if ``train_model`` promotes it;
  otherwise the champion keeps serving, and before any champion the user gets ``forecast_frame``'s ladder,
  and so does the benchmark.
- ``mlforecast``: XGBoost through mlforecast (recursive): lags 1-3 plus freshet's seasonal lags, rolling
  means, date features, the contract's known columns as dynamic features; rounds early-stopped on a
  validation span of max(4 horizons, 2 seasons) before the origin, then refitted on every row.
- statsforecast: ``MSTL`` (the data set's seasons), ``AutoETS`` (first season; none when it is over 24,
  ETS's limit), ``AutoARIMA`` (``approximation=True``; seasonal up to 24, else non-seasonal with Fourier
  terms K=6), ``SeasonalNaive`` (the contract's season) and ``Naive``; hourly histories capped to the
  newest 8 weeks (AutoARIMA takes minutes per fit on a year of hours). No exogenous input besides Fourier terms.
Nixtla's libraries require a complete, regular grid: they get one, a missing period's target interpolated
within its series (as their docs prescribe filling before fitting). Observed columns are not given to them.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from freshet.data.contracts import Contract

FORECAST = "forecast"
BANDS = ("p10", "p90")
STATS_MODELS = ("mstl", "auto_ets", "auto_arima", "seasonal_naive", "naive")
ETS_MAX_SEASON = 24  # statsforecast's AutoETS fits no season longer than 24
ARIMA_MAX_HOURS = 8 * 7 * 24  # AutoARIMA's history cap for hourly data (seconds per fit otherwise)


def _inputs(frame, contract, w):
    from accuracy_data import inputs

    return inputs(frame, contract, w)


# ====================================================================== freshet
def freshet_method(frame: pl.DataFrame, contract: Contract, ds: Any, windows: list, refit: bool):
    """freshet's public path: ``train_model`` (features, candidates, its backtest, the serving refit and the
    promotion decision) and ``forecast_frame`` per origin. The ONE place that calls the library."""
    from freshet.modeling.forecast import forecast_frame
    from freshet.modeling.training import train_model
    from freshet.settings import Settings

    out, champion, fits = [], None, []
    for w in windows:
        history, future, _ = _inputs(frame, contract, w)
        if refit or not fits:
            # as the train flow does: the new model faces the champion, which keeps serving if it is not beaten
            result = train_model(history, contract, champion, Settings())
            fits.append(fit_record(w.origin, result.meta, champion))
            if result.promote:
                champion = (result.booster, result.meta)
        booster, meta = champion or (None, None)
        fc, _skipped = forecast_frame(history, contract, booster, meta, future=future)
        bands = [c for c in BANDS if c in fc.columns]
        out.append(fc.select(*contract.series_keys, contract.time_column, FORECAST, *bands)
                   .with_columns(pl.lit(w.origin).alias("origin")))
    promoted = [f for f in fits if f["promoted"]]
    return pl.concat(out), {"fits": len(fits), "promoted": len(promoted),
                            "families": [f["family"] for f in promoted], "per_fit": fits}


def fit_record(origin: Any, meta: dict[str, Any], champion: tuple | None) -> dict[str, Any]:
    """One training of the freshet method: the family it chose, its backtest WAPE, the champion's and the decision."""
    got = meta["metrics"]
    return {"origin": str(origin), "family": meta["family"], "model": meta["families"]["chosen"]["model"],
            "wape": got["model"]["wape"], "champion_family": champion[1]["family"] if champion else None,
            "champion_wape": (got.get("champion") or {}).get("wape"),
            "on_champion_rows": (got.get("model_on_champion_rows") or {}).get("wape"),
            "promoted": meta["decision"]["promote"], "reason": meta["decision"]["reason"]}


# ====================================================================== Nixtla's frames
def _series_id(contract: Contract) -> pl.Expr:
    return pl.concat_str([pl.col(k).cast(pl.String) for k in contract.series_keys], separator="|").alias("unique_id")


def peer_frame(history: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """``unique_id, ds, y`` plus the known columns on a complete grid per series up to the newest row:
    a missing period's target interpolated within its series, its known values carried."""
    t, y, step = contract.time_column, contract.target, contract.period
    known = list(contract.known)
    hist = history.with_columns(_series_id(contract)).select("unique_id", t, y, *known)
    end = hist[t].max()
    ranges = pl.datetime_ranges if contract.sub_daily else pl.date_ranges
    grid = (hist.group_by("unique_id").agg(pl.col(t).min().alias("first"))
            .select("unique_id", ranges("first", pl.lit(end), interval=step).alias(t)).explode(t))
    full = (grid.join(hist, on=["unique_id", t], how="left").sort("unique_id", t)
            .with_columns(pl.col(y).cast(pl.Float64).interpolate().forward_fill().backward_fill().over("unique_id"),
                          *[pl.col(c).forward_fill().backward_fill().over("unique_id") for c in known]))
    return full.rename({t: "ds", y: "y"})


def _future_frame(future: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    return future.with_columns(_series_id(contract)).select("unique_id", pl.col(contract.time_column).alias("ds"),
                                                            *contract.known)


def _to_pandas(frame: pl.DataFrame, contract: Contract, categories: dict[str, list[str]]):
    import pandas as pd

    pdf = frame.to_pandas()
    for c in contract.known:
        if contract.columns[c] == pl.String:
            pdf[c] = pd.Categorical(pdf[c], categories=categories[c])
        elif contract.columns[c] == pl.Boolean:
            pdf[c] = pdf[c].astype("float32")
    return pdf


def _back(pdf, contract: Contract, columns: dict[str, str]) -> pl.DataFrame:
    """A Nixtla forecast (``unique_id``, ``ds``, model columns) back to the contract's keys and time."""
    t = contract.time_column
    if "unique_id" not in pdf.columns:
        pdf = pdf.reset_index()
    out = pl.from_pandas(pdf[["unique_id", "ds", *columns]]).rename({"ds": t, **columns})
    return out.with_columns(pl.col(t).cast(contract.columns[t]), *[pl.col(c).cast(pl.Float64) for c in columns.values()])


def _keys_of(frame: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    return frame.select(*contract.series_keys, _series_id(contract)).unique()


# ====================================================================== mlforecast
def mlforecast_lags(contract: Contract) -> list[int]:
    """Recursive short lags 1-3 and the seasonal lags freshet uses (1-4 seasons, a week for hourly data)."""
    s = contract.season_length
    lags = {1, 2, 3, *(m * s for m in range(1, 5))}
    if contract.sub_daily:
        lags.add(int(timedelta(days=7) / contract.period))
    return sorted(lags)


def _mlforecast(contract: Contract):
    from mlforecast import MLForecast
    from mlforecast.lag_transforms import RollingMean

    s = contract.season_length
    dates = ["hour", "dayofweek"] if contract.sub_daily else (["dayofweek", "month"] if contract.period.days == 1
                                                               else ["week"])
    import pandas as pd

    freq = pd.tseries.frequencies.to_offset(pd.Timedelta(contract.period))
    return MLForecast(models={}, freq=freq, lags=mlforecast_lags(contract),
                      lag_transforms={1: [RollingMean(window_size=s)], s: [RollingMean(window_size=s)]},
                      date_features=dates)


def _xgb(rounds: int, stop: bool):
    import xgboost as xgb

    return xgb.XGBRegressor(n_estimators=rounds, learning_rate=0.05, max_depth=6, tree_method="hist",
                            enable_categorical=True, random_state=0, n_jobs=2,
                            early_stopping_rounds=50 if stop else None)


def _fit_mlforecast(hist_pd, contract: Contract):
    """mlforecast's features, XGBoost early-stopped on the newest span, then refitted on every row."""
    fcst = _mlforecast(contract)
    prep = fcst.preprocess(hist_pd, static_features=[], dropna=True)
    features = [c for c in prep.columns if c not in ("unique_id", "ds", "y")]
    val = max(4 * contract.horizon, 2 * contract.season_length)
    cut = prep["ds"].max() - val * fcst.ts.freq
    tr, va = prep["ds"] <= cut, prep["ds"] > cut
    probe = _xgb(3000, stop=True).fit(prep.loc[tr, features], prep.loc[tr, "y"],
                                      eval_set=[(prep.loc[va, features], prep.loc[va, "y"])], verbose=False)
    fcst.models = {"xgb": _xgb(probe.best_iteration + 1, stop=False)}
    fcst.fit_models(prep[features], prep["y"])
    return fcst


def _future_grid(origin: Any, future: pl.DataFrame, hist: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """Every series' next ``horizon`` periods with the known columns (a period missing from the landed
    future carries its series' previous value): mlforecast needs a value for each."""
    step, t = contract.period, contract.time_column
    times = pl.DataFrame({"ds": [origin + step * i for i in range(1, contract.horizon + 1)]},
                         schema={"ds": contract.columns[t]})
    ids = hist.select("unique_id").unique()
    last = hist.sort("ds").group_by("unique_id").last().select("unique_id", *contract.known)
    grid = ids.join(times, how="cross").join(_future_frame(future, contract), on=["unique_id", "ds"], how="left")
    return (pl.concat([last.with_columns(pl.lit(origin).cast(contract.columns[t]).alias("ds")), grid],
                      how="diagonal_relaxed").sort("unique_id", "ds")
            .with_columns(pl.col(list(contract.known)).forward_fill().over("unique_id"))
            .filter(pl.col("ds") > origin))


def mlforecast_method(frame: pl.DataFrame, contract: Contract, ds: Any, windows: list, refit: bool):
    out, fcst, categories = [], None, None
    for w in windows:
        history, future, _ = _inputs(frame, contract, w)
        hist = peer_frame(history, contract)
        first = fcst is None
        if refit or first:
            categories = {c: sorted(v for v in hist[c].unique().to_list() if v is not None)
                          for c in contract.known if contract.columns[c] == pl.String}
            fcst = _fit_mlforecast(_to_pandas(hist, contract, categories), contract)
        new = None if refit or first else _to_pandas(hist, contract, categories)
        x_df = (_to_pandas(_future_grid(w.origin, future, hist, contract), contract, categories)
                if contract.known else None)
        pred = fcst.predict(contract.horizon, new_df=new, X_df=x_df)
        out.append(_back(pred, contract, {"xgb": FORECAST}).with_columns(pl.lit(w.origin).alias("origin")))
    return pl.concat(out).join(_keys_of(frame, contract), on="unique_id").drop("unique_id"), {}


# ====================================================================== statsforecast
def _stats_models(contract: Contract, seasons: tuple[int, ...]):
    """MSTL, AutoETS, SeasonalNaive and Naive (one pass, no exogenous input)."""
    from statsforecast.models import MSTL, AutoETS, Naive, SeasonalNaive

    s0 = seasons[0]
    return [MSTL(season_length=list(seasons), alias="mstl"),
            AutoETS(season_length=s0 if s0 <= ETS_MAX_SEASON else 1, alias="auto_ets"),
            SeasonalNaive(season_length=contract.season_length, alias="seasonal_naive"),
            Naive(alias="naive")]


def _arima(s0: int):
    """AutoARIMA: seasonal (``approximation=True``) up to a season of 24; for a longer season (52 weeks) a
    non-seasonal ARIMA with Fourier terms (K=6) as regressors, as fpp3 does for this very weekly series."""
    from statsforecast.models import AutoARIMA

    return AutoARIMA(season_length=s0 if s0 <= ETS_MAX_SEASON else 1, approximation=True, alias="auto_arima")


def _sf_run(sf, hist, h: int, windows: list, refit: bool, x_future=None):
    if refit:
        return sf.forecast(df=hist, h=h, X_df=x_future)
    return sf.cross_validation(df=hist, h=h, n_windows=len(windows), step_size=h, refit=False)


def stats_method(frame: pl.DataFrame, contract: Contract, ds: Any, windows: list, refit: bool):
    """statsforecast's models: ``forecast`` at every origin, or one ``cross_validation(refit=False)`` over all."""
    import pandas as pd
    from statsforecast import StatsForecast
    from utilsforecast.feature_engineering import fourier

    freq = pd.tseries.frequencies.to_offset(pd.Timedelta(contract.period))
    h, s0 = contract.horizon, ds.seasons[0]
    keep = ARIMA_MAX_HOURS if contract.sub_daily else None
    # refit: one fit per origin; fit once: one cross-validation whose data ends at the last window's end
    runs = windows if refit else [type(windows[-1])(windows[-1].end, windows[-1].end)]
    out = []
    for w in runs:
        history, _, _ = _inputs(frame, contract, w)
        first = w.origin if refit else windows[0].origin
        hist = peer_frame(history, contract).select("unique_id", "ds", "y")
        if keep:
            hist = hist.filter(pl.col("ds") > first - contract.period * keep)
        hist_pd = hist.to_pandas()
        got = _sf_run(StatsForecast(models=_stats_models(contract, ds.seasons), freq=freq, n_jobs=1),
                      hist_pd, h, windows, refit)
        if s0 > ETS_MAX_SEASON:
            hist_x, fut_x = fourier(hist_pd, freq=freq, season_length=s0, k=6, h=h)
            arima = _sf_run(StatsForecast(models=[_arima(s0)], freq=freq, n_jobs=1), hist_x, h, windows, refit, fut_x)
        else:
            arima = _sf_run(StatsForecast(models=[_arima(s0)], freq=freq, n_jobs=1), hist_pd, h, windows, refit)
        both = [got, arima]
        frames = [_back(b, contract, {c: c for c in b.columns if c in STATS_MODELS}) for b in both]
        if refit:
            frames = [f.with_columns(pl.lit(w.origin).alias("origin")) for f in frames]
        else:
            frames = [f.join(_cutoffs(b, contract), on=["unique_id", contract.time_column]) for f, b in zip(frames, both)]
        out.append(frames[0].join(frames[1], on=["unique_id", contract.time_column, "origin"], how="left"))
    fc = pl.concat(out).join(_keys_of(frame, contract), on="unique_id").drop("unique_id")
    return fc, {"history_capped_to_periods": keep, "arima": "fourier k=6" if s0 > ETS_MAX_SEASON else f"season {s0}"}


def _cutoffs(cv, contract: Contract) -> pl.DataFrame:
    """The origin of each cross-validation row (its ``cutoff``)."""
    t = contract.time_column
    cv = cv.reset_index() if "unique_id" not in cv.columns else cv
    return pl.from_pandas(cv[["unique_id", "ds", "cutoff"]]).select(
        "unique_id", pl.col("ds").cast(contract.columns[t]).alias(t),
        pl.col("cutoff").cast(contract.columns[t]).alias("origin"))
