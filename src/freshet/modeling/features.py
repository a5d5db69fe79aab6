"""Feature building as pure polars functions of frames (no I/O, no logging).

Every target-derived feature of a row at time ``t`` is computed from target
values at the row's forecast origin or earlier (``freshet.modeling.origins``: the
origin is at most ``horizon`` periods before ``t``), by joining on time (not by
shifting rows), so missing periods never slide a value into the wrong place and no
target value after the origin can leak into a row. ``tests/modeling/test_features.py``
and ``tests/modeling/test_origins.py`` prove it.

What a model uses is a :class:`FeatureSpec`: the lags from ``t`` (all at least the
horizon), the lags and rolling windows from the origin, calendar features, exogenous
columns (known in advance at ``t``, observed-only at the origin and at a seasonal lag),
the categories seen in training and the target transform. It is stored in meta.json,
so prediction rebuilds exactly the training features; a spec stored before origins
existed (no ``direct`` field) reads every row from ``t - horizon``, as it was trained.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from typing import Any

import polars as pl

from freshet.data.contracts import Contract
from freshet.modeling import origins as O

# Training features are built this many rows of series at a time (bounds the joins' memory).
ROWS_PER_FEATURE_SLICE = 5_000_000
# Yearly-position features (month, week and day of year) only when training spans this long:
# on less, every holdout row sits at a position the model never saw.
YEARLY_FEATURES_MIN_SPAN = timedelta(days=730)
TRANSFORMS = ("none", "seasonal_difference", "level_scale")
REF = "__ref"          # the transform's reference value (from data at t - horizon or earlier)
TARGET = "__target"    # the target after the transform: what the booster learns


class NonFiniteFeatureError(ValueError):
    """A feature would hold +-inf (XGBoost cannot train on it); the message names the column."""


# --- periods, lags, windows ---------------------------------------------------------------

def week_periods(contract: Contract) -> int | None:
    """Periods in one week for sub-daily data (e.g. 168 for hourly), else None."""
    week = timedelta(weeks=1)
    p = contract.period
    return week // p if contract.sub_daily and week % p == timedelta(0) else None


def lags_for(contract: Contract) -> list[int]:
    """Target lags, all at or beyond the horizon: h, h+1, whole seasons after that, and a week for sub-daily data."""
    h, s = contract.horizon, contract.season_length
    lags = {h, h + 1}
    lags |= {m * s for m in range(1, 5) if m * s >= h}
    lags.add(seasonal_lag(contract))
    w = week_periods(contract)
    if w is not None and w >= h:
        lags.add(w)
    return sorted(lags)


def seasonal_lag(contract: Contract) -> int:
    """The seasonal-naive lag: the nearest whole number of seasons at or beyond the horizon."""
    return contract.season_length * math.ceil(contract.horizon / contract.season_length)


def rolling_windows(contract: Contract) -> list[int]:
    return [contract.season_length, 4 * contract.season_length]


def _delta(contract: Contract, k: int) -> timedelta:
    return contract.period * k


def _window(contract: Contract, k: int) -> str:
    span = _delta(contract, k)
    if span % timedelta(days=1) == timedelta(0):
        return f"{span // timedelta(days=1)}d"
    return f"{int(span.total_seconds())}s"


# --- the spec ----------------------------------------------------------------------------

@dataclass(frozen=True)
class FeatureSpec:
    """Everything that decides a model's input columns; stored in meta.json as ``feature_spec``."""

    lags: tuple[int, ...]
    windows: tuple[int, ...]
    calendar: tuple[str, ...]
    known: tuple[str, ...]
    observed: tuple[str, ...]
    observed_lags: tuple[int, ...]
    categories: dict[str, list[str]] = field(default_factory=dict)  # category columns -> training categories
    transform: str = "none"
    # origin-relative features (issue 21); the defaults are what a spec stored before them means
    direct: bool = False                           # rows read data up to their own origin (``step`` is a feature)
    origin_lags: tuple[int, ...] = ()              # target at origin - j
    observed_origin_lags: tuple[int, ...] = ()     # observed-only columns at origin - j
    origin_season: bool = False                    # target whole seasons back from t, at or before the origin

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> FeatureSpec:
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in raw.items()})

    def with_transform(self, transform: str) -> FeatureSpec:
        return FeatureSpec(**{**self.__dict__, "transform": transform})


