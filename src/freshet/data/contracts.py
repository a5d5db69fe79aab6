"""Dataset contracts: one TOML file per dataset, no code change to add one.

Reads the folder named by the ``contracts_dir`` setting (``FRESHET_CONTRACTS_DIR``).
Every error names the file and the field so a person can fix it.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import polars as pl

DATASET_NAME = re.compile(r"^[a-z][a-z0-9_]{0,62}$")

DTYPES: dict[str, pl.DataType] = {
    "Date": pl.Date(),
    "Datetime": pl.Datetime("us"),
    "Int8": pl.Int8(),
    "Int16": pl.Int16(),
    "Int32": pl.Int32(),
    "Int64": pl.Int64(),
    "UInt8": pl.UInt8(),
    "UInt16": pl.UInt16(),
    "UInt32": pl.UInt32(),
    "UInt64": pl.UInt64(),
    "Float32": pl.Float32(),
    "Float64": pl.Float64(),
    "Boolean": pl.Boolean(),
    "String": pl.String(),
}
# ``frequency`` is a duration: a whole number and a unit (m minutes, h hours, d days, w weeks).
FREQUENCY_ALIASES = {"daily": "1d", "hourly": "1h", "weekly": "1w"}
DURATION = re.compile(r"^([1-9][0-9]*)(m|h|d|w)$")
_UNITS = {"m": timedelta(minutes=1), "h": timedelta(hours=1), "d": timedelta(days=1), "w": timedelta(weeks=1)}
FREQUENCIES = {alias: _UNITS[dur[-1]] * int(dur[:-1]) for alias, dur in FREQUENCY_ALIASES.items()}
OBJECTIVES = ("squared_error", "absolute_error", "poisson", "tweedie")
TARGET_TRANSFORMS = ("auto", "none", "seasonal_difference", "level_scale")
BACKTEST_WINDOWS = 4  # default rolling-origin windows of ``horizon`` periods each
DEFAULT_QUANTILES = (0.1, 0.5, 0.9)
# What a forecast does for a period whose known-in-advance input has no future value (see modeling.forecast).
ON_MISSING_FUTURE = ("missing", "fallback", "skip")
# Live accuracy (modeling.scoring): model.degraded fires when the champion's WAPE on the newest ``drift_window`` of
# scored periods exceeds its backtest WAPE by more than ``drift_tolerance`` (a share: 0.5 = 50 % worse). 0.5 was
# measured on the lab's replays (README, "Live accuracy"): below it, ordinary week-to-week noise fires.
DEFAULT_DRIFT_WINDOW = "7d"  # rounded up to whole periods
DEFAULT_DRIFT_TOLERANCE = 0.5
RULE_KEYS = {"non_null", "min", "max", "allowed"}


def parse_duration(text: str) -> timedelta:
    """``"15m"``, ``"1h"``, ``"14d"``, ``"1w"`` (and the aliases ``daily``, ``hourly``, ``weekly``) as a timedelta."""
    text = FREQUENCY_ALIASES.get(text, text) if isinstance(text, str) else text
    m = DURATION.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        raise ValueError(f"{text!r} is not a duration; write a whole number and a unit: 15m, 1h, 1d, 1w")
    return _UNITS[m.group(2)] * int(m.group(1))


def default_season_length(period: timedelta) -> int:
    """One day of periods for sub-daily data, a week for daily, a year for weekly, else 1."""
    if period < timedelta(days=1) and timedelta(days=1) % period == timedelta(0):
        return timedelta(days=1) // period
    if period == timedelta(days=1):
        return 7
    if period == timedelta(weeks=1):
        return 52
    return 1


class ContractError(ValueError):
    """A contract file is missing, unreadable or inconsistent."""


class UnknownDatasetError(ContractError):
    """No contract exists for the requested dataset name."""


@dataclass(frozen=True)
class Rule:
    non_null: bool = False
    min: float | None = None
    max: float | None = None
    allowed: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Contract:
    name: str
    columns: dict[str, pl.DataType]
    time_column: str
    frequency: str
    series_keys: tuple[str, ...]
    target: str
    exogenous: tuple[str, ...]
    horizon: int
    season_length: int
    rules: dict[str, Rule] = field(default_factory=dict)
    # exogenous columns only measured as they happen (weather observed, footfall): read at the forecast origin or earlier.
    # ``exogenous`` holds the columns known in advance (price plan, promotion, weather forecast): used at t.
    observed: tuple[str, ...] = ()
    objective: str = "squared_error"
    target_transform: str = "none"   # "auto": the candidates' validation WAPE picks (measured: BENCHMARKS.md)
    holdout_periods: int | None = None      # backtest span; None: BACKTEST_WINDOWS * horizon
    validation_periods: int | None = None   # early-stopping span before it; None: see ``default_validation``
    extra_columns: str = "reject"
    staleness_hours: float = 48.0
    quantiles: tuple[float, ...] = DEFAULT_QUANTILES  # forecast quantile columns (p10, p50, p90)
    on_missing_future: str = "missing"      # a known input without a future value: missing | fallback | skip
    retire_after_periods: int | None = None  # series with no row for this long are no longer forecast
    drift_window_periods: int = 7  # live accuracy pools this many newest periods (contract ``drift_window``)
    drift_tolerance: float = DEFAULT_DRIFT_TOLERANCE  # model.degraded when live WAPE > backtest WAPE x (1 + this)
    description: str = ""
    source: str = ""
    fingerprint: str = ""

    @property
    def period(self) -> timedelta:
        return parse_duration(self.frequency)

    @property
    def known(self) -> tuple[str, ...]:
        """Exogenous columns known in advance (the ``known`` list, or ``exogenous`` in older contracts)."""
        return self.exogenous

    @property
    def sub_daily(self) -> bool:
        return self.period < timedelta(days=1)

    def default_holdout(self) -> int:
        return BACKTEST_WINDOWS * self.horizon

    def default_validation(self) -> int:
        return max(BACKTEST_WINDOWS * self.horizon, 2 * self.season_length)

    @property
    def required_non_null(self) -> tuple[str, ...]:
        """Columns that may never be null: time, keys, target, plus rules asking for it."""
        implicit = (self.time_column, *self.series_keys, self.target)
        explicit = tuple(c for c, r in self.rules.items() if r.non_null and c not in implicit)
        return implicit + explicit

    @property
    def is_datetime(self) -> bool:
        return self.columns[self.time_column] == pl.Datetime("us")


def _fail(path: Path, fld: str, msg: str) -> ContractError:
    return ContractError(f"{path}: field '{fld}': {msg}")


def parse_contract(path: Path) -> Contract:
    """Parse and check one contract file."""
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ContractError(f"{path}: contract file not found") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"{path}: not valid TOML: {exc}") from None

    def need(key: str, kind: type | tuple[type, ...]) -> Any:
        if key not in raw:
            raise _fail(path, key, "is required")
        value = raw[key]
        if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
            raise _fail(path, key, f"expected {getattr(kind, '__name__', kind)}, got {value!r}")
        return value

    name = need("name", str)
    if not DATASET_NAME.fullmatch(name):
        raise _fail(path, "name", f"{name!r} must match {DATASET_NAME.pattern}")
    if path.stem != name:
        raise _fail(path, "name", f"{name!r} must equal the file name {path.stem!r}")

    raw_columns = need("columns", dict)
    columns: dict[str, pl.DataType] = {}
    for col, dtype in raw_columns.items():
        if dtype not in DTYPES:
            raise _fail(path, f"columns.{col}", f"unknown dtype {dtype!r}; use one of {sorted(DTYPES)}")
        columns[col] = DTYPES[dtype]

    def column_ref(key: str, value: str) -> str:
        if value not in columns:
            raise _fail(path, key, f"column {value!r} is not declared in [columns]")
        return value

    time_column = column_ref("time_column", need("time_column", str))
    if columns[time_column] not in (pl.Date(), pl.Datetime("us")):
        raise _fail(path, "time_column", "must be a Date or Datetime column")
    frequency = need("frequency", str)
    try:
        period = parse_duration(frequency)
    except ValueError as exc:
        raise _fail(path, "frequency", f"{exc} (or one of {sorted(FREQUENCY_ALIASES)})") from None
    if columns[time_column] == pl.Date() and period % timedelta(days=1) != timedelta(0):
        raise _fail(path, "time_column", f"frequency {frequency!r} is shorter than a day: it needs a Datetime time column")
    keys = tuple(column_ref("series_keys", k) for k in need("series_keys", list))
    if not keys:
        # features, backtests and forecasts are computed per series; one series is a constant key
        raise _fail(path, "series_keys", "needs at least one column; for a single series declare a constant "
                    "column (e.g. series = \"String\", the same value in every row) and name it here")
    target = column_ref("target", need("target", str))
    if not columns[target].is_numeric():
        raise _fail(path, "target", f"column {target!r} must be numeric")
    if "known" in raw and "exogenous" in raw:
        raise _fail(path, "exogenous", "give either 'known' or its older name 'exogenous', not both")
    known_key = "known" if "known" in raw else "exogenous"
    known = tuple(column_ref(known_key, c) for c in raw.get(known_key, []))
    observed = tuple(column_ref("observed", c) for c in raw.get("observed", []))
    for col in (*known, *observed):
        if col in (time_column, target, *keys):
            raise _fail(path, known_key if col in known else "observed",
                        f"column {col!r} is the time column, the target or a series key, not an exogenous input")
    both = set(known) & set(observed)
    if both:
        raise _fail(path, "observed", f"column {sorted(both)[0]!r} is also listed as known")
    horizon = need("horizon", int)
    if horizon < 1:
        raise _fail(path, "horizon", "must be at least 1")
    season = raw.get("season_length", default_season_length(period))
    if not isinstance(season, int) or isinstance(season, bool) or season < 1:
        raise _fail(path, "season_length", "must be a positive integer")
    objective = raw.get("objective", "squared_error")
    if objective not in OBJECTIVES:
        raise _fail(path, "objective", f"{objective!r}; use one of {list(OBJECTIVES)}")
    transform = raw.get("target_transform", "none")
    if transform not in TARGET_TRANSFORMS:
        raise _fail(path, "target_transform", f"{transform!r}; use one of {list(TARGET_TRANSFORMS)}")
    spans: dict[str, int | None] = {}
    for key in ("holdout", "validation"):
        if key not in raw:
            spans[key] = None
            continue
        try:
            span = parse_duration(raw[key])
        except ValueError as exc:
            raise _fail(path, key, str(exc)) from None
        if span % period != timedelta(0):
            raise _fail(path, key, f"{raw[key]!r} is not a whole number of periods of {frequency!r}")
        spans[key] = span // period
    if spans["holdout"] is not None and spans["holdout"] < horizon:
        raise _fail(path, "holdout", f"{raw['holdout']!r} is shorter than the horizon ({horizon} periods)")
    extra = raw.get("extra_columns", "reject")
    if extra not in ("reject", "ignore"):
        raise _fail(path, "extra_columns", f"{extra!r}; use 'reject' or 'ignore'")
    quantiles = raw.get("quantiles", list(DEFAULT_QUANTILES))
    if not isinstance(quantiles, list) or not quantiles:
        raise _fail(path, "quantiles", f"must be a non-empty list of numbers in (0, 1), got {quantiles!r}")
    for q in quantiles:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 < q < 1:
            raise _fail(path, "quantiles", f"{q!r} is not a number strictly between 0 and 1")
    if len(set(quantiles)) != len(quantiles):
        raise _fail(path, "quantiles", f"{quantiles!r} lists a quantile twice")
    on_missing = raw.get("on_missing_future", "missing")
    if on_missing not in ON_MISSING_FUTURE:
        raise _fail(path, "on_missing_future", f"{on_missing!r}; use one of {list(ON_MISSING_FUTURE)}")
    retire_after = None
    if "retire_after" in raw:
        try:
            retire = parse_duration(raw["retire_after"])
        except ValueError as exc:
            raise _fail(path, "retire_after", str(exc)) from None
        if retire < period * horizon:
            raise _fail(path, "retire_after", f"{raw['retire_after']!r} is shorter than the horizon ({horizon} periods "
                        f"of {frequency!r}): a series would be retired while its last forecast is still running")
        retire_after = -(-retire // period)
    drift_periods = -(-parse_duration(DEFAULT_DRIFT_WINDOW) // period)  # default: a week, rounded up to whole periods
    if "drift_window" in raw:
        try:
            drift_window = parse_duration(raw["drift_window"])
        except ValueError as exc:
            raise _fail(path, "drift_window", str(exc)) from None
        if drift_window < period or drift_window % period != timedelta(0):
            raise _fail(path, "drift_window", f"{raw['drift_window']!r} is not a whole number (at least 1) of periods "
                        f"of {frequency!r}")
        drift_periods = drift_window // period
    tolerance = raw.get("drift_tolerance", DEFAULT_DRIFT_TOLERANCE)
    if isinstance(tolerance, bool) or not isinstance(tolerance, (int, float)) or tolerance <= 0:
        raise _fail(path, "drift_tolerance", f"must be a positive number (a share: 0.5 = 50 % worse than the "
                    f"backtest), got {tolerance!r}")
    staleness = raw.get("staleness_hours", 48)
    if not isinstance(staleness, (int, float)) or staleness <= 0:
        raise _fail(path, "staleness_hours", "must be a positive number")

    rules: dict[str, Rule] = {}
    for col, spec in raw.get("rules", {}).items():
        column_ref(f"rules.{col}", col)
        if not isinstance(spec, dict):
            raise _fail(path, f"rules.{col}", "must be a table")
        unknown = set(spec) - RULE_KEYS
        if unknown:
            raise _fail(path, f"rules.{col}.{sorted(unknown)[0]}", f"unknown rule; use {sorted(RULE_KEYS)}")
        for bound in ("min", "max"):
            if bound in spec and (not isinstance(spec[bound], (int, float)) or isinstance(spec[bound], bool)):
                raise _fail(path, f"rules.{col}.{bound}", "must be a number")
        if ("min" in spec or "max" in spec) and not columns[col].is_numeric():
            raise _fail(path, f"rules.{col}", "min/max need a numeric column")
        allowed = spec.get("allowed")
        if allowed is not None and not isinstance(allowed, list):
            raise _fail(path, f"rules.{col}.allowed", "must be a list")
        rules[col] = Rule(
            non_null=bool(spec.get("non_null", False)),
            min=spec.get("min"),
            max=spec.get("max"),
            allowed=tuple(allowed) if allowed is not None else None,
        )

    return Contract(
        name=name,
        columns=columns,
        time_column=time_column,
        frequency=frequency,
        series_keys=keys,
        target=target,
        exogenous=known,
        horizon=horizon,
        season_length=season,
        rules=rules,
        observed=observed,
        objective=objective,
        target_transform=transform,
        holdout_periods=spans["holdout"],
        validation_periods=spans["validation"],
        extra_columns=extra,
        staleness_hours=float(staleness),
        quantiles=tuple(sorted(float(q) for q in quantiles)),
        on_missing_future=on_missing,
        retire_after_periods=retire_after,
        drift_window_periods=drift_periods,
        drift_tolerance=float(tolerance),
        description=str(raw.get("description", "")),
        source=str(path),
        fingerprint=hashlib.sha256(path.read_bytes()).hexdigest()[:16],
    )


def check_dataset_name(name: str) -> str:
    """Reject names that could escape a path or a resource id before any lookup."""
    if not isinstance(name, str) or not DATASET_NAME.fullmatch(name):
        raise UnknownDatasetError(
            f"invalid dataset name {name!r}: use lowercase letters, digits and '_' "
            f"(pattern {DATASET_NAME.pattern})"
        )
    return name


def load_contract(name: str, contracts_dir: Path) -> Contract:
    """The contract of one dataset, by name."""
    check_dataset_name(name)
    path = contracts_dir / f"{name}.toml"
    if not path.is_file():
        known = ", ".join(list_datasets(contracts_dir)) or "none"
        raise UnknownDatasetError(
            f"unknown dataset {name!r}: no contract {path} (known datasets: {known}; "
            "set FRESHET_CONTRACTS_DIR to your contracts folder)"
        )
    return parse_contract(path)


def list_datasets(contracts_dir: Path) -> list[str]:
    """Names of every dataset with a contract file."""
    if not contracts_dir.is_dir():
        return []
    return sorted(p.stem for p in contracts_dir.glob("*.toml"))


def load_all(contracts_dir: Path) -> list[Contract]:
    return [load_contract(n, contracts_dir) for n in list_datasets(contracts_dir)]
