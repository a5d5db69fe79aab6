"""The scheduling lab's replay engine (Prefect-free): arrival traces, replayed training, and the report.

A trace (``freshet.lab.policies.Trace``) comes from the lake's manifest
(``lake_trace``: what really landed, and when) or is generated
(``synthetic_trace``: several datasets with irregular arrivals). ``Replay`` walks
each policy's schedule through simulated time. A run started at moment ``t``
reads only the batches landed at or before ``t`` (every read goes through
``Replay.read``, and the sources refuse a batch that had not landed yet), and
trains with the real code path: ``features.build_features`` and
``features.time_split``, ``model.fit``, the holdout scoring of ``train`` (new
model, champion and seasonal-naive baseline on the rows where the baseline
exists) and ``model.decide`` for promotion.

Execution follows ``train``: a dataset trains one run at a time (a run requested
while another is in progress starts when it ends), a run that finds no data
beyond its last training ends as "nothing new", and a trained model serves from
``LabConfig.train_latency`` after its run started (pickup plus training time).
Trainings are memoised by data state (dataset and set of batches), so the CPU is
spent once per distinct state, while every policy is charged the measured
``time.process_time`` of each training it runs.

Reads ``freshet.settings`` (holdout and validation periods, ``min_improvement``,
``xgb_nthread``) with the lab's smaller XGBoost budget (``LAB_XGB``) on top.
"""

from __future__ import annotations

import base64
import io
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl
import xgboost as xgb

from freshet.modeling import features as F
from freshet.modeling import model as M
from freshet.data.contracts import Contract, list_datasets, load_contract
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import load_curated, read_manifest
from freshet.data.lake import Lake
from freshet.lab.policies import Arrival, Policy, Trace, checked_schedule
from freshet.settings import BUNDLED_CONTRACTS, Settings, get_settings

# Fewer, faster trees than production training so that a few hundred replayed
# trainings fit in a couple of minutes on 2 cores; the policies' relative cost
# and freshness do not depend on it, absolute errors are a little worse. One
# thread: on small frames a second OpenMP thread mostly spins, and on a busy
# machine it made each training 5 to 8 times slower in CPU and wall time.
LAB_XGB = {"xgb_max_rounds": 150, "xgb_early_stopping_rounds": 15, "xgb_learning_rate": 0.15, "xgb_max_depth": 6,
           "xgb_nthread": 1}


def lab_settings(base: Settings | None = None) -> Settings:
    """Freshet's settings with the lab's XGBoost budget (``LAB_XGB``)."""
    return (base or get_settings()).model_copy(update=LAB_XGB)


@dataclass(frozen=True)
class LabConfig:
    """How the replay models time and what it reports."""

    train_latency: timedelta = timedelta(minutes=10)  # from a run's start to its model serving
    threshold: timedelta = timedelta(hours=24)  # "the serving model lags the newest data by more than this"
    sample_every: timedelta = timedelta(hours=1)  # resolution of the lag-over-time curve
    error_window_days: int = 7  # the error-over-time curve pools this many days of arrivals


class LabError(RuntimeError):
    """The lab cannot run on this trace (e.g. too little history for a first model)."""


class FutureDataError(AssertionError):
    """A read asked for a batch that had not landed at the simulated moment: a replay bug."""


# ------------------------------------------------------------------ data sources
class BatchSource(Protocol):
    """Loads the rows of landed batches; refuses batches landed after ``as_of``."""

    def load(self, dataset: str, batches: Sequence[str], as_of: datetime) -> pl.DataFrame: ...


def _check_landed(landed: dict[tuple[str, str], datetime], dataset: str, batches: Sequence[str], as_of: datetime) -> None:
    late = [b for b in batches if landed[(dataset, b)] > as_of]
    if late:
        raise FutureDataError(f"{dataset}: read of {len(late)} batch(es) landed after {as_of.isoformat()}: {late[:3]}")


class FrameSource:
    """Batches held in memory (the synthetic trace)."""

    def __init__(self, frames: dict[tuple[str, str], pl.DataFrame], trace: Trace, contracts: dict[str, Contract]) -> None:
        self.frames = frames
        self.contracts = contracts
        self.landed = {(a.dataset, a.batch): a.landed_at for a in trace.arrivals}

    def load(self, dataset: str, batches: Sequence[str], as_of: datetime) -> pl.DataFrame:
        _check_landed(self.landed, dataset, batches, as_of)
        c = self.contracts[dataset]
        if not batches:
            return pl.DataFrame(schema=c.columns)
        return pl.concat([self.frames[(dataset, b)] for b in batches]).sort([*c.series_keys, c.time_column])


