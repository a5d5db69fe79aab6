"""Forecasts for the next ``horizon`` periods after a dataset's watermark: every series, every period, a range.

``forecast_frame`` builds exactly the features the model was trained with (its
``feature_spec`` from meta.json), every period forecast from the watermark as its
origin (``freshet.modeling.origins``), from history rows at or before the watermark
only, predicts, and inverts the target transform. ``predict_target`` is the one
prediction path, shared with training's backtest, so a served forecast equals the
backtested model's output on the same rows.

Every series with history gets a value for every period; where the model cannot be
used as trained, a documented ladder takes over, and each row says how it was made
(``method`` and ``method_detail``):

1. ``model``: the champion, every input present (``method_detail`` names a statistical or ensemble
   champion's family and model: ``freshet.modeling.families``; null for XGBoost).
2. ``model_missing_inputs``: a known-in-advance input has no future value and the
   contract's ``on_missing_future = "missing"`` passes it to XGBoost as missing (named).
3. ``seasonal_naive``: the newest value available ``k`` whole seasons back, ``k`` from the
   first season at or beyond the horizon up to ``LADDER_SEASONS`` further (which ``k`` is
   named); used with no champion, for a stale series (no row in the newest ``horizon``
   periods: column ``stale_periods``), where the model's inputs are incomplete, and for
   missing known inputs under ``on_missing_future = "fallback"``.
4. ``fallback_mean``: the mean of the series' newest season of values, for a series too
   new (or too gappy) to have any value a whole season back.

Series whose newest row is ``retire_after`` or more behind the watermark are not forecast
and are named in the second frame returned, as are series left out under
``on_missing_future = "skip"``. Each row carries the contract's ``quantiles`` as columns
(``p10``, ``p50``, ``p90``): see ``freshet.modeling.intervals``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from freshet.data.contracts import Contract
from freshet.modeling import families as FAM
from freshet.modeling import features as F
from freshet.modeling import intervals as I
from freshet.modeling import model as M
from freshet.modeling import origins as O

MODEL = "model"
MODEL_MISSING_INPUTS = "model_missing_inputs"
SEASONAL_NAIVE = "seasonal_naive"
FALLBACK_MEAN = "fallback_mean"
METHODS = (MODEL, MODEL_MISSING_INPUTS, SEASONAL_NAIVE, FALLBACK_MEAN)
NOT_FORECAST = "not_forecast"
LADDER_SEASONS = 8  # seasonal naive looks this many whole seasons back at most (from the first it may use)
_LAST, _SN, _SN_K, _MEAN, _MEAN_N, _MISSING, _MODEL = (
    "__last", "__sn", "__sn_k", "__mean", "__mean_n", "__missing", "__model")
def known_in_advance(contract: Contract) -> list[str]:
    """Exogenous columns whose future values a forecast needs: the contract's known-in-advance ones."""
    return list(contract.known)


def spec_of(meta: dict[str, Any] | None, contract: Contract) -> F.FeatureSpec:
    """The model's feature spec from its meta.json (models older than specs: the contract's default)."""
    if meta and meta.get("feature_spec"):
        return F.FeatureSpec.from_json(meta["feature_spec"])
    return F.default_spec(contract)


def model_frame(lf: pl.LazyFrame | pl.DataFrame, contract: Contract, spec: F.FeatureSpec,
                rows: pl.LazyFrame | pl.DataFrame | None = None) -> pl.LazyFrame:
    """Features of ``spec`` for ``rows`` (default ``lf``; an ``ORIGIN`` column sets each row's origin) read from ``lf``,
    as float32 (plus ``ORIGIN``, ``REF``, ``TARGET`` and the seasonal-naive value); unsorted slices welcome."""
    cols = F.feature_columns(contract, spec)
    extra = [O.ORIGIN, F.TARGET, F.BASELINE]
    keep = list(dict.fromkeys([*contract.series_keys, contract.time_column, contract.target, *cols, *extra]))
    return (F.build_features(lf.lazy(), contract, spec, rows=None if rows is None else rows.lazy())
            .select(keep).with_columns(pl.col(cols).cast(pl.Float32)))


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
    """How many periods before a row its features read (the longest lag, window or observed lag; origins at most
    ``horizon`` periods back)."""
    h = contract.horizon
    from_origin = [*spec.windows, *spec.origin_lags, *spec.observed_origin_lags]
    return max([*spec.lags, F.seasonal_lag(contract), *(j + h for j in from_origin), *spec.observed_lags, h]) + 1


