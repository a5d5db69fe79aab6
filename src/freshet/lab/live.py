"""The policy lab's live accuracy (Prefect-free): the forecast in hand for each period, and drift, scored with
the product's own code (``freshet.modeling.scoring``) on the replay's simulated clock.

``in_hand_frame`` picks, for every actual row, the latest forecast published before its period began
(``scoring.in_hand`` with the publication time as the issue time); ``in_hand`` is its arrays for the
report; ``degraded`` answers, at one moment of the replay, whether ``model.degraded`` would fire: the
champion's live WAPE over the contract's ``drift_window`` against its backtest WAPE (``scoring.drift``).
Reads no settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl

from freshet.data.contracts import Contract
from freshet.modeling import scoring as S

if TYPE_CHECKING:
    from freshet.lab.engine import Fit, Published

NAIVE_MODEL = "seasonal naive"


def model_label(model: frozenset[str] | None) -> str:
    """A stable name within one replay for the model a forecast used (its training data state)."""
    return NAIVE_MODEL if model is None else f"model-{len(model)}-{hash(model) & 0xFFFFFFFF:08x}"


def in_hand_frame(published: Sequence[Published], actuals: pl.DataFrame, contract: Contract, after: Any) -> tuple[pl.DataFrame, int]:
    """Every actual row after ``after`` (the history's newest time) with the forecast in hand when its period began
    (the latest published at or before then), as ``scoring.score`` lays it out; and the number of actual rows."""
    c, keys, t = contract, [*contract.series_keys], contract.time_column
    rows = actuals.filter(pl.col(t) > after) if after is not None else actuals
    rows = rows.select(*keys, t, pl.col(c.target).cast(pl.Float64).alias("actual"))
    frames = [p.forecast.frame.select(*keys, t, pl.col("forecast").cast(pl.Float64)).with_columns(
                  pl.lit(p.published_at).alias("published_at"), pl.lit(model_label(p.forecast.model)).alias("model_version"))
              for p in published if p.forecast.frame.height]
    empty = rows.clear().with_columns(pl.lit(None, pl.Float64).alias("forecast"), pl.lit(None, pl.String).alias("model_version"))
    if not frames or not rows.height:
        return empty.with_columns(pl.lit(None, pl.Float64).alias("lo"), pl.lit(None, pl.Float64).alias("hi")), rows.height
    begins = pl.col(t).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    hand = S.in_hand(pl.concat(frames), keys, t, issued=pl.col("published_at"), begins=begins)
    scored = rows.join(hand.drop("published_at"), on=[*keys, t], how="inner")
    return scored.with_columns(pl.lit(None, pl.Float64).alias("lo"), pl.lit(None, pl.Float64).alias("hi")), rows.height


def in_hand(published: Sequence[Published], actuals: pl.DataFrame, contract: Contract,
            after: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """``in_hand_frame`` as (actual, forecast) arrays of the covered rows, the number covered and the number of rows."""
    scored, total = in_hand_frame(published, actuals, contract, after)
    return scored["actual"].to_numpy(), scored["forecast"].to_numpy(), scored.height, total


def degraded(published: Sequence[Published], actuals: pl.DataFrame, contract: Contract, after: Any,
             champion: Fit | None) -> bool:
    """Whether ``model.degraded`` fires on these actuals: the champion's in-hand forecasts over the newest
    ``drift_window`` are worse than its backtest WAPE by more than ``drift_tolerance`` (never without a champion)."""
    if champion is None or not champion.scores:
        return False
    scored, _ = in_hand_frame(published, actuals, contract, after)
    return S.drift(scored, contract, model_label(champion.batches), champion.scores["model"]["wape"]).degraded
