"""Model families chosen by backtest: the global XGBoost model, a statistical family, their ensemble; the naive baseline.

The statistical family is statsforecast's MSTL (and optionally AutoETS), an optional extra
(``pip install freshet[stats]``). It is scored on exactly the XGBoost backtest's rows: each
window is forecast by a fit on the history at or before the window's origin (one fit per
window and series). The family is fitted on a regular grid of each series' newest
``STATS_FIT_SEASONS`` longest seasons (gaps interpolated, the newest value carried to the
origin): the same preparation at backtest and at forecast time. A series it cannot fit (less
than two of its shortest season) gets the ladder's seasonal-naive value, as a forecast would.

A statistical champion is a recipe in meta.json (``family``, ``recipe``: model and seasons),
refit on the newest history when forecasting; the registry still stores the XGBoost refit
(the ensemble's other half). A family that cannot run (the extra not installed, too little
history, more series than ``stats_max_series``, turned off) is named, never skipped silently.

Settings read: ``stats_models``, ``stats_max_series`` (``freshet.settings``).
"""

from __future__ import annotations

import importlib
import time
from datetime import timedelta
from typing import Any

import numpy as np
import polars as pl

from freshet.data.contracts import Contract
from freshet.modeling import model as M
from freshet.modeling.features import BASELINE

XGBOOST, STATS, ENSEMBLE = "xgboost", "stats", "ensemble"
STATS_MODELS = ("mstl", "ets")
STATS_FIT_SEASONS = 6   # each statistical fit reads the newest 6 longest seasons (hourly data: 6 weeks)
NAIVE = "__naive"       # the last value at the origin, the baseline a user tries first
_SID, _STEP = "__sid", "__step"


