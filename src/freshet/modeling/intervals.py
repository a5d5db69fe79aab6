"""Prediction intervals: conformal quantiles of scaled residuals (pure numpy/polars, no I/O).

A forecast's range is its point plus an offset per quantile, in units of the row's scale, so
one table serves small and large series, night and rush hour alike. The scale is the square root
of the forecast, the forecast at least ``POINT_FLOOR`` of the series' level (its mean absolute
target over the ``SCALE_SEASONS`` seasons before the origin) so a forecast near zero still gets a
range: a count-shaped unit (a Poisson count's spread grows with the square root of its mean), so in
a panel a large series' p10 rises above 0 while a small, zero-heavy one's stays at 0.
``SCALE_MODE = "point"`` (the floored forecast itself) and ``"level"`` (the level alone) were the
alternatives; ``benchmarks/intervals.py`` and ``benchmarks/interval_scale.py`` chose between them on
the benchmark's development windows (BENCHMARKS.md, "Interval calibration"). The offsets are percentiles of residuals
``(actual - forecast) / scale`` measured where the actuals were not seen by the forecaster:
the model's rolling-origin backtest and validation span, or the seasonal-naive forecast replayed
over recent history. One pooled table serves every step: the model forecasts each step from the
origin, so its error grows with the step, but tables per step bucket (a quarter of the horizon
each) measured no better on the development windows of ``benchmarks/origins.py`` (BENCHMARKS.md,
issue 21). The backtest reports coverage and pinball loss cross-fitted (each window's range from the other
windows' residuals), so the calibration figures are not in-sample.

A table's percentiles sit at rank ``(n + 1) q`` of its ``n`` residuals (``PLOTTING``, numpy's "weibull"),
not numpy's default ``1 + (n - 1) q``: for exchangeable residuals the p10-p90 range then covers 80% of new ones on
average at any ``n``, where the default covers ``0.8 (n - 1) / (n + 1)`` (71% from a statistical family's 16
backtest residuals of a weekly series). Chosen on the accuracy benchmark's development windows
(BENCHMARKS.md, "Interval calibration").
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from freshet.data.contracts import Contract

GRID = tuple(round(i / 100, 2) for i in range(1, 100))  # the percentiles a table stores
SCALE_SEASONS = 2        # a series' scale: mean |target| over this many seasons before the origin
SCALE = "__scale"
SCALE_MODE = "sqrt"      # a row's scale: "sqrt" (of "point"), "point" (|forecast|, at least POINT_FLOOR levels) or "level"
SCALE_MODES = ("sqrt", "point", "level")
POINT_FLOOR = 0.1
PLOTTING = "weibull"     # a table's q-percentile: rank (n + 1) q of n residuals (see the module's docstring)


def row_scale(point: np.ndarray, level: np.ndarray) -> np.ndarray:
    """The unit a row's residual is measured in (``SCALE_MODE``)."""
    level = np.asarray(level, dtype=np.float64)
    if SCALE_MODE == "level":
        return level
    floored = np.maximum(np.abs(np.asarray(point, dtype=np.float64)), POINT_FLOOR * level)
    return np.sqrt(floored) if SCALE_MODE == "sqrt" else floored


def quantile_column(q: float) -> str:
    """The forecast file's column for quantile ``q``: 0.1 -> ``p10``, 0.025 -> ``p2.5``."""
    return f"p{q * 100:g}"


def series_scale(frame: pl.DataFrame | pl.LazyFrame, contract: Contract, end: Any) -> pl.LazyFrame:
    """Series keys and ``SCALE``: each series' mean |target| over the ``SCALE_SEASONS`` seasons ending at ``end``."""
    t, y = pl.col(contract.time_column), pl.col(contract.target).cast(pl.Float64)
    start = end - contract.period * (SCALE_SEASONS * contract.season_length)
    return (frame.lazy().filter((t > start) & (t <= end)).group_by(list(contract.series_keys))
            .agg(y.abs().mean().alias(SCALE)))


def residual_table(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray) -> dict[str, Any] | None:
    """Percentiles (``GRID``) of scaled residuals ``(actual - forecast) / scale``; None without a usable row."""
    actual, forecast, scale = (np.asarray(a, dtype=np.float64) for a in (actual, forecast, scale))
    ok = np.isfinite(actual) & np.isfinite(forecast) & np.isfinite(scale) & (scale > 0)
    if not ok.any():
        return None
    unit = row_scale(forecast[ok], scale[ok])
    ok_unit = unit > 0
    r = (actual[ok][ok_unit] - forecast[ok][ok_unit]) / unit[ok_unit]
    if r.size == 0:
        return None
    return {"rows": int(r.size), "pooled": np.quantile(r, GRID, method=PLOTTING).tolist()}


