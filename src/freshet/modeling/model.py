"""XGBoost fit, prediction and forecast metrics (Prefect-free, no I/O)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb


@dataclass
class FitResult:
    booster: xgb.Booster
    params: dict[str, Any]
    best_iteration: int
    rounds: int
    seconds: float
    rows: int
    history: dict[str, list[float]] = field(default_factory=dict)


XGB_OBJECTIVES = {
    "squared_error": {"objective": "reg:squarederror"},
    "absolute_error": {"objective": "reg:absoluteerror"},
    "poisson": {"objective": "count:poisson", "max_delta_step": 0.7},
    "tweedie": {"objective": "reg:tweedie", "tweedie_variance_power": 1.5},
}


def xgb_params(settings: Any, objective: str = "squared_error") -> dict[str, Any]:
    """Training parameters from settings: ``hist`` trees, the contract's objective, fixed seed."""
    params = {
        **XGB_OBJECTIVES[objective],
        "tree_method": "hist",
        "eta": settings.xgb_learning_rate,
        "max_depth": settings.xgb_max_depth,
        "min_child_weight": 5,
        "subsample": 0.9,
        "colsample_bytree": 0.9,
        "eval_metric": "mae",
        "seed": 0,
    }
    if settings.xgb_nthread:
        params["nthread"] = settings.xgb_nthread
    return params


def to_matrix(frame: pl.DataFrame, features: list[str]) -> np.ndarray:
    """A float32 matrix of the feature columns in order (nulls become NaN)."""
    return frame.select(pl.col(features).cast(pl.Float32)).to_numpy()


class _RowChunks(xgb.DataIter):
    """A polars frame as float32 row blocks for ``QuantileDMatrix`` (bounded extra memory)."""

    def __init__(self, frame: pl.DataFrame, features: list[str], target: str, rows: int = 1_000_000,
                 feature_types: list[str] | None = None) -> None:
        self.frame, self.features, self.target, self.rows, self.i = frame, features, target, rows, 0
        self.feature_types = feature_types
        super().__init__()

    def next(self, input_data) -> bool:
        if self.i * self.rows >= self.frame.height:
            return False
        part = self.frame.slice(self.i * self.rows, self.rows)
        input_data(data=to_matrix(part, self.features), label=part[self.target].to_numpy(), feature_names=self.features,
                   feature_types=self.feature_types)
        self.i += 1
        return True

    def reset(self) -> None:
        self.i = 0


def fit(train: pl.DataFrame, valid: pl.DataFrame | None, features: list[str], target: str, params: dict[str, Any],
        max_rounds: int, early_stopping_rounds: int | None, feature_types: list[str] | None = None,
        init: xgb.Booster | None = None) -> FitResult:
    """Fit with early stopping on the validation frame; ``valid=None`` fits exactly ``max_rounds`` (a refit).

    ``feature_types`` marks category columns ``c`` (XGBoost's native categorical splits); ``init`` is a
    booster to continue (its trees kept, ``max_rounds`` more added).
    """
    start = time.perf_counter()
    cat = bool(feature_types and "c" in feature_types)
    # Streamed in row chunks: QuantileDMatrix keeps only its quantised copy, never a full float matrix.
    dtrain = xgb.QuantileDMatrix(_RowChunks(train, features, target, feature_types=feature_types),
                                 enable_categorical=cat)
    evals = []
    if valid is not None:
        dvalid = xgb.DMatrix(to_matrix(valid, features), label=valid[target].to_numpy(), feature_names=features,
                             feature_types=feature_types, enable_categorical=cat)
        evals = [(dvalid, "valid")]
    history: dict[str, dict[str, list[float]]] = {}
    booster = xgb.train(
        params,
        dtrain,
        num_boost_round=max_rounds,
        evals=evals,
        early_stopping_rounds=early_stopping_rounds if valid is not None else None,
        evals_result=history,
        verbose_eval=False,
        xgb_model=init,
    )
    return FitResult(
        booster=booster,
        params=params,
        best_iteration=int(booster.best_iteration) if valid is not None else int(booster.num_boosted_rounds()) - 1,
        rounds=int(booster.num_boosted_rounds()),
        seconds=time.perf_counter() - start,
        rows=train.height,
        history={k: v for k, v in history.get("valid", {}).items()},
    )


def predict(booster: xgb.Booster, frame: pl.DataFrame, features: list[str], clip: bool = True,
            feature_types: list[str] | None = None) -> np.ndarray:
    """Predictions of the best iteration, clipped at zero unless ``clip=False`` (raw booster output)."""
    cat = bool(feature_types and "c" in feature_types)
    dm = xgb.DMatrix(to_matrix(frame, features), feature_names=features, feature_types=feature_types,
                     enable_categorical=cat)
    best = getattr(booster, "best_iteration", None)
    rng = (0, best + 1) if best is not None else (0, 0)
    out = booster.predict(dm, iteration_range=rng)
    return np.clip(out, 0, None) if clip else out


def metrics(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and WAPE (sum of absolute errors over sum of absolute actuals)."""
    actual = np.asarray(actual, dtype=np.float64)
    forecast = np.asarray(forecast, dtype=np.float64)
    err = forecast - actual
    denom = float(np.abs(actual).sum())
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "wape": float(np.abs(err).sum() / denom) if denom else float("nan"),
        "rows": int(actual.size),
    }


def decide(new: dict[str, float], champion: dict[str, float] | None, baseline: dict[str, float], min_improvement: float,
           baseline_name: str = "seasonal-naive") -> tuple[bool, str]:
    """Promote only if the new model beats the baseline and the champion (``baseline_name`` names the baseline)."""
    if not new["wape"] < baseline["wape"]:
        return False, f"WAPE {new['wape']:.4f} does not beat the {baseline_name} baseline {baseline['wape']:.4f}"
    if champion is None:
        return True, f"first model; WAPE {new['wape']:.4f} beats the {baseline_name} baseline {baseline['wape']:.4f}"
    bar = champion["wape"] * (1 - min_improvement)
    if new["wape"] < bar:
        if new["wape"] >= champion["wape"]:
            return True, (f"WAPE {new['wape']:.4f} is within the tolerance of the champion {champion['wape']:.4f} "
                          f"(bar {bar:.4f}); the fresher model wins")
        return True, f"WAPE {new['wape']:.4f} beats the champion {champion['wape']:.4f}"
    return False, f"WAPE {new['wape']:.4f} does not beat the champion {champion['wape']:.4f} (bar {bar:.4f})"
