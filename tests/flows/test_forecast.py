"""The ``forecast`` flow under the session's Prefect test server, on a local lake.

Assertions are on what a user sees: the forecast file and ``latest.json``, the
``forecast.published`` event, the artifacts, quarantine, and the run's message.
"""

from __future__ import annotations

import json
from datetime import timedelta

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.conftest import DATASET, SMALL, LakeHandle, flow_run_id, run_events, seed_for
from freshet import events
from freshet.data.contracts import load_contract
from freshet.data.future import future_lake
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import admit_file
from freshet.modeling import publish, registry
from freshet.modeling.forecast import forecast_frame
from freshet.settings import BUNDLED_CONTRACTS
from flows.forecast import forecast
from flows.train import train

RETAIL = load_contract(DATASET, BUNDLED_CONTRACTS)
KEYS = list(RETAIL.series_keys)


def land_future(handle: LakeHandle, frame: pl.DataFrame, name: str) -> str:
    lake = future_lake(handle.lake)
    path = f"{lake.landing_dir(DATASET)}/{name}"
    lake.write_bytes(path, frame.write_csv().encode())
    return lake.uri(path)


def forecast_files(handle: LakeHandle) -> list[str]:
    return [n for n in handle.listing("forecasts", DATASET) if n.endswith(".parquet")]


