"""The policy lab's replay engine (Prefect-free): arrival traces, replayed training and forecasting, the report.

A trace (``freshet.lab.policies.Trace``) comes from the lake's manifest
(``lake_trace``: what really landed, and when), from a folder of files
(``dir_trace``: a user's own history, each file landing when its data is
complete plus a delay, or when a CSV says), or is generated (``synthetic_trace``:
several datasets with irregular arrivals). ``Replay`` walks each retraining
policy's schedule through simulated time, then publishes forecasts in each
forecast mode (on every landing and promotion, or after each training). A run or
a forecast started at moment ``t`` reads only the batches landed at or before
``t`` (every read goes through ``Replay.read``, and the sources refuse a batch
that had not landed yet); a forecast is also handed the known-in-advance
exogenous values of the periods it covers, never their target.

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
from freshet.modeling import forecast as FC
from freshet.modeling import model as M
from freshet.modeling import training as TR
from freshet.data.contracts import Contract, list_datasets, load_contract, parse_contract
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import load_curated, read_manifest
from freshet.data.lake import Lake
from freshet.data.validation import check_header, typed_with_violations, valid_rows
from freshet.lab.policies import (AFTER_TRAINING, FORECAST_MODES, ON_LANDING, Arrival, Never, Policy, Trace,
                                  checked_schedule, default_combinations)
from freshet.settings import BUNDLED_CONTRACTS, Settings, get_settings

# Fewer, faster trees than production training so that a few hundred replayed
# trainings fit in a few minutes on 2 cores; the policies' relative cost and
# freshness do not depend on it (on the synthetic history the backtest WAPE moved
# from 0.2233 to 0.2234 against 150 rounds at eta 0.15). One thread: on small frames
# a second OpenMP thread mostly spins, and on a busy machine it made each training
# 5 to 8 times slower in CPU and wall time.
LAB_XGB = {"xgb_max_rounds": 60, "xgb_early_stopping_rounds": 10, "xgb_learning_rate": 0.3, "xgb_max_depth": 6,
           "xgb_nthread": 1}


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


class LabError(RuntimeError):
    """The lab cannot run on this trace (e.g. too little history for a first model)."""


class FutureDataError(AssertionError):
    """A read asked for a batch that had not landed at the simulated moment: a replay bug."""


# ------------------------------------------------------------------ data sources
class BatchSource(Protocol):
    """Loads the rows of landed batches; refuses batches landed after ``as_of``. A source may also have
    ``plans`` (dataset -> known-in-advance columns of every period, no target); without it the lab plans from
    what landed by the end."""

    def load(self, dataset: str, batches: Sequence[str], as_of: datetime) -> pl.DataFrame: ...


def _check_landed(landed: dict[tuple[str, str], datetime], dataset: str, batches: Sequence[str], as_of: datetime) -> None:
    late = [b for b in batches if landed[(dataset, b)] > as_of]
    if late:
        raise FutureDataError(f"{dataset}: read of {len(late)} batch(es) landed after {as_of.isoformat()}: {late[:3]}")


class FrameSource:
    """Batches held in memory (the synthetic trace, a folder of files).

    ``plans``: per dataset, the known-in-advance columns (never the target) of every period, including
    periods whose actuals never land within the trace; default: those of the batches.
    """

    def __init__(self, frames: dict[tuple[str, str], pl.DataFrame], trace: Trace, contracts: dict[str, Contract],
                 plans: dict[str, pl.DataFrame] | None = None) -> None:
        self.frames = frames
        self.contracts = contracts
        self.landed = {(a.dataset, a.batch): a.landed_at for a in trace.arrivals}
        self.plans = plans if plans is not None else {
            d: pl.concat([f for (name, _), f in frames.items() if name == d]).select(
                *c.series_keys, c.time_column, *known_in_advance(c)) for d, c in contracts.items()}

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
    plans: dict[str, pl.DataFrame] = {}

    def add(name: str, batch: str, landed_at: datetime, part: pl.DataFrame) -> None:
        if part.height and landed_at <= end:
            frames[(name, batch)] = part
            arrivals.append(Arrival(name, batch, landed_at, part.height, part["date"].min(), part["date"].max()))

    for i in range(datasets):
        name = f"shop_{chr(ord('a') + i)}" if i < 26 else f"shop_{i}"
        contracts[name] = replace(base, name=name)
        stores, items = SIZES[i % len(SIZES)]
        frame = generate_retail_sales(seed=seed * 100 + i, stores=stores, items=items,
                                      days=history_days + days + base.horizon,  # the plan reaches past the end
                                      start=start.date() - timedelta(days=history_days))
        shift_day = start.date() + timedelta(days=int(days * rng.uniform(0.2, 0.7)))
        frame = _with_demand_shift(frame, shift_day, rng)
        plans[name] = frame.select(*base.series_keys, base.time_column, *known_in_advance(base))
        frame = frame.filter(pl.col("date") < start.date() + timedelta(days=days))
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
    return trace, FrameSource(frames, trace, contracts, plans), contracts


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


def _file_landing(frame: pl.DataFrame, contract: Contract, delay: timedelta) -> datetime:
    """When a file of ``frame`` lands by default: the end of its newest row's period, plus ``delay``."""
    newest = frame[contract.time_column].max()
    moment = _midnight(newest) if not isinstance(newest, datetime) else newest.replace(tzinfo=timezone.utc)
    return moment + contract.period + delay


