"""Validation: string frames in, typed valid rows and labelled invalid rows out."""

from __future__ import annotations

from datetime import date, datetime, timezone

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from polars.testing import assert_frame_equal

from freshet.data.contracts import Contract, Rule, load_contract
from freshet.settings import BUNDLED_CONTRACTS
from freshet.data.validation import (
    VIOLATION,
    check_header,
    invalid_rows,
    summarize_violations,
    typed_with_violations,
    valid_rows,
)

RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)
NOW = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
COLUMNS = list(RETAIL.columns)

# Hourly sensor readings with an `allowed` rule on a string column.
SENSORS = Contract(
    name="sensors",
    columns={"ts": pl.Datetime("us"), "sensor": pl.String(), "reading": pl.Float64(), "status": pl.String()},
    time_column="ts",
    frequency="hourly",
    series_keys=("sensor",),
    target="reading",
    exogenous=(),
    horizon=1,
    season_length=24,
    rules={"status": Rule(allowed=("ok", "degraded"))},
)


def row(date="2024-01-01", store_id="1", item_id="1", units_sold="3", price="2.5", on_promo="false") -> dict:
    return dict(date=date, store_id=store_id, item_id=item_id, units_sold=units_sold, price=price, on_promo=on_promo)


def frame(*rows: dict) -> pl.DataFrame:
    return pl.DataFrame(list(rows), schema={c: pl.String for c in rows[0]})


def check(df: pl.DataFrame, contract: Contract = RETAIL, now: datetime = NOW, tolerance: float = 36.0) -> pl.DataFrame:
    return typed_with_violations(df.lazy(), contract, now, tolerance).collect()


def labels(checked: pl.DataFrame) -> list[str | None]:
    return checked[VIOLATION].to_list()


def test_valid_rows_are_typed_as_the_contract_says() -> None:
    df = frame(
        row(),
        row(store_id=" 2 ", units_sold="4", price="1", on_promo="TRUE"),
        row(date="2024-01-02", item_id="7", units_sold="0", price="10000", on_promo="0"),
        row(date="2024-01-02", units_sold="100000", price="0.01", on_promo="yes"),
    )
    checked = check(df)
    assert labels(checked) == [None, None, None, None]
    expected = pl.DataFrame(
        {
            "date": [date(2024, 1, 1), date(2024, 1, 1), date(2024, 1, 2), date(2024, 1, 2)],
            "store_id": [1, 2, 1, 1],
            "item_id": [1, 1, 7, 1],
            "units_sold": [3.0, 4.0, 0.0, 100000.0],
            "price": [2.5, 1.0, 10000.0, 0.01],
            "on_promo": [False, True, False, True],
        },
        schema=RETAIL.columns,
    )
    assert_frame_equal(valid_rows(checked.lazy(), RETAIL).collect(), expected)
    assert invalid_rows(checked.lazy(), RETAIL).collect().height == 0


BAD_CELLS = [
    pytest.param(row(units_sold="lots"), "units_sold:dtype", id="dtype-float"),
    pytest.param(row(store_id="1.5"), "store_id:dtype", id="dtype-int"),
    pytest.param(row(store_id="99999999999"), "store_id:dtype", id="dtype-int32-overflow"),
    pytest.param(row(date="01/02/2024"), "date:dtype", id="dtype-date-format"),
    pytest.param(row(date="2024-02-30"), "date:dtype", id="dtype-impossible-date"),
    pytest.param(row(on_promo="maybe"), "on_promo:dtype", id="dtype-bool"),
    pytest.param(row(price=""), "price:non_null", id="non-null-explicit-rule"),
    pytest.param(row(units_sold="  "), "units_sold:non_null", id="non-null-target-blank"),
    pytest.param(row(item_id=""), "item_id:non_null", id="non-null-series-key"),
    pytest.param(row(date=""), "date:non_null", id="non-null-time"),
    pytest.param(row(units_sold="-1"), "units_sold:min", id="min"),
    pytest.param(row(price="0.001"), "price:min", id="min-fraction"),
    pytest.param(row(units_sold="100000.5"), "units_sold:max", id="max"),
    pytest.param(row(units_sold="NaN"), "units_sold:max", id="nan-is-not-a-number-of-units"),
    pytest.param(row(units_sold="inf"), "units_sold:max", id="inf"),
    pytest.param(row(units_sold="-inf"), "units_sold:min", id="minus-inf"),
    pytest.param(row(date="2024-06-04"), "date:future", id="future-date"),
]