class LakeSource:
    """Batches read from the lake's curated partitions through ``ingestion.load_curated``."""

    def __init__(self, lake: Lake, entries: dict[str, list[dict[str, Any]]], trace: Trace,
                 contracts: dict[str, Contract]) -> None:
        self.lake = lake
        self.entries = entries
        self.contracts = contracts
        self.landed = {(a.dataset, a.batch): a.landed_at for a in trace.arrivals}

    def load(self, dataset: str, batches: Sequence[str], as_of: datetime) -> pl.DataFrame:
        _check_landed(self.landed, dataset, batches, as_of)
        wanted = set(batches)
        chosen = [e for e in self.entries[dataset] if e["content_hash"] in wanted]  # manifest (admission) order
        return load_curated(self.lake, chosen, self.contracts[dataset]).collect()


# ------------------------------------------------------------------ traces
PROFILES = ("daily", "weekdays", "irregular")
SIZES = ((5, 6), (4, 5), (3, 6))  # (stores, items) per dataset, in turn
LAB_START = datetime(2025, 3, 3, tzinfo=timezone.utc)  # a Monday
P_QUIET, P_LATE, P_BURST = 0.12, 0.06, 0.08


def _midnight(d: date) -> datetime:
    return datetime(d.year, d.month, d.day, tzinfo=timezone.utc)


def _deliveries(profile: str, start: datetime, days: int, rng: np.random.Generator) -> list[tuple[datetime, list[date]]]:
    """When each window day's data lands: (moment, data days) pairs. A day's data is complete at midnight."""
    data_days = [start.date() + timedelta(days=n) for n in range(days)]
    late = {d: _midnight(d) + timedelta(days=1 + int(rng.integers(1, 4)), hours=float(rng.uniform(8, 18)))
            for d in data_days if rng.random() < P_LATE}
    moments: list[datetime] = []
    if profile == "daily":  # next morning around 06:00; some days nothing comes (the next file has both)
        moments = [_midnight(d) + timedelta(hours=float(np.clip(rng.normal(6, 0.6), 4, 9)))
                   for d in data_days[1:] if rng.random() >= P_QUIET]
    elif profile == "weekdays":  # Monday to Friday around 07:30; Monday brings the weekend
        moments = [_midnight(d) + timedelta(hours=float(np.clip(rng.normal(7.5, 0.5), 6, 10)))
                   for d in data_days[1:] if d.weekday() < 5]
    elif profile == "irregular":  # every 1 to 4 days, at any working hour
        t = start
        while t < start + timedelta(days=days):
            t = _midnight((t + timedelta(days=float(rng.uniform(1, 4)))).date()) + timedelta(hours=float(rng.uniform(8, 20)))
            moments.append(t)
    else:
        raise ValueError(f"unknown delivery profile {profile!r}; use one of {PROFILES}")
    pending = [d for d in data_days if d not in late]
    out = []
    for m in sorted(moments):
        ready = [d for d in pending if d < m.date()]
        if ready:
            out.append((m, ready))
            pending = [d for d in pending if d >= m.date()]
    out += [(m, [d]) for d, m in late.items()]
    return sorted(out)


