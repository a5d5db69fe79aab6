"""The synthetic retail_sales generator: reproducible, realistic, and valid under the contract."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales, split_into_batches
from freshet.settings import BUNDLED_CONTRACTS
from freshet.data.validation import typed_with_violations, valid_rows

RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)


@pytest.fixture(scope="module")
def sales() -> pl.DataFrame:
    return generate_retail_sales(stores=4, items=6, days=400)


def test_same_seed_same_data_other_seed_other_data() -> None:
    a = generate_retail_sales(seed=11, stores=2, items=3, days=90)
    assert_frame_equal(a, generate_retail_sales(seed=11, stores=2, items=3, days=90))
    b = generate_retail_sales(seed=12, stores=2, items=3, days=90)
    assert not a.equals(b)


def test_shape_types_and_contract(sales: pl.DataFrame) -> None:
    assert sales.schema == pl.Schema(RETAIL.columns)
    assert sales["date"].min() == date(2024, 1, 1)
    assert sales["date"].max() == date(2024, 1, 1) + timedelta(days=399)
    assert sales.select(pl.struct("store_id", "item_id").n_unique()).item() == 24
    assert sales.select(pl.struct("date", "store_id", "item_id").is_duplicated().any()).item() is False
    assert sales.null_count().sum_horizontal().item() == 0
    assert sales["units_sold"].min() >= 0 and sales["units_sold"].max() <= 100000
    assert sales["price"].min() >= 0.01
    assert_frame_equal(sales, sales.sort(["date", "store_id", "item_id"]))


def test_default_size() -> None:
    df = generate_retail_sales()
    assert df.select(pl.struct("store_id", "item_id").n_unique()).item() == 8 * 12
    assert df["date"].n_unique() == 730
    assert 0.97 * 96 * 730 < df.height < 0.99 * 96 * 730  # about 2% of days missing


def test_weekly_seasonality_weekend_beats_midweek(sales: pl.DataFrame) -> None:
    by_dow = sales.group_by(pl.col("date").dt.weekday().alias("dow")).agg(pl.col("units_sold").mean())
    mean = dict(by_dow.iter_rows())
    weekend = (mean[6] + mean[7]) / 2
    midweek = (mean[2] + mean[3]) / 2
    assert weekend > 1.2 * midweek


def test_promotions_lift_sales_and_cut_price(sales: pl.DataFrame) -> None:
    # compare each series with itself, promo days against normal days
    per_series = (
        sales.group_by("store_id", "item_id", "on_promo")
        .agg(pl.col("units_sold").mean().alias("units"), pl.col("price").mean().alias("price"))
        .pivot("on_promo", index=["store_id", "item_id"], values=["units", "price"])
        .drop_nulls()
    )
    assert per_series.height >= 20
    lift = per_series["units_true"] / per_series["units_false"]
    assert lift.median() > 1.3
    assert (per_series["price_true"] < per_series["price_false"]).mean() > 0.9
    assert 0.05 < sales["on_promo"].mean() < 0.5


def test_some_days_are_missing_per_series() -> None:
    df = generate_retail_sales(stores=2, items=2, days=200, missing_rate=0.05)
    rows_per_series = df.group_by("store_id", "item_id").len()["len"]
    assert (rows_per_series < 200).all()
    assert 0.9 * 800 < df.height < 0.99 * 800
    assert generate_retail_sales(stores=2, items=2, days=200, missing_rate=0.0).height == 800


@pytest.mark.parametrize(("files", "batch_days"), [(1, 7), (2, 7), (5, 7), (4, 30)])
def test_split_into_batches_covers_every_row_once_in_time_order(sales: pl.DataFrame, files: int, batch_days: int) -> None:
    batches = split_into_batches(sales, files, batch_days)
    assert len(batches) == files
    assert_frame_equal(pl.concat(batches), sales)  # every row exactly once, in order
    for earlier, later in zip(batches, batches[1:]):
        assert earlier["date"].max() < later["date"].min()
    for batch in batches[1:]:
        assert batch["date"].n_unique() == batch_days
    assert batches[-1]["date"].max() == sales["date"].max()


def test_split_into_batches_rejects_zero_files(sales: pl.DataFrame) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        split_into_batches(sales, 0)


def test_generated_csv_passes_the_contract_untouched(sales: pl.DataFrame, tmp_path) -> None:
    path = tmp_path / "sales.csv"
    sales.write_csv(path)
    checked = typed_with_violations(pl.scan_csv(path, infer_schema=False), RETAIL, datetime.now(timezone.utc), 36)
    assert_frame_equal(valid_rows(checked, RETAIL).collect(), sales)