@pytest.mark.parametrize(("bad", "label"), BAD_CELLS)
def test_each_rule_flags_only_the_bad_row_with_its_label(bad: dict, label: str) -> None:
    good_before, good_after = row(store_id="5"), row(store_id="6")
    checked = check(frame(good_before, bad, good_after))
    assert labels(checked) == [None, label, None]
    invalid = invalid_rows(checked.lazy(), RETAIL).collect()
    # the quarantined row keeps its original text, so nothing is lost
    assert_frame_equal(invalid, frame(bad).with_columns(pl.lit(label).alias(VIOLATION)))
    assert valid_rows(checked.lazy(), RETAIL).collect()["store_id"].to_list() == [5, 6]


def test_a_row_breaking_several_rules_gets_every_label() -> None:
    checked = check(frame(row(units_sold="-3", price="", on_promo="perhaps")))
    assert set(labels(checked)[0].split(";")) == {"units_sold:min", "price:non_null", "on_promo:dtype"}


def test_future_tolerance_is_honoured() -> None:
    tomorrow, in_three_days = row(date="2024-06-02"), row(date="2024-06-04", store_id="2")
    assert labels(check(frame(tomorrow, in_three_days), tolerance=36)) == [None, "date:future"]
    assert labels(check(frame(tomorrow, in_three_days), tolerance=0)) == ["date:future", "date:future"]
    assert labels(check(frame(tomorrow, in_three_days), tolerance=24 * 3)) == [None, None]


def test_duplicate_keys_keep_the_first_row_and_flag_the_rest() -> None:
    df = frame(
        row(units_sold="1"),
        row(units_sold="2", store_id="2"),  # other series, same day: fine
        row(units_sold="3"),  # same day, store and item as the first row
        row(units_sold="4", date="2024-01-02"),  # same series, other day: fine
        row(units_sold="5"),
    )
    checked = check(df)
    dup = "date+store_id+item_id:duplicate_key"
    assert labels(checked) == [None, None, dup, None, dup]
    assert valid_rows(checked.lazy(), RETAIL).collect()["units_sold"].to_list() == [1.0, 2.0, 4.0]


def test_duplicates_are_found_on_typed_values_not_text() -> None:
    checked = check(frame(row(store_id="1"), row(store_id=" 01 ")))
    assert labels(checked) == [None, "date+store_id+item_id:duplicate_key"]


def test_allowed_values_and_datetime_future_on_an_hourly_contract() -> None:
    now = datetime(2024, 6, 1, 12, tzinfo=timezone.utc)
    df = pl.DataFrame(
        {
            "ts": ["2024-06-01 10:00:00", "2024-06-01 11:00:00", "2024-06-01 15:00:00", "2024-06-01 11:00:00"],
            "sensor": ["a", "a", "a", "b"],
            "reading": ["1.5", "2", "3", "4"],
            "status": ["ok", "broken", "degraded", ""],
        }
    )
    checked = check(df, SENSORS, now=now, tolerance=2)
    # status is optional (no non_null rule): an empty cell is null, not a violation
    assert labels(checked) == [None, "status:allowed", "ts:future", None]
    expected = pl.DataFrame(
        {
            "ts": [datetime(2024, 6, 1, 10), datetime(2024, 6, 1, 11)],
            "sensor": ["a", "b"],
            "reading": [1.5, 4.0],
            "status": ["ok", None],
        },
        schema=SENSORS.columns,
    )
    assert_frame_equal(valid_rows(checked.lazy(), SENSORS).collect(), expected)


