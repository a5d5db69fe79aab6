"""The changes BENCHMARKS.md proposes for flows/, runnable here so their effect is measured.

Nothing in flows/ imports this. Once a proposal is applied to flows/, the shipped
path measures the same and the matching function here can go.

- ``build_features``: ``freshet.features.build_features`` without its self-joins of a
  growing lazy plan (each lag join re-evaluated every earlier join: the cost doubled
  per lag). Same output, asserted by ``check_same_features``.
- ``lean_training_data``: load -> features -> split as lazy plans, one slice of series
  (hash partition of the series keys, about 5 M rows each) at a time, feature columns
  cast to float32 in the plan; ``lean_fit`` hands the training rows to
  ``xgboost.QuantileDMatrix`` in row chunks. No float64 copy of the whole feature
  frame and no full numpy copy of the training rows ever exist.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from freshet import features as F


def build_features(lf: pl.LazyFrame, contract) -> pl.LazyFrame:
    """Same columns and rows as ``F.build_features``; every block reads the input frame only."""
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    on = [*keys, t]
    out = lf
    for k in F.lags_for(contract):
        out = out.join(F._from_past(lf, contract, {f"lag_{k}": pl.col(y)}, k), on=on, how="left")
    unit = "d" if contract.frequency == "daily" else "h"
    ordered = lf.select(*keys, t, y).sort([*keys, t])
    stats: dict[str, pl.Expr] = {}
    for w in F.rolling_windows(contract):
        window = f"{w}{unit}"
        stats[f"roll_mean_{w}"] = pl.col(y).rolling_mean_by(t, window_size=window).over(keys)
        stats[f"roll_std_{w}"] = pl.col(y).rolling_std_by(t, window_size=window).over(keys)
        stats[f"roll_max_{w}"] = pl.col(y).rolling_max_by(t, window_size=window).over(keys)
    out = out.join(F._from_past(ordered, contract, stats, contract.horizon), on=on, how="left")
    k = F.seasonal_lag(contract)
    past = {f"{c}_lag_{k}": pl.col(c).cast(pl.Float64) for c in contract.exogenous}
    out = out.join(F._from_past(lf, contract, past, k), on=on, how="left")
    out = out.with_columns(
        (pl.col(c).cast(pl.Float64) / pl.col(f"{c}_lag_{k}")).alias(f"{c}_ratio_{k}")
        for c in contract.exogenous
        if contract.columns[c].is_numeric()
    )
    return F.add_calendar_features(out, contract).sort([*keys, t])


def check_same_features(frame: pl.DataFrame, contract) -> None:
    """Raise if the proposed features differ from the shipped ones on ``frame``."""
    from polars.testing import assert_frame_equal

    assert_frame_equal(build_features(frame.lazy(), contract).collect(), F.build_features(frame.lazy(), contract).collect())


class _Chunks:
    """Row chunks of a polars frame as float32 numpy blocks, for xgboost's DataIter."""

    def __init__(self, frame: pl.DataFrame, features: list[str], target: str, rows: int = 1_000_000) -> None:
        import xgboost as xgb

        parent = self

        class It(xgb.DataIter):
            def __init__(self) -> None:
                self.i = 0
                super().__init__()

            def next(self, input_data) -> bool:
                if self.i * rows >= parent.frame.height:
                    return False
                part = parent.frame.slice(self.i * rows, rows)
                input_data(data=part.select(features).to_numpy(), label=part[target].to_numpy(),
                           feature_names=features)
                self.i += 1
                return True

            def reset(self) -> None:
                self.i = 0

        self.frame = frame
        self.iterator = It()


def lean_training_data(data: pl.LazyFrame, contract, settings, max_time, rows: int,
                       rows_per_partition: int = 5_000_000) -> dict[str, Any]:
    """Train/valid/holdout frames with float32 feature columns, built one slice of series at a time.

    Features only look within a series, so hashing the series keys into partitions
    gives the same rows; the peak is one partition's join work plus the float32 output.
    """
    cols = F.feature_columns(contract)
    keep = [*cols, contract.target]
    partitions = max(1, -(-rows // rows_per_partition))
    parts = []
    for i in range(partitions):
        part = data if partitions == 1 else data.filter(
            pl.struct(contract.series_keys).hash(seed=0) % partitions == i)
        feats = build_features(part, contract).with_columns(pl.col(cols).cast(pl.Float32))
        train, valid, holdout = F.time_split(feats, contract, max_time, settings.holdout_periods,
                                             settings.validation_periods)
        parts.append(pl.collect_all([train.select(keep), valid.select(keep), holdout]))
    train, valid, holdout = (pl.concat([p[j] for p in parts], rechunk=False) for j in range(3))
    return {"train": train, "valid": valid, "holdout": holdout, "partitions": partitions}


def lean_fit(train: pl.DataFrame, valid: pl.DataFrame, features: list[str], target: str, params: dict,
             max_rounds: int, early_stopping_rounds: int):
    """``freshet.model.fit`` with the training matrix streamed into QuantileDMatrix in chunks."""
    import xgboost as xgb

    dtrain = xgb.QuantileDMatrix(_Chunks(train, features, target).iterator)
    dvalid = xgb.DMatrix(valid.select(features).to_numpy(), label=valid[target].to_numpy(), feature_names=features)
    return xgb.train(params, dtrain, num_boost_round=max_rounds, evals=[(dvalid, "valid")],
                     early_stopping_rounds=early_stopping_rounds, verbose_eval=False)
