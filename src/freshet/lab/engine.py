"""The policy lab's replay engine (Prefect-free): replayed training and forecasting, one policy at a time.

``Replay`` walks each retraining policy's schedule through simulated time, then
publishes forecasts in each forecast mode (on every landing and promotion, or after
each training). A run or a forecast started at moment ``t`` reads only the batches
landed at or before ``t`` (every read goes through ``Replay.read``, and the sources
of ``freshet.lab.traces`` refuse a batch that had not landed yet); a forecast is also
handed the known-in-advance exogenous values of the periods it covers, never their
target.

The engine is reached through two adapters that call what the product ships:
``lab_train`` runs ``modeling.training.train_model`` (the ``train`` flow's rule:
transform candidates, rolling-origin backtest of the new model, the champion and
seasonal naive, refit on every row, promotion decision) and ``lab_forecast`` runs
``modeling.forecast.forecast_frame`` (the next ``horizon`` periods after the
watermark, by the champion or, with none, seasonal naive).

Execution follows ``train``: a dataset trains one run at a time (a run requested
while another is in progress starts when it ends), a run that finds no data
beyond its last training ends as "nothing new", a trained model serves from
``LabConfig.train_latency`` after its run started (pickup plus training time),
and a forecast is published ``LabConfig.forecast_latency`` after its trigger.
Trainings are memoised by data state and forecasts by (data state, model), so the
CPU is spent once, while every policy is charged the measured
``time.process_time`` of each training and forecast it runs.

Reads ``freshet.settings`` (holdout and validation periods, ``min_improvement``,
``xgb_nthread``) with the lab's smaller XGBoost budget (``LAB_XGB``) on top.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Any

import numpy as np
import polars as pl
import xgboost as xgb

from freshet.data.contracts import Contract
from freshet.lab import live
from freshet.lab.policies import AFTER_TRAINING, FORECAST_MODES, ON_LANDING, Policy, TrainAt, Trace, checked_schedule
from freshet.lab.traces import BatchSource, LabError
from freshet.modeling import forecast as FC
from freshet.modeling import model as M
from freshet.modeling import training as TR
from freshet.settings import Settings, get_settings

# Fewer, faster trees than production training so that a few hundred replayed
# trainings fit in a few minutes on 2 cores; the policies' relative cost and
# freshness do not depend on it (on the synthetic history the backtest WAPE moved
# from 0.2233 to 0.2234 against 150 rounds at eta 0.15). One thread: on small frames
# a second OpenMP thread mostly spins, and on a busy machine it made each training
# 5 to 8 times slower in CPU and wall time.
# the lab compares retraining policies, not model families: the statistical family's per-window fits would
# dominate a replay's time, so the lab trains XGBoost alone (stats_models "")
LAB_XGB = {"xgb_max_rounds": 60, "xgb_early_stopping_rounds": 10, "xgb_learning_rate": 0.3, "xgb_max_depth": 6,
           "xgb_nthread": 1, "stats_models": ""}


def lab_settings(base: Settings | None = None) -> Settings:
    """Freshet's settings with the lab's XGBoost budget (``LAB_XGB``)."""
    return (base or get_settings()).model_copy(update=LAB_XGB)


@dataclass(frozen=True)
class LabConfig:
    """How the replay models time and what it reports."""

    train_latency: timedelta = timedelta(minutes=10)  # from a run's start to its model serving
    forecast_latency: timedelta = timedelta(minutes=1)  # from a forecast's trigger to its publication
    threshold: timedelta = timedelta(hours=24)  # "the published forecast lags the newest data by more than this"
    sample_every: timedelta = timedelta(hours=1)  # resolution of the lag-over-time curve
    error_window_days: int = 7  # the error-over-time curve pools this many days of arrivals
    # a contract with target_transform = "auto" fits every transform candidate in each training; the lab pins the
    # transform the first training chose, so each replayed training fits once and refits once
    pin_transform: bool = True


# ------------------------------------------------------------------ the engine, behind two adapters
# The replay reaches freshet's training and forecasting only through ``lab_train`` and
# ``lab_forecast``, which call what the product ships: ``training.train_model`` (the
# ``train`` flow's rule: transform candidates, rolling-origin backtest against the
# champion and seasonal naive, refit on every row, decision) and
# ``forecast.forecast_frame`` (the ``forecast`` flow's next ``horizon`` periods).
def lab_train(data: pl.DataFrame, contract: Contract, settings: Settings,
              champion: tuple[xgb.Booster, dict[str, Any]] | None) -> TR.TrainingResult:
    """``train_model`` on ``data`` against ``champion`` (``(booster, meta)`` or None): the shipped decision rule.
    Raises ``NotEnoughHistoryError`` when the history is too short."""
    return TR.train_model(data, contract, champion, settings)


def lab_forecast(history: pl.DataFrame, contract: Contract, model: Fit | None,
                 future: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """``forecast_frame``: the next ``horizon`` periods after the watermark of ``history``, by ``model`` (None:
    seasonal naive), with ``future`` holding the known-in-advance columns of those periods (never the target).
    Returns ``(forecast, skipped series)``."""
    if future is not None and contract.target in future.columns:
        raise ValueError(f"the future frame carries the target {contract.target!r}: a forecast may not see it")
    if model is None or model.booster is None:
        return FC.forecast_frame(history, contract, None, None, future)
    return FC.forecast_frame(history, contract, model.booster, model.meta, future)


# ------------------------------------------------------------------ replay
@dataclass
class Fit:
    """One training on one data state against one champion (shared by every policy that runs it)."""

    dataset: str
    batches: frozenset[str]
    rows: int
    watermark: Any
    cpu_seconds: float
    champion: frozenset[str] | None = None  # the champion's data state it was judged against
    booster: xgb.Booster | None = None  # the serving (refit) model
    meta: dict[str, Any] = field(default_factory=dict)
    scores: dict[str, Any] | None = None  # pooled backtest metrics: model, champion, baseline
    promote: bool = False
    reason: str = ""
    error: str | None = None


@dataclass
class Run:
    """One run a policy started: trained (promoted or not), nothing new, failed, or still queued at the end."""

    policy: str
    dataset: str
    requested_at: datetime
    started_at: datetime | None
    outcome: str  # trained | nothing-new | failed | not-started
    batches: int = 0
    cpu_seconds: float = 0.0
    reused: bool = False
    promoted: bool = False
    reason: str = ""
    wape: float | None = None


@dataclass
class Promotion:
    started_at: datetime  # the model includes every batch landed by then
    available_at: datetime  # ... and serves from then on
    fit: Fit | None  # None: no model beat seasonal naive yet, forecasts are seasonal naive


@dataclass
class Forecast:
    """One forecast computed on one data state with one model (shared by every policy that publishes it)."""

    dataset: str
    batches: frozenset[str]
    model: frozenset[str] | None  # the model's data state; None: seasonal naive
    watermark: Any
    frame: pl.DataFrame  # series keys, time, forecast, method
    missing: int  # series left out for want of known-in-advance values
    cpu_seconds: float
    wape: float | None = None
    mae: float | None = None
    scored_rows: int = 0
    errors: tuple[np.ndarray, np.ndarray] | None = None  # (actual, forecast) on the rows that have actuals


@dataclass
class Published:
    """A forecast a policy published: computed from the data landed by ``started_at``, readable from ``published_at``."""

    dataset: str
    trigger: str  # start | landing | promotion | training
    started_at: datetime
    published_at: datetime
    forecast: Forecast


@dataclass
class PolicyRun:
    """Everything one retraining policy did: its runs, the models that served in turn and, per forecast mode,
    the forecasts it published."""

    policy: Policy
    runs: list[Run]
    promotions: dict[str, list[Promotion]]
    seconds: float
    forecasts: dict[str, dict[str, list[Published]]] = field(default_factory=dict)  # mode -> dataset -> published


class Replay:
    """Replays policies on one trace, memoising trainings, holdout scores and forecasts across policies."""

    def __init__(self, trace: Trace, source: BatchSource, contracts: dict[str, Contract], settings: Settings,
                 config: LabConfig = LabConfig(), progress: Callable[[str], None] = lambda _: None) -> None:
        self.trace, self.source, self.contracts = trace, source, contracts
        self.settings, self.config, self.progress = settings, config, progress
        self.fits: dict[tuple[str, frozenset[str], frozenset[str] | None], Fit] = {}
        self.forecasts: dict[tuple[str, frozenset[str], frozenset[str] | None], Forecast] = {}
        self._actuals: dict[str, pl.DataFrame] = {}
        self.fit_cpu_seconds = 0.0
        self.forecast_cpu_seconds = 0.0
        self.contracts = dict(contracts)
        self.bootstrap = {d: self.fit(d, trace.start, None) for d in trace.datasets}
        for d, f in self.bootstrap.items():
            if f.error:
                raise LabError(f"{d}: cannot train the first model on the history landed by {trace.start}: {f.error}")
            if config.pin_transform and getattr(self.contracts[d], "target_transform", None) == "auto":
                self.contracts[d] = replace(self.contracts[d], target_transform=f.meta["transform"])
        # the first model serves only if train would promote it (it beats seasonal naive)
        self.first_champion = {d: f if f.promote else None for d, f in self.bootstrap.items()}

    # -- data access: the only way the replay reads rows
    def read(self, dataset: str, moment: datetime) -> tuple[frozenset[str], pl.DataFrame]:
        """The rows of every batch of ``dataset`` landed at or before ``moment``, and their ids."""
        batches = [a.batch for a in self.trace.landed_by(dataset, moment)]
        return frozenset(batches), self.source.load(dataset, batches, moment)

    def state(self, dataset: str, moment: datetime) -> frozenset[str]:
        return frozenset(a.batch for a in self.trace.landed_by(dataset, moment))

    def plan(self, dataset: str, rows: pl.DataFrame) -> pl.DataFrame | None:
        """Known-in-advance values (never the target) for the periods a forecast covers: the contract's
        known-at-forecast-time columns are planned ahead (a price list, a promotion calendar)."""
        c = self.contracts[dataset]
        known = c.known
        if not known:
            return None
        keys = [*c.series_keys, c.time_column]
        plans = getattr(self.source, "plans", None)
        if plans is None:  # the lake: what landed by the end is all the plan there is
            plans = {dataset: self.actuals(dataset)}
        return plans[dataset].join(rows.select(keys), on=keys, how="semi").select(*keys, *known)

    def actuals(self, dataset: str) -> pl.DataFrame:
        """Every row that landed by the end: what published forecasts are scored against, after the fact."""
        if dataset not in self._actuals:
            _, self._actuals[dataset] = self.read(dataset, self.trace.end)
        return self._actuals[dataset]

    # -- training: the shipped rule, once per (data state, champion)
    def fit(self, dataset: str, moment: datetime, champion: Fit | None) -> Fit:
        """Train on what had landed by ``moment`` and decide against ``champion`` (memoised)."""
        key = (dataset, self.state(dataset, moment), champion.batches if champion else None)
        if key in self.fits:
            return self.fits[key]
        c = self.contracts[dataset]
        cpu = time.process_time()
        batches, data = self.read(dataset, moment)
        fit = Fit(dataset, batches, data.height, data[c.time_column].max() if data.height else None, 0.0, key[2])
        try:
            out = lab_train(data, c, self.settings, (champion.booster, champion.meta) if champion else None)
            fit.booster, fit.meta, fit.scores, fit.promote, fit.reason = (out.booster, out.meta, out.scores,
                                                                         out.promote, out.reason)
        except TR.NotEnoughHistoryError as exc:
            fit.error = str(exc)
        fit.cpu_seconds = time.process_time() - cpu
        self.fit_cpu_seconds += fit.cpu_seconds
        self.fits[key] = fit
        return fit

    # -- forecasting: the engine's forecast path, once per (data state, model)
    def forecast(self, dataset: str, moment: datetime, model: Fit | None) -> Forecast:
        """The forecast ``model`` (None: seasonal naive) makes from what had landed by ``moment``."""
        key = (dataset, self.state(dataset, moment), model.batches if model else None)
        if key in self.forecasts:
            return self.forecasts[key]
        c = self.contracts[dataset]
        actuals = self.actuals(dataset)  # read once, after the fact, only to score and to plan ahead
        cpu = time.process_time()
        batches, history = self.read(dataset, moment)
        watermark = history[c.time_column].max() if history.height else None
        horizon_rows = _horizon_rows(history, c)
        frame, missing = lab_forecast(history, c, model, self.plan(dataset, horizon_rows))
        cpu = time.process_time() - cpu
        self.forecast_cpu_seconds += cpu
        fc = Forecast(dataset, batches, key[2], watermark, frame, missing.height, cpu)
        keys = [*c.series_keys, c.time_column]
        scored = frame.join(actuals.select(*keys, c.target), on=keys, how="inner")
        if scored.height:
            actual, pred = scored[c.target].to_numpy(), scored["forecast"].to_numpy()
            m = M.metrics(actual, pred)
            fc.wape, fc.mae, fc.scored_rows, fc.errors = m["wape"], m["mae"], m["rows"], (actual, pred)
        self.forecasts[key] = fc
        return fc

    # -- one policy
    def run_policy(self, policy: Policy) -> PolicyRun:
        """Execute a policy's schedule as ``train`` would, one run at a time per dataset, then publish forecasts
        in each forecast mode."""
        began, latency = time.monotonic(), self.config.train_latency
        requests = checked_schedule(policy, self.trace)
        runs: list[Run] = []
        promotions: dict[str, list[Promotion]] = {}
        for d in self.trace.datasets:
            boot = self.bootstrap[d]
            champion = self.first_champion[d]
            promotions[d] = [Promotion(self.trace.start, self.trace.start, champion)]
            last_trained, busy_until = boot.batches, self.trace.start
            mine = (self._on_drift(d, promotions[d]) if getattr(policy, "reactive", False)
                    else (r for r in requests if r.dataset == d))
            for req in mine:  # a reactive policy's next request is decided after the previous one ran
                start = max(req.at, busy_until)
                if start > self.trace.end:
                    runs.append(Run(policy.name, d, req.at, None, "not-started"))
                    continue
                if self.state(d, start) == last_trained:
                    runs.append(Run(policy.name, d, req.at, start, "nothing-new"))
                    continue
                known = (d, self.state(d, start), champion.batches if champion else None) in self.fits
                new = self.fit(d, start, champion)
                run = Run(policy.name, d, req.at, start, "trained", len(new.batches), new.cpu_seconds, known)
                busy_until, last_trained = start + latency, new.batches
                if new.error:
                    run.outcome, run.reason = "failed", new.error
                else:
                    run.promoted, run.reason = new.promote, new.reason
                    run.wape = new.scores["model"]["wape"]
                    if run.promoted:
                        champion = new
                        promotions[d].append(Promotion(start, start + latency, new))
                runs.append(run)
                trained = sum(r.outcome in ("trained", "failed") for r in runs)
                if not known and trained % 25 == 0:
                    self.progress(f"  {policy.name}: {trained} trainings so far ({len(self.fits)} distinct, "
                                  f"{time.monotonic() - began:.0f} s)")
        forecasts = {mode: {d: self.publish(d, mode, runs, promotions[d]) for d in self.trace.datasets}
                     for mode in FORECAST_MODES}
        return PolicyRun(policy, runs, promotions, time.monotonic() - began, forecasts)

    def _on_drift(self, dataset: str, promotions: list[Promotion]):
        """Training requests of the "on drift" policy: at each landing where ``model.degraded`` would fire, judged
        on the forecasts published on landing by then (``promotions`` grows as the requests run)."""
        history = [a.max_time for a in self.trace.history(dataset)]
        for a in self.trace.new_arrivals(dataset):
            pubs = self.publish(dataset, ON_LANDING, [], promotions, until=a.landed_at)
            champion = _serving(promotions, a.landed_at).fit
            if live.degraded(pubs, self.read(dataset, a.landed_at)[1], self.contracts[dataset],
                             max(history) if history else None, champion):
                yield TrainAt(dataset, a.landed_at)

    def publish(self, dataset: str, mode: str, runs: list[Run], promotions: list[Promotion],
                until: datetime | None = None) -> list[Published]:
        """The forecasts published in ``mode``: one at the start, then on every landing and every promotion
        (``on landing``), or when each training run ends (``after training``). Each uses the model serving at its
        trigger and the data landed by then; one identical to the previous (same data, same model) is not
        published again, as the forecast flow writes no second file for it."""
        triggers: list[tuple[datetime, str]] = [(self.trace.start, "start")]
        if mode == ON_LANDING:
            triggers += [(a.landed_at, "landing") for a in self.trace.new_arrivals(dataset)]
            triggers += [(p.available_at, "promotion") for p in promotions[1:]]
        elif mode == AFTER_TRAINING:
            triggers += [(r.started_at + self.config.train_latency, "training") for r in runs
                         if r.dataset == dataset and r.outcome == "trained"]
        else:
            raise ValueError(f"unknown forecast mode {mode!r}; use one of {FORECAST_MODES}")
        out: list[Published] = []
        last = None
        for at, trigger in sorted(triggers, key=lambda x: x[0]):
            if at > min(self.trace.end, until or self.trace.end):
                continue
            model = _serving(promotions, at).fit
            key = (self.state(dataset, at), model.batches if model else None)
            if key == last:
                continue
            last = key
            out.append(Published(dataset, trigger, at, at + self.config.forecast_latency, self.forecast(dataset, at, model)))
        return out


def _horizon_rows(history: pl.DataFrame, c: Contract) -> pl.DataFrame:
    """Every series crossed with the next ``horizon`` periods after the watermark (the periods a forecast covers)."""
    keys, t = list(c.series_keys), c.time_column
    if not history.height:
        return history.select(*keys, t)
    watermark = history[t].max()
    times = pl.DataFrame({t: [watermark + c.period * k for k in range(1, c.horizon + 1)]}, schema={t: c.columns[t]})
    return history.select(keys).unique().join(times, how="cross") if keys else times


def _serving(promotions: list[Promotion], moment: datetime) -> Promotion:
    return [p for p in promotions if p.available_at <= moment][-1]