def _with_demand_shift(frame: pl.DataFrame, day: date, rng: np.random.Generator) -> pl.DataFrame:
    """From ``day`` on, half of the items sell 0.6x or 1.6x as much (a competitor, a listing change)."""
    items = frame["item_id"].unique().sort().to_numpy()
    shifted = rng.choice(items, size=max(1, len(items) // 2), replace=False).tolist()
    factor = float(rng.choice([0.6, 1.6]))
    hit = (pl.col("date") >= day) & pl.col("item_id").is_in(shifted)
    return frame.with_columns(pl.when(hit).then((pl.col("units_sold") * factor).round()).otherwise(pl.col("units_sold"))
                              .alias("units_sold"))


def synthetic_trace(datasets: int = 3, days: int = 56, seed: int = 7, history_days: int = 300,
                    start: datetime = LAB_START) -> tuple[Trace, FrameSource, dict[str, Contract]]:
    """Several ``retail_sales``-shaped datasets with irregular arrivals over ``days`` days after ``start``.

    Datasets take turns between three delivery habits (daily around 06:00 with quiet
    days; weekdays only, Monday bringing the weekend; every 1 to 4 days at any hour),
    and all of them see late files (a day's data 1 to 3 days late) and bursts (a
    delivery split into one file per store, minutes apart). Each dataset's demand
    shifts for half of its items on a random day inside the window. The history
    (``history_days`` before ``start``) lands at ``start``.
    """
    if datasets < 1 or days < 1:
        raise ValueError("need at least one dataset and one day")
    base = load_contract("retail_sales", BUNDLED_CONTRACTS)
    rng = np.random.default_rng(seed)
    end = start + timedelta(days=days)
    arrivals: list[Arrival] = []
    frames: dict[tuple[str, str], pl.DataFrame] = {}
    contracts: dict[str, Contract] = {}

    def add(name: str, batch: str, landed_at: datetime, part: pl.DataFrame) -> None:
        if part.height and landed_at <= end:
            frames[(name, batch)] = part
            arrivals.append(Arrival(name, batch, landed_at, part.height, part["date"].min(), part["date"].max()))

    for i in range(datasets):
        name = f"shop_{chr(ord('a') + i)}" if i < 26 else f"shop_{i}"
        contracts[name] = replace(base, name=name)
        stores, items = SIZES[i % len(SIZES)]
        frame = generate_retail_sales(seed=seed * 100 + i, stores=stores, items=items, days=history_days + days,
                                      start=start.date() - timedelta(days=history_days))
        shift_day = start.date() + timedelta(days=int(days * rng.uniform(0.2, 0.7)))
        frame = _with_demand_shift(frame, shift_day, rng)
        add(name, "history", start, frame.filter(pl.col("date") < start.date()))
        for k, (moment, data_days) in enumerate(_deliveries(PROFILES[i % len(PROFILES)], start, days, rng)):
            part = frame.filter(pl.col("date").is_in(data_days))
            if rng.random() < P_BURST:
                at = moment
                for store in part["store_id"].unique().sort():
                    add(name, f"{k:03d}-s{store}", at, part.filter(pl.col("store_id") == store))
                    at += timedelta(minutes=float(rng.uniform(2, 10)))
            else:
                add(name, f"{k:03d}", moment, part)
    trace = Trace(tuple(arrivals), start, end)
    return trace, FrameSource(frames, trace, contracts), contracts


def _parse_time(value: str, contract: Contract) -> date | datetime:
    return date.fromisoformat(value[:10]) if contract.columns[contract.time_column] == pl.Date() else datetime.fromisoformat(value)


def lake_trace(lake: Lake, contracts_dir: Path, now: datetime | None = None) -> tuple[Trace, LakeSource, dict[str, Contract]]:
    """The lake's own history: one arrival per manifest entry, at its ``landed_at``.

    The window starts when every dataset has landed something (what had landed by
    then is the history the first model is trained on) and ends now.
    """
    arrivals, entries, contracts = [], {}, {}
    for name in list_datasets(contracts_dir):
        found = read_manifest(lake, name)
        if not found:
            continue
        contract = load_contract(name, contracts_dir)
        contracts[name], entries[name] = contract, found
        arrivals += [Arrival(name, e["content_hash"], datetime.fromisoformat(e["landed_at"]), int(e["rows"]),
                             _parse_time(e["min_time"], contract), _parse_time(e["max_time"], contract)) for e in found]
    if not arrivals:
        raise LabError(f"the lake {lake.url} holds no manifest entries; land and ingest data first (e.g. `make demo`)")
    start = max(min(a.landed_at for a in arrivals if a.dataset == d) for d in contracts)
    last = max(a.landed_at for a in arrivals)
    end = max(now or datetime.now(timezone.utc), last, start + timedelta(minutes=1))
    trace = Trace(tuple(arrivals), start, end)
    return trace, LakeSource(lake, entries, trace, contracts), contracts


def build_trace(from_lake: bool, datasets: int, days: int, seed: int,
                settings: Settings) -> tuple[Trace, BatchSource, dict[str, Contract]]:
    """The lake's own history (``from_lake``) or a synthetic trace of that size."""
    if from_lake:
        return lake_trace(Lake.from_settings(settings), settings.contracts_dir)
    return synthetic_trace(datasets=datasets, days=days, seed=seed)


# ------------------------------------------------------------------ replay
@dataclass
class Fit:
    """One training on one data state, with its holdout scores (shared by every policy that runs it)."""

    dataset: str
    batches: frozenset[str]
    rows: int
    watermark: Any
    cpu_seconds: float
    booster: xgb.Booster | None = None
    features: list[str] = field(default_factory=list)
    holdout: pl.DataFrame | None = None  # the scored holdout rows, to score later champions on
    model: dict[str, float] | None = None
    baseline: dict[str, float] | None = None
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
    fit: Fit


@dataclass
class PolicyRun:
    """Everything one policy did: its runs and, per dataset, the models that served in turn."""

    policy: Policy
    runs: list[Run]
    promotions: dict[str, list[Promotion]]
    seconds: float


class Replay:
    """Replays policies on one trace, memoising trainings and holdout scores across policies."""

    def __init__(self, trace: Trace, source: BatchSource, contracts: dict[str, Contract], settings: Settings,
                 config: LabConfig = LabConfig(), progress: Callable[[str], None] = lambda _: None) -> None:
        self.trace, self.source, self.contracts = trace, source, contracts
        self.settings, self.config, self.progress = settings, config, progress
        self.fits: dict[tuple[str, frozenset[str]], Fit] = {}
        self._champion_scores: dict[tuple[str, frozenset[str], frozenset[str]], dict[str, float]] = {}
        self._arrival_rows: dict[tuple[str, str], pl.DataFrame] = {}
        self._forecasts: dict[tuple[str, str, frozenset[str]], np.ndarray] = {}
        self.fit_cpu_seconds = 0.0
        self.bootstrap = {d: self.fit(d, trace.start) for d in trace.datasets}
        for d, f in self.bootstrap.items():
            if f.error:
                raise LabError(f"{d}: cannot train the first model on the history landed by {trace.start}: {f.error}")

    # -- data access: the only way the replay reads rows
    def read(self, dataset: str, moment: datetime) -> tuple[frozenset[str], pl.DataFrame]:
        """The rows of every batch of ``dataset`` landed at or before ``moment``, and their ids."""
        batches = [a.batch for a in self.trace.landed_by(dataset, moment)]
        return frozenset(batches), self.source.load(dataset, batches, moment)

    def state(self, dataset: str, moment: datetime) -> frozenset[str]:
        return frozenset(a.batch for a in self.trace.landed_by(dataset, moment))

    # -- training: the real code path, once per data state
    def fit(self, dataset: str, moment: datetime) -> Fit:
        """Train on what had landed by ``moment`` (memoised by the set of batches)."""
        key = (dataset, self.state(dataset, moment))
        if key in self.fits:
            return self.fits[key]
        c, s = self.contracts[dataset], self.settings
        cpu = time.process_time()
        batches, data = self.read(dataset, moment)
        fit = Fit(dataset, batches, data.height, data[c.time_column].max() if data.height else None, 0.0)
        feats = F.build_features(data.lazy(), c).collect().lazy()
        train, valid, holdout = (part.collect() for part in F.time_split(
            feats, c, fit.watermark, s.holdout_periods, s.validation_periods)) if data.height else (data,) * 3
        if min(train.height, valid.height, holdout.height) == 0:
            fit.error = (f"not enough history: {data.height} rows up to {fit.watermark}; need more than "
                         f"{s.holdout_periods + s.validation_periods} periods")
        else:
            fit.features = F.feature_columns(c)
            fitted = M.fit(train, valid, fit.features, c.target, M.xgb_params(s), s.xgb_max_rounds,
                           s.xgb_early_stopping_rounds)
            fit.booster = fitted.booster
            fit.holdout = _scorable(holdout, c)
            fit.model = self._metrics(fit.holdout, c, fit)
            fit.baseline = M.metrics(fit.holdout[c.target].to_numpy(), _baseline(fit.holdout, c))
        fit.cpu_seconds = time.process_time() - cpu
        self.fit_cpu_seconds += fit.cpu_seconds
        self.fits[key] = fit
        return fit

    def _metrics(self, rows: pl.DataFrame, c: Contract, model: Fit) -> dict[str, float]:
        return M.metrics(rows[c.target].to_numpy(), M.predict(model.booster, rows, model.features))

    def champion_scores(self, new: Fit, champion: Fit) -> dict[str, float]:
        """The champion scored on the new model's holdout rows, as ``train`` does before deciding."""
        key = (new.dataset, new.batches, champion.batches)
        if key not in self._champion_scores:
            self._champion_scores[key] = self._metrics(new.holdout, self.contracts[new.dataset], champion)
        return self._champion_scores[key]

    # -- one policy
    def run_policy(self, policy: Policy) -> PolicyRun:
        """Execute a policy's schedule as ``train`` would, one run at a time per dataset."""
        began, latency = time.monotonic(), self.config.train_latency
        requests = checked_schedule(policy, self.trace)
        runs: list[Run] = []
        promotions: dict[str, list[Promotion]] = {}
        for d in self.trace.datasets:
            boot = self.bootstrap[d]
            promotions[d] = [Promotion(self.trace.start, self.trace.start, boot)]
            champion, last_trained, busy_until = boot, boot.batches, self.trace.start
            for req in (r for r in requests if r.dataset == d):
                start = max(req.at, busy_until)
                if start > self.trace.end:
                    runs.append(Run(policy.name, d, req.at, None, "not-started"))
                    continue
                if self.state(d, start) == last_trained:
                    runs.append(Run(policy.name, d, req.at, start, "nothing-new"))
                    continue
                known = (d, self.state(d, start)) in self.fits
                new = self.fit(d, start)
                run = Run(policy.name, d, req.at, start, "trained", len(new.batches), new.cpu_seconds, known)
                busy_until, last_trained = start + latency, new.batches
                if new.error:
                    run.outcome, run.reason = "failed", new.error
                else:
                    run.promoted, run.reason = M.decide(new.model, self.champion_scores(new, champion), new.baseline,
                                                        self.settings.min_improvement)
                    run.wape = new.model["wape"]
                    if run.promoted:
                        champion = new
                        promotions[d].append(Promotion(start, start + latency, new))
                runs.append(run)
                trained = sum(r.outcome in ("trained", "failed") for r in runs)
                if not known and trained % 25 == 0:
                    self.progress(f"  {policy.name}: {trained} trainings so far ({len(self.fits)} distinct, "
                                  f"{time.monotonic() - began:.0f} s)")
        return PolicyRun(policy, runs, promotions, time.monotonic() - began)

    # -- accuracy: the serving model on each batch as it lands
    def arrival_rows(self, a: Arrival) -> pl.DataFrame:
        """A new batch's rows with features built from what had landed with it, where the baseline exists."""
        key = (a.dataset, a.batch)
        if key not in self._arrival_rows:
            c = self.contracts[a.dataset]
            _, data = self.read(a.dataset, a.landed_at)
            own = self.source.load(a.dataset, [a.batch], a.landed_at).select(c.time_column, *c.series_keys)
            feats = F.build_features(data.lazy(), c).join(own.lazy(), on=[c.time_column, *c.series_keys], how="semi")
            self._arrival_rows[key] = _scorable(feats.collect(), c)
        return self._arrival_rows[key]

    def forecast(self, a: Arrival, model: Fit) -> np.ndarray:
        key = (a.dataset, a.batch, model.batches)
        if key not in self._forecasts:
            rows = self.arrival_rows(a)
            self._forecasts[key] = M.predict(model.booster, rows, model.features) if rows.height else np.zeros(0)
        return self._forecasts[key]


def _scorable(frame: pl.DataFrame, c: Contract) -> pl.DataFrame:
    """The rows ``train`` scores on: those where the seasonal-naive forecast exists, so all models compare on them."""
    return frame.filter(F.seasonal_naive_forecast(frame.lazy(), c).is_not_null())


def _baseline(frame: pl.DataFrame, c: Contract) -> np.ndarray:
    return frame.select(F.seasonal_naive_forecast(frame.lazy(), c)).to_series().to_numpy()


# ------------------------------------------------------------------ measures (pure)
def inclusion_times(arrivals: Sequence[Arrival], promotions: Sequence[tuple[datetime, datetime]]) -> dict[str, datetime | None]:
    """When each batch first reached a serving model: the earliest ``available_at`` of a promoted model
    whose run started at or after the batch landed (``None``: never, within the trace)."""
    out = {}
    for a in arrivals:
        times = [available for started, available in promotions if started >= a.landed_at]
        out[a.batch] = min(times) if times else None
    return out


def staleness(arrivals: Sequence[Arrival], included: dict[str, datetime | None], end: datetime) -> tuple[list[timedelta], int]:
    """Per batch, landing to serving; a batch not served by ``end`` counts as ``end - landed`` (a lower bound)."""
    out, censored = [], 0
    for a in arrivals:
        at = included[a.batch]
        if at is None or at > end:
            censored += 1
            at = end
        out.append(at - a.landed_at)
    return out, censored


def _lag_intervals(arrivals: Sequence[Arrival], included: dict[str, datetime | None], end: datetime,
                   threshold: timedelta) -> list[tuple[datetime, datetime]]:
    spans = sorted((a.landed_at + threshold, min(included[a.batch] or end, end)) for a in arrivals)
    merged: list[list[datetime]] = []
    for lo, hi in spans:
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def share_lagging(arrivals: Sequence[Arrival], included: dict[str, datetime | None], start: datetime, end: datetime,
                  threshold: timedelta) -> float:
    """Share of ``(start, end]`` during which some landed batch had waited more than ``threshold`` to be served."""
    total = sum(((min(hi, end) - max(lo, start)) for lo, hi in _lag_intervals(arrivals, included, end, threshold)
                 if min(hi, end) > max(lo, start)), timedelta(0))
    return total / (end - start)


def lag_at(arrivals: Sequence[Arrival], included: dict[str, datetime | None], moment: datetime) -> timedelta:
    """How long the oldest landed-but-not-served batch has been waiting at ``moment`` (zero if none)."""
    waiting = [a.landed_at for a in arrivals if a.landed_at <= moment and (included[a.batch] is None or included[a.batch] > moment)]
    return moment - min(waiting) if waiting else timedelta(0)


def _hours(td: timedelta) -> float:
    return td.total_seconds() / 3600


def _percentiles(values: list[timedelta]) -> dict[str, float | None]:
    if not values:
        return {"p50_h": None, "p95_h": None, "max_h": None}
    h = np.array([_hours(v) for v in values])
    return {"p50_h": float(np.percentile(h, 50)), "p95_h": float(np.percentile(h, 95)), "max_h": float(h.max())}


# ------------------------------------------------------------------ the lab
def _serving(promotions: list[Promotion], moment: datetime) -> Promotion:
    return [p for p in promotions if p.available_at <= moment][-1]


def _error(actual: list[np.ndarray], forecast: list[np.ndarray]) -> dict[str, float | None]:
    if not actual or not sum(len(x) for x in actual):
        return {"wape": None, "mae": None, "rows": 0}
    m = M.metrics(np.concatenate(actual), np.concatenate(forecast))
    return {"wape": m["wape"], "mae": m["mae"], "rows": m["rows"]}


def summarize(engine: Replay, results: list[PolicyRun], *, source: str, runtime_seconds: float | None = None) -> dict[str, Any]:
    """The lab's report: per policy and per dataset cost, staleness, lag share and accuracy, plus curves."""
    trace, cfg = engine.trace, engine.config
    grid = []
    t = trace.start
    while t <= trace.end:
        grid.append(t)
        t += cfg.sample_every
    days = [trace.start.date() + timedelta(days=k) for k in range((trace.end - trace.start).days + 1)]
    report: dict[str, Any] = {
        "source": source,
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "config": {"train_latency_minutes": _hours(cfg.train_latency) * 60, "threshold_hours": _hours(cfg.threshold),
                   "lab_xgboost": LAB_XGB, "holdout_periods": engine.settings.holdout_periods,
                   "validation_periods": engine.settings.validation_periods,
                   "min_improvement": engine.settings.min_improvement},
        "trace": {"start": trace.start.isoformat(), "end": trace.end.isoformat(), "datasets": {
            d: {"history_rows": sum(a.rows for a in trace.history(d)), "arrivals": len(trace.new_arrivals(d)),
                "new_rows": sum(a.rows for a in trace.new_arrivals(d))} for d in trace.datasets}},
        "policies": [],
        "runs": [],
        "scored": [],
        "curves": {"times": [g.isoformat() for g in grid], "lag_hours": {}, "days": [d.isoformat() for d in days],
                   "wape": {}, "baseline_wape": []},
    }
    daily_base: dict[date, tuple[list, list]] = {d: ([], []) for d in days}
    base_by_dataset: dict[str, tuple[list, list]] = {d: ([], []) for d in trace.datasets}
    for i, res in enumerate(results):
        name = res.policy.name
        per_dataset, all_stale, all_trained, censored_total, shares, lag_curves = {}, [], [], 0, [], []
        act_all, fc_all = [], []
        daily = {d: ([], []) for d in days}
        for d in trace.datasets:
            c = engine.contracts[d]
            new = trace.new_arrivals(d)
            promos = res.promotions[d]
            included = inclusion_times(new, [(p.started_at, p.available_at) for p in promos])
            stale, censored = staleness(new, included, trace.end)
            trained_at = [(r.started_at, r.started_at + cfg.train_latency) for r in res.runs
                          if r.dataset == d and r.outcome == "trained"]
            stale_trained, _ = staleness(new, inclusion_times(new, trained_at), trace.end)
            share = share_lagging(new, included, trace.start, trace.end, cfg.threshold)
            lag_curves.append([_hours(lag_at(new, included, g)) for g in grid])
            acts, fcs = [], []
            for a in new:
                serving = _serving(promos, a.landed_at)
                rows = engine.arrival_rows(a)
                if not rows.height:
                    continue
                actual, fc = rows[c.target].to_numpy(), engine.forecast(a, serving.fit)
                acts.append(actual)
                fcs.append(fc)
                daily[a.landed_at.date()][0].append(actual)
                daily[a.landed_at.date()][1].append(fc)
                err = M.metrics(actual, fc)
                report["scored"].append({"policy": name, "dataset": d, "batch": a.batch, "landed_at": a.landed_at.isoformat(),
                                         "rows": err["rows"], "wape": err["wape"], "mae": err["mae"],
                                         "model_started_at": serving.started_at.isoformat(),
                                         "model_available_at": serving.available_at.isoformat(),
                                         "model_batches": len(serving.fit.batches)})
                if i == 0:
                    base = _baseline(rows, c)
                    base_by_dataset[d][0].append(actual)
                    base_by_dataset[d][1].append(base)
                    daily_base[a.landed_at.date()][0].append(actual)
                    daily_base[a.landed_at.date()][1].append(base)
            runs = [r for r in res.runs if r.dataset == d]
            per_dataset[d] = {
                "runs": sum(r.outcome != "not-started" for r in runs),
                "trainings": sum(r.outcome in ("trained", "failed") for r in runs),
                "nothing_new": sum(r.outcome == "nothing-new" for r in runs),
                "promotions": len(promos) - 1,
                "cpu_seconds": sum(r.cpu_seconds for r in runs),
                "staleness": {**_percentiles(stale), "not_served_by_end": censored},
                "staleness_to_trained": _percentiles(stale_trained),
                "share_lagging": share,
                "error": _error(acts, fcs),
            }
            all_stale += stale
            all_trained += stale_trained
            censored_total += censored
            shares.append(share)
            act_all += acts
            fc_all += fcs
        totals = {
            "runs": sum(v["runs"] for v in per_dataset.values()),
            "trainings": sum(v["trainings"] for v in per_dataset.values()),
            "nothing_new": sum(v["nothing_new"] for v in per_dataset.values()),
            "promotions": sum(v["promotions"] for v in per_dataset.values()),
            "cpu_seconds": sum(v["cpu_seconds"] for v in per_dataset.values()),
            "staleness": {**_percentiles(all_stale), "not_served_by_end": censored_total},
            "staleness_to_trained": _percentiles(all_trained),
            "share_lagging": float(np.mean(shares)) if shares else 0.0,
            "error": _error(act_all, fc_all),
        }
        report["policies"].append({"name": name, "description": (type(res.policy).__doc__ or "").strip(),
                                   "params": _params(res.policy), "total": totals, "datasets": per_dataset,
                                   "replay_seconds": res.seconds})
        report["runs"] += [_run_json(r) for r in res.runs]
        report["curves"]["lag_hours"][name] = [float(np.mean(col)) for col in zip(*lag_curves)] if lag_curves else []
        report["curves"]["wape"][name] = _rolling_wape(daily, days, cfg.error_window_days)
    report["curves"]["baseline_wape"] = _rolling_wape(daily_base, days, cfg.error_window_days)
    report["baseline"] = {"total": _error([x for v in base_by_dataset.values() for x in v[0]],
                                          [x for v in base_by_dataset.values() for x in v[1]]),
                          "datasets": {d: _error(*v) for d, v in base_by_dataset.items()}}
    report["distinct_trainings"] = len(engine.fits)
    report["training_cpu_seconds_spent"] = engine.fit_cpu_seconds
    report["runtime_seconds"] = runtime_seconds
    return report


def _rolling_wape(daily: dict[date, tuple[list, list]], days: list[date], window: int) -> list[float | None]:
    out = []
    for k in range(len(days)):
        acts = [x for d in days[max(0, k - window + 1): k + 1] for x in daily[d][0]]
        fcs = [x for d in days[max(0, k - window + 1): k + 1] for x in daily[d][1]]
        out.append(_error(acts, fcs)["wape"])
    return out


def _params(policy: Policy) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in asdict(policy).items() if k != "name"}
    except TypeError:
        return {}


def _run_json(r: Run) -> dict[str, Any]:
    out = asdict(r)
    for k in ("requested_at", "started_at"):
        out[k] = out[k].isoformat() if out[k] else None
    return out


def run_lab(trace: Trace, source: BatchSource, contracts: dict[str, Contract], policies: Sequence[Policy],
            settings: Settings | None = None, config: LabConfig = LabConfig(), *, source_name: str = "synthetic",
            progress: Callable[[str], None] = lambda _: None,
            runner: Callable[[Replay, Policy], PolicyRun] = Replay.run_policy) -> dict[str, Any]:
    """Replay every policy on the trace and summarise (``runner`` lets the flow run each policy as a task)."""
    began = time.monotonic()
    progress(f"trace: {len(trace.datasets)} dataset(s), "
             f"{sum(len(trace.new_arrivals(d)) for d in trace.datasets)} arrivals from {trace.start:%Y-%m-%d %H:%M} "
             f"to {trace.end:%Y-%m-%d %H:%M} UTC; training the first model per dataset ...")
    engine = Replay(trace, source, contracts, settings or lab_settings(), config, progress)
    results = []
    for k, policy in enumerate(policies, 1):
        res = runner(engine, policy)
        results.append(res)
        trained = sum(r.outcome in ("trained", "failed") for r in res.runs)
        reused = sum(r.reused for r in res.runs)
        progress(f"[{k}/{len(policies)}] {policy.name}: {len(res.runs)} runs, {trained} trainings "
                 f"({trained - reused} new, {reused} reused) in {res.seconds:.1f} s")
    progress("scoring the serving models on each batch as it landed ...")
    return summarize(engine, results, source=source_name, runtime_seconds=time.monotonic() - began)


# ------------------------------------------------------------------ output
def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


TABLE_COLUMNS = ("policy", "trainings", "promoted", "idle runs", "CPU s", "served p50", "served p95", "served max",
                 "trained p50", "trained p95", "lag>{thr}h %", "WAPE", "MAE")


def table_rows(report: dict[str, Any], dataset: str | None = None) -> list[dict[str, str]]:
    """One row per policy (all datasets, or one), formatted for a terminal or a Prefect table artifact."""
    thr = _f(report["config"]["threshold_hours"], "g")
    rows = []
    for p in report["policies"]:
        m = p["total"] if dataset is None else p["datasets"][dataset]
        s, t = m["staleness"], m["staleness_to_trained"]
        cells = [p["name"], str(m["trainings"]), str(m["promotions"]), str(m["nothing_new"]), _f(m["cpu_seconds"], ".1f"),
                 _f(s["p50_h"], ".1f"), _f(s["p95_h"], ".1f"), _f(s["max_h"], ".1f") + ("+" if s["not_served_by_end"] else ""),
                 _f(t["p50_h"], ".1f"), _f(t["p95_h"], ".1f"), _f(100 * m["share_lagging"], ".1f"), _f(m["error"]["wape"], ".4f"), _f(m["error"]["mae"], ".3f")]
        rows.append(dict(zip([c.format(thr=thr) for c in TABLE_COLUMNS], cells)))
    base = report["baseline"]["total" if dataset is None else "datasets"]
    base = base if dataset is None else base[dataset]
    rows.append(dict(zip([c.format(thr=thr) for c in TABLE_COLUMNS],
                         ["seasonal naive", "-", "-", "-", "-", "-", "-", "-", "-", "-", "-", _f(base["wape"], ".4f"), _f(base["mae"], ".3f")])))
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """A plain-text table (also valid Markdown)."""
    cols = list(rows[0])
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        (v.ljust(width[c]) if c == "policy" else v.rjust(width[c])) for c, v in zip(cols, cells)) + " |"
    sep = "|" + "|".join(("-" * (width[c] + 2)) if c == "policy" else ("-" * (width[c] + 1) + ":") for c in cols) + "|"
    return "\n".join([line(cols), sep, *(line([r[c] for c in cols]) for r in rows)])


