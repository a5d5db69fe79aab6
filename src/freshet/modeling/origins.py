"""Forecast origins: which target values a row's features may read (pure polars, no I/O).

A row at time ``t`` forecast from origin ``o`` (step ``k = (t - o) / period``, 1..horizon)
reads target values at ``o`` or earlier only: the lags counted from the origin
(``olag_j`` = target at ``o - j``), the rolling windows ending at ``o``, observed-only
columns at ``o`` (``{col}_olag_j``) and, when the horizon is longer than a season,
``olag_season`` (the target a whole number of seasons back from ``t``, at or before ``o``).
Lags counted from ``t`` (``lag_k``, every ``k`` at least the horizon), known-in-advance
columns and the calendar at ``t`` are safe for every step and stay. ``step`` is a feature,
so one model serves every step (direct multi-step).

Origins come from the caller as the ``__origin`` column: ``forecast_frame`` puts the
watermark; training gives each row the origin just before its window of ``horizon``
periods (windows counted back from the newest row, as the backtest scores them), so
validation and backtest rows are forecast exactly as served. A row without an origin
is forecast from ``t - horizon`` (the farthest step), which is also how a model
trained before origins existed (``FeatureSpec.direct`` false) reads every row.

Training rows of the span before validation can be stacked ``steps_per_row`` times
with origins spread evenly over the steps (``training_origins``); 1 keeps one row
per target value (each step equally often over a window) and is the default: on the
development windows of ``benchmarks/origins.py`` (BENCHMARKS.md, issue 21; full refit
for both) stacking 2 origins per row scored WAPE 0.3042 / 0.0119 / 0.2303 on Bikeshare /
taylor / retail against 0.3294 / 0.0113 / 0.2279 for one, better on one set, worse on
two, at twice the rows to fit; every origin per row (continued refit) 0.0324 / 0.2290 on
taylor / retail against 0.0123 / 0.2331. Per-step models were not measured (``horizon`` fits).
``ORIGIN_LAGS``: the target at the origin alone (0,) scored 0.3359 / 0.0123 / 0.2318
against 0.3241 / 0.0123 / 0.2331 for (0, 1, 2, 3). ``VALIDATION_EVERY`` = 8 (every
eighth window of the training span also validates, for early stopping over every
season) scored 0.3120 / 0.0222 / 0.2413: off.
"""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

import polars as pl

from freshet.data.contracts import Contract

if TYPE_CHECKING:
    from freshet.modeling.features import FeatureSpec

ORIGIN = "__origin"  # the forecast origin of a row: its features read no target value after it
STEP = "step"        # periods from the origin to the row, 1..horizon
SEASON_LAG = "olag_season"
ORIGIN_LAGS = (0, 1, 2, 3)  # target lags counted from the origin, in a new spec
TRAIN_STEPS_PER_ROW = 1     # origins per training row (see the module docstring)
VALIDATION_EVERY = 0        # every this many windows of the training span also validate (0: none; see spread_windows)


def _period_us(contract: Contract) -> int:
    return contract.period // timedelta(microseconds=1)


def with_origin(rows: pl.LazyFrame, contract: Contract, spec: FeatureSpec) -> pl.LazyFrame:
    """``rows`` with ``ORIGIN`` (``t - horizon`` where absent or null, always for a spec that is not direct) and ``STEP``."""
    t = pl.col(contract.time_column)
    farthest = t - pl.lit(contract.period * contract.horizon)
    has = ORIGIN in rows.collect_schema().names()
    origin = pl.coalesce(pl.col(ORIGIN).cast(rows.collect_schema()[contract.time_column]), farthest) \
        if has and spec.direct else farthest
    rows = rows.with_columns(origin.alias(ORIGIN))
    step = (t - pl.col(ORIGIN)).dt.total_microseconds() // _period_us(contract)
    return rows.with_columns(step.cast(pl.Int64).alias(STEP))