def _read_landing_times(path: Path) -> dict[str, datetime]:
    """A small CSV ``file,landed_at`` (ISO 8601; a naive time is UTC)."""
    table = pl.read_csv(path, infer_schema=False)
    if not {"file", "landed_at"} <= set(table.columns):
        raise LabError(f"{path}: needs the columns 'file' and 'landed_at', found {table.columns}")
    out = {}
    for name, value in table.select("file", "landed_at").iter_rows():
        try:
            moment = datetime.fromisoformat(value.strip())
        except (AttributeError, ValueError):
            raise LabError(f"{path}: landed_at {value!r} of {name!r} is not an ISO 8601 time") from None
        out[name.strip()] = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
    return out


def dir_trace(folder: Path, contract_file: Path, days: int = 56, delay: timedelta = timedelta(hours=1),
              landed_at: Path | None = None) -> tuple[Trace, FrameSource, dict[str, Contract]]:
    """A folder of files (``*.csv``, ``*.parquet``) of one dataset, each an arrival.

    Each file is checked against the contract with ingestion's rules (a file with a
    missing or extra column is refused; rows breaking a rule are left out and
    counted). A file lands at the end of its newest row's period plus ``delay``
    (yesterday's file at 00:00 plus one hour, for a daily file), or at the time
    the ``landed_at`` CSV (columns ``file``, ``landed_at``) gives it. The replayed
    window is the ``days`` days up to one day after the newest landing; what landed
    before is the history.
    """
    contract = parse_contract(Path(contract_file))
    files = sorted(p for p in Path(folder).iterdir() if p.suffix in (".csv", ".parquet") and p.is_file())
    if not files:
        raise LabError(f"{folder}: no .csv or .parquet files")
    times = _read_landing_times(landed_at) if landed_at else {}
    unknown = sorted(set(times) - {p.name for p in files})
    if unknown:
        raise LabError(f"{landed_at}: names files that are not in {folder}: {unknown[:3]}")
    arrivals, frames, dropped = [], {}, 0
    far_future = datetime(2200, 1, 1, tzinfo=timezone.utc)  # history may be old: no 'future' rule here
    for p in files:
        raw = (pl.scan_csv(p, infer_schema=False) if p.suffix == ".csv"
               else pl.scan_parquet(p).with_columns(pl.all().cast(pl.String)))
        problems = check_header(raw.collect_schema().names(), contract)
        if problems:
            raise LabError(f"{p}: " + "; ".join(x.detail for x in problems))
        checked = typed_with_violations(raw, contract, far_future, 0.0).collect()
        frame = valid_rows(checked.lazy(), contract).collect()
        dropped += checked.height - frame.height
        if not frame.height:
            continue
        if landed_at and p.name not in times:
            raise LabError(f"{landed_at}: no landing time for {p.name}")
        moment = times[p.name] if landed_at else _file_landing(frame, contract, delay)
        frames[(contract.name, p.name)] = frame
        arrivals.append(Arrival(contract.name, p.name, moment, frame.height, frame[contract.time_column].min(),
                                frame[contract.time_column].max()))
    if not arrivals:
        raise LabError(f"{folder}: no valid rows in any file")
    end = max(a.landed_at for a in arrivals) + timedelta(days=1)  # a day for every policy to act on the last file
    start = end - timedelta(days=days)
    if min(a.landed_at for a in arrivals) >= start:
        raise LabError(f"{folder}: every file lands within the last {days} days; nothing is left as history to "
                       "train the first model on (use a smaller --days)")
    trace = Trace(tuple(arrivals), start, end)
    source = FrameSource(frames, trace, {contract.name: contract})
    source.dropped_rows = dropped
    return trace, source, {contract.name: contract}