def seasons_of(contract: Contract) -> tuple[int, ...]:
    """The statistical family's seasons: the contract's, plus the day and the week for sub-daily data."""
    seasons = {contract.season_length}
    if contract.sub_daily:
        for span in (timedelta(days=1), timedelta(weeks=1)):
            if span % contract.period == timedelta(0):
                seasons.add(span // contract.period)
    return tuple(sorted(seasons))


def stats_models(settings: Any) -> list[str]:
    names = [n.strip() for n in (getattr(settings, "stats_models", "mstl") or "").split(",") if n.strip()]
    bad = [n for n in names if n not in STATS_MODELS]
    if bad:
        raise ValueError(f"FRESHET_STATS_MODELS: unknown model(s) {bad}; choose from {list(STATS_MODELS)}")
    return names


def stats_installed() -> bool:
    """Whether the ``stats`` extra (statsforecast) can be imported."""
    try:
        importlib.import_module("statsforecast")
    except ImportError:
        return False
    return True


def stats_unavailable(contract: Contract, n_series: int, periods_before: int, settings: Any) -> str | None:
    """Why the statistical family cannot run on this history (None: it can)."""
    if not stats_models(settings):
        return "turned off (FRESHET_STATS_MODELS is empty)"
    if not stats_installed():
        return "the extra is not installed: pip install freshet[stats]"
    cap = getattr(settings, "stats_max_series", 25)
    if n_series > cap:
        return f"{n_series} series is more than FRESHET_STATS_MAX_SERIES ({cap}): one fit per series and window is too slow"
    need = 2 * min(seasons_of(contract))
    if periods_before < need:
        return (f"too little history: {periods_before} periods before the first backtest origin, "
                f"fewer than two seasons ({need})")
    return None


def _fit_grid(history: pl.LazyFrame, contract: Contract, origin: Any, periods: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Series ids (keys, ``__sid``) and their regular grid up to ``origin``: ``__sid``, ``__step`` and the target."""
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    past = (history.filter((pl.col(t) <= origin) & (pl.col(t) > origin - contract.period * periods))
            .select(*keys, t, pl.col(y).cast(pl.Float64).fill_nan(None)).collect())
    ids = past.select(keys).unique().sort(keys).with_row_index(_SID)
    times = pl.DataFrame({t: [origin - contract.period * i for i in range(periods - 1, -1, -1)],
                          _STEP: list(range(periods))}, schema={t: contract.columns[t], _STEP: pl.Int64})
    grid = (ids.join(times, how="cross").join(past.unique(subset=[*keys, t], keep="last"), on=[*keys, t], how="left")
            .sort(_SID, _STEP))
    first = grid.filter(pl.col(y).is_not_null()).group_by(_SID).agg(pl.col(_STEP).min().alias("__first"))
    grid = (grid.join(first, on=_SID).filter(pl.col(_STEP) >= pl.col("__first"))
            .with_columns(pl.col(y).interpolate().forward_fill().over(_SID)))
    return ids, grid.select(_SID, _STEP, y)


def _model(name: str, seasons: tuple[int, ...]):
    from statsforecast.models import MSTL, AutoETS

    return MSTL(season_length=list(seasons)) if name == "mstl" else AutoETS(season_length=seasons[0])


def stats_forecast(history: pl.LazyFrame, contract: Contract, origin: Any, name: str) -> pl.DataFrame:
    """The model's forecasts of the ``horizon`` periods after ``origin`` from the history at or before it.

    Columns: series keys, time, ``forecast``; a series with less than two of its shortest season is absent.
    """
    from statsforecast import StatsForecast

    keys, t, y, h = list(contract.series_keys), contract.time_column, contract.target, contract.horizon
    seasons = seasons_of(contract)
    periods = STATS_FIT_SEASONS * max(seasons)
    ids, grid = _fit_grid(history, contract, origin, periods)
    by_usable: dict[tuple[int, ...], list[int]] = {}
    for sid, n in grid.group_by(_SID).len().iter_rows():
        by_usable.setdefault(tuple(m for m in seasons if n >= 2 * m), []).append(sid)
    out = []
    for usable, sids in sorted(by_usable.items()):
        if not usable or (name == "ets" and usable[0] != seasons[0]):
            continue
        part = grid.filter(pl.col(_SID).is_in(sids)).rename({_SID: "unique_id", _STEP: "ds", y: "y"})
        fc = StatsForecast(models=[_model(name, usable)], freq=1, n_jobs=1).forecast(df=part.to_pandas(), h=h)
        got = pl.from_pandas(fc.reset_index() if "unique_id" not in fc.columns else fc)
        out.append(got.select(pl.col("unique_id").cast(pl.UInt32).alias(_SID),
                              (pl.col("ds") - (periods - 1)).cast(pl.Int64).alias("__k"),
                              pl.col(got.columns[-1]).cast(pl.Float64).alias("forecast")))
    if not out:
        return pl.DataFrame(schema={**{k: contract.columns[k] for k in keys}, t: contract.columns[t], "forecast": pl.Float64})
    steps = pl.DataFrame({"__k": list(range(1, h + 1)), t: [origin + contract.period * k for k in range(1, h + 1)]},
                         schema={"__k": pl.Int64, t: contract.columns[t]})
    return (pl.concat(out).join(ids.with_columns(pl.col(_SID).cast(pl.UInt32)), on=_SID).join(steps, on="__k")
            .select(*keys, t, "forecast"))


def window_origin(contract: Contract, max_time: Any, window: int) -> Any:
    """The origin of backtest window ``window`` (0 the newest): its first period minus one."""
    return max_time - contract.period * (contract.horizon * (window + 1))


def _per_window(rows: pl.DataFrame, contract: Contract, max_time: Any, values) -> np.ndarray:
    """``values(origin)`` (keys, time, ``forecast``) for each window of ``rows``, aligned with ``rows`` (NaN: none)."""
    keys = [*contract.series_keys, contract.time_column]
    parts = [values(window_origin(contract, max_time, int(w))) for w in rows["window"].unique().to_list()]
    got = rows.select(keys).join(pl.concat(parts, how="vertical_relaxed").unique(subset=keys), on=keys, how="left",
                                 maintain_order="left")
    return got["forecast"].cast(pl.Float64).fill_null(float("nan")).to_numpy()


def naive_values(history: pl.LazyFrame, contract: Contract, rows: pl.DataFrame, max_time: Any) -> np.ndarray:
    """The naive forecast of each backtest row: its series' last value at or before the window's origin."""
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    reach = contract.period * STATS_FIT_SEASONS * max(seasons_of(contract))

    def last(origin):
        got = (history.filter((pl.col(t) <= origin) & (pl.col(t) > origin - reach) & pl.col(y).is_not_null())
               .group_by(keys).agg(pl.col(y).sort_by(t).last().cast(pl.Float64).alias("forecast")).collect())
        steps = pl.DataFrame({t: [origin + contract.period * k for k in range(1, contract.horizon + 1)]},
                             schema={t: contract.columns[t]})
        return got.join(steps, how="cross").select(*keys, t, "forecast")

    return _per_window(rows, contract, max_time, last)


def stats_values(history: pl.LazyFrame, contract: Contract, rows: pl.DataFrame, max_time: Any, name: str,
                 clip: bool) -> np.ndarray:
    """The statistical model's backtest forecasts of ``rows``: one fit per window on the history before its origin."""
    out = _per_window(rows, contract, max_time, lambda origin: stats_forecast(history, contract, origin, name))
    return np.clip(out, 0, None) if clip else out


def recipe(family: str, name: str | None, contract: Contract) -> dict[str, Any] | None:
    """What meta.json stores to refit a statistical (or ensemble) champion when forecasting."""
    if family == XGBOOST:
        return None
    return {"model": name, "seasons": list(seasons_of(contract)), "fit_periods": STATS_FIT_SEASONS * max(seasons_of(contract)),
            "library": "statsforecast"}


def family_of(meta: dict[str, Any] | None) -> str:
    return (meta or {}).get("family") or XGBOOST


def describe(meta: dict[str, Any] | None) -> str | None:
    """``method_detail`` of a model row: None for XGBoost, else the family and its statistical model."""
    fam = family_of(meta)
    if fam == XGBOOST:
        return None
    r = meta.get("recipe") or {}
    stats = f"{r.get('model')} (seasons {', '.join(str(s) for s in r.get('seasons', []))})"
    return f"stats: {stats}" if fam == STATS else f"ensemble: mean of xgboost and {stats}"


def serve(history: pl.LazyFrame, contract: Contract, meta: dict[str, Any], grid: pl.DataFrame, watermark: Any,
          xgb_values: np.ndarray, clip: bool) -> np.ndarray:
    """The champion's forecast of ``grid`` (keys, time): XGBoost's, the recipe refit on the newest history, or their mean."""
    fam = family_of(meta)
    if fam == XGBOOST or grid.height == 0:
        return xgb_values
    keys = [*contract.series_keys, contract.time_column]
    if not stats_installed():
        raise ImportError(f"the champion {meta.get('version')} is a statistical recipe ({describe(meta)}): "
                          "install the extra where forecasts run: pip install freshet[stats]")
    fc = stats_forecast(history, contract, watermark, meta["recipe"]["model"])
    got = grid.select(keys).join(fc, on=keys, how="left", maintain_order="left")["forecast"]
    stats = got.cast(pl.Float64).fill_null(float("nan")).to_numpy()
    stats = np.clip(stats, 0, None) if clip else stats
    return stats if fam == STATS else (stats + xgb_values) / 2


def candidates(prep: Any, rows: pl.DataFrame, settings: Any) -> tuple[dict[str, np.ndarray], dict[str, float], list[dict]]:
    """The statistical candidates' backtest forecasts of ``rows`` (NaN where one cannot forecast), their seconds,
    and the families that could not run (``{"family", "model", "reason"}``)."""
    c = prep.contract
    n_series = rows.select(c.series_keys).n_unique()
    first_origin = window_origin(c, prep.stats["max"], int(rows["window"].max())) if rows.height else prep.stats["max"]
    before = (first_origin - prep.stats["min"]) // c.period + 1 if first_origin >= prep.stats["min"] else 0
    why = stats_unavailable(c, n_series, before, settings)
    if why:
        return {}, {}, [{"family": STATS, "model": ",".join(stats_models(settings)) or None, "reason": why}]
    values, seconds = {}, {}
    for name in stats_models(settings):
        start = time.perf_counter()
        values[name] = stats_values(prep.history, c, rows, prep.stats["max"], name, prep.clip_at_zero)
        seconds[name] = round(time.perf_counter() - start, 3)
    return values, seconds, []


def choose(scored: pl.DataFrame, contract: Contract, stats: dict[str, np.ndarray], seconds: dict[str, float],
           xgb_seconds: float, coverage) -> tuple[str, str | None, np.ndarray, list[dict]]:
    """The family with the lowest pooled backtest WAPE on the same rows (ties: XGBoost), its forecasts and the table.

    A statistical forecast missing for a row (a series it cannot fit) is the row's seasonal-naive value, as the
    forecast's ladder would give. ``coverage(values)`` is the cross-fitted interval score of a column.
    """
    actual = scored[contract.target].cast(pl.Float64).to_numpy()
    ladder = scored[BASELINE].cast(pl.Float64).to_numpy() if BASELINE in scored.columns else None
    xgb_values = scored["model"].to_numpy()
    table = [(XGBOOST, None, xgb_values, xgb_seconds, 0)]
    for name, v in stats.items():
        missing = np.isnan(v)
        filled = np.where(missing, ladder, v) if ladder is not None else v
        table.append((STATS, name, filled, seconds[name], int(missing.sum())))
    if stats:
        best = min(table[1:], key=lambda r: M.metrics(actual, r[2])["wape"])
        table.append((ENSEMBLE, best[1], (xgb_values + best[2]) / 2, xgb_seconds + best[3], best[4]))
    rows = []
    for fam, name, v, secs, on_ladder in table:
        rows.append({"family": fam, "model": name, **M.metrics(actual, v), "coverage": coverage(v),
                     "seconds": round(secs, 3), "rows_on_ladder": on_ladder})
    pick = min(range(len(table)), key=lambda i: (rows[i]["wape"], i))
    fam, name, values, _, _ = table[pick]
    return fam, name, values, rows


def champion_values(prep: Any, meta: dict[str, Any], scored: pl.DataFrame,
                    computed: dict[str, np.ndarray]) -> np.ndarray:
    """The champion's backtest forecasts by its family: its booster's, its statistical recipe refit per window, or their mean."""
    fam = family_of(meta)
    booster_values = scored["champion"].to_numpy()
    if fam == XGBOOST:
        return booster_values
    name = meta["recipe"]["model"]
    values = computed.get(name)
    if values is None and not stats_installed():
        return np.full(scored.height, np.nan)  # cannot be scored: the gate fails closed and says so
    if values is None:
        values = stats_values(prep.history, prep.contract, scored, prep.stats["max"], name, prep.clip_at_zero)
    values = np.where(np.isnan(values), scored[BASELINE].cast(pl.Float64).to_numpy(), values)
    return values if fam == STATS else (values + booster_values) / 2


def better_baseline(scores: dict[str, Any]) -> tuple[dict[str, float], str]:
    """The baseline a model must beat: the better (lower pooled WAPE) of seasonal naive and naive (the last value)."""
    naive = scores.get("naive")
    if naive is not None and naive["wape"] < scores["baseline"]["wape"]:
        return naive, "naive (last value)"
    return scores["baseline"], "seasonal-naive"