def calendar_for(contract: Contract, span: timedelta | None) -> tuple[str, ...]:
    """Calendar features that fit the frequency and the history: yearly positions only on two years or more."""
    cal: list[str] = []
    if contract.sub_daily:
        cal += ["cal_tod"]
        if week_periods(contract) is not None:
            cal += ["cal_how"]
    if contract.period < timedelta(weeks=1):
        cal += ["cal_dow"]
    if contract.period <= timedelta(days=1):
        cal += ["cal_dom"]
    if span is not None and span >= YEARLY_FEATURES_MIN_SPAN:
        cal += ["cal_month", "cal_week", "cal_doy"]
    return tuple(cal)


def category_columns(contract: Contract) -> list[str]:
    """Columns fed to XGBoost as native categories: String exogenous columns and String series keys."""
    cols = [*contract.series_keys, *contract.exogenous, *contract.observed]
    return [c for c in cols if contract.columns[c] == pl.String()]


def default_spec(contract: Contract, span: timedelta | None = None, categories: dict[str, list[str]] | None = None,
                 transform: str = "none") -> FeatureSpec:
    """The spec a contract gets for a history covering ``span`` (None: unknown, no yearly features)."""
    k = seasonal_lag(contract)
    return FeatureSpec(
        lags=tuple(lags_for(contract)),
        windows=tuple(rolling_windows(contract)),
        calendar=calendar_for(contract, span),
        known=tuple(contract.exogenous),
        observed=tuple(contract.observed),
        observed_lags=(k,),
        categories=dict(categories if categories is not None else {c: [] for c in category_columns(contract)}),
        transform=transform,
        direct=True,
        origin_lags=O.ORIGIN_LAGS,
        observed_origin_lags=(0,),
        origin_season=contract.horizon > contract.season_length,
    )


def fit_categories(lf: pl.LazyFrame, contract: Contract) -> dict[str, list[str]]:
    """The categories of every category column in ``lf`` (sorted; nulls are not a category)."""
    cols = category_columns(contract)
    if not cols:
        return {}
    got = lf.select(pl.col(c).drop_nulls().unique().sort().implode() for c in cols).collect()
    return {c: [str(v) for v in got[c][0]] for c in cols}


def feature_types(spec: FeatureSpec, contract: Contract) -> list[str]:
    """XGBoost feature types of ``feature_columns``: ``c`` for categories, ``q`` for numbers."""
    return ["c" if c.removeprefix(KEY) in spec.categories and (c.startswith(KEY) or c not in contract.series_keys)
            else "q" for c in feature_columns(contract, spec)]


KEY = "key_"  # series keys as features: integer keys as numbers, String keys as categories


def key_features(contract: Contract, spec: FeatureSpec) -> list[str]:
    return [c for c in contract.series_keys if contract.columns[c].is_integer() or c in spec.categories]


def feature_columns(contract: Contract, spec: FeatureSpec | None = None) -> list[str]:
    """The model's inputs, in a fixed order."""
    spec = spec or default_spec(contract)
    cols = [f"lag_{lag}" for lag in spec.lags] + O.origin_columns(contract, spec)
    for w in spec.windows:
        cols += [f"roll_mean_{w}", f"roll_std_{w}", f"roll_max_{w}"]
    if spec.transform != "none":
        cols.append(REF)
    for c in spec.known:
        cols.append(c)
    for c in spec.observed:
        cols += [f"{c}_lag_{k}" for k in spec.observed_lags]
    cols += [f"{KEY}{c}" for c in key_features(contract, spec)]
    cols += list(spec.calendar)
    return cols


# --- building blocks ---------------------------------------------------------------------

def _from_past(lf: pl.LazyFrame, contract: Contract, values: dict[str, pl.Expr], k: int) -> pl.LazyFrame:
    """Values computed at time ``t`` re-keyed to time ``t + k`` periods, ready to join."""
    keys = list(contract.series_keys)
    t = contract.time_column
    return lf.select(*keys, (pl.col(t) + pl.lit(_delta(contract, k))).alias(t), **values)


