"""Contracts: the shipped file parses; every malformed file fails naming file and field."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import polars as pl
import pytest

from freshet.data.contracts import (
    ContractError,
    UnknownDatasetError,
    check_dataset_name,
    list_datasets,
    load_all,
    load_contract,
    parse_contract,
)
from freshet.settings import BUNDLED_CONTRACTS

GOOD = """\
name = "{name}"
time_column = "date"
frequency = "daily"
series_keys = ["store_id"]
target = "units"
exogenous = ["price"]
horizon = 7

[columns]
date = "Date"
store_id = "Int32"
units = "Float64"
price = "Float64"
colour = "String"

[rules.units]
min = 0

[rules.colour]
allowed = ["red", "blue"]
"""


def write(folder: Path, text: str, name: str = "sales") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_retail_sales_contract_parses() -> None:
    c = load_contract("retail_sales", BUNDLED_CONTRACTS)
    assert c.name == "retail_sales"
    assert c.columns == {
        "date": pl.Date(),
        "store_id": pl.Int32(),
        "item_id": pl.Int32(),
        "units_sold": pl.Float64(),
        "price": pl.Float64(),
        "on_promo": pl.Boolean(),
    }
    assert (c.time_column, c.frequency, c.period, c.target) == ("date", "1d", timedelta(days=1), "units_sold")
    assert c.series_keys == ("store_id", "item_id")
    assert c.exogenous == c.known == ("price", "on_promo") and c.observed == ()
    assert (c.objective, c.target_transform, c.holdout_periods, c.validation_periods) == ("squared_error", "none", 28, 28)
    assert (c.horizon, c.season_length) == (7, 7)
    assert c.rules["units_sold"].min == 0 and c.rules["units_sold"].max == 100000
    assert c.rules["price"].min == 0.01 and c.rules["price"].non_null
    assert c.rules["on_promo"].allowed == (True, False)
    assert c.required_non_null == ("date", "store_id", "item_id", "units_sold", "price", "on_promo")
    assert c.extra_columns == "reject"
    assert len(c.fingerprint) == 16
    assert list_datasets(BUNDLED_CONTRACTS) == ["retail_sales"]
    assert [x.name for x in load_all(BUNDLED_CONTRACTS)] == ["retail_sales"]


def test_a_hand_written_contract_parses(tmp_path: Path) -> None:
    c = parse_contract(write(tmp_path, GOOD.format(name="sales")))
    assert c.columns["colour"] == pl.String()
    assert c.rules["colour"].allowed == ("red", "blue")
    assert c.season_length == 7  # the daily default
    assert c.source == str(tmp_path / "sales.toml")


@pytest.mark.parametrize(("frequency", "period", "season"), [
    ("daily", timedelta(days=1), 7), ("1d", timedelta(days=1), 7), ("hourly", timedelta(hours=1), 24),
    ("1h", timedelta(hours=1), 24), ("15m", timedelta(minutes=15), 96), ("1w", timedelta(weeks=1), 52),
    ("weekly", timedelta(weeks=1), 52), ("2h", timedelta(hours=2), 12), ("3d", timedelta(days=3), 1),
])
def test_frequency_is_a_duration_with_a_season_default(tmp_path: Path, frequency: str, period: timedelta,
                                                      season: int) -> None:
    text = GOOD.format(name="sales").replace('frequency = "daily"', f'frequency = "{frequency}"')
    if period < timedelta(days=1):
        text = text.replace('date = "Date"', 'date = "Datetime"')
    c = parse_contract(write(tmp_path, text))
    assert (c.period, c.season_length) == (period, season)


def test_known_observed_and_evaluation_spans(tmp_path: Path) -> None:
    text = GOOD.format(name="sales").replace('exogenous = ["price"]', 'known = ["colour"]\nobserved = ["price"]')
    text = text.replace("horizon = 7", 'horizon = 7\nholdout = "2w"\nvalidation = "21d"\nobjective = "poisson"')
    c = parse_contract(write(tmp_path, text))
    assert (c.known, c.observed, c.objective) == (("colour",), ("price",), "poisson")
    assert (c.holdout_periods, c.validation_periods) == (14, 21)
    plain = parse_contract(write(tmp_path, GOOD.format(name="sales")))
    assert (plain.holdout_periods, plain.validation_periods) == (None, None)  # per-frequency defaults apply
    assert (plain.default_holdout(), plain.default_validation()) == (28, 28)


def test_fingerprint_changes_with_the_file(tmp_path: Path) -> None:
    a = parse_contract(write(tmp_path, GOOD.format(name="sales"))).fingerprint
    b = parse_contract(write(tmp_path, GOOD.format(name="sales") + "\n[rules.price]\nmax = 5\n")).fingerprint
    assert a != b


def _edit(old: str, new: str) -> str:
    text = GOOD.format(name="sales")
    assert old in text, old
    return text.replace(old, new)


MALFORMED = [
    pytest.param(_edit('price = "Float64"', 'price = "Float65"'), "columns.price", "unknown dtype", id="unknown-dtype"),
    pytest.param(_edit('target = "units"\n', ""), "target", "is required", id="missing-target"),
    pytest.param(_edit("horizon = 7\n", ""), "horizon", "is required", id="missing-horizon"),
    pytest.param(_edit("horizon = 7", 'horizon = "7"'), "horizon", "expected int", id="horizon-not-int"),
    pytest.param(_edit("horizon = 7", "horizon = true"), "horizon", "expected int", id="horizon-bool"),
    pytest.param(_edit("horizon = 7", "horizon = 0"), "horizon", "at least 1", id="horizon-zero"),
    pytest.param(_edit("min = 0", "minimum = 0"), "rules.units.minimum", "unknown rule", id="unknown-rule"),
    pytest.param(_edit("min = 0", 'min = "zero"'), "rules.units.min", "must be a number", id="rule-min-not-number"),
    pytest.param(_edit('allowed = ["red", "blue"]', 'allowed = "red"'), "rules.colour.allowed", "must be a list",
                 id="allowed-not-list"),
    pytest.param(_edit("[rules.colour]", "[rules.colour]\nmin = 1"), "rules.colour", "numeric", id="min-on-string"),
    pytest.param(_edit("[rules.units]", "[rules.weight]"), "rules.weight", "not declared", id="rule-on-undeclared"),
    pytest.param(_edit('target = "units"', 'target = "revenue"'), "target", "not declared", id="target-undeclared"),
    pytest.param(_edit('time_column = "date"', 'time_column = "day"'), "time_column", "not declared",
                 id="time-undeclared"),
    pytest.param(_edit('series_keys = ["store_id"]', 'series_keys = ["shop"]'), "series_keys", "not declared",
                 id="key-undeclared"),
    pytest.param(_edit('exogenous = ["price"]', 'exogenous = ["weather"]'), "exogenous", "not declared",
                 id="exogenous-undeclared"),
    pytest.param(_edit('target = "units"', 'target = "colour"'), "target", "must be numeric", id="target-string"),
    pytest.param(_edit('time_column = "date"', 'time_column = "units"'), "time_column", "Date or Datetime",
                 id="time-not-temporal"),
    pytest.param(_edit('frequency = "daily"', 'frequency = "fortnightly"'), "frequency", "fortnightly",
                 id="bad-frequency"),
    pytest.param(_edit('frequency = "daily"', 'frequency = "0d"'), "frequency", "duration", id="zero-frequency"),
    pytest.param(_edit('frequency = "daily"', 'frequency = "15m"'), "time_column", "Datetime", id="15m-with-date"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nholdout = "10h"'), "holdout", "whole number", id="holdout-hours"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nholdout = "3d"'), "holdout", "shorter than the horizon",
                 id="holdout-short"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nvalidation = "2 weeks"'), "validation", "duration",
                 id="validation-bad"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nobjective = "mape"'), "objective", "mape", id="bad-objective"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\ntarget_transform = "log"'), "target_transform", "log",
                 id="bad-transform"),
    pytest.param(_edit('exogenous = ["price"]', 'exogenous = ["price"]\nknown = ["price"]'), "exogenous",
                 "not both", id="known-and-exogenous"),
    pytest.param(_edit('exogenous = ["price"]', 'known = ["price"]\nobserved = ["price"]'), "observed",
                 "also listed as known", id="known-and-observed"),
    pytest.param(_edit('exogenous = ["price"]', 'observed = ["units"]'), "observed", "target", id="observed-target"),
    pytest.param(_edit('frequency = "daily"', 'frequency = "hourly"'), "time_column", "Datetime",
                 id="hourly-with-date"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nextra_columns = "keep"'), "extra_columns", "keep",
                 id="bad-extra-columns"),
    pytest.param(_edit('name = "sales"', 'name = "Sales"'), "name", "must match", id="name-bad-pattern"),
    pytest.param(_edit('series_keys = ["store_id"]', "series_keys = []"), "series_keys", "constant column",
                 id="no-series-keys"),
    pytest.param(_edit('name = "sales"', 'name = "other"'), "name", "file name", id="name-file-mismatch"),
    pytest.param(_edit("horizon = 7", "horizon = 7\nquantiles = [0.1, 1.0]"), "quantiles", "strictly between 0 and 1",
                 id="quantile-one"),
    pytest.param(_edit("horizon = 7", "horizon = 7\nquantiles = [-0.1, 0.5]"), "quantiles", "strictly between",
                 id="quantile-negative"),
    pytest.param(_edit("horizon = 7", "horizon = 7\nquantiles = [0.1, 0.9, 0.1]"), "quantiles", "twice",
                 id="quantile-duplicate"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nquantiles = ["p90"]'), "quantiles", "strictly between",
                 id="quantile-string"),
    pytest.param(_edit("horizon = 7", "horizon = 7\nquantiles = []"), "quantiles", "non-empty", id="quantiles-empty"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nretire_after = "6d"'), "retire_after", "shorter than the horizon",
                 id="retire-short"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\nretire_after = "soon"'), "retire_after", "duration",
                 id="retire-bad"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\non_missing_future = "zero"'), "on_missing_future", "zero",
                 id="bad-on-missing-future"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\ndrift_window = "36h"'), "drift_window", "whole number",
                 id="drift-window-not-whole-periods"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\ndrift_window = "weekish"'), "drift_window", "duration",
                 id="drift-window-bad"),
    pytest.param(_edit("horizon = 7", "horizon = 7\ndrift_tolerance = 0"), "drift_tolerance", "positive",
                 id="drift-tolerance-zero"),
    pytest.param(_edit("horizon = 7", 'horizon = 7\ndrift_tolerance = "high"'), "drift_tolerance", "positive",
                 id="drift-tolerance-string"),
]


def test_forecast_settings_default_and_parse(tmp_path: Path) -> None:
    plain = parse_contract(write(tmp_path, GOOD.format(name="sales")))
    assert (plain.quantiles, plain.on_missing_future, plain.retire_after_periods) == ((0.1, 0.5, 0.9), "missing", None)
    text = _edit("horizon = 7", 'horizon = 7\nquantiles = [0.95, 0.05]\nretire_after = "2w"\non_missing_future = "fallback"')
    c = parse_contract(write(tmp_path, text))
    assert (c.quantiles, c.on_missing_future, c.retire_after_periods) == ((0.05, 0.95), "fallback", 14)
    assert (plain.drift_window_periods, plain.drift_tolerance) == (7, 0.5)
    c = parse_contract(write(tmp_path, _edit("horizon = 7", 'horizon = 7\ndrift_window = "2w"\ndrift_tolerance = 0.25')))
    assert (c.drift_window_periods, c.drift_tolerance) == (14, 0.25)


@pytest.mark.parametrize(("text", "fld", "why"), MALFORMED)
def test_malformed_contract_names_file_and_field(tmp_path: Path, text: str, fld: str, why: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ContractError) as err:
        parse_contract(path)
    message = str(err.value)
    assert str(path) in message
    assert f"field '{fld}'" in message
    assert why in message


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "name = \n")
    with pytest.raises(ContractError, match="not valid TOML") as err:
        parse_contract(path)
    assert str(path) in str(err.value)


def test_loading_a_malformed_contract_by_name_fails_the_same_way(tmp_path: Path) -> None:
    write(tmp_path, _edit('price = "Float64"', 'price = "Decimal"'))
    with pytest.raises(ContractError, match=r"sales\.toml: field 'columns\.price': unknown dtype 'Decimal'"):
        load_contract("sales", tmp_path)


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(UnknownDatasetError, match="unknown dataset 'weather'") as err:
        load_contract("weather", BUNDLED_CONTRACTS)
    assert "retail_sales" in str(err.value)


@pytest.mark.parametrize("name", ["../retail_sales", "../x", "a/b", "retail_sales/../retail_sales", "/etc/passwd",
                                  "Retail", "", "x" * 64, "retail-sales", "retail_sales\x00",
                                  "retail_sales\n"])
def test_path_tricks_and_bad_names_are_rejected_before_any_lookup(tmp_path: Path, name: str) -> None:
    # A contract exists one level up: a name that escaped the folder would find it.
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    write(tmp_path, GOOD.format(name="x"), name="x")
    with pytest.raises(UnknownDatasetError, match="invalid dataset name"):
        load_contract(name, contracts)
    with pytest.raises(UnknownDatasetError):
        check_dataset_name(name)


def test_non_string_dataset_name_is_rejected() -> None:
    with pytest.raises(UnknownDatasetError):
        check_dataset_name(None)  # type: ignore[arg-type]