def format_report(report: dict[str, Any]) -> str:
    """The terminal summary: all datasets, then one table per dataset."""
    cfg, tr = report["config"], report["trace"]
    out = [f"Retraining policies on {len(tr['datasets'])} dataset(s), {tr['start'][:16]} .. {tr['end'][:16]} UTC "
           f"({report['source']} trace; models serve {cfg['train_latency_minutes']:.0f} min after a run starts)",
           "", "All datasets", format_table(table_rows(report))]
    for d, info in tr["datasets"].items():
        out += ["", f"{d}: {info['arrivals']} arrivals, {info['new_rows']} new rows on {info['history_rows']} rows of history",
                format_table(table_rows(report, d))]
    out += ["", "trainings: runs that trained (promoted: of which became champion); idle runs: runs that found "
                "nothing new. CPU s: measured process CPU of those trainings.",
            "served p50/p95/max: hours from a batch landing to the first promoted model that includes it ('+': some "
            "batches were never served before the end, counted up to the end); trained p50/p95: the same to the "
            "first trained model, promoted or not.",
            f"lag>{_f(cfg['threshold_hours'], 'g')}h %: share of the time some landed batch had waited longer than "
            "that to be served. WAPE/MAE: the model serving when each batch landed, scored on that batch."]
    return "\n".join(out)


