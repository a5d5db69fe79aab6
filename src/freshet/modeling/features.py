"""Feature building as pure polars functions of frames (no I/O, no logging).

Every target-derived feature of a row at time ``t`` is computed from target
values at ``t - horizon`` or earlier, by joining on time (not by shifting rows),
so missing days never slide a value into the wrong place and no future target
value can leak into a row. ``tests/modeling/test_features.py`` proves it.
"""

from __future__ import annotations

import math
from datetime import timedelta

import polars as pl

from freshet.data.contracts import Contract

# Training features are built this many rows of series at a time (bounds the joins' memory).
ROWS_PER_FEATURE_SLICE = 5_000_000


def lags_for(contract: Contract) -> list[int]:
    """Target lags, all at or beyond the horizon: h, h+1 and whole seasons after that."""
    h, s = contract.horizon, contract.season_length
    lags = {h, h + 1}
    lags |= {m * s for m in range(1, 5) if m * s >= h}
    return sorted(lags)


def seasonal_lag(contract: Contract) -> int:
    """The seasonal-naive lag: the nearest whole number of seasons at or beyond the horizon."""
    return contract.season_length * math.ceil(contract.horizon / contract.season_length)


def rolling_windows(contract: Contract) -> list[int]:
    return [contract.season_length, 4 * contract.season_length]


def _period_expr(contract: Contract, k: int) -> pl.Expr:
    return pl.lit(timedelta(days=k) if contract.frequency == "daily" else timedelta(hours=k))


def _from_past(lf: pl.LazyFrame, contract: Contract, values: dict[str, pl.Expr], k: int) -> pl.LazyFrame:
    """Values computed at time ``t`` re-keyed to time ``t + k`` periods, ready to join."""
    keys = list(contract.series_keys)
    t = contract.time_column
    return lf.select(*keys, (pl.col(t) + _period_expr(contract, k)).alias(t), **values)


