"""Forecasting the next ``horizon`` periods after the newest data (pure: no I/O, no logging).

``forecast_frame`` is the one modeling entry point of the ``forecast`` flow: it
builds the champion's own features for the periods after the watermark (the
newest time in ``history``) and predicts them, or falls back to seasonal naive
when there is no champion. Every target-derived feature looks at least
``horizon`` periods back, so the future rows are featurised from history alone
and no target value after the watermark can reach a forecast.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from freshet.data.contracts import Contract
from freshet.modeling import features as F
from freshet.modeling import model as M

MODEL = "model"
SEASONAL_NAIVE = "seasonal_naive"


def known_in_advance(contract: Contract) -> list[str]:
    """Exogenous columns whose future values a forecast needs (today: every ``exogenous`` column)."""
    return list(contract.exogenous)


def forecast_times(contract: Contract, watermark) -> pl.Series:
    """The ``horizon`` periods after the watermark."""
    dtype = contract.columns[contract.time_column]
    return pl.Series(contract.time_column, [watermark + contract.period * j for j in range(1, contract.horizon + 1)],
                     dtype=dtype)


def lookback_periods(contract: Contract) -> int:
    """History, in periods before the watermark, that the forecast rows' features read (and a margin of one)."""
    h = contract.horizon
    return max(max(F.lags_for(contract)), h + max(F.rolling_windows(contract)), F.seasonal_lag(contract)) + 1


def _grid(history: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """Every series of the history crossed with the forecast periods."""
    keys = list(contract.series_keys)
    series = history.select(keys).unique().sort(keys)
    times = forecast_times(contract, history[contract.time_column].max()).to_frame()
    return series.join(times, how="cross")


def forecast_frame(history: pl.DataFrame, contract: Contract, booster: Any, meta: dict[str, Any] | None,
                   future: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Forecast every series for the ``horizon`` periods after the newest time in ``history``.

    ``booster=None`` gives the seasonal-naive forecast (the target one whole season back).
    With a booster, ``future`` holds the known-in-advance exogenous values for the forecast
    periods (series keys, time column, those columns; a target column is ignored); a series
    lacking any of them is not forecast and is returned in the second frame (series keys),
    never filled in. Returns ``(forecast, missing)``: the first with series keys, time,
    ``forecast`` (Float64) and ``method`` (``model`` | ``seasonal_naive``), sorted.
    """
    keys = list(contract.series_keys)
    t, y = contract.time_column, contract.target
    empty_missing = pl.DataFrame(schema={k: contract.columns[k] for k in keys})
    history = history.select(contract.columns.keys()).sort([*keys, t])
    grid = _grid(history, contract)
    if booster is None:
        k = F.seasonal_lag(contract)
        past = history.select(*keys, (pl.col(t) + contract.period * k).alias(t), pl.col(y).cast(pl.Float64).alias("forecast"))
        out = grid.join(past, on=[*keys, t], how="left").with_columns(pl.lit(SEASONAL_NAIVE).alias("method"))
        return out.sort([*keys, t]), empty_missing

    needed = known_in_advance(contract)
    missing = empty_missing
    rows = grid
    if needed:
        supplied = (future if future is not None else pl.DataFrame(schema={c: contract.columns[c] for c in [*keys, t, *needed]}))
        supplied = supplied.select(*keys, t, *needed).unique(subset=[*keys, t], keep="last")
        rows = grid.join(supplied, on=[*keys, t], how="left")
        incomplete = rows.filter(pl.any_horizontal(pl.col(needed).is_null())).select(keys).unique().sort(keys)
        missing = incomplete
        rows = rows.join(incomplete, on=keys, how="anti")
    if rows.height == 0:
        return pl.DataFrame(schema={**{c: contract.columns[c] for c in [*keys, t]}, "forecast": pl.Float64,
                                    "method": pl.String}), missing
    future_rows = rows.with_columns(pl.lit(None, dtype=contract.columns[y]).alias(y)).select(contract.columns.keys())
    # only the newest periods reach the forecast rows' features: build them on those alone
    recent = history.filter(pl.col(t) > history[t].max() - contract.period * lookback_periods(contract))
    combined = pl.concat([recent.join(rows.select(keys).unique(), on=keys, how="semi"), future_rows])
    feats = F.build_features(combined.lazy(), contract).filter(pl.col(t) > history[t].max()).collect()
    columns = list((meta or {}).get("features") or F.feature_columns(contract))
    out = feats.select(*keys, t).with_columns(
        pl.Series("forecast", M.predict(booster, feats, columns), dtype=pl.Float64),
        pl.lit(MODEL).alias("method"),
    )
    return out.sort([*keys, t]), missing