def render_chart(report: dict[str, Any]) -> bytes:
    """A PNG: lag behind the newest data and forecast error over time, one line per policy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    curves = report["curves"]
    times = [datetime.fromisoformat(t) for t in curves["times"]]
    days = [datetime.fromisoformat(d) + timedelta(hours=12) for d in curves["days"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    colors = plt.get_cmap("tab10").colors
    for k, p in enumerate(report["policies"]):
        name, style = p["name"], {"color": colors[k % 10], "linewidth": 1.4}
        if name.startswith("never"):
            style.update(color="0.55", linestyle=":")
        top.step(times, [max(v, 0.01) for v in curves["lag_hours"][name]], where="post", label=name, **style)
        bottom.plot(days, [np.nan if v is None else v for v in curves["wape"][name]], label=name, **style)
    thr = report["config"]["threshold_hours"]
    top.axhline(thr, color="black", linestyle="--", linewidth=0.8)
    top.text(times[0], thr * 1.12, f"threshold {thr:g} h", fontsize=8)
    top.set_yscale("log")
    top.set_ylim(0.1, None)
    top.set_ylabel("hours the oldest unserved batch has waited\n(mean over datasets, log scale)")
    top.set_title("Staleness: how long the oldest landed batch has waited for a promoted model to include it")
    top.legend(fontsize=8, ncol=4, loc="upper left")
    naive = report["baseline"]["total"]["wape"]
    bottom.set_ylabel(f"WAPE, arrivals of the last {LabConfig.error_window_days} days")
    bottom.set_title("Accuracy: the serving model scored on each batch as it landed (lower is better; "
                     f"seasonal naive: {_f(naive, '.3f')})")
    bottom.legend(fontsize=8, ncol=4, loc="upper left")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``chart.png`` next to each other; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chart, path = out_dir / "chart.png", out_dir / "report.json"
    png = render_chart(report)
    tmp = chart.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(chart)
    report["chart"] = str(chart.resolve())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(path)
    return path, chart


def chart_data_uri(chart: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(chart.read_bytes()).decode()
