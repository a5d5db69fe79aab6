"""Arrival traces for the policy lab (Prefect-free), and the sources that load their batches.

A trace (``freshet.lab.policies.Trace``) comes from the lake's manifest
(``lake_trace``: what really landed, and when), from a folder of files
(``dir_trace``: a user's own history, each file landing when its data is
complete plus a delay, or when a CSV says), or is generated (``synthetic_trace``:
several datasets with irregular arrivals). Each comes with a ``BatchSource`` that
loads the rows of landed batches and refuses a batch that had not landed yet at
the moment asked (``FutureDataError``). Reads the lake and contracts folder it is
given (``build_trace``: those of ``freshet.settings``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import polars as pl

from freshet.data.contracts import Contract, list_datasets, load_contract, parse_contract
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import load_curated, read_manifest
from freshet.data.lake import Lake
from freshet.data.validation import check_header, typed_with_violations, valid_rows
from freshet.lab.policies import Arrival, Trace
from freshet.settings import BUNDLED_CONTRACTS, Settings


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
                *c.series_keys, c.time_column, *c.known) for d, c in contracts.items()}

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
        plans[name] = frame.select(*base.series_keys, base.time_column, *base.known)
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
