"""Live accuracy on the real stack: a landing scores the forecast in hand, and drift retrains.

History lands and the data.landed automation trains and promotes a champion, whose
forecast is published. Then retraining on landings is switched off (the
``freshet-train-on-data-landed`` automation paused, as a person gating it would) and
two weeks land: the first as the data behaves, scored within the contract's
``drift_tolerance`` (no ``model.degraded``, no training); the second with demand
quadrupled, which drops the champion's live accuracy past the tolerance: the ingest
run emits ``model.degraded`` and the shipped ``freshet-train-on-model-degraded``
automation starts ``train`` for that dataset with the evidence as its reason. A
browser opens the ingest run's live accuracy artifact (``FRESHET_SCREENSHOTS=docs``
writes ``docs/ui-live-accuracy.png`` for the README).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import polars as pl
import pytest

from freshet import events
from freshet.data.future import future_lake
from freshet.data.generate import generate_retail_sales
from freshet.data.lake import Lake
from freshet.modeling import live, registry
from tests.e2e.browser import UI, chromium, ui  # noqa: F401 - fixtures
from tests.e2e.stack import AUTH, E2E, forecast_pointers, poll, write_contract

pytestmark = [pytest.mark.e2e]

DATASET = "live_l"
RUN_TIMEOUT = 300.0


def _land(lake: Lake, name: str, frame: pl.DataFrame) -> str:
    path = f"{lake.landing_dir(DATASET)}/{name}"
    with lake.staged(path) as local:
        frame.write_csv(local)
    return lake.uri(path)


def _runs(client, deployment: str):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = client.read_deployment_by_name(deployment)
    return [r for r in client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
                                             limit=200) if r.parameters.get("dataset") == DATASET]


def _all_final(client, deployment: str) -> bool:
    runs = _runs(client, deployment)
    return bool(runs) and all(r.state and r.state.is_final() for r in runs)


def _ingest(client, e2e: E2E, uri: str):
    from prefect.deployments import run_deployment

    run = run_deployment("ingest/ingest", parameters={"dataset": DATASET, "uris": [uri]}, timeout=0)

    def done():
        found = client.read_flow_run(run.id)
        return found if found.state and found.state.is_final() else None

    run = poll(f"ingest run {run.id} to finish\n{e2e.logs()}", done, RUN_TIMEOUT, every=0.5)
    assert run.state.is_completed(), run.state.message
    return run


def _degraded_events(client) -> list:
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    flt = EventFilter(event=EventNameFilter(name=[events.MODEL_DEGRADED]),
                      resource=EventResourceFilter(id=[f"{events.RESOURCE_PREFIX}{DATASET}"]))
    return client.read_events(flt, limit=50).events


@dataclass
class Chain:
    champion: dict
    trainings_before: int  # train runs of the dataset before the two weeks landed
    week1: pl.DataFrame
    week2: pl.DataFrame
    within: dict  # the scores summary after week 1
    trainings_after_week1: int
    degraded_after_week1: list
    drifted: dict  # the scores summary after week 2
    degraded: list  # model.degraded events
    drift_run: Any  # the train run the drift automation started
    ingest_run_id: str  # the ingest run that scored week 2


@pytest.fixture(scope="module")
def chain(e2e: E2E) -> Chain:
    """History, then week 1 as the data behaves and week 2 with demand quadrupled, retraining on landings paused.

    A fixture, so the browser (whose event loop would turn Prefect's sync calls into coroutines) starts after it."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    write_contract(e2e.contracts, DATASET)  # drift_window and drift_tolerance: the defaults (7 d, +50%)
    lake = Lake(str(e2e.lake))
    start = date(2024, 1, 1)
    data = generate_retail_sales(seed=31, stores=3, items=4, days=214, start=start, missing_rate=0.0)
    cut = start + timedelta(days=200)
    history = data.filter(pl.col("date") < cut)
    week1 = data.filter((pl.col("date") >= cut) & (pl.col("date") < cut + timedelta(days=7)))
    week2 = data.filter(pl.col("date") >= cut + timedelta(days=7))
    _land(future_lake(lake), "future.csv", data.filter(pl.col("date") >= cut).drop("units_sold"))
    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}), \
            get_client(sync_client=True) as client:
        # history: the data.landed automation trains and promotes a champion, which forecasts week 1
        _ingest(client, e2e, _land(lake, "history.csv", history))
        champ = poll("a champion", lambda: registry.champion(lake, DATASET), RUN_TIMEOUT)
        poll("the champion's forecast of week 1", lambda: any(
            f["model_version"] == champ["version"] and f["watermark"] == str(history["date"].max())
            for f in forecast_pointers(lake, DATASET)), 120)
        poll("the history's training runs to finish", lambda: _all_final(client, "train/train"), RUN_TIMEOUT)
        champ = registry.champion(lake, DATASET)
        trainings = len(_runs(client, "train/train"))
        [on_landing] = client.read_automations_by_name("freshet-train-on-data-landed")
        client.pause_automation(on_landing.id)
        try:
            _ingest(client, e2e, _land(lake, "week1.csv", week1))
            within, _ = live.latest(lake, DATASET)
            poll("the champion's forecast of week 2", lambda: any(
                f["model_version"] == champ["version"] and f["watermark"] == str(week1["date"].max())
                for f in forecast_pointers(lake, DATASET)), 120)
            poll("the landing's forecast runs to finish", lambda: _all_final(client, "forecast/forecast"), RUN_TIMEOUT)
            # the forecast run the same landing started has finished: a train run would have been created by now
            after_week1, degraded_after_week1 = len(_runs(client, "train/train")), _degraded_events(client)

            ingest_run = _ingest(client, e2e, _land(lake, "week2.csv", week2.with_columns(pl.col("units_sold") * 4)))
            drifted, _ = live.latest(lake, DATASET)
            degraded = poll("model.degraded", lambda: _degraded_events(client), 30)
            run = poll("the drift automation's train run", lambda: next(
                (r for r in _runs(client, "train/train") if r.parameters.get("event_id") == str(degraded[0].id)), None), 60)
            poll("the drift's train run to finish", lambda: _all_final(client, "train/train"), RUN_TIMEOUT)
            run = client.read_flow_run(run.id)
        finally:
            client.resume_automation(on_landing.id)
    return Chain(champ, trainings, week1, week2, within, after_week1, degraded_after_week1, drifted, degraded, run,
                 str(ingest_run.id))


