"""Live accuracy (Prefect-free, pure polars): published forecasts scored against the actuals that landed later.

``in_hand`` picks, for every series and period, the forecast a user had in hand when
the period began (the latest issued before it); ``score`` joins those to the actuals
(one row per scored series x period, with its horizon step, model version and
interval); ``summarize`` pools scored rows into WAPE, MAE, bias and interval coverage
by any grouping; ``drift`` compares the champion's live WAPE over the contract's
``drift_window`` with its backtest WAPE (``drift_tolerance``). The ``ingest`` flow
(through ``modeling.live``) and the policy lab both score with these functions.
Reads no settings.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import polars as pl

from freshet.data.contracts import Contract
from freshet.modeling.intervals import quantile_column

ISSUED = "__issued"
# One scored row: the series keys and time, then these (``lo``/``hi``: the outermost quantiles, null without them).
SCORED = {"actual": pl.Float64, "forecast": pl.Float64, "lo": pl.Float64, "hi": pl.Float64, "step": pl.Int32,
          "model_version": pl.String, "method": pl.String, "forecast_id": pl.String, "data_watermark": pl.String}


def in_hand(forecasts: pl.DataFrame, keys: list[str], time_column: str, issued: pl.Expr,
            begins: pl.Expr | None = None, order: str | None = None) -> pl.DataFrame:
    """Per (series, period): the forecast row issued last at or before the period began (``issued <= begins``;
    ``begins`` defaults to the period's time). Ties on ``issued`` go to the later ``order`` (an issue time)."""
    begins = pl.col(time_column) if begins is None else begins
    sort_by = [ISSUED, order] if order else [ISSUED]
    return (forecasts.with_columns(issued.alias(ISSUED)).filter(pl.col(ISSUED) <= begins)
            .sort(sort_by).group_by([*keys, time_column], maintain_order=True).last().drop(ISSUED))


def _watermark(contract: Contract) -> pl.Expr:
    """The forecast's ``data_watermark`` (text, as published) in the time column's type."""
    text = pl.col("data_watermark").cast(pl.String)
    return text.str.to_datetime(time_unit="us") if contract.is_datetime else text.str.to_date()


def _issued_in_data_time(contract: Contract) -> pl.Expr:
    """A published forecast counts as issued when the period after its data watermark begins: then, in data
    time, a user had it in hand. (Wall-clock issue times cannot judge a replayed or back-filled history.)"""
    return _watermark(contract) + contract.period


def score(actuals: pl.DataFrame, forecasts: pl.DataFrame, contract: Contract) -> tuple[pl.DataFrame, int]:
    """The in-hand forecast of every actual row it covers, and the count of actual rows after the first forecast's
    watermark that no forecast covered (ignored: a series or period never forecast).

    ``forecasts``: rows of published forecast files (keys, time, ``forecast``, quantile columns, ``method``,
    ``model_version``, ``data_watermark``, ``issued_at``) plus ``forecast_id``.
    """
    c, t = contract, contract.time_column
    keys = list(c.series_keys)
    out_schema = {**{k: c.columns[k] for k in (*keys, t)}, **SCORED}
    if not forecasts.height or not actuals.height:
        return pl.DataFrame(schema=out_schema), 0
    lo, hi = (quantile_column(min(c.quantiles)), quantile_column(max(c.quantiles)))
    has_interval = lo in forecasts.columns and hi in forecasts.columns and lo != hi
    hand = in_hand(forecasts, keys, t, _issued_in_data_time(c), order="issued_at")
    step = ((pl.col(t).cast(pl.Datetime("us")) - _watermark(c).cast(pl.Datetime("us")))
            / pl.lit(c.period)).round().cast(pl.Int32)
    hand = hand.select(
        *keys, t, pl.col("forecast").cast(pl.Float64),
        (pl.col(lo) if has_interval else pl.lit(None)).cast(pl.Float64).alias("lo"),
        (pl.col(hi) if has_interval else pl.lit(None)).cast(pl.Float64).alias("hi"),
        step.alias("step"), *(pl.col(n).cast(pl.String) for n in ("model_version", "method", "forecast_id",
                                                                   "data_watermark")))
    first = forecasts.select(_watermark(c).min()).item()
    observed = actuals.filter(pl.col(t) > first).select(*keys, t, pl.col(c.target).cast(pl.Float64).alias("actual"))
    scored = observed.join(hand, on=[*keys, t], how="inner").sort([t, *keys]).select(list(out_schema))
    return scored.cast(out_schema), observed.height - scored.height


def _measures() -> list[pl.Expr]:
    err, denom = pl.col("forecast") - pl.col("actual"), pl.col("actual").abs().sum()
    inside = (pl.col("actual") >= pl.col("lo")) & (pl.col("actual") <= pl.col("hi"))
    return [pl.len().alias("rows"),
            pl.when(denom > 0).then(err.abs().sum() / denom).alias("wape"),
            err.abs().mean().alias("mae"),
            pl.when(denom > 0).then(err.sum() / denom).alias("bias"),  # signed, as a share of the actuals
            inside.filter(pl.col("lo").is_not_null()).mean().alias("coverage")]


def summarize(scored: pl.DataFrame, by: list[str] | None = None) -> pl.DataFrame:
    """Rows, WAPE, MAE, bias (signed error over the actuals) and interval coverage, pooled per ``by`` group."""
    if not by:
        return scored.select(_measures())
    return scored.group_by(by, maintain_order=True).agg(_measures()).sort(by)


def over_time(scored: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """Per scored period: its WAPE pooled over the trailing ``drift_window`` of periods, and the model that made
    most of its forecasts (what the live accuracy chart draws)."""
    t = contract.time_column
    per = (scored.group_by(t).agg((pl.col("forecast") - pl.col("actual")).abs().sum().alias("err"),
                                  pl.col("actual").abs().sum().alias("act"),
                                  pl.col("model_version").mode().first().alias("model_version")).sort(t))
    w = contract.drift_window_periods
    return per.with_columns(
        (pl.col("err").rolling_sum(w, min_samples=1) / pl.col("act").rolling_sum(w, min_samples=1)).alias("wape"),
    ).select(t, "wape", "model_version")


@dataclass(frozen=True)
class Drift:
    """The champion's live accuracy against its backtest (``degraded``: worse by more than the tolerance)."""

    champion: str | None
    backtest_wape: float | None
    live_wape: float | None
    rows: int
    window_start: str | None
    window_end: str | None
    window_periods: int
    tolerance: float
    degraded: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        if self.live_wape is None or self.backtest_wape is None:
            return f"no drift verdict: no forecast by the champion {self.champion or '(none)'} scored yet"
        verdict = "DEGRADED" if self.degraded else "within tolerance"
        return (f"{verdict}: champion {self.champion} live WAPE {self.live_wape:.3f} on {self.rows} rows of "
                f"{self.window_start} .. {self.window_end} vs backtest WAPE {self.backtest_wape:.3f} "
                f"(tolerance +{100 * self.tolerance:.0f}%: limit {self.backtest_wape * (1 + self.tolerance):.3f})")


def drift(scored: pl.DataFrame, contract: Contract, champion: str | None, backtest_wape: float | None) -> Drift:
    """Live WAPE of ``champion``'s forecasts over the newest ``drift_window`` of scored periods against its
    ``backtest_wape``: degraded when worse than ``backtest_wape * (1 + drift_tolerance)``."""
    t, w = contract.time_column, contract.drift_window_periods
    mine = scored.filter(pl.col("model_version") == champion) if champion else scored.clear()
    if not mine.height:
        return Drift(champion, backtest_wape, None, 0, None, None, w, contract.drift_tolerance, False)
    end = mine[t].max()
    window = mine.filter(pl.col(t) > end - contract.period * w)
    live = summarize(window).row(0, named=True)
    bad = backtest_wape is not None and live["wape"] is not None and live["wape"] > backtest_wape * (1 + contract.drift_tolerance)
    return Drift(champion, backtest_wape, live["wape"], live["rows"], str(window[t].min()), str(end), w,
                 contract.drift_tolerance, bool(bad))


def worst_series(scored: pl.DataFrame, contract: Contract, n: int = 10) -> pl.DataFrame:
    """The ``n`` series with the largest absolute error over every scored period (where the error is)."""
    keys = list(contract.series_keys)
    return summarize(scored, keys).with_columns(
        (pl.col("mae") * pl.col("rows")).alias("abs_error")).sort("abs_error", descending=True).head(n)