def offsets(table: dict[str, Any], quantiles: tuple[float, ...], rows: int) -> np.ndarray:
    """Scaled offsets, one row per forecast row and one column per quantile (non-decreasing along each row)."""
    one = np.maximum.accumulate(np.interp(np.asarray(quantiles, dtype=np.float64), GRID, table["pooled"]))
    return np.tile(one, (rows, 1))


def bands(point: np.ndarray, scale: np.ndarray, offs: np.ndarray, clip: bool) -> np.ndarray:
    """Quantile values ``point + offset * scale`` (rows x quantiles), clipped at zero when ``clip``; monotone."""
    point = np.asarray(point, dtype=np.float64)
    scale = np.nan_to_num(row_scale(point, np.nan_to_num(np.asarray(scale, dtype=np.float64), nan=0.0)), nan=0.0)
    out = point[:, None] + offs * scale[:, None]
    out = np.maximum.accumulate(out, axis=1)
    return np.clip(out, 0, None) if clip else out


def central_pairs(quantiles: tuple[float, ...]) -> list[tuple[float, float]]:
    """The symmetric intervals the quantiles form: (0.1, 0.9) is the nominal 80% interval."""
    qs = set(quantiles)
    return [(q, round(1 - q, 10)) for q in sorted(qs) if q < 0.5 and round(1 - q, 10) in qs]


def score(actual: np.ndarray, values: np.ndarray, quantiles: tuple[float, ...]) -> dict[str, Any]:
    """Empirical coverage of each central interval and the pinball loss of each quantile (mean, and over mean |y|)."""
    actual = np.asarray(actual, dtype=np.float64)
    if actual.size == 0:
        return {"rows": 0, "coverage": {}, "pinball": {}, "pinball_scaled": None}
    index = {q: i for i, q in enumerate(quantiles)}
    cover = {}
    for lo, hi in central_pairs(quantiles):
        inside = (actual >= values[:, index[lo]]) & (actual <= values[:, index[hi]])
        cover[f"{quantile_column(lo)}-{quantile_column(hi)}"] = {
            "nominal": round(hi - lo, 10), "empirical": float(inside.mean())}
    pinball = {}
    for q, i in index.items():
        diff = actual - values[:, i]
        pinball[quantile_column(q)] = float(np.maximum(q * diff, (q - 1) * diff).mean())
    denom = float(np.abs(actual).mean())
    return {"rows": int(actual.size), "coverage": cover, "pinball": pinball,
            "pinball_scaled": (sum(pinball.values()) / len(pinball) / denom) if denom else None}


def cross_fitted(actual: np.ndarray, forecast: np.ndarray, scale: np.ndarray, windows: np.ndarray,
                 quantiles: tuple[float, ...], clip: bool,
                 extra: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[dict, dict[int, dict], dict | None]:
    """Backtest calibration: (pooled score, score per window, the serving table from every window).

    ``extra``: (actual, forecast, scale) of further out-of-sample rows (the validation span) that
    every table pools, never scored. Each window's range comes from the other windows' residuals
    and ``extra``, so no score is in-sample.
    """
    ea, ef, es = extra if extra is not None else (np.zeros(0), np.zeros(0), np.zeros(0))

    def table_of(mask: np.ndarray) -> dict | None:
        return residual_table(np.concatenate([actual[mask], ea]), np.concatenate([forecast[mask], ef]),
                              np.concatenate([scale[mask], es]))

    table = table_of(np.ones(actual.size, dtype=bool))
    per_window: dict[int, dict] = {}
    acts, vals = [], []
    for w in np.unique(windows):
        mine = windows == w
        others = table_of(~mine)
        if others is None:
            continue
        v = bands(forecast[mine], scale[mine], offsets(others, quantiles, int(mine.sum())), clip)
        per_window[int(w)] = score(actual[mine], v, quantiles)
        acts.append(actual[mine])
        vals.append(v)
    pooled = score(np.concatenate(acts), np.concatenate(vals), quantiles) if acts else score(np.zeros(0), np.zeros((0, 0)), quantiles)
    return pooled, per_window, table
