"""The training decision, Prefect-free: features, candidate fits, rolling-origin backtest, refit, promotion.

``train_model`` is what the ``train`` flow runs (its steps wrapped in tasks) and what
the policy lab replays as "the shipped decision rule". Steps, in order:

1. ``prepare``: the feature spec fitted to the history (yearly-position features only
   on two years or more, categories seen in the data), and train / validation /
   backtest frames. The backtest is the newest ``holdout`` periods, cut into windows
   of ``horizon`` periods (4 by default); validation is the span just before it. Every
   row is forecast from the origin just before its window (``freshet.modeling.origins``).
2. ``fit_candidates``: one XGBoost fit per target transform candidate (``none``,
   ``seasonal_difference``, ``level_scale``, or the one the contract pins), early
   stopping on validation; the transform with the lowest validation WAPE wins. The
   backtest windows play no part in this choice, so their score is not selected on.
   Above ``xgb_max_train_rows`` the fit trains on a seeded sample of the training span
   (``capped``): at 1 M rows it halves the fit for +0.5% backtest WAPE (BENCHMARKS.md, issue 21).
3. ``backtest``: the chosen model, the champion, seasonal naive and naive (the last value
   at the origin) scored on every window (rolling forecast origins, one fit: a row's
   features read no target after its window's origin, so each window is forecast from
   the data before it, as served). On the same rows the model families compete
   (``freshet.modeling.families``: the statistical family refit per window, the ensemble);
   the lowest pooled WAPE becomes the model.
4. ``refit``: the serving model is the evaluated one continued on the rows it never
   trained on (validation and backtest), for the extra rounds those rows are worth:
   one full fit per training instead of two (issue 21; ``REFIT``).
5. ``decide``: promote if the pooled backtest WAPE beats the better of seasonal naive and
   naive, and the champion by ``min_improvement`` (see ``model.decide``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Callable

import numpy as np
import polars as pl
import xgboost as xgb

from freshet.data.contracts import Contract
from freshet.modeling import families as FAM
from freshet.modeling import features as F
from freshet.modeling import intervals as I
from freshet.modeling import model as M
from freshet.modeling import origins as O
from freshet.modeling.forecast import lookback_periods, model_frame, predict_target, spec_of
from freshet.settings import Settings

CANDIDATE_TRANSFORMS = ("none", "seasonal_difference", "level_scale")
# The serving model: "continue" the evaluated model on the rows it never trained on, "continue_all" on every row,
# "full" refit, "no" refit (chosen on development windows by benchmarks/origins.py; see ``refit``).
REFIT = "continue"


class NotEnoughHistoryError(ValueError):
    """Too few periods to hold out a backtest and a validation span and still train."""


@dataclass
class Prepared:
    """The history cut for training: spec, frames and sizes (``train``/``valid``/``backtest`` untransformed)."""

    contract: Contract
    spec: F.FeatureSpec
    train: pl.DataFrame
    valid: pl.DataFrame
    backtest: pl.DataFrame
    stats: dict[str, Any]
    holdout_periods: int
    validation_periods: int
    clip_at_zero: bool
    history: pl.LazyFrame


@dataclass
class Candidate:
    transform: str
    objective: str
    fit: M.FitResult
    spec: F.FeatureSpec
    validation: dict[str, float]


@dataclass
class TrainingResult:
    """What ``train_model`` returns: the serving model, its meta.json fields, the backtest and the decision."""

    booster: xgb.Booster              # the refit model, for serving
    meta: dict[str, Any]              # model fields of meta.json (the flow adds lineage and run ids)
    scores: dict[str, Any]            # pooled backtest metrics: {"model", "champion" (or None), "baseline"}
    windows: list[dict[str, Any]]     # per window: start, end, and the three metrics
    promote: bool
    reason: str
    eval_booster: xgb.Booster | None = None  # the model the backtest scored (trained without the backtest rows)
    champion_note: str | None = None  # why the champion could not be scored (the gate then failed closed)
    timings: dict[str, float] = field(default_factory=dict)


def _frame_stats(lf: pl.LazyFrame, contract: Contract) -> dict[str, Any]:
    t, y = pl.col(contract.time_column), pl.col(contract.target)
    got = lf.select(pl.len().alias("rows"), t.min().alias("min"), t.max().alias("max"),
                    y.min().alias("target_min")).collect()
    return got.row(0, named=True)


def prepare(history: pl.LazyFrame | pl.DataFrame, contract: Contract, settings: Any,
            stats: dict[str, Any] | None = None) -> Prepared:
    """Spec and train / validation / backtest frames; raises ``NotEnoughHistoryError`` with advice."""
    lf = history.lazy()
    stats = {**_frame_stats(lf, contract), **(stats or {})}
    if "target_min" not in stats:
        stats["target_min"] = _frame_stats(lf, contract)["target_min"]
    hold, valid = F.evaluation_periods(contract, settings)
    if stats["rows"] == 0:
        raise NotEnoughHistoryError(f"{contract.name}: no rows to train on")
    period = contract.period
    train_end = stats["max"] - period * (hold + valid)
    span = train_end - stats["min"] if train_end > stats["min"] else timedelta(0)
    categories = F.fit_categories(lf, contract)
    spec = F.default_spec(contract, span=span, categories=categories)
    partitions = max(1, -(-stats["rows"] // F.ROWS_PER_FEATURE_SLICE))
    train, valid_f, back = F.training_frames(lf, contract, stats["max"], hold, valid, partitions=partitions, spec=spec,
                                             steps_per_row=O.TRAIN_STEPS_PER_ROW, spread_every=O.VALIDATION_EVERY)
    if min(train.height, valid_f.height, back.height) == 0:
        raise NotEnoughHistoryError(
            f"{contract.name}: not enough history to train: {stats['rows']} rows from {stats['min']} to "
            f"{stats['max']}; need more than {hold + valid} periods of {contract.frequency} (the backtest "
            f"{hold} + validation {valid}: the contract's 'holdout' and 'validation', or FRESHET_HOLDOUT_PERIODS "
            "and FRESHET_VALIDATION_PERIODS)"
        )
    target_min = stats.get("target_min")
    return Prepared(contract, spec, train, valid_f, back, stats, hold, valid,
                    clip_at_zero=target_min is None or target_min >= 0, history=lf)


def _transformed(frame: pl.DataFrame, contract: Contract, spec: F.FeatureSpec) -> pl.DataFrame:
    """An untransformed feature frame under ``spec.transform`` (REF as float32, like features)."""
    if spec.transform == "none":
        return frame
    out = F.add_transform(frame.lazy(), contract, spec).with_columns(pl.col(F.REF).cast(pl.Float32)).collect()
    F.check_finite(out, [F.REF, F.TARGET])
    return out


def candidate_transforms(contract: Contract) -> tuple[str, ...]:
    return CANDIDATE_TRANSFORMS if contract.target_transform == "auto" else (contract.target_transform,)


def _objective_for(contract: Contract, transform: str, target_min: float | None) -> str:
    """The contract's objective where it is defined; squared error where labels can be negative."""
    if contract.objective in ("poisson", "tweedie") and (
            transform == "seasonal_difference" or (target_min is not None and target_min < 0)):
        return "squared_error"
    return contract.objective