def add_lag_features(lf: pl.LazyFrame, contract: Contract, spec: FeatureSpec | None = None,
                     source: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """``lag_k`` = target at ``t - k`` (read from ``source``, default ``lf``) for each lag of the spec (null when missing)."""
    spec = spec or default_spec(contract)
    on = [*contract.series_keys, contract.time_column]
    src = lf if source is None else source
    out = lf
    for k in spec.lags:
        # join from the input, not from ``out``: a lazy self-join of a growing plan
        # re-evaluates it, and the cost doubles with every lag
        out = out.join(_from_past(src, contract, {f"lag_{k}": pl.col(contract.target).cast(pl.Float64)}, k),
                       on=on, how="left")
    return out


def add_rolling_features(lf: pl.LazyFrame, contract: Contract, source: pl.LazyFrame | None = None,
                         spec: FeatureSpec | None = None) -> pl.LazyFrame:
    """Rolling mean/std/max of the target over windows ending at the row's origin (computed on ``source``, default ``lf``)."""
    spec = spec or default_spec(contract)
    keys = list(contract.series_keys)
    t, y = contract.time_column, contract.target
    added = [] if O.ORIGIN in lf.collect_schema().names() else [O.ORIGIN, O.STEP]
    lf = O.with_origin(lf, contract, spec) if added else lf
    ordered = (lf if source is None else source).select(*keys, t, pl.col(y).cast(pl.Float64)).sort([*keys, t])
    stats: dict[str, pl.Expr] = {}
    for w in spec.windows:
        window = _window(contract, w)
        stats[f"roll_mean_{w}"] = pl.col(y).rolling_mean_by(t, window_size=window).over(keys)
        stats[f"roll_std_{w}"] = pl.col(y).rolling_std_by(t, window_size=window).over(keys)
        stats[f"roll_max_{w}"] = pl.col(y).rolling_max_by(t, window_size=window).over(keys)
    if not stats:
        return lf
    return lf.join(O.at_origin(ordered, contract, stats, 0), on=[*keys, O.ORIGIN], how="left").drop(added)


def _encode(col: str, contract: Contract, spec: FeatureSpec) -> pl.Expr:
    """A column as model input: numbers and Booleans as Float64, categories as training codes (unseen: null)."""
    if col in spec.categories:
        cats = spec.categories[col]
        return pl.col(col).cast(pl.String).replace_strict(cats, list(range(len(cats))), default=None,
                                                          return_dtype=pl.Float64)
    return pl.col(col).cast(pl.Float64)


def add_exogenous_features(lf: pl.LazyFrame, contract: Contract, source: pl.LazyFrame | None = None,
                           spec: FeatureSpec | None = None) -> pl.LazyFrame:
    """Known columns at ``t`` (encoded in place); observed-only columns at lags of at least the horizon from ``t``."""
    spec = spec or default_spec(contract)
    src = lf if source is None else source
    on = [*contract.series_keys, contract.time_column]
    for k in spec.observed_lags:
        past = {f"{c}_lag_{k}": _encode(c, contract, spec) for c in spec.observed}
        if past:
            lf = lf.join(_from_past(src, contract, past, k), on=on, how="left")
    return lf.with_columns(_encode(c, contract, spec).alias(c) for c in spec.known)


def add_calendar_features(lf: pl.LazyFrame, contract: Contract, spec: FeatureSpec | None = None) -> pl.LazyFrame:
    """The spec's calendar features: period of day and of week (sub-daily), weekday, day of month, yearly positions."""
    spec = spec or default_spec(contract)
    t = pl.col(contract.time_column)
    p = contract.period
    minutes = (t.dt.hour().cast(pl.Int64) * 60 + t.dt.minute().cast(pl.Int64))
    per_period = max(1, int(p.total_seconds() // 60))
    exprs = {
        "cal_tod": minutes // per_period,
        "cal_how": (t.dt.weekday().cast(pl.Int64) - 1) * (timedelta(days=1) // p if contract.sub_daily else 1)
        + minutes // per_period,
        "cal_dow": t.dt.weekday(),
        "cal_dom": t.dt.day(),
        "cal_month": t.dt.month(),
        "cal_week": t.dt.week(),
        "cal_doy": t.dt.ordinal_day(),
    }
    return lf.with_columns(exprs[c].cast(pl.Float64).alias(c) for c in spec.calendar)


def add_transform(lf: pl.LazyFrame, contract: Contract, spec: FeatureSpec) -> pl.LazyFrame:
    """The target transform: ``REF`` (from data at the origin or earlier), ``TARGET``, and target features made relative.

    - ``none``: the booster learns the target.
    - ``seasonal_difference``: it learns ``y - y[t - seasonal lag]``; lags and rolling means/maxima are
      differences from that reference too.
    - ``level_scale``: it learns ``y / level``, the level being the mean of the newest season ending at
      the origin (1 where that mean is not positive, so no division by zero); target features are scaled alike.
    """
    y = pl.col(contract.target).cast(pl.Float64)
    if spec.transform == "none":
        return lf.with_columns(y.alias(TARGET))
    target_cols = [f"lag_{k}" for k in spec.lags] + O.origin_target_columns(spec)
    target_cols += [f"roll_{s}_{w}" for w in spec.windows for s in ("mean", "max")]
    stds = [f"roll_std_{w}" for w in spec.windows]
    if spec.transform == "seasonal_difference":
        ref = pl.col(f"lag_{_seasonal_from_spec(contract, spec)}")
        lf = lf.with_columns(ref.alias(REF))
        return lf.with_columns((y - pl.col(REF)).alias(TARGET), *((pl.col(c) - pl.col(REF)).alias(c) for c in target_cols))
    if spec.transform == "level_scale":
        level = pl.col(f"roll_mean_{spec.windows[0]}")
        lf = lf.with_columns(pl.when(level > 0).then(level).when(level.is_not_null()).then(1.0).alias(REF))
        return lf.with_columns((y / pl.col(REF)).alias(TARGET),
                               *((pl.col(c) / pl.col(REF)).alias(c) for c in target_cols + stds))
    raise ValueError(f"unknown target transform {spec.transform!r}; use one of {list(TRANSFORMS)}")


def _seasonal_from_spec(contract: Contract, spec: FeatureSpec) -> int:
    k = seasonal_lag(contract)
    if k not in spec.lags:
        raise ValueError(f"the seasonal lag {k} is not among the spec's lags {spec.lags}")
    return k


def invert_transform(pred: pl.Expr, transform: str) -> pl.Expr:
    """The booster's output back in target units, given the ``REF`` column."""
    if transform == "none":
        return pred
    if transform == "seasonal_difference":
        return pred + pl.col(REF)
    if transform == "level_scale":
        return pred * pl.col(REF)
    raise ValueError(f"unknown target transform {transform!r}")


def build_features(lf: pl.LazyFrame, contract: Contract, spec: FeatureSpec | None = None,
                   rows: pl.LazyFrame | None = None) -> pl.LazyFrame:
    """All features (plus ``REF``/``TARGET``, ``ORIGIN`` and the seasonal-naive value) of ``rows`` (default: ``lf``),
    every target value read from ``lf``; one row per row of ``rows``, sorted by series, time and origin.

    A row's origin is its ``ORIGIN`` column (``freshet.modeling.origins``), else ``t - horizon``.
    """
    spec = spec or default_spec(contract)
    k = seasonal_lag(contract)
    lag_spec = spec if k in spec.lags else FeatureSpec(**{**spec.__dict__, "lags": tuple(sorted({*spec.lags, k}))})
    # every block reads the input frame, never the previous block's output (see add_lag_features)
    out = O.with_origin(lf if rows is None else rows, contract, spec)
    if contract.target not in out.collect_schema().names():  # rows to forecast: no target (its feature is null)
        out = out.with_columns(pl.lit(None, dtype=pl.Float64).alias(contract.target))
    out = add_lag_features(out, contract, lag_spec, source=lf)
    out = add_rolling_features(out, contract, source=lf, spec=spec)
    out = O.add_origin_features(out, lf, contract, spec, _encode)
    out = add_exogenous_features(out, contract, source=lf, spec=spec)
    out = add_calendar_features(out, contract, spec)
    out = out.with_columns(pl.col(f"lag_{k}").alias(BASELINE),
                           *(_encode(c, contract, spec).alias(f"{KEY}{c}") for c in key_features(contract, spec)))
    out = add_transform(out, contract, lag_spec)
    return out.with_columns(pl.col(O.STEP).cast(pl.Float64)).sort([*contract.series_keys, contract.time_column, O.ORIGIN])


BASELINE = "__seasonal_naive"


def seasonal_naive_forecast(features: pl.LazyFrame | None, contract: Contract) -> pl.Expr:
    """The baseline: the target one whole season (or more) back, at or beyond the horizon."""
    return pl.col(f"lag_{seasonal_lag(contract)}")


def check_finite(frame: pl.DataFrame, columns: list[str]) -> None:
    """Raise :class:`NonFiniteFeatureError` naming the first column holding +-inf (NaN/null are missing values)."""
    floats = [c for c in columns if frame.schema[c].is_float()]
    if not floats or frame.height == 0:
        return
    bad = frame.select(pl.col(floats).is_infinite().any())
    for c in floats:
        if bad[c][0]:
            raise NonFiniteFeatureError(f"feature {c!r} holds an infinite value; check the input column it comes from "
                                        "(a value too large for float32 or an inf in the data)")


# --- splits ------------------------------------------------------------------------------

def evaluation_periods(contract: Contract, settings: Any | None = None) -> tuple[int, int]:
    """(holdout, validation) periods: the environment overrides, else the contract, else per-frequency defaults."""
    hold = getattr(settings, "holdout_periods", None) or contract.holdout_periods or contract.default_holdout()
    valid = getattr(settings, "validation_periods", None) or contract.validation_periods or contract.default_validation()
    return hold, valid


def time_split(lf: pl.LazyFrame, contract: Contract, max_time, holdout: int | None = None,
               validation: int | None = None) -> tuple[pl.LazyFrame, pl.LazyFrame, pl.LazyFrame]:
    """Time-ordered train / validation / holdout by the newest ``max_time`` (None: the contract's sizes)."""
    dh, dv = evaluation_periods(contract)
    holdout, validation = holdout or dh, validation or dv
    t = pl.col(contract.time_column)
    holdout_start = max_time - _delta(contract, holdout - 1)
    valid_start = holdout_start - _delta(contract, validation)
    return (
        lf.filter(t < valid_start),
        lf.filter((t >= valid_start) & (t < holdout_start)),
        lf.filter(t >= holdout_start),
    )


def training_frames(lf: pl.LazyFrame, contract: Contract, max_time, holdout: int | None = None,
                    validation: int | None = None, partitions: int = 1, spec: FeatureSpec | None = None,
                    steps_per_row: int = 1, spread_every: int = 0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Train / validation / holdout frames of features (float32 numbers), ``ORIGIN``, ``REF``, ``TARGET`` and the baseline.

    Each row is forecast from the origin just before its window of ``horizon`` periods; training rows
    (before validation) are stacked ``steps_per_row`` times (``origins.training_origins``); with ``spread_every``,
    every such window of the training span joins validation too (``origins.spread_windows``).
    Features only look within a series, so the series are hashed into ``partitions``
    slices built one at a time: peak memory is one slice's joins plus the float32 output.
    Raises :class:`NonFiniteFeatureError` if a feature would hold +-inf.
    """
    spec = spec or default_spec(contract)
    cols = feature_columns(contract, spec)
    extra = [O.ORIGIN, TARGET, BASELINE]
    keep = list(dict.fromkeys([*contract.series_keys, contract.time_column, contract.target, *cols, *extra]))
    dh, dv = evaluation_periods(contract)
    valid_start = max_time - _delta(contract, (holdout or dh) + (validation or dv) - 1)
    parts = []
    for i in range(partitions):
        part = lf if partitions == 1 else lf.filter(pl.struct(contract.series_keys).hash(seed=0) % partitions == i)
        rows = O.training_origins(part, contract, max_time, valid_start, steps_per_row if spec.direct else 1)
        feats = build_features(part, contract, spec, rows=rows).select(keep).with_columns(pl.col(cols).cast(pl.Float32))
        train, valid, hold = time_split(feats, contract, max_time, holdout, validation)
        if spread_every:
            held = O.spread_windows(contract, max_time, spread_every)
            train, valid = train.filter(~held), pl.concat([train.filter(held), valid])
        got = pl.collect_all([train, valid, hold])
        for frame in got:
            check_finite(frame, cols)
        parts.append(got)
    train, valid, hold = (pl.concat([p[j] for p in parts], rechunk=False) for j in range(3))
    return train, valid, hold