def test_a_landing_within_the_tolerance_is_scored_and_retrains_nothing(chain: Chain):
    s = chain.within
    assert s["drift"]["champion"] == chain.champion["version"] and s["drift"]["rows"] == chain.week1.height
    assert s["drift"]["degraded"] is False, s["drift_text"]
    assert s["drift"]["window_start"] == str(chain.week1["date"].min()) and s["unforecast_rows"] == 0
    assert chain.trainings_after_week1 == chain.trainings_before and chain.degraded_after_week1 == []


def test_drift_past_the_tolerance_emits_model_degraded_and_the_automation_trains_the_dataset(e2e: E2E, chain: Chain):
    drift = chain.drifted["drift"]
    assert drift["degraded"] is True and drift["champion"] == chain.champion["version"]
    assert drift["live_wape"] > drift["backtest_wape"] * (1 + drift["tolerance"])
    assert drift["window_start"] == str(chain.week2["date"].min()) and drift["rows"] == chain.week2.height
    [event] = chain.degraded
    assert event.payload["drift"] == drift
    run = chain.drift_run
    assert run.created_by.display_value == "freshet-train-on-model-degraded" and run.parameters["dataset"] == DATASET
    assert run.parameters["reason"].startswith("model.degraded: DEGRADED") and chain.champion["version"] in run.parameters["reason"]
    assert run.state.is_completed(), run.state.message
    [trained] = [m for m in registry.list_models(Lake(str(e2e.lake)), DATASET) if m["flow_run_id"] == str(run.id)]
    assert {e["uri"].rsplit("/", 1)[-1] for e in trained["lineage"]} >= {"week1.csv", "week2.csv"}


def test_the_live_accuracy_artifact_shows_the_chart_and_the_worst_series(ui: UI, chain: Chain):
    from playwright.sync_api import expect

    page = ui.page
    ui.open(f"/v2/runs/flow-run/{chain.ingest_run_id}")
    page.get_by_role("tab", name="Artifacts").click()
    key = f"freshet-{DATASET.replace('_', '-')}-live-accuracy"
    link = page.get_by_role("link", name=re.compile(key))
    expect(link.first).to_be_visible()
    ui.open(link.first.get_attribute("href"))
    expect(page.get_by_role("heading", name=f"{DATASET}: live accuracy")).to_be_visible()
    chart = page.get_by_role("img", name="live WAPE vs backtest WAPE")
    expect(chart).to_be_visible()
    assert chart.evaluate("img => img.complete && img.naturalWidth") > 100  # the embedded PNG decoded
    expect(page.get_by_text("Worst series")).to_be_visible()
    ui.assert_reaches_api()
    ui.shot("ui-live-accuracy")