def fit_candidates(prep: Prepared, settings: Any) -> tuple[Candidate, list[Candidate]]:
    """One early-stopped fit per transform candidate; the lowest validation WAPE (target units) wins."""
    c = prep.contract
    done: list[Candidate] = []
    for transform in candidate_transforms(c):
        if transform == "level_scale" and not prep.spec.windows:
            continue  # its level is the newest season's rolling mean
        spec = prep.spec.with_transform(transform)
        cols, types = F.feature_columns(c, spec), F.feature_types(spec, c)
        train = _transformed(prep.train, c, spec).filter(pl.col(F.TARGET).is_not_null() & pl.col(F.TARGET).is_not_nan())
        train = capped(train, settings.xgb_max_train_rows)
        valid = _transformed(prep.valid, c, spec).filter(pl.col(F.TARGET).is_not_null() & pl.col(F.TARGET).is_not_nan())
        if train.height == 0 or valid.height == 0:
            continue
        objective = _objective_for(c, transform, prep.stats.get("target_min"))
        fitted = M.fit(train, valid, cols, F.TARGET, M.xgb_params(settings, objective), settings.xgb_max_rounds,
                       settings.xgb_early_stopping_rounds, feature_types=types)
        pred = predict_target(fitted.booster, valid, c, spec, clip=prep.clip_at_zero)
        ok = ~np.isnan(pred)
        score = M.metrics(valid[c.target].to_numpy()[ok], pred[ok])
        done.append(Candidate(transform, objective, fitted, spec, score))
    if not done:
        raise NotEnoughHistoryError(f"{c.name}: no transform candidate had rows to train and validate on")
    best = min(done, key=lambda x: (math.inf if math.isnan(x.validation["wape"]) else x.validation["wape"]))
    return best, done