def at_origin(source: pl.LazyFrame, contract: Contract, values: dict[str, pl.Expr], j: int) -> pl.LazyFrame:
    """Values computed at time ``τ`` of ``source``, keyed as ``ORIGIN = τ + j`` periods (join on keys and ``ORIGIN``)."""
    keys = list(contract.series_keys)
    t = pl.col(contract.time_column)
    return source.select(*keys, (t + pl.lit(contract.period * j)).alias(ORIGIN), **values)


def add_origin_features(rows: pl.LazyFrame, source: pl.LazyFrame, contract: Contract, spec: FeatureSpec,
                        encode) -> pl.LazyFrame:
    """The origin lags of the target and of observed-only columns, and ``olag_season`` (rows need ``ORIGIN``/``STEP``)."""
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    on = [*keys, ORIGIN]
    for j in spec.origin_lags:
        rows = rows.join(at_origin(source, contract, {f"olag_{j}": pl.col(y).cast(pl.Float64)}, j), on=on, how="left")
    for j in spec.observed_origin_lags:
        past = {f"{c}_olag_{j}": encode(c, contract, spec) for c in spec.observed}
        if past:
            rows = rows.join(at_origin(source, contract, past, j), on=on, how="left")
    if spec.origin_season:
        s = contract.season_length
        back = (pl.col(STEP) + (s - 1)) // s * s  # whole seasons back from t, at least the step
        seasonal = rows.with_columns((pl.col(t) - pl.duration(microseconds=back * _period_us(contract))).alias("__sref"))
        ref = source.select(*keys, pl.col(t).alias("__sref"), pl.col(y).cast(pl.Float64).alias(SEASON_LAG))
        rows = seasonal.join(ref, on=[*keys, "__sref"], how="left").drop("__sref")
    return rows


def origin_columns(contract: Contract, spec: FeatureSpec) -> list[str]:
    """The model inputs origins add, in order (none for a spec that is not direct)."""
    if not spec.direct:
        return []
    cols = [STEP, *(f"olag_{j}" for j in spec.origin_lags)]
    if spec.origin_season:
        cols.append(SEASON_LAG)
    return cols + [f"{c}_olag_{j}" for c in spec.observed for j in spec.observed_origin_lags]


def origin_target_columns(spec: FeatureSpec) -> list[str]:
    """Origin features in target units (a target transform rescales them with the lags)."""
    if not spec.direct:
        return []
    return [f"olag_{j}" for j in spec.origin_lags] + ([SEASON_LAG] if spec.origin_season else [])


def training_origins(lf: pl.LazyFrame, contract: Contract, max_time, stack_before=None,
                     steps_per_row: int = 1) -> pl.LazyFrame:
    """Each row with the origin just before its window of ``horizon`` periods (windows counted back from
    ``max_time``); rows before ``stack_before`` repeated ``steps_per_row`` times, origins spread over the steps."""
    h, t = contract.horizon, pl.col(contract.time_column)
    age = (pl.lit(max_time) - t).dt.total_microseconds() // _period_us(contract)
    aligned = h - age % h  # the step within the window: h for the newest row
    out = [lf.with_columns((t - pl.duration(microseconds=aligned * _period_us(contract))).alias(ORIGIN))]
    m = max(1, min(steps_per_row, h))
    for i in range(1, m if stack_before is not None else 1):
        step = (aligned - 1 + (i * h) // m) % h + 1
        out.append(lf.filter(t < pl.lit(stack_before)).with_columns(
            (t - pl.duration(microseconds=step * _period_us(contract))).alias(ORIGIN)))
    return pl.concat(out) if len(out) > 1 else out[0]


def spread_windows(contract: Contract, max_time, every: int) -> pl.Expr:
    """True for rows of every ``every``-th window of ``horizon`` periods counted back from ``max_time``: validation
    spread over the whole history, so early stopping sees every season, not only the span before the backtest."""
    age = (pl.lit(max_time) - pl.col(contract.time_column)).dt.total_microseconds() // _period_us(contract)
    return (age // contract.horizon) % every == every - 1