def add_lag_features(lf: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """``lag_k`` = target at ``t - k`` for each lag in ``lags_for`` (null when that day is missing)."""
    on = [*contract.series_keys, contract.time_column]
    out = lf
    for k in lags_for(contract):
        # join from the input, not from ``out``: a lazy self-join of a growing plan
        # re-evaluates it, and the cost doubles with every lag
        out = out.join(_from_past(lf, contract, {f"lag_{k}": pl.col(contract.target)}, k), on=on, how="left")
    return out


def add_rolling_features(lf: pl.LazyFrame, contract: Contract, source: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Rolling mean/std/max of the target over windows ending at ``t - horizon`` (computed on ``source``, default ``lf``)."""
    keys = list(contract.series_keys)
    t, y, h = contract.time_column, contract.target, contract.horizon
    unit = "d" if contract.frequency == "daily" else "h"
    ordered = (lf if source is None else source).select(*keys, t, y).sort([*keys, t])
    stats: dict[str, pl.Expr] = {}
    for w in rolling_windows(contract):
        window = f"{w}{unit}"
        stats[f"roll_mean_{w}"] = pl.col(y).rolling_mean_by(t, window_size=window).over(keys)
        stats[f"roll_std_{w}"] = pl.col(y).rolling_std_by(t, window_size=window).over(keys)
        stats[f"roll_max_{w}"] = pl.col(y).rolling_max_by(t, window_size=window).over(keys)
    return lf.join(_from_past(ordered, contract, stats, h), on=[*keys, t], how="left")


def add_exogenous_features(lf: pl.LazyFrame, contract: Contract, source: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """Exogenous values now (known at forecast time) and at the seasonal lag, plus their ratio."""
    k = seasonal_lag(contract)
    past = {f"{c}_lag_{k}": pl.col(c).cast(pl.Float64) for c in contract.exogenous}
    lf = lf.join(_from_past(lf if source is None else source, contract, past, k),
                 on=[*contract.series_keys, contract.time_column], how="left")
    return lf.with_columns(
        (pl.col(c).cast(pl.Float64) / pl.col(f"{c}_lag_{k}")).alias(f"{c}_ratio_{k}")
        for c in contract.exogenous
        if contract.columns[c].is_numeric()
    )


def add_calendar_features(lf: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """Day of week, day of month, month, week and day of year (and hour for hourly data)."""
    t = pl.col(contract.time_column)
    exprs = [
        t.dt.weekday().alias("cal_dow"),
        t.dt.day().alias("cal_dom"),
        t.dt.month().alias("cal_month"),
        t.dt.week().alias("cal_week"),
        t.dt.ordinal_day().alias("cal_doy"),
    ]
    if contract.frequency == "hourly":
        exprs.append(t.dt.hour().alias("cal_hour"))
    return lf.with_columns(exprs)


def feature_columns(contract: Contract) -> list[str]:
    """The model's inputs, in a fixed order."""
    k = seasonal_lag(contract)
    cols = [f"lag_{lag}" for lag in lags_for(contract)]
    for w in rolling_windows(contract):
        cols += [f"roll_mean_{w}", f"roll_std_{w}", f"roll_max_{w}"]
    for c in contract.exogenous:
        cols += [c, f"{c}_lag_{k}"]
        if contract.columns[c].is_numeric():
            cols.append(f"{c}_ratio_{k}")
    cols += [c for c in contract.series_keys if contract.columns[c].is_integer()]
    cols += ["cal_dow", "cal_dom", "cal_month", "cal_week", "cal_doy"]
    if contract.frequency == "hourly":
        cols.append("cal_hour")
    return cols


def build_features(lf: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """All features; one row per input row, sorted by series keys and time."""
    # every block reads the input frame, never the previous block's output (see add_lag_features)
    out = add_lag_features(lf, contract)
    out = add_rolling_features(out, contract, source=lf)
    out = add_exogenous_features(out, contract, source=lf)
    out = add_calendar_features(out, contract)
    return out.sort([*contract.series_keys, contract.time_column])


def seasonal_naive_forecast(features: pl.LazyFrame, contract: Contract) -> pl.Expr:
    """The baseline: the target one whole season (or more) back, at or beyond the horizon."""
    return pl.col(f"lag_{seasonal_lag(contract)}")


def time_split(lf: pl.LazyFrame, contract: Contract, max_time, holdout: int, validation: int) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """Time-ordered train / validation / holdout by the newest ``max_time``."""
    t = pl.col(contract.time_column)
    holdout_start = max_time - _delta(contract, holdout - 1)
    valid_start = holdout_start - _delta(contract, validation)
    return (
        lf.filter(t < valid_start),
        lf.filter((t >= valid_start) & (t < holdout_start)),
        lf.filter(t >= holdout_start),
    )


def _delta(contract: Contract, k: int) -> timedelta:
    return timedelta(days=k) if contract.frequency == "daily" else timedelta(hours=k)


def training_frames(lf: pl.LazyFrame, contract: Contract, max_time, holdout: int, validation: int,
                    partitions: int = 1) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Train / validation (feature columns and target) and holdout frames, feature columns as float32.

    Features only look within a series, so the series are hashed into ``partitions``
    slices built one at a time: peak memory is one slice's joins plus the float32 output.
    """
    cols = feature_columns(contract)
    keep = [*cols, contract.target]
    parts = []
    for i in range(partitions):
        part = lf if partitions == 1 else lf.filter(pl.struct(contract.series_keys).hash(seed=0) % partitions == i)
        feats = build_features(part, contract).with_columns(pl.col(cols).cast(pl.Float32))
        train, valid, hold = time_split(feats, contract, max_time, holdout, validation)
        parts.append(pl.collect_all([train.select(keep), valid.select(keep), hold]))
    train, valid, hold = (pl.concat([p[j] for p in parts], rechunk=False) for j in range(3))
    return train, valid, hold