def capped(train: pl.DataFrame, max_rows: int) -> pl.DataFrame:
    """At most ``max_rows`` rows (0: all), a seeded uniform sample over the whole span, so every season stays."""
    if not max_rows or train.height <= max_rows:
        return train
    return train.sample(max_rows, seed=0)


def _window_index(contract: Contract, max_time) -> pl.Expr:
    """0 for the newest ``horizon`` periods, 1 for the ones before, ..."""
    span_us = (contract.period * contract.horizon) // timedelta(microseconds=1)
    age = (pl.lit(max_time) - pl.col(contract.time_column)).dt.total_microseconds()
    return (age // span_us).cast(pl.Int64)


def champion_predictions(prep: Prepared, champion: tuple[xgb.Booster, dict[str, Any]] | None,
                         rows: pl.DataFrame) -> tuple[np.ndarray | None, str | None]:
    """The champion's forecasts of ``rows`` (keys and times), from features of its own spec; None with a reason if impossible."""
    if champion is None:
        return None, None
    booster, meta = champion
    c = prep.contract
    if not meta.get("feature_spec"):
        return None, f"champion {meta.get('version')} predates feature specs"
    spec = spec_of(meta, c)
    t = c.time_column
    first = rows[t].min()
    start = first - c.period * lookback_periods(c, spec)
    keys = [*c.series_keys, t]
    source = prep.history.filter(pl.col(t) >= start)
    try:  # from the same origins as the new model (a champion older than origins reads from t - horizon)
        frame = model_frame(source, c, spec, rows=source.join(rows.select(*keys, O.ORIGIN).lazy(), on=keys)).collect()
    except (pl.exceptions.PolarsError, ValueError, KeyError) as exc:
        return None, f"champion {meta.get('version')} cannot be scored on this data ({exc})"
    frame = rows.select(keys).join(frame.drop(O.ORIGIN), on=keys, how="left", maintain_order="left")
    return predict_target(booster, frame, c, spec, clip=bool(meta.get("clip_at_zero", True))), None


def backtest(prep: Prepared, chosen: Candidate, champion: tuple[xgb.Booster, dict[str, Any]] | None,
             settings: Any = None) -> tuple[dict, list, str | None]:
    """Pooled and per-window metrics of the chosen family, the champion, seasonal naive and naive on the same rows.

    Rows are scored where the seasonal-naive value exists (the first season of a series has none). The model
    families (``freshet.modeling.families``: XGBoost, statistical, ensemble) compete on these rows; the lowest
    pooled WAPE is "model", and ``scores["families"]`` records every candidate and every family that could not run.
    """
    c = prep.contract
    rows = _transformed(prep.backtest, c, chosen.spec)
    rows = rows.filter(pl.col(F.BASELINE).is_not_null() & pl.col(F.BASELINE).is_not_nan())
    model = predict_target(chosen.fit.booster, rows, c, chosen.spec, clip=prep.clip_at_zero)
    champ, note = champion_predictions(prep, champion, rows)
    unseen = pl.lit(True)
    if champ is not None and FAM.family_of(champion[1]) != FAM.STATS:
        # the champion was refit on rows up to its watermark: it is scored only on rows it never saw
        mark = _watermark(champion[1], c)
        if mark is not None:
            unseen = pl.col(c.time_column) > pl.lit(mark, dtype=c.columns[c.time_column])
    scored = rows.select(*c.series_keys, c.time_column, c.target, F.BASELINE).with_columns(
        pl.Series("model", model, dtype=pl.Float64),
        pl.Series("champion", champ if champ is not None else np.full(rows.height, np.nan), dtype=pl.Float64),
        _window_index(c, prep.stats["max"]).alias("window"),
        unseen.alias("unseen"),
    )
    # a row without a model forecast (its transform reference is missing) is scored for nobody
    scored = scored.filter(pl.col("model").is_not_nan())
    # --- model families (freshet.modeling.families): the statistical candidates and the naive baseline, same rows
    settings = settings if settings is not None else Settings()
    stats_values, stats_seconds, unavailable = FAM.candidates(prep, scored, settings)
    scored = scored.with_columns(pl.Series(FAM.NAIVE, FAM.naive_values(prep.history, c, scored, prep.stats["max"]),
                                           dtype=pl.Float64)).with_columns(
        pl.col(FAM.NAIVE).fill_nan(None).fill_null(pl.col(F.BASELINE).cast(pl.Float64)))
    if champ is not None:
        scored = scored.with_columns(pl.Series("champion", FAM.champion_values(prep, champion[1], scored, stats_values),
                                               dtype=pl.Float64))
    scale = _validation_scale(prep)

    def bands(values: np.ndarray, family: tuple[str, str | None] | None) -> tuple[dict, dict[int, dict], dict | None]:
        return calibrate(prep, chosen, scored.with_columns(pl.Series("model", values, dtype=pl.Float64)), scale, family)

    fam, name, values, table = FAM.choose(scored, c, stats_values, stats_seconds, chosen.fit.seconds,
                                          lambda v: bands(v, None)[0].get("coverage"))
    scored = scored.with_columns(pl.Series("model", values, dtype=pl.Float64))
    families = {"chosen": {"family": fam, "model": name}, "candidates": table, "unavailable": unavailable,
                "recipe": FAM.recipe(fam, name, c)}
    # --- end model families
    if champ is not None and scored.filter("unseen")["champion"].is_nan().any():
        note = "the champion could not forecast every backtest row"
        champ = None
    if champ is not None and not scored["unseen"].any():
        note = "the champion was trained on every backtest row"
        champ = None

    def three(part: pl.DataFrame) -> dict[str, Any]:
        actual = part[c.target].to_numpy()
        fresh = part.filter("unseen")
        out = {
            "model": M.metrics(actual, part["model"].to_numpy()),
            "champion": None,
            "baseline": M.metrics(actual, part[F.BASELINE].cast(pl.Float64).to_numpy()),
            "naive": M.metrics(actual, part[FAM.NAIVE].to_numpy()),
        }
        if champ is not None and fresh.height:
            out["champion"] = M.metrics(fresh[c.target].to_numpy(), fresh["champion"].to_numpy())
            # the new model on exactly the champion's rows, for a like-for-like comparison
            out["model_on_champion_rows"] = M.metrics(fresh[c.target].to_numpy(), fresh["model"].to_numpy())
        return out

    pooled_band, band_by_window, table = bands(values, (fam, name))
    windows = []
    for (w,), part in sorted(scored.group_by("window"), key=lambda kv: -kv[0][0]):
        windows.append({"window": int(w), "start": str(part[c.time_column].min()), "end": str(part[c.time_column].max()),
                        **three(part), "intervals": band_by_window.get(int(w))})
    return ({**three(scored), "intervals": {"quantiles": list(c.quantiles), **pooled_band, "table": table},
             "families": families}, windows, note)


def _validation_scale(prep: Prepared) -> pl.DataFrame | None:
    """Each series' scale from the validation span just before the backtest (no backtest row sets a scale)."""
    c = prep.contract
    before = prep.valid[c.time_column].max() if prep.valid.height else None
    if before is None:
        return None
    return I.series_scale(prep.valid.select(*c.series_keys, c.time_column, c.target), c, before).collect()


def calibrate(prep: Prepared, chosen: Candidate, scored: pl.DataFrame, scale: pl.DataFrame | None,
              family: tuple[str, str | None] | None = (FAM.XGBOOST, None)) -> tuple[dict, dict[int, dict], dict | None]:
    """Prediction intervals from the evaluated model's residuals, scaled per series by its level before the backtest.

    The residuals are the backtest's rows and, with ``family`` (the chosen family and statistical model), the
    validation span's, forecast as that family would (``_validation_forecasts``): four backtest windows alone are
    a few days of correlated errors. ``family`` None: the backtest alone (the families' comparison). Returns the
    cross-fitted scores (pooled, per window) and the serving table (see ``freshet.modeling.intervals``).
    """
    c = prep.contract
    if scale is None or scored.height == 0:
        return I.score(np.zeros(0), np.zeros((0, 0)), c.quantiles), {}, None
    keys = list(c.series_keys)
    got = scored.join(scale, on=keys, how="left", maintain_order="left")
    extra = None
    if family is not None:
        valid = _transformed(prep.valid, c, chosen.spec)
        valid = valid.with_columns(pl.Series("__pred", _validation_forecasts(prep, chosen, valid, *family),
                                             dtype=pl.Float64)).join(scale, on=keys, how="left", maintain_order="left")
        extra = (valid[c.target].cast(pl.Float64).to_numpy(), valid["__pred"].to_numpy(), valid[I.SCALE].to_numpy())
    return I.cross_fitted(got[c.target].cast(pl.Float64).to_numpy(), got["model"].to_numpy(),
                          got[I.SCALE].to_numpy(), got["window"].to_numpy(), c.quantiles, prep.clip_at_zero, extra=extra)


def _validation_forecasts(prep: Prepared, chosen: Candidate, valid: pl.DataFrame, family: str,
                          name: str | None) -> np.ndarray:
    """The validation rows forecast by ``family``: the evaluated booster (which never trained on them; they only
    stopped its rounds), the statistical model refit at each horizon-long window's origin, or their mean."""
    c = prep.contract
    booster = None if family == FAM.STATS else predict_target(chosen.fit.booster, valid, c, chosen.spec,
                                                               clip=prep.clip_at_zero)
    if family == FAM.XGBOOST:
        return booster
    rows = valid.select(*c.series_keys, c.time_column).with_columns(_window_index(c, prep.stats["max"]).alias("window"))
    stats = FAM.stats_values(prep.history, c, rows, prep.stats["max"], name, prep.clip_at_zero)
    return stats if booster is None else (booster + stats) / 2


def _watermark(meta: dict[str, Any], contract: Contract):
    raw = meta.get("data_watermark") or (meta.get("data_range") or {}).get("end")
    if not raw:
        return None
    from datetime import date, datetime

    return date.fromisoformat(raw[:10]) if contract.columns[contract.time_column] == pl.Date() else datetime.fromisoformat(raw)


def decide(scores: dict[str, Any], min_improvement: float, champion_note: str | None = None) -> tuple[bool, str]:
    """Promote if the pooled backtest WAPE beats seasonal naive and, on the rows the champion never saw, the champion.

    A refit that beats the serving champion on those rows replaces it even when it misses the baseline: the
    champion would keep serving, and it did worse on the same rows (on the accuracy benchmark's development
    windows this changed only gasoline's refits, 0.0225 -> 0.0214 WAPE; BENCHMARKS.md, issue 21).
    ``champion_note`` is ``backtest``'s reason why a champion exists but could not be scored:
    the gate then fails closed (a model that beats only the baseline could be worse than the
    champion it would replace).
    """
    base, base_name = FAM.better_baseline(scores)
    ok, reason = M.decide(scores["model"], None, base, min_improvement, base_name)
    if champion_note:
        return False, (f"not promoted: {champion_note}, so the new model could not be compared with it "
                       f"(against the {base_name} baseline: {reason}); it is registered: compare the two models' "
                       "meta.json and, if the new one is better, promote it with freshet.modeling.registry.promote")
    if scores.get("champion") is None:
        return ok, reason
    won, vs = M.decide(scores["model_on_champion_rows"], scores["champion"], {"wape": math.inf}, min_improvement)
    where = f"on the {scores['champion']['rows']} backtest rows newer than the champion's data"
    if not ok:
        return (True, f"{vs} {where}, which it replaces (though its {reason})") if won else (ok, reason)
    return won, f"{vs} {where}; {reason.split('; ', 1)[-1]}"


def refit(prep: Prepared, chosen: Candidate, settings: Any) -> M.FitResult:
    """The serving model, one that has seen the newest rows (``REFIT``).

    ``continue``: the evaluated model's best rounds, continued on the rows it never trained on
    (validation and backtest) for the extra rounds those rows are worth (``refit_rounds``);
    ``continue_all``: the same extra rounds on every row; ``full``: a new fit on every row with the rounds
    scaled by rows; ``no``: the evaluated model. Measured in BENCHMARKS.md (issue 21).
    """
    c, spec = prep.contract, chosen.spec
    usable = pl.col(F.TARGET).is_not_null() & pl.col(F.TARGET).is_not_nan()
    cols, types, best = F.feature_columns(c, spec), F.feature_types(spec, c), chosen.fit.best_iteration + 1
    newer = pl.concat([_transformed(f, c, spec) for f in (prep.valid, prep.backtest)],
                      how="vertical_relaxed").filter(usable)
    rounds = refit_rounds(best, chosen.fit.rows, chosen.fit.rows + newer.height, settings.xgb_max_rounds)
    if REFIT in ("full", "continue_all"):
        newer = pl.concat([_transformed(prep.train, c, spec).filter(usable), newer], how="vertical_relaxed")
    if REFIT == "full":
        return M.fit(newer, None, cols, F.TARGET, chosen.fit.params, rounds, None, feature_types=types)
    base = chosen.fit.booster[:best]
    if REFIT == "no" or rounds <= best or newer.height == 0:
        return M.FitResult(base, chosen.fit.params, best - 1, best, 0.0, 0)
    return M.fit(newer, None, cols, F.TARGET, chosen.fit.params, rounds - best, None, feature_types=types, init=base)


def refit_rounds(best_rounds: int, train_rows: int, all_rows: int, max_rounds: int) -> int:
    """The evaluation's best rounds scaled by the extra rows (at most 1.5 times, at most ``max_rounds``)."""
    scale = min(1.5, all_rows / train_rows) if train_rows else 1.0
    return max(1, min(max_rounds, round(best_rounds * scale)))


class Steps:
    """Runs the named steps of one training in order, timing each (``timings``).

    ``wrap(name, fn)`` returns what runs a step: the ``train`` flow makes each a Prefect
    task (the UI shows every step), the policy lab and the benchmarks call them plainly.
    The flow's own I/O steps (load, register) go through the same object, so one
    ``timings`` dict describes the whole run.
    """

    def __init__(self, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]] | None = None) -> None:
        self.wrap = wrap
        self.timings: dict[str, float] = {}

    def __call__(self, name: str, fn: Callable[..., Any], *args: Any) -> Any:
        run = self.wrap(name, fn) if self.wrap else fn
        start = time.perf_counter()
        out = run(*args)
        self.timings[name] = round(time.perf_counter() - start, 3)
        return out