def test_extra_columns_are_not_carried_into_valid_rows() -> None:
    df = frame(row()).with_columns(pl.lit("x").alias("comment"))
    checked = check(df)
    assert valid_rows(checked.lazy(), RETAIL).collect().columns == COLUMNS


@pytest.mark.parametrize(
    ("header", "extra_policy", "expected"),
    [
        pytest.param(COLUMNS, "reject", [], id="exact"),
        pytest.param(list(reversed(COLUMNS)), "reject", [], id="any-order"),
        pytest.param([c for c in COLUMNS if c != "price"], "reject", [("price", "missing_column")], id="missing"),
        pytest.param([*COLUMNS, "comment"], "reject", [("comment", "unexpected_column")], id="unexpected"),
        pytest.param([*COLUMNS, "comment"], "ignore", [], id="unexpected-ignored"),
        pytest.param(["Date", *COLUMNS[1:]], "reject", [("date", "missing_column"), ("Date", "unexpected_column")],
                     id="case-matters"),
    ],
)
def test_check_header(header: list[str], extra_policy: str, expected: list[tuple[str, str]]) -> None:
    contract = Contract(**{**RETAIL.__dict__, "extra_columns": extra_policy})
    problems = check_header(header, contract)
    assert [(p.column, p.rule) for p in problems] == expected
    assert all(p.column in p.detail for p in problems)


def test_summarize_violations_counts_each_rule_with_example_rows() -> None:
    df = frame(
        row(units_sold="-1"),
        row(units_sold="-2", store_id="2"),
        row(units_sold="-3", store_id="3", price=""),
        row(units_sold="-4", store_id="4"),
        row(store_id="5"),
    )
    bad = invalid_rows(check(df).lazy(), RETAIL).collect()
    summary = {(s["column"], s["rule"]): s for s in summarize_violations(bad, examples=2)}
    assert set(summary) == {("units_sold", "min"), ("price", "non_null")}
    assert summary[("units_sold", "min")]["rows"] == 4
    assert [e["units_sold"] for e in summary[("units_sold", "min")]["examples"]] == ["-1", "-2"]
    assert summary[("price", "non_null")]["rows"] == 1
    assert summary[("price", "non_null")]["examples"] == [row(units_sold="-3", store_id="3", price="")]
    assert summarize_violations(bad.head(0)) == []


cell = st.one_of(
    st.sampled_from(["", " ", "1", "2", "-1", "0", "3.5", "1e9", "NaN", "x", "true", "no", "2024-01-01",
                     "2024-01-02", "2099-01-01", "2024-13-01", "0.001"]),
    st.text(max_size=5),
)


@settings(max_examples=60, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.fixed_dictionaries({c: cell for c in COLUMNS}), min_size=1, max_size=25))
def test_every_row_is_either_valid_or_invalid_never_both_never_lost(rows: list[dict]) -> None:
    df = pl.DataFrame(rows, schema={c: pl.String for c in COLUMNS})
    checked = check(df)
    good = valid_rows(checked.lazy(), RETAIL).collect()
    bad = invalid_rows(checked.lazy(), RETAIL).collect()
    assert good.height + bad.height == df.height
    assert good.schema == pl.Schema(RETAIL.columns)
    # valid rows hold no nulls in required columns and respect every bound
    assert all(good[c].null_count() == 0 for c in RETAIL.required_non_null)
    assert good.filter((pl.col("units_sold") < 0) | (pl.col("units_sold") > 100000) | pl.col("units_sold").is_nan()).height == 0
    assert good.select(pl.struct("date", "store_id", "item_id").is_duplicated().any()).item() is False
    # invalid rows keep their original text, row for row
    assert_frame_equal(bad.drop(VIOLATION), df.filter(checked[VIOLATION].is_not_null()))