def build_trace(from_lake: bool, datasets: int, days: int, seed: int,
                settings: Settings) -> tuple[Trace, BatchSource, dict[str, Contract]]:
    """The lake's own history (``from_lake``) or a synthetic trace of that size."""
    if from_lake:
        return lake_trace(Lake.from_settings(settings), settings.contracts_dir)
    return synthetic_trace(datasets=datasets, days=days, seed=seed)


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


def known_in_advance(contract: Contract) -> tuple[str, ...]:
    """Exogenous columns whose future values a forecast may be given (the contract's ``known`` columns)."""
    return tuple(getattr(contract, "known", contract.exogenous))


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
        known = known_in_advance(c)
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
            for req in (r for r in requests if r.dataset == d):
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

    def publish(self, dataset: str, mode: str, runs: list[Run], promotions: list[Promotion]) -> list[Published]:
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
            if at > self.trace.end:
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


# ------------------------------------------------------------------ measures (pure)
def inclusion_times(arrivals: Sequence[Arrival], promotions: Sequence[tuple[datetime, datetime]]) -> dict[str, datetime | None]:
    """When each batch first reached an output (a promoted model, a published forecast): the earliest
    ``available_at`` of one whose run started at or after the batch landed (``None``: never, within the trace)."""
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


def in_hand(published: Sequence[Published], actuals: pl.DataFrame, contract: Contract,
            after: Any) -> tuple[np.ndarray, np.ndarray, int, int]:
    """The forecast a user had in hand for each period: for every actual row after ``after`` (the history's
    newest time), the latest forecast published before that period began that covers it.

    Returns (actual, forecast) of the covered rows, the number covered and the number of rows.
    """
    c, keys, t = contract, [*contract.series_keys], contract.time_column
    rows = actuals.filter(pl.col(t) > after).select(*keys, t, c.target) if after is not None else actuals.select(*keys, t, c.target)
    frames = [p.forecast.frame.select(*keys, t, "forecast").with_columns(pl.lit(p.published_at).alias("__pub"))
              for p in published if p.forecast.frame.height]
    if not frames or not rows.height:
        return np.zeros(0), np.zeros(0), 0, rows.height
    begins = pl.col(t).cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
    issued = (pl.concat(frames).filter(pl.col("__pub") <= begins)
              .sort("__pub").group_by([*keys, t], maintain_order=True).last())
    scored = rows.join(issued, on=[*keys, t], how="inner")
    return scored[c.target].to_numpy(), scored["forecast"].to_numpy(), scored.height, rows.height


def combination_name(policy: str, mode: str) -> str:
    return f"{policy} / forecast {mode}"