def seasonal_naive_values(past: pl.DataFrame, rows: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """For each row of ``rows`` (keys, time): the newest target in ``past`` whole seasons back, and how many seasons.

    ``k`` runs from the first whole season at or beyond the horizon (``features.seasonal_lag``) for
    ``LADDER_SEASONS`` seasons; columns ``__sn`` (null where none of them is in ``past``) and ``__sn_k``.
    """
    keys, t = [*contract.series_keys], contract.time_column
    s = contract.season_length
    first = F.seasonal_lag(contract) // s
    out = rows.select(*keys, t)
    names = []
    for j, k in enumerate(range(first, first + LADDER_SEASONS)):
        names.append((f"__sn{j}", k))
        shifted = past.select(*keys, (pl.col(t) + contract.period * (k * s)).alias(t),
                              pl.col(contract.target).cast(pl.Float64).alias(f"__sn{j}"))
        out = out.join(shifted, on=[*keys, t], how="left")
    k_expr = pl.coalesce([pl.when(pl.col(n).is_not_null()).then(pl.lit(k)) for n, k in names])
    return out.select(*keys, t, pl.coalesce([pl.col(n) for n, _ in names]).alias(_SN), k_expr.cast(pl.Int64).alias(_SN_K))


def newest_season_mean(lf: pl.LazyFrame, contract: Contract) -> pl.LazyFrame:
    """Per series: the mean of its newest ``season_length`` values (``__mean``) and how many there were."""
    y = pl.col(contract.target).cast(pl.Float64).sort_by(contract.time_column).tail(contract.season_length)
    return lf.group_by(list(contract.series_keys)).agg(y.mean().alias(_MEAN), y.len().alias(_MEAN_N))


def naive_calibration(past: pl.DataFrame, contract: Contract, watermark: Any, scale: pl.DataFrame) -> dict | None:
    """The residual table of the seasonal-naive ladder replayed over the newest backtest-length span of history."""
    t = contract.time_column
    span = contract.holdout_periods or contract.default_holdout()
    recent = past.filter(pl.col(t) > watermark - contract.period * span)
    keys = [*contract.series_keys, t]
    got = (recent.select(*keys, contract.target).join(seasonal_naive_values(past, recent, contract), on=keys)
           .join(scale, on=list(contract.series_keys), how="left"))
    return I.residual_table(got[contract.target].to_numpy(), got[_SN].to_numpy(), got[I.SCALE].to_numpy())


def forecast_columns(contract: Contract) -> dict[str, pl.DataType]:
    """The forecast file's schema (before the flow's lineage columns)."""
    keys, t = contract.series_keys, contract.time_column
    return {**{k: contract.columns[k] for k in keys}, t: contract.columns[t], "forecast": pl.Float64,
            **{I.quantile_column(q): pl.Float64 for q in contract.quantiles},
            "method": pl.String, "method_detail": pl.String, "stale_periods": pl.Int64}


def skipped_columns(contract: Contract) -> dict[str, pl.DataType]:
    """The schema of the series not forecast: keys, ``reason`` and ``retired``."""
    return {**{k: contract.columns[k] for k in contract.series_keys}, "reason": pl.String, "retired": pl.Boolean}


def _periods_between(later: pl.Expr, earlier: pl.Expr, contract: Contract) -> pl.Expr:
    period_us = contract.period.total_seconds() * 1_000_000
    return ((later - earlier).dt.total_microseconds() // int(period_us)).cast(pl.Int64)


def forecast_frame(history: pl.LazyFrame | pl.DataFrame, contract: Contract, booster: xgb.Booster | None,
                   meta: dict[str, Any] | None, future: pl.DataFrame | None = None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Forecast the next ``contract.horizon`` periods of every series after the dataset's watermark.

    Args:
        history: curated rows (contract columns); the watermark is their newest time.
        contract: the dataset's contract (horizon, quantiles, ``on_missing_future``, ``retire_after``).
        booster: the serving model, or None (the ladder from seasonal naive down).
        meta: the model's meta.json (``feature_spec``, ``clip_at_zero``, ``intervals``); ignored when ``booster`` is None.
        future: rows after the watermark holding the known-in-advance exogenous columns (series keys, time
            column and those columns); needed only when the model uses known exogenous columns.

    Returns:
        ``(forecasts, skipped)``: forecasts has ``forecast_columns(contract)``, one row per series and period,
        sorted by series and time; skipped has the series keys, a ``reason`` and ``retired`` for every series
        not forecast (retired, or ``on_missing_future = "skip"``). No target value after the watermark is read.
    """
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    lf = history.lazy()
    schema = forecast_columns(contract)
    skip_schema = skipped_columns(contract)
    last = lf.group_by(keys).agg(pl.col(t).max().alias(_LAST)).collect()
    if last.height == 0:
        return pl.DataFrame(schema=schema), pl.DataFrame(schema=skip_schema)
    watermark = last[_LAST].max()
    period, h = contract.period, contract.horizon
    last = last.with_columns(_periods_between(pl.lit(watermark), pl.col(_LAST), contract).alias("stale_periods"))
    skipped = [pl.DataFrame(schema=skip_schema)]
    if contract.retire_after_periods is not None:
        retired = last.filter(pl.col("stale_periods") >= contract.retire_after_periods)
        skipped.append(retired.select(*keys, pl.format(
            "retired: no row since {} ({} periods before the watermark; the contract's retire_after is {} periods)",
            pl.col(_LAST), pl.col("stale_periods"), pl.lit(contract.retire_after_periods)).alias("reason"),
            pl.lit(True).alias("retired")))
        last = last.join(retired.select(keys), on=keys, how="anti")
    spec = spec_of(meta, contract) if booster is not None else F.default_spec(contract)
    s = contract.season_length
    calibration = contract.holdout_periods or contract.default_holdout()
    reach = max(lookback_periods(contract, spec), (F.seasonal_lag(contract) // s + LADDER_SEASONS) * s,
                I.SCALE_SEASONS * s)
    past = lf.filter((pl.col(t) <= watermark) & (pl.col(t) > watermark - period * (reach + calibration))).collect()
    times = pl.DataFrame({t: [watermark + period * i for i in range(1, h + 1)]}, schema={t: contract.columns[t]})
    grid = last.select(*keys, "stale_periods").join(times, how="cross")

    # the statistical family reads no exogenous input; the XGBoost model (alone or in the ensemble) does
    known = list(spec.known) if booster is not None and FAM.family_of(meta) != FAM.STATS else []
    grid, lacking = _with_future_inputs(grid, contract, known, future)
    skipped.append(lacking)

    model_values = np.full(grid.height, np.nan)
    clip = bool((meta or {}).get("clip_at_zero", True)) if booster is not None else bool(
        past.height == 0 or past[y].min() >= 0)
    if booster is not None and grid.height:
        # every period is forecast from the watermark: its features read the history up to it, never after
        rows = pl.concat([past.clear(), grid.drop(_MISSING, "stale_periods")], how="diagonal_relaxed").with_columns(
            pl.lit(watermark, dtype=contract.columns[t]).alias(O.ORIGIN))
        feats = model_frame(past, contract, spec, rows=rows).collect()
        feats = grid.select(*keys, t).join(feats, on=[*keys, t], how="left", maintain_order="left")
        model_values = predict_target(booster, feats, contract, spec, clip=clip)
        # --- model families: a statistical or ensemble champion is its recipe refit on the newest history
        model_values = FAM.serve(lf, contract, meta or {}, grid, watermark, model_values, clip)

    grid = (grid.with_columns(pl.Series(_MODEL, model_values, dtype=pl.Float64).fill_nan(None))
            .join(seasonal_naive_values(past, grid, contract), on=[*keys, t], how="left"))
    means = newest_season_mean(past.lazy(), contract).collect()
    absent = grid.select(keys).unique().join(means.select(keys), on=keys, how="anti")
    if absent.height:  # stale beyond the loaded span: their newest season from the whole history
        means = pl.concat([means, newest_season_mean(lf.join(absent.lazy(), on=keys, how="semi"), contract).collect()])
    scale = I.series_scale(past, contract, watermark).collect()
    grid = grid.join(means, on=keys, how="left").join(scale, on=keys, how="left").with_columns(
        pl.coalesce(I.SCALE, pl.col(_MEAN).abs()).alias(I.SCALE))

    grid = _ladder(grid, contract, has_model=booster is not None, model_detail=FAM.describe(meta) if booster is not None else None)
    if clip:
        grid = grid.with_columns(pl.col("forecast").clip(lower_bound=0))
    grid = _with_quantiles(grid, contract, past, watermark, scale, meta if booster is not None else None, clip)
    skip = pl.concat(skipped).unique(subset=keys, keep="first").sort(keys)
    return grid.select(list(schema)).sort([*keys, t]), skip


def _with_future_inputs(grid: pl.DataFrame, contract: Contract, known: list[str],
                        future: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The grid with the known columns' future values and ``__missing`` (the columns without one, ``""`` if none),
    and the series left out under ``on_missing_future = "skip"`` (keys, ``reason``, ``retired``)."""
    keys, t = list(contract.series_keys), contract.time_column
    none = pl.DataFrame(schema=skipped_columns(contract))
    if not known:
        return grid.with_columns(pl.lit("").alias(_MISSING)), none
    fut = future if future is not None else pl.DataFrame(schema={k: contract.columns[k] for k in [*keys, t]})
    have = [c for c in known if c in fut.columns]
    fut = (fut.select(*keys, t, *have).with_columns(pl.col(t).cast(contract.columns[t]))
           .unique(subset=[*keys, t], keep="last"))
    grid = grid.join(fut, on=[*keys, t], how="left").with_columns(
        pl.lit(None, dtype=contract.columns[c]).alias(c) for c in known if c not in have)
    grid = grid.with_columns(pl.col(c).cast(contract.columns[c]) for c in known)
    grid = grid.with_columns(pl.concat_list([pl.when(pl.col(c).is_null()).then(pl.lit(c)) for c in known])
                             .list.drop_nulls().list.join(", ").alias(_MISSING))
    if contract.on_missing_future != "skip":
        return grid, none
    lacking = grid.filter(pl.col(_MISSING) != "").group_by(keys).agg(pl.col(_MISSING).unique().sort())
    named = lacking.select(*keys, pl.format("no future value of {} for every period (on_missing_future = \"skip\")",
                                            pl.col(_MISSING).list.join("; ")).alias("reason"),
                           pl.lit(False).alias("retired"))
    return grid.join(lacking.select(keys), on=keys, how="anti"), named


def _ladder(grid: pl.DataFrame, contract: Contract, has_model: bool, model_detail: str | None = None) -> pl.DataFrame:
    """``method``, ``method_detail`` and ``forecast`` of each row: the model where it can be used as trained,
    else down the ladder (see the module docstring), saying why. ``model_detail``: a model row's detail
    (the family of a statistical or ensemble champion; None for XGBoost)."""
    fresh = pl.col("stale_periods") < contract.horizon
    model_ok = pl.col(_MODEL).is_not_null() & fresh
    missing = pl.col(_MISSING) != ""
    use_missing = pl.lit(contract.on_missing_future == "missing")
    method = (pl.when(model_ok & ~missing).then(pl.lit(MODEL))
              .when(model_ok & missing & use_missing).then(pl.lit(MODEL_MISSING_INPUTS))
              .when(pl.col(_SN).is_not_null()).then(pl.lit(SEASONAL_NAIVE))
              .otherwise(pl.lit(FALLBACK_MEAN)))
    if not has_model:
        why = pl.lit("no champion yet")
    else:
        why = (pl.when(~fresh).then(pl.format("stale: the series' newest row is {} periods before the watermark",
                                              pl.col("stale_periods")))
               .when(missing).then(pl.format("no future value of {} (on_missing_future = \"fallback\")", pl.col(_MISSING)))
               .otherwise(pl.lit("the model's inputs are incomplete (no value at its reference lag)")))
    first = F.seasonal_lag(contract) // contract.season_length
    detail = (pl.when(pl.col("method") == MODEL).then(pl.lit(model_detail, dtype=pl.String))
              .when(pl.col("method") == MODEL_MISSING_INPUTS).then(
                  pl.format("no future value of {}: passed to the model as missing", pl.col(_MISSING)))
              .when(pl.col("method") == SEASONAL_NAIVE).then(pl.format("value {} season(s) back; {}", pl.col(_SN_K), why))
              .otherwise(pl.format("mean of the series' newest {} value(s): no value {}-{} seasons back; {}",
                                   pl.col(_MEAN_N), pl.lit(first), pl.lit(first + LADDER_SEASONS - 1), why)))
    point = (pl.when(pl.col("method").is_in([MODEL, MODEL_MISSING_INPUTS])).then(pl.col(_MODEL))
             .when(pl.col("method") == SEASONAL_NAIVE).then(pl.col(_SN)).otherwise(pl.col(_MEAN)))
    return grid.with_columns(method.alias("method")).with_columns(detail.alias("method_detail"), point.alias("forecast"))


def _with_quantiles(grid: pl.DataFrame, contract: Contract, past: pl.DataFrame, watermark: Any, scale: pl.DataFrame,
                    meta: dict[str, Any] | None, clip: bool) -> pl.DataFrame:
    """The quantile columns: model rows from the backtest's table (meta ``intervals``), the rest from seasonal naive
    replayed on recent history; a row with neither gets its point as every quantile, and says so."""
    quantiles = contract.quantiles
    naive = naive_calibration(past, contract, watermark, scale)
    model_table = ((meta or {}).get("intervals") or {}).get("table") or naive
    n = grid.height
    by_model = grid["method"].is_in([MODEL, MODEL_MISSING_INPUTS]).to_numpy()
    offs = np.zeros((n, len(quantiles)))
    for mask, table in ((by_model, model_table), (~by_model, naive)):
        if table is not None and mask.any():
            offs[mask] = I.offsets(table, quantiles, int(mask.sum()))
    values = I.bands(grid["forecast"].to_numpy(), grid[I.SCALE].to_numpy(), offs, clip)
    out = grid.with_columns(pl.Series(I.quantile_column(q), values[:, i], dtype=pl.Float64)
                            for i, q in enumerate(quantiles))
    flat = (by_model & (model_table is None)) | (~by_model & (naive is None))
    if flat.any():
        note = pl.concat_str([pl.col("method_detail").fill_null("model"),
                              pl.lit("; no residuals to calibrate a range from: every quantile is the point")])
        out = out.with_columns(pl.when(pl.Series(flat)).then(note).otherwise(pl.col("method_detail")).alias("method_detail"))
    return out


def coverage(forecasts: pl.DataFrame, skipped: pl.DataFrame, contract: Contract) -> dict[str, float]:
    """The share of series x periods by each method, and not forecast (skipped series that are not retired)."""
    owed = forecasts.height + int((~skipped["retired"]).sum()) * contract.horizon if skipped.height else forecasts.height
    counts = dict(forecasts.group_by("method").len().iter_rows()) if forecasts.height else {}
    out = {m: (counts.get(m, 0) / owed if owed else 0.0) for m in METHODS}
    out[NOT_FORECAST] = (owed - forecasts.height) / owed if owed else 0.0
    return {k: round(v, 6) for k, v in out.items()}


def format_coverage(shares: dict[str, float]) -> str:
    """``model 92.3%, seasonal_naive 7.7%``: the non-zero shares, largest first."""
    parts = sorted(((v, k) for k, v in shares.items() if v), reverse=True)
    return ", ".join(f"{k} {100 * v:.1f}%" for v, k in parts) or "nothing forecast"