def train_model(history: pl.LazyFrame | pl.DataFrame, contract: Contract,
                champion: tuple[xgb.Booster, dict[str, Any]] | None, settings: Any,
                stats: dict[str, Any] | None = None, steps: Steps | None = None) -> TrainingResult:
    """Train, backtest, refit and decide on one history (Prefect-free; the ``train`` flow and the policy lab call it).

    Args:
        history: the curated rows of the dataset (contract columns), lazy or eager.
        contract: its contract (features, horizon, objective, transform, evaluation spans).
        champion: ``(booster, meta)`` of the current champion, or None for a first model.
        settings: a ``freshet.settings.Settings`` (XGBoost knobs, ``min_improvement``, span overrides).
        stats: optional precomputed ``rows``/``min``/``max`` of ``history`` (saves a scan).
        steps: what runs and times each step (the flow's wraps them in tasks); plain calls by default.

    Returns:
        A :class:`TrainingResult`: the refit serving booster, meta fields (``feature_spec``, ``features``,
        ``feature_types``, ``transform``, ``objective``, ``clip_at_zero``, ``params``, ``rounds``, ``best_iteration``,
        ``candidates``, ``backtest`` windows, ``metrics``, ``decision``, ``timings``), the pooled backtest metrics,
        the windows, and the decision (promote or not, and why).

    Raises:
        NotEnoughHistoryError: too little history for the backtest and validation spans.
        features.NonFiniteFeatureError: a feature would hold +-inf (names the column).
    """
    steps = steps or Steps()
    prep = steps("features", prepare, history, contract, settings, stats)
    chosen, candidates = steps("fit", fit_candidates, prep, settings)
    scores, windows, note = steps("evaluate", backtest, prep, chosen, champion, settings)
    served = steps("refit", refit, prep, chosen, settings)
    return finish(prep, chosen, candidates, scores, windows, note, served, settings, steps.timings)