def summarize(engine: Replay, results: list[PolicyRun], *, source: str, runtime_seconds: float | None = None,
              shown: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The lab's report: per (retraining policy, forecast mode) and per dataset cost, staleness and accuracy.

    ``shown``: the (policy name, mode) pairs of the default table (default: ``default_combinations``);
    every combination is in the report, with ``shown`` telling which the table prints.
    """
    trace, cfg = engine.trace, engine.config
    if shown is None:
        by_name = {r.policy.name: r.policy for r in results}
        shown = [(p.name, m) for p, m in default_combinations(list(by_name.values()))]
    shown_set = set(shown)
    grid = []
    t = trace.start
    while t <= trace.end:
        grid.append(t)
        t += cfg.sample_every
    days = [trace.start.date() + timedelta(days=k) for k in range((trace.end - trace.start).days + 1)]
    report: dict[str, Any] = {
        "source": source,
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "config": {"train_latency_minutes": _hours(cfg.train_latency) * 60,
                   "forecast_latency_minutes": _hours(cfg.forecast_latency) * 60,
                   "threshold_hours": _hours(cfg.threshold),
                   "lab_xgboost": LAB_XGB,
                   "target_transform": {d: getattr(c, "target_transform", None) for d, c in engine.contracts.items()},
                   "evaluation_periods": {d: F.evaluation_periods(c, engine.settings) for d, c in engine.contracts.items()},
                   "min_improvement": engine.settings.min_improvement,
                   "engine": {"train": f"{TR.train_model.__module__}.{TR.train_model.__name__}",
                              "forecast": f"{FC.forecast_frame.__module__}.{FC.forecast_frame.__name__}"}},
        "trace": {"start": trace.start.isoformat(), "end": trace.end.isoformat(), "datasets": {
            d: {"history_rows": sum(a.rows for a in trace.history(d)), "arrivals": len(trace.new_arrivals(d)),
                "new_rows": sum(a.rows for a in trace.new_arrivals(d)),
                "first_model_promoted": engine.first_champion[d] is not None} for d in trace.datasets}},
        "policies": [],
        "runs": [],
        "published": [],
        "curves": {"times": [g.isoformat() for g in grid], "lag_hours": {}, "days": [d.isoformat() for d in days],
                   "wape": {}},
    }
    for res in results:
        report["runs"] += [_run_json(r) for r in res.runs]
        for mode in FORECAST_MODES:
            report["policies"].append(_combination(engine, res, mode, (res.policy.name, mode) in shown_set, report,
                                                   grid, days))
    report["policies"].append(_naive_reference(engine, report, grid, days))
    report["distinct_trainings"] = len(engine.fits)
    report["distinct_forecasts"] = len(engine.forecasts)
    report["training_cpu_seconds_spent"] = engine.fit_cpu_seconds
    report["forecast_cpu_seconds_spent"] = engine.forecast_cpu_seconds
    report["runtime_seconds"] = runtime_seconds
    return report


def _combination(engine: Replay, res: PolicyRun, mode: str, shown: bool, report: dict[str, Any],
                 grid: list[datetime], days: list[date], name: str | None = None) -> dict[str, Any]:
    trace, cfg = engine.trace, engine.config
    name = name or combination_name(res.policy.name, mode)
    per_dataset: dict[str, Any] = {}
    pooled: dict[str, list] = {"stale": [], "model": [], "acts": [], "fcs": [], "shares": [], "lags": [], "censored": [0],
                               "hand_acts": [], "hand_fcs": [], "covered": []}
    daily: dict[date, tuple[list, list]] = {d: ([], []) for d in days}
    for d in trace.datasets:
        new = trace.new_arrivals(d)
        pubs = res.forecasts[mode][d]
        # a forecast with no rows (every series lacked its known-in-advance values) delivers nothing
        included = inclusion_times(new, [(p.started_at, p.published_at) for p in pubs if p.forecast.frame.height])
        stale, censored = staleness(new, included, trace.end)
        promos = [(p.started_at, p.available_at) for p in res.promotions[d] if p.fit is not None]
        model_stale, model_censored = staleness(new, inclusion_times(new, promos), trace.end)
        share = share_lagging(new, included, trace.start, trace.end, cfg.threshold)
        pooled["lags"].append([_hours(lag_at(new, included, g)) for g in grid])
        acts = [p.forecast.errors[0] for p in pubs if p.forecast.errors]
        fcs = [p.forecast.errors[1] for p in pubs if p.forecast.errors]
        history = [a.max_time for a in trace.history(d)]
        hand_act, hand_fc, covered, hand_rows = in_hand(pubs, engine.actuals(d), engine.contracts[d],
                                                        max(history) if history else None)
        pooled["hand_acts"].append(hand_act)
        pooled["hand_fcs"].append(hand_fc)
        pooled["covered"].append((covered, hand_rows))
        for p in pubs:
            if p.forecast.errors and p.published_at.date() in daily:
                daily[p.published_at.date()][0].append(p.forecast.errors[0])
                daily[p.published_at.date()][1].append(p.forecast.errors[1])
            report["published"].append({"combination": name, "dataset": d, "trigger": p.trigger,
                                        "started_at": p.started_at.isoformat(), "published_at": p.published_at.isoformat(),
                                        "watermark": str(p.forecast.watermark), "model_batches": len(p.forecast.model or ()),
                                        "method": "model" if p.forecast.model is not None else "seasonal naive",
                                        "rows": p.forecast.frame.height, "scored_rows": p.forecast.scored_rows,
                                        "wape": p.forecast.wape, "mae": p.forecast.mae})
        runs = [r for r in res.runs if r.dataset == d]
        train_cpu = sum(r.cpu_seconds for r in runs)
        fc_cpu = sum(p.forecast.cpu_seconds for p in pubs)
        per_dataset[d] = {
            "runs": sum(r.outcome != "not-started" for r in runs),
            "trainings": sum(r.outcome in ("trained", "failed") for r in runs),
            "nothing_new": sum(r.outcome == "nothing-new" for r in runs),
            "promotions": sum(p.fit is not None for p in res.promotions[d][1:]),
            "forecasts": len(pubs),
            "train_cpu_seconds": train_cpu,
            "forecast_cpu_seconds": fc_cpu,
            "cpu_seconds": train_cpu + fc_cpu,
            "staleness": {**_percentiles(stale), "not_served_by_end": censored},
            "model_staleness": {**_percentiles(model_stale), "not_served_by_end": model_censored},
            "share_lagging": share,
            "error": _error(acts, fcs),
            "in_hand": {**_error([hand_act], [hand_fc]), "covered": covered / hand_rows if hand_rows else None},
        }
        pooled["stale"] += stale
        pooled["model"] += model_stale
        pooled["censored"][0] += censored
        pooled["shares"].append(share)
        pooled["acts"] += acts
        pooled["fcs"] += fcs
    total = {k: sum(v[k] for v in per_dataset.values()) for k in
             ("runs", "trainings", "nothing_new", "promotions", "forecasts", "train_cpu_seconds",
              "forecast_cpu_seconds", "cpu_seconds")}
    total |= {"staleness": {**_percentiles(pooled["stale"]), "not_served_by_end": pooled["censored"][0]},
              "model_staleness": {**_percentiles(pooled["model"]),
                                  "not_served_by_end": sum(v["model_staleness"]["not_served_by_end"]
                                                           for v in per_dataset.values())},
              "share_lagging": float(np.mean(pooled["shares"])) if pooled["shares"] else 0.0,
              "error": _error(pooled["acts"], pooled["fcs"]),
              "in_hand": {**_error(pooled["hand_acts"], pooled["hand_fcs"]),
                          "covered": (sum(c for c, _ in pooled["covered"]) / sum(n for _, n in pooled["covered"])
                                      if sum(n for _, n in pooled["covered"]) else None)}}
    report["curves"]["lag_hours"][name] = [float(np.mean(col)) for col in zip(*pooled["lags"])] if pooled["lags"] else []
    report["curves"]["wape"][name] = _rolling_wape(daily, days, cfg.error_window_days)
    return {"name": name, "retrain": res.policy.name, "forecast": mode, "shown": shown,
            "description": (type(res.policy).__doc__ or "").strip(), "params": _params(res.policy),
            "total": total, "datasets": per_dataset, "replay_seconds": res.seconds}


def _naive_reference(engine: Replay, report: dict[str, Any], grid: list[datetime], days: list[date]) -> dict[str, Any]:
    """Seasonal naive forecasts on every landing: no model at all, the reference every model must beat."""
    trace = engine.trace
    promotions = {d: [Promotion(trace.start, trace.start, None)] for d in trace.datasets}
    res = PolicyRun(Never(name=NAIVE), [], promotions, 0.0,
                    {ON_LANDING: {d: engine.publish(d, ON_LANDING, [], promotions[d]) for d in trace.datasets},
                     AFTER_TRAINING: {d: [] for d in trace.datasets}})
    out = _combination(engine, res, ON_LANDING, True, report, grid, days, name=NAIVE)
    out.update( retrain="-", description="Seasonal-naive forecasts on every landing, no model: the reference.")
    return out


NAIVE = "seasonal naive (no model)"


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
    """Replay every policy on the trace in every forecast mode and summarise (``runner`` lets the flow run each
    policy as a task)."""
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
        published = sum(len(v) for v in res.forecasts[ON_LANDING].values())
        progress(f"[{k}/{len(policies)}] {policy.name}: {len(res.runs)} runs, {trained} trainings "
                 f"({trained - reused} new, {reused} reused), {published} forecasts on landing in {res.seconds:.1f} s")
    progress("scoring the published forecasts ...")
    return summarize(engine, results, source=source_name, runtime_seconds=time.monotonic() - began)


def run_seeds(seeds: Sequence[int], datasets: int, days: int, policies: Sequence[Policy], settings: Settings | None = None,
              config: LabConfig = LabConfig(), progress: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """The synthetic lab on several seeds: per combination the median and range of its measures, and how
    often each pair of shown combinations swaps places in the WAPE ranking."""
    reports = []
    for seed in seeds:
        progress(f"seed {seed}:")
        trace, source, contracts = synthetic_trace(datasets=datasets, days=days, seed=seed)
        reports.append(run_lab(trace, source, contracts, policies, settings, config, source_name=f"synthetic seed {seed}",
                               progress=progress))
    return {"seeds": list(seeds), "reports": reports, "spread": seed_spread(reports)}


SPREAD_MEASURES = {"served_p50_h": lambda t: t["staleness"]["p50_h"], "wape": lambda t: t["error"]["wape"],
                   "cpu_seconds": lambda t: t["cpu_seconds"], "trainings": lambda t: t["trainings"],
                   "promotions": lambda t: t["promotions"]}


def seed_spread(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each measure per combination over the reports, and the WAPE rank per seed."""
    names = [p["name"] for p in reports[0]["policies"]]
    out: dict[str, Any] = {"combinations": {}, "wape_rank": {}}
    for name in names:
        rows = [next(p for p in r["policies"] if p["name"] == name) for r in reports]
        entry = {"shown": rows[0]["shown"]}
        for key, get in SPREAD_MEASURES.items():
            values = [get(r["total"]) for r in rows]
            values = [v for v in values if v is not None]
            entry[key] = ({"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
                           "values": values} if values else None)
        out["combinations"][name] = entry
    for r in reports:
        shown = sorted((p for p in r["policies"] if p["shown"] and p["total"]["error"]["wape"] is not None),
                       key=lambda p: p["total"]["error"]["wape"])
        out["wape_rank"][r["source"]] = [p["name"] for p in shown]
    return out


def format_spread(spread: dict[str, Any]) -> str:
    """A table of the shown combinations over seeds: median [min .. max]."""
    def cell(v: dict | None, fmt: str) -> str:
        return "-" if v is None else f"{format(v['median'], fmt)} [{format(v['min'], fmt)} .. {format(v['max'], fmt)}]"

    rows = [{"policy": name, "served p50 (h)": cell(e["served_p50_h"], ".2f"), "WAPE": cell(e["wape"], ".4f"),
             "CPU s": cell(e["cpu_seconds"], ".0f"), "trainings": cell(e["trainings"], ".0f"),
             "promoted": cell(e["promotions"], ".0f")}
            for name, e in spread["combinations"].items() if e["shown"]]
    ranks = "\n".join(f"  {src}: " + " < ".join(names) for src, names in spread["wape_rank"].items())
    return format_table(rows) + "\n\nWAPE ranking per seed (best first):\n" + ranks


# ------------------------------------------------------------------ output
def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def fmt_duration(hours: float | None) -> str:
    """Minutes under two hours, hours under two days, then days: '1 min', '9.4 h', '4.0 d'."""
    if hours is None:
        return "-"
    if hours < 2:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


TABLE_COLUMNS = ("retraining", "forecasts", "trainings", "promoted", "published", "CPU s", "served p50", "served p95",
                 "served max", "model p50", "WAPE", "in-hand WAPE", "covered %")


def table_rows(report: dict[str, Any], dataset: str | None = None, everything: bool = False) -> list[dict[str, str]]:
    """One row per shown combination (``everything``: every one), all datasets or one, for a terminal or an artifact."""
    rows = []
    for p in report["policies"]:
        if not (everything or p["shown"]):
            continue
        m = p["total"] if dataset is None else p["datasets"][dataset]
        s, ms = m["staleness"], m["model_staleness"]
        cells = [p["retrain"] if p["retrain"] != "-" else p["name"], p["forecast"], str(m["trainings"]),
                 str(m["promotions"]), str(m["forecasts"]), _f(m["cpu_seconds"], ".1f"),
                 fmt_duration(s["p50_h"]), fmt_duration(s["p95_h"]),
                 fmt_duration(s["max_h"]) + ("+" if s["not_served_by_end"] else ""),
                 fmt_duration(ms["p50_h"]),
                 _f(m["error"]["wape"], ".4f"), _f(m["in_hand"]["wape"], ".4f"),
                 _f(None if m["in_hand"]["covered"] is None else 100 * m["in_hand"]["covered"], ".0f")]
        rows.append(dict(zip(TABLE_COLUMNS, cells)))
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """A plain-text table (also valid Markdown); the first two columns left-aligned, numbers right-aligned."""
    cols = list(rows[0])
    left = set(cols[:2]) if len(cols) > 2 else {cols[0]}
    width = {c: max(len(c), *(len(r[c]) for r in rows)) for c in cols}
    line = lambda cells: "| " + " | ".join(  # noqa: E731
        (v.ljust(width[c]) if c in left else v.rjust(width[c])) for c, v in zip(cols, cells)) + " |"
    sep = "|" + "|".join(("-" * (width[c] + 2)) if c in left else ("-" * (width[c] + 1) + ":") for c in cols) + "|"
    return "\n".join([line(cols), sep, *(line([r[c] for c in cols]) for r in rows)])


NOTES = ("served p50/p95/max: from a file landing to the first published forecast that uses it ('+': some files had "
         "none by the end, counted up to the end). model p50: from a file landing to the first promoted model trained "
         "on it. published: forecasts published (one identical to the previous, same data and model, is not "
         "published again). CPU s: measured process CPU of the trainings and forecasts. WAPE: every published "
         "forecast scored on the rows it forecast that have landed by the end, pooled. in-hand WAPE: each period scored "
         "with the latest forecast published before it began (what a user had in hand); covered %: share of the "
         "window's periods that had one.")


def format_report(report: dict[str, Any]) -> str:
    """The terminal summary: all datasets, then one table per dataset."""
    cfg, tr = report["config"], report["trace"]
    out = [f"Retraining and forecasting policies on {len(tr['datasets'])} dataset(s), {tr['start'][:16]} .. "
           f"{tr['end'][:16]} UTC ({report['source']} trace; a model serves {cfg['train_latency_minutes']:.0f} min "
           f"after its run starts, a forecast is published {cfg['forecast_latency_minutes']:.0f} min after its trigger)",
           "", "All datasets", format_table(table_rows(report))]
    for d, info in tr["datasets"].items():
        out += ["", f"{d}: {info['arrivals']} arrivals, {info['new_rows']} new rows on {info['history_rows']} rows of "
                    f"history" + ("" if info.get("first_model_promoted", True) else
                                  "; the first model did not beat seasonal naive"),
                format_table(table_rows(report, d))]
    out += ["", f"The table shows {sum(p['shown'] for p in report['policies'])} of {len(report['policies'])} "
                "combinations; report.json has every one.", NOTES]
    return "\n".join(out)


def render_chart(report: dict[str, Any]) -> bytes:
    """A PNG: staleness of the published forecasts and their error over time, one line per shown combination."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    curves = report["curves"]
    times = [datetime.fromisoformat(t) for t in curves["times"]]
    days = [datetime.fromisoformat(d) + timedelta(hours=12) for d in curves["days"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    colors = plt.get_cmap("tab10").colors
    shown = [p for p in report["policies"] if p["shown"]]
    for k, p in enumerate(shown):
        name, style = p["name"], {"color": colors[k % 10], "linewidth": 1.4}
        if p["forecast"] == AFTER_TRAINING:
            style["linestyle"] = "--"
        if p["name"] == NAIVE:
            style.update(color="0.55", linestyle=":")
        top.step(times, [max(v, 0.01) for v in curves["lag_hours"][name]], where="post", label=name, **style)
        bottom.plot(days, [np.nan if v is None else v for v in curves["wape"][name]], label=name, **style)
    thr = report["config"]["threshold_hours"]
    top.axhline(thr, color="black", linestyle="--", linewidth=0.8)
    top.text(times[0], thr * 1.12, f"threshold {thr:g} h", fontsize=8)
    top.set_yscale("log")
    top.set_ylim(0.01, None)
    top.set_ylabel("hours the oldest landed file has waited\nfor a forecast that uses it (mean over datasets, log)")
    top.set_title("Staleness: how long landed data waits to reach a published forecast")
    top.legend(fontsize=7, ncol=3, loc="upper left")
    bottom.set_ylabel(f"WAPE, forecasts published in the last {LabConfig.error_window_days} days")
    bottom.set_title("Accuracy: each published forecast scored on the rows it forecast (lower is better)")
    bottom.legend(fontsize=7, ncol=3, loc="upper left")
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
