"""Forecasts on the real stack: landings and promotions end in a published forecast.

A file lands: the current champion forecasts on it (its watermark covers the file)
before any training has seen it. A promotion: a forecast by the new champion. A rerun
publishes no second file. Nothing here starts a forecast run except the last check.
"""

from __future__ import annotations

from datetime import date, timedelta

import polars as pl
import pytest

from tests.e2e.stack import E2E, forecast_pointers, poll, write_contract
from freshet.data.future import future_lake
from freshet.data.generate import generate_retail_sales
from freshet.data.lake import Lake
from freshet.modeling import publish, registry

pytestmark = [pytest.mark.e2e]

DATASET = "forecast_f"


def _land(lake: Lake, name: str, frame: pl.DataFrame) -> str:
    path = f"{lake.landing_dir(DATASET)}/{name}"
    with lake.staged(path) as local:
        frame.write_csv(local)
    return lake.uri(path)


def _final(client, run_id, timeout: float, e2e: E2E):
    def done():
        run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    return poll(f"flow run {run_id} to finish\n{e2e.logs()}", done, timeout)


def test_landings_and_promotions_publish_forecasts_and_a_rerun_publishes_nothing(e2e: E2E, e2e_client):
    from prefect.deployments import run_deployment

    write_contract(e2e.contracts, DATASET)  # the stack reads contracts at run time
    lake = Lake(str(e2e.lake))
    start = date(2024, 1, 1)
    data = generate_retail_sales(seed=23, stores=3, items=4, days=221, start=start, missing_rate=0.0)
    cut = start + timedelta(days=200)
    history, week = data.filter(pl.col("date") < cut), data.filter((pl.col("date") >= cut) & (pl.col("date") < cut + timedelta(days=7)))
    # known-in-advance prices and promotions for the three weeks after the history
    fut = future_lake(lake)
    _land(fut, "future.csv", data.filter(pl.col("date") >= cut).drop("units_sold"))

    # 1. history lands: training promotes a champion, and the promotion publishes its forecast
    first = _land(lake, "history.csv", history)
    run = run_deployment("ingest/ingest", parameters={"dataset": DATASET, "uris": [first]}, timeout=0)
    assert _final(e2e_client, run.id, 180, e2e).state.is_completed()
    champ = poll("a champion", lambda: registry.champion(lake, DATASET), 300)
    by_champion = poll("a forecast by the new champion",
                       lambda: next((f for f in forecast_pointers(lake, DATASET) if f["model_version"] == champ["version"]), None), 120)
    assert by_champion["method"] == "model" and by_champion["watermark"] == str(history["date"].max())
    assert by_champion["rows"] == 12 * 7 and by_champion["missing_series"] == 0

    # 2. a week lands while training is switched off: the same champion forecasts on it
    def train_runs_final():
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

        dep = e2e_client.read_deployment_by_name("train/train")
        runs = [r for r in e2e_client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])), limit=200)
            if r.parameters.get("dataset") == DATASET]
        return runs and all(r.state and r.state.is_final() for r in runs)
    poll("the history's training runs to finish", train_runs_final, 300)
    champ = registry.champion(lake, DATASET)
    models_before = len(registry.list_models(lake, DATASET))
    [train_trigger] = e2e_client.read_automations_by_name("freshet-train-on-data-landed")
    e2e_client.pause_automation(train_trigger.id)
    try:
        second = _land(lake, "week.csv", week)
        run = run_deployment("ingest/ingest", parameters={"dataset": DATASET, "uris": [second]}, timeout=0)
        assert _final(e2e_client, run.id, 180, e2e).state.is_completed()
        fresh = poll("a forecast whose watermark covers the new week",
                     lambda: next((f for f in forecast_pointers(lake, DATASET) if f["watermark"] == str(week["date"].max())), None), 120)
    finally:
        e2e_client.resume_automation(train_trigger.id)
    assert fresh["model_version"] == champ["version"] and fresh["method"] == "model"
    assert len(registry.list_models(lake, DATASET)) == models_before, "no training happened in between"
    assert all(e["uri"] != second for e in champ["lineage"])  # the champion never saw the week
    frame = pl.read_parquet(lake.read_bytes(fresh["path"]))
    assert frame["date"].min() == week["date"].max() + timedelta(days=1) and frame.height == 12 * 7
    assert set(frame["model_version"]) == {champ["version"]} and set(frame["data_watermark"]) == {fresh["watermark"]}

    # 3. a rerun of the same champion on the same data publishes no second file
    poll("the week's forecast run to finish", lambda: all(
        r.state and r.state.is_final() for r in e2e_client.read_flow_runs(limit=200)
        if r.parameters.get("dataset") == DATASET), 120)
    before = sorted(lake.list(lake.forecasts_dir(DATASET), suffix=".parquet"))
    rerun = run_deployment("forecast/forecast", parameters={"dataset": DATASET}, timeout=0)
    rerun = _final(e2e_client, rerun.id, 120, e2e)
    assert rerun.state.is_completed(), rerun.state.message
    assert sorted(lake.list(lake.forecasts_dir(DATASET), suffix=".parquet")) == before
    assert publish.read_latest(lake, DATASET)["forecast_id"] == fresh["forecast_id"]
