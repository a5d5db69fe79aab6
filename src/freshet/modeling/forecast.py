"""Forecasts for the next ``horizon`` periods after a dataset's watermark (pure polars + XGBoost, no I/O).

``forecast_frame`` builds exactly the features the model was trained with (its
``feature_spec`` from meta.json), from history rows at or before the watermark
only, predicts, and inverts the target transform. ``predict_target`` is the one
prediction path, shared with training's backtest, so a served forecast equals the
backtested model's output on the same rows.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from freshet.data.contracts import Contract
from freshet.modeling import features as F
from freshet.modeling import model as M


def spec_of(meta: dict[str, Any] | None, contract: Contract) -> F.FeatureSpec:
    """The model's feature spec from its meta.json (models older than specs: the contract's default)."""
    if meta and meta.get("feature_spec"):
        return F.FeatureSpec.from_json(meta["feature_spec"])
    return F.default_spec(contract)


def model_frame(lf: pl.LazyFrame | pl.DataFrame, contract: Contract, spec: F.FeatureSpec) -> pl.LazyFrame:
    """Features of ``spec`` as float32 (plus ``REF``, ``TARGET`` and the seasonal-naive value), unsorted slices welcome."""
    cols = F.feature_columns(contract, spec)
    extra = [F.TARGET, F.BASELINE]
    keep = list(dict.fromkeys([*contract.series_keys, contract.time_column, contract.target, *cols, *extra]))
    return F.build_features(lf.lazy(), contract, spec).select(keep).with_columns(pl.col(cols).cast(pl.Float32))


def predict_target(booster: xgb.Booster, frame: pl.DataFrame, contract: Contract, spec: F.FeatureSpec,
                   clip: bool = True) -> np.ndarray:
    """The model's forecast in target units for rows of ``model_frame``: booster output with the transform inverted.

    NaN where the transform's reference is missing. Clipped at zero when ``clip`` (targets that are never negative).
    """
    cols = F.feature_columns(contract, spec)
    raw = M.predict(booster, frame, cols, clip=False, feature_types=F.feature_types(spec, contract))
    if spec.transform == "none":
        out = raw.astype(np.float64)
    else:
        ref = frame[F.REF].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        out = raw + ref if spec.transform == "seasonal_difference" else raw * ref
    return np.clip(out, 0, None) if clip else out


def lookback_periods(contract: Contract, spec: F.FeatureSpec) -> int:
    """How many periods before a row its features read (the longest lag, window or observed lag)."""
    h = contract.horizon
    return max([*spec.lags, F.seasonal_lag(contract), *(w + h for w in spec.windows), *spec.observed_lags, h]) + 1


def forecast_frame(history: pl.LazyFrame | pl.DataFrame, contract: Contract, booster: xgb.Booster | None,
                   meta: dict[str, Any] | None, future: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Forecast the next ``contract.horizon`` periods per series after the dataset's watermark.

    Args:
        history: curated rows (contract columns); the watermark is their newest time.
        contract: the dataset's contract.
        booster: the serving model, or None for the seasonal-naive forecast.
        meta: the model's meta.json (``feature_spec``, ``clip_at_zero``); ignored when ``booster`` is None.
        future: rows after the watermark holding the known-in-advance exogenous columns (series keys, time
            column and those columns); needed only when the model uses known exogenous columns.

    Returns:
        ``(forecasts, skipped)``: forecasts has the series keys, the time column, ``forecast`` (Float64) and
        ``method`` (``"model"`` or ``"seasonal_naive"``), sorted by series and time; skipped has the series keys
        and a ``reason`` for every series left out: one lacking a future value of a known exogenous column (never
        filled silently), or one whose forecast cannot be computed (no history at the seasonal lag).
        No target value after the watermark is read.
    """
    keys, t = list(contract.series_keys), contract.time_column
    lf = history.lazy()
    watermark = lf.select(pl.col(t).max()).collect().item()
    key_schema = {k: contract.columns[k] for k in keys}
    empty_skip = pl.DataFrame(schema={**key_schema, "reason": pl.String})
    out_schema = {**key_schema, t: contract.columns[t], "forecast": pl.Float64, "method": pl.String}
    if watermark is None:
        return pl.DataFrame(schema=out_schema), empty_skip
    spec = spec_of(meta, contract) if booster is not None else F.default_spec(contract)
    known = list(spec.known) if booster is not None else []
    period = contract.period
    start = watermark - period * (lookback_periods(contract, spec) + contract.horizon)
    past = lf.filter((pl.col(t) <= watermark) & (pl.col(t) > start)).collect()
    series = lf.select(keys).unique().collect()
    times = pl.DataFrame({t: [watermark + period * i for i in range(1, contract.horizon + 1)]},
                         schema={t: contract.columns[t]})
    grid = series.join(times, how="cross")
    skipped = [empty_skip]
    if known:
        fut = (future if future is not None else pl.DataFrame(schema={**key_schema, t: contract.columns[t]}))
        have = [c for c in known if c in fut.columns]
        fut = fut.select(*keys, t, *have).with_columns(pl.col(t).cast(contract.columns[t]))
        fut = fut.unique(subset=[*keys, t], keep="last")
        grid = grid.join(fut, on=[*keys, t], how="left")
        for c in known:
            if c not in grid.columns:
                grid = grid.with_columns(pl.lit(None, dtype=contract.columns[c]).alias(c))
        lacking = grid.filter(pl.any_horizontal(pl.col(c).is_null() for c in known)).select(keys).unique()
        if lacking.height:
            skipped.append(lacking.with_columns(pl.lit(
                f"no future value of a known exogenous column ({', '.join(known)}) for every period to forecast"
            ).alias("reason")))
            grid = grid.join(lacking, on=keys, how="anti")
    grid = grid.with_columns(pl.col(c).cast(contract.columns[c]) for c in known)
    rows = pl.concat([past, grid], how="diagonal_relaxed")
    feats = model_frame(rows, contract, spec).filter(pl.col(t) > watermark).collect()
    if booster is not None and feats.height:
        clip = bool((meta or {}).get("clip_at_zero", True))
        values = predict_target(booster, feats, contract, spec, clip=clip)
        method = "model"
    elif booster is not None:
        values, method = np.zeros(0), "model"
    else:
        values = feats[F.BASELINE].cast(pl.Float64).fill_null(float("nan")).to_numpy()
        method = "seasonal_naive"
    out = feats.select(*keys, t).with_columns(pl.Series("forecast", values, dtype=pl.Float64).fill_nan(None),
                                             pl.lit(method).alias("method"))
    no_value = out.filter(pl.col("forecast").is_null()).select(keys).unique()
    if no_value.height:
        skipped.append(no_value.with_columns(pl.lit(
            "no history at the seasonal lag or in the newest season to forecast from").alias("reason")))
        out = out.join(no_value, on=keys, how="anti")
    skip = pl.concat(skipped).unique(subset=keys, keep="first").sort(keys)
    return out.select(list(out_schema)).sort([*keys, t]), skip


def horizon_delta(contract: Contract) -> timedelta:
    return contract.period * contract.horizon