def finish(prep: Prepared, chosen: Candidate, candidates: list[Candidate], scores: dict, windows: list,
           note: str | None, served: M.FitResult, settings: Any, timings: dict[str, float]) -> TrainingResult:
    """The decision and the meta fields, from the steps' outputs."""
    c = prep.contract
    promote, reason = decide(scores, settings.min_improvement, note)
    timings = {**timings, "fit_eval_seconds": round(sum(x.fit.seconds for x in candidates), 3),
               "fit_chosen_seconds": round(chosen.fit.seconds, 3), "refit_seconds": round(served.seconds, 3)}
    meta = {
        "data_range": {"start": str(prep.stats["min"]), "end": str(prep.stats["max"])},
        "data_watermark": str(prep.stats["max"]),
        "feature_spec": chosen.spec.to_json(),
        "features": F.feature_columns(c, chosen.spec),
        "feature_types": F.feature_types(chosen.spec, c),
        "transform": chosen.transform,
        "objective": chosen.objective,
        "clip_at_zero": prep.clip_at_zero,
        "params": chosen.fit.params,
        "best_iteration": served.best_iteration,
        "rounds": served.rounds,
        "evaluation": {"best_iteration": chosen.fit.best_iteration, "rounds": chosen.fit.rounds,
                       "train_rows": chosen.fit.rows, "refit": REFIT, "refit_rows": served.rows,
                       "holdout_periods": prep.holdout_periods, "validation_periods": prep.validation_periods},
        "candidates": [{"transform": x.transform, "objective": x.objective, "validation": x.validation,
                        "best_iteration": x.fit.best_iteration, "seconds": round(x.fit.seconds, 3)} for x in candidates],
        "metrics": {k: v for k, v in scores.items() if k not in ("intervals", "families")},
        "family": scores["families"]["chosen"]["family"],
        "recipe": scores["families"]["recipe"],
        "families": {k: v for k, v in scores["families"].items() if k != "recipe"},
        "intervals": scores.get("intervals"),
        "backtest": {"windows": windows, "horizon": c.horizon, "frequency": c.frequency},
        "decision": {"promote": promote, "reason": reason},
        "rows": {"total": prep.stats["rows"], "train": prep.train.height, "valid": prep.valid.height,
                 "holdout": prep.backtest.height, "refit": served.rows},
        "timings": timings,
    }
    return TrainingResult(served.booster, meta, scores, windows, promote, reason, eval_booster=chosen.fit.booster,
                          timings=timings, champion_note=note)