def artifact(run_id: str, key: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    with get_client(sync_client=True) as client:
        (found,) = client.read_artifacts(artifact_filter=flt)
    return found


@pytest.fixture
def sales(request: pytest.FixtureRequest) -> pl.DataFrame:
    return generate_retail_sales(seed=seed_for(request), **SMALL)


def test_no_data_yet_ends_the_run_saying_so(prefect_api, lake_env: LakeHandle, caplog) -> None:
    result = forecast(dataset=DATASET)
    assert result["status"] == "no-data"
    assert "no data yet" in caplog.text
    assert forecast_files(lake_env) == []


def test_without_a_champion_the_seasonal_naive_forecast_is_published_once_and_labelled(
        prefect_api, lake_env: LakeHandle, sales: pl.DataFrame) -> None:
    assert admit_file(lake_env.lake, RETAIL, lake_env.land(sales, "history.csv")).ok
    state = forecast(dataset=DATASET, return_state=True)
    result = state.result()
    assert result["status"] == "published" and result["method"] == "seasonal_naive"
    [name] = forecast_files(lake_env)
    frame = lake_env.read_parquet("forecasts", DATASET, name)
    series = sales.select(KEYS).n_unique()
    # generated data misses 2% of its days: every series still gets every period, each row labelled
    assert frame.height == series * RETAIL.horizon
    assert set(frame["method"]) == {"seasonal_naive"} and set(frame["model_version"]) == {"seasonal_naive"}
    assert frame["method_detail"].str.contains("season").all()
    assert ((frame["p10"] <= frame["p50"]) & (frame["p50"] <= frame["p90"])).all() and (frame["p90"] > frame["p10"]).any()
    assert frame["date"].min() > sales["date"].max() and set(frame["data_watermark"]) == {str(sales["date"].max())}
    # the values are seasonal naive's, computed from the curated rows
    expected, _ = forecast_frame(sales, RETAIL, None, None)
    assert_frame_equal(frame.select(expected.columns), expected, check_dtypes=False)
    latest = lake_env.read_json("forecasts", DATASET, "latest.json")
    assert latest["forecast_id"] in name and latest["method"] == "seasonal_naive" and latest["rows"] == frame.height
    assert latest["coverage"]["seasonal_naive"] == 1.0 and latest["coverage"]["not_forecast"] == 0.0
    [event] = run_events(flow_run_id(state), events.FORECAST_PUBLISHED)
    assert event.payload["method"] == "seasonal_naive" and event.payload["rows"] == frame.height
    assert event.payload["uri"] == latest["uri"] and event.payload["watermark"] == str(sales["date"].max())
    assert event.payload["coverage"] == latest["coverage"]
    report = artifact(flow_run_id(state), "freshet-retail-sales-forecast-report")
    assert "seasonal naive" in report.data and "data:image/png;base64," in report.data
    assert "| seasonal_naive | 100.0% |" in report.data and "Every series was forecast, every period." in report.data
    table = artifact(flow_run_id(state), "freshet-retail-sales-forecast")
    rows = json.loads(table.data) if isinstance(table.data, str) else table.data
    assert rows[0]["method"] == "seasonal_naive" and len(rows) == min(50, frame.height)

    # a rerun (or a duplicate event) publishes nothing new
    again = forecast(dataset=DATASET, event_id="00000000-0000-0000-0000-000000000001")
    assert again["status"] == "already-published" and again["forecast_id"] == latest["forecast_id"]
    assert forecast_files(lake_env) == [name]


def test_the_champion_forecasts_with_future_values_and_labels_periods_without_them(
        prefect_api, lake_env: LakeHandle, sales: pl.DataFrame, caplog) -> None:
    watermark = sales["date"].max()
    history = sales.filter(pl.col("date") <= watermark)
    assert admit_file(lake_env.lake, RETAIL, lake_env.land(history, "history.csv")).ok
    trained = train(dataset=DATASET)
    assert trained["promoted"], trained
    champ = registry.champion(lake_env.lake, DATASET)

    # the week after the watermark, for every series but one, from a later generated draw
    ahead = generate_retail_sales(seed=1, stores=SMALL["stores"], items=SMALL["items"], days=7,
                                  start=watermark + timedelta(days=1), missing_rate=0.0).drop("units_sold")
    dropped = ahead.select(KEYS).unique().sort(KEYS).row(0)
    partial = ahead.filter(~((pl.col(KEYS[0]) == dropped[0]) & (pl.col(KEYS[1]) == dropped[1])))
    land_future(lake_env, partial, "future-week.csv")
    # a bad future file is quarantined and announced, as for actuals
    land_future(lake_env, partial.head(3).with_columns(pl.lit(-1.0).alias("price")), "bad-prices.csv")

    state = forecast(dataset=DATASET, return_state=True)
    result = state.result()
    out = caplog.text
    assert result["status"] == "published" and result["method"] == "model"
    assert result["model_version"] == champ["version"]
    frame = publish.read_forecast(lake_env.lake, publish.read_latest(lake_env.lake, DATASET))
    expected, missing = forecast_frame(
        history, RETAIL, registry.load_booster(lake_env.lake, DATASET, champ["version"]), champ, future=partial)
    # the series without future values is still forecast, every period, labelled with the missing columns
    assert missing.height == 0 and result["missing_series"] == 0 and frame.height == expected.height
    assert_frame_equal(frame.select(expected.columns), expected, check_dtypes=False)
    gap = frame.join(pl.DataFrame([dropped], schema=KEYS, orient="row"), on=KEYS, how="semi")
    # the bundled contract falls back to seasonal naive for them (on_missing_future = "fallback")
    assert gap.height == RETAIL.horizon and set(gap["method"]) == {"seasonal_naive"}
    assert gap["method_detail"].str.contains('no future value of price, on_promo \\(on_missing_future = "fallback"\\)').all()
    assert set(frame["model_version"]) == {champ["version"]}
    latest = publish.read_latest(lake_env.lake, DATASET)
    series = history.select(KEYS).n_unique()
    assert latest["coverage"]["seasonal_naive"] == pytest.approx(1 / series, abs=1e-6)
    assert sum(latest["coverage"].values()) == pytest.approx(1.0) and "coverage model" in out
    report = artifact(flow_run_id(state), "freshet-retail-sales-forecast-report")
    assert "| seasonal_naive |" in report.data and "no future value of price, on_promo" in report.data

    quarantined = [json.loads(b) for b in _quarantine_reasons(lake_env)]
    assert len(quarantined) == 1 and quarantined[0]["reasons"][0]["column"] == "price"
    [rejected] = run_events(flow_run_id(state), events.DATA_REJECTED)
    assert rejected.payload["uri"].endswith("bad-prices.csv")


def _quarantine_reasons(handle: LakeHandle) -> list[bytes]:
    lake = future_lake(handle.lake)
    dirs = lake.list(lake.path("quarantine", DATASET))
    return [lake.read_bytes(f"{d}/reason.json") for d in dirs]
