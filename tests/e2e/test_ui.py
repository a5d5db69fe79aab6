"""The Prefect UI as a person meets it, in a real browser, on the e2e stack (basic auth on).

A person logs in, finds every freshet deployment with each parameter described in
its run form, starts a custom ``train`` run from that form, watches it complete,
reads its metrics table and report, and finds the automations (the ``data.landed``
trigger, the staleness alarms) and the chain's events in the event feed. The UI must
reach the API on the stack's port: a UI told the wrong API URL fails the login.

The chain the pages show is made in the fixture ``chain``: a file lands for the
dataset ``ui_sales`` and the ``ingest`` deployment announces it, which makes the
automation train and promote a first model. ``FRESHET_SCREENSHOTS=docs`` writes the
README's screenshots (see ``tests/e2e/browser.py``).
"""

from __future__ import annotations

import json
import re
import time
import urllib.error
import urllib.request
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import urlencode

import polars as pl
import pytest
import yaml

from freshet import events
from freshet.data.future import future_lake
from freshet.data.generate import generate_retail_sales
from freshet.data.lake import Lake
from freshet.modeling import publish, registry
from freshet.ops.stack import auth_headers
from tests.e2e.browser import UI, chromium, ui  # noqa: F401 - fixtures
from tests.e2e.stack import AUTH, E2E, EXTRA_DATASETS, REPO, forecast_pointers, poll, write_contract

pytestmark = [pytest.mark.e2e]

DATASET = "ui_sales"  # this module's own dataset: no other test trains it
RUN_TIMEOUT = 300.0  # seconds for a run to finish on a busy 2-core machine
UI_TIMEOUT_MS = 30_000


def api(e2e: E2E, method: str, path: str, body: Any = None) -> Any:
    """One call to the stack's REST API, with its basic-auth credentials.

    Retried on 503 like Prefect's own client does: SQLite's "database is locked" under load.
    """
    request = urllib.request.Request(
        e2e.api_url + path, method=method, data=None if body is None else json.dumps(body).encode(),
        headers={"Content-Type": "application/json", **auth_headers(AUTH)})
    for attempt in range(6):
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or "null")
        except urllib.error.HTTPError as exc:
            if exc.code not in (429, 503) or attempt == 5:
                raise
            time.sleep(2 ** attempt * 0.5)


def finished_run(e2e: E2E, run_id: str) -> dict:
    """Poll a flow run until it is in a final state; return it."""
    def final():
        run = api(e2e, "GET", f"/flow_runs/{run_id}")
        return run if run["state_type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") else None

    return poll(f"flow run {run_id} to finish", final, RUN_TIMEOUT, every=1.0)


@dataclass
class Chain:
    ingest_run: dict
    promoting_run: dict  # the train run that promoted the first champion (the automation's, normally)
    champion: dict


@pytest.fixture(scope="module")
def chain(e2e: E2E) -> Iterator[Chain]:
    """A file landed for ``ui_sales`` and announced by the ``ingest`` deployment; the automation trains it."""
    contract = write_contract(e2e.contracts, DATASET)
    try:
        folder = e2e.lake / "landing" / DATASET
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"ui-{uuid.uuid4().hex[:8]}.csv"
        data = generate_retail_sales(seed=23, stores=3, items=4, days=314)
        cut = data["date"].max() - timedelta(days=13)
        # the known-in-advance prices and promotions of the two weeks after the history, for the forecast
        fut = future_lake(Lake(str(e2e.lake)))
        with fut.staged(f"{fut.landing_dir(DATASET)}/future.csv") as local:
            data.filter(pl.col("date") >= cut).drop("units_sold").write_csv(local)
        data.filter(pl.col("date") < cut).write_csv(path)
        ingest = api(e2e, "GET", "/deployments/name/ingest/ingest")
        run = api(e2e, "POST", f"/deployments/{ingest['id']}/create_flow_run",
                  {"parameters": {"dataset": DATASET, "uris": [str(path)]}})
        run = finished_run(e2e, run["id"])
        assert run["state_type"] == "COMPLETED", f"{run['state']}\n{e2e.logs()}"
        lake = Lake(str(e2e.lake))
        champion = poll(f"a champion for {DATASET} (the automation's train run)",
                        lambda: registry.champion(lake, DATASET), RUN_TIMEOUT, every=1.0)
        promoting = finished_run(e2e, champion["flow_run_id"])
        # the events the feed must show have reached the API
        for name in (events.DATA_LANDED, events.MODEL_PROMOTED):
            poll(f"{name} for {DATASET}", lambda name=name: api(e2e, "POST", "/events/filter", {
                "filter": {"event": {"name": [name]}, "resource": {"id": [f"{events.RESOURCE_PREFIX}{DATASET}"]}},
                "limit": 5})["events"], 60)
        yield Chain(ingest_run=run, promoting_run=promoting, champion=champion)
    finally:
        contract.unlink()


def open_custom_run_form(page, deployment: str) -> None:
    """Deployments, then the deployment, then Run > Custom run: the clicks a person makes."""
    from playwright.sync_api import expect

    page.get_by_role("link", name="Deployments", exact=True).first.click()
    page.get_by_role("link", name=deployment, exact=True).first.click()
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    expect(page.get_by_role("heading", name="Parameters")).to_be_visible()


def toasts(page) -> list[str]:
    """The notifications the UI shows now (sonner toasts: "<name> scheduled to start now", errors)."""
    return [t.strip() for t in page.locator("[data-sonner-toast]").all_inner_texts()]


def submit_run_form(page, e2e: E2E, fill_the_form: Callable[[], None]) -> dict:
    """Click Submit on the filled-in form as a person does; return the flow run the UI's own request created.

    The run is taken from the UI's ``create_flow_run`` response, not looked up by name. A person
    whose click does nothing visible, or who reads a 503 ("try again": SQLite's "database is
    locked" under load, which Prefect's own client retries and its UI does not), opens the form
    again, fills it in and submits once more; the test does the same, and says so in a warning. A
    second failure fails the test, naming what the UI sent and got back (status, body, the toasts
    and form messages on the page).
    """
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    def creates_a_run(request) -> bool:
        return request.method == "POST" and request.url.split("?")[0].endswith("/create_flow_run")

    def on_page() -> str:
        alerts = page.locator("[role=alert], .text-destructive").all_inner_texts()
        return f"toasts {toasts(page)}, form messages {alerts}, on {page.url}"

    problem = ""
    for attempt in (1, 2):
        try:
            with page.expect_request(creates_a_run, timeout=60_000) as sent:
                page.get_by_role("button", name="Submit").click()
        except PlaywrightTimeout:
            problem = f"the form sent no create_flow_run request within 60 s; {on_page()}"
        else:
            response = sent.value.response()  # waits for the answer, however slow the server is
            if response is None:
                problem = f"the UI's create_flow_run request failed: {sent.value.failure}; {on_page()}"
            elif response.ok:
                return response.json()
            elif response.status not in (429, 503):
                pytest.fail(f"the UI's create_flow_run answered {response.status}: {response.text()[:500]}; "
                            f"{on_page()}\n{e2e.logs()}")
            else:
                problem = f"the UI's create_flow_run answered {response.status}: {response.text()[:500]}; {on_page()}"
        if attempt == 1:
            warnings.warn(f"the run form submitted again: {problem}", stacklevel=2)
            fill_the_form()
    pytest.fail(f"{problem}\n{e2e.logs()}")


def deployments_in_yaml() -> list[str]:
    return [d["name"] for d in yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())["deployments"]]


def test_the_ui_lists_every_deployment_and_describes_each_parameter_in_its_run_form(ui: UI, e2e: E2E):
    from playwright.sync_api import expect

    page = ui.page
    names = deployments_in_yaml()
    page.get_by_role("link", name="Deployments", exact=True).first.click()
    for name in names:
        expect(page.get_by_role("link", name=name, exact=True).first).to_be_visible()
    ui.assert_reaches_api()
    ui.shot("ui-deployments")

    for name in names:
        schema = api(e2e, "GET", f"/deployments/name/{name}/{name}")["parameter_openapi_schema"]["properties"]
        assert schema, f"deployment {name} has no parameters in its schema"
        open_custom_run_form(page, name)
        for param, spec in schema.items():
            assert spec.get("description"), f"{name}: parameter {param!r} has no description (the flow's docstring)"
            expect(page.get_by_text(re.compile(rf"^{re.escape(param)}( \(Optional\))?$"))).to_be_visible()
            expect(page.get_by_text(spec["description"], exact=True)).to_be_visible()


def test_a_custom_train_run_filled_in_the_form_completes_and_its_artifacts_render(ui: UI, e2e: E2E, chain: Chain):
    from playwright.sync_api import expect

    page = ui.page
    name = f"ui-custom-{uuid.uuid4().hex[:8]}"

    def fill_the_form() -> None:
        open_custom_run_form(page, "train")
        run_name = page.get_by_role("textbox", name="Run Name")
        run_name.fill(name)
        page.get_by_role("textbox", name=re.compile(r"^dataset\b")).fill(DATASET)
        force = page.get_by_role("switch", name=re.compile(r"^force\b"))
        force.click()
        expect(force).to_be_checked()
        expect(run_name).to_have_value(name)

    fill_the_form()
    ui.shot("ui-run-form")
    created = submit_run_form(page, e2e, fill_the_form)
    run_id = created["id"]
    ui.open(f"/v2/runs/flow-run/{run_id}")
    assert created["name"] == name
    assert created["parameters"] == {"dataset": DATASET, "uris": None, "event_id": None, "force": True, "reason": None}
    run = finished_run(e2e, run_id)
    assert run["state_type"] == "COMPLETED", f"{run['state']}\n{e2e.logs()}"
    # the page follows the run to its end without a reload
    expect(page.get_by_role("main").get_by_text("Completed", exact=True).first).to_be_visible(timeout=UI_TIMEOUT_MS)
    ui.assert_reaches_api()
    ui.shot("ui-run")

    # force: a second model of the same data, registered by this run
    [model] = [m for m in registry.list_models(Lake(str(e2e.lake)), DATASET) if m["flow_run_id"] == run_id]
    assert model["fingerprint"] == chain.champion["fingerprint"]
    metrics = model["metrics"]

    page.get_by_role("tab", name="Artifacts").click()
    key = f"freshet-{DATASET.replace('_', '-')}"
    page.get_by_role("link", name=re.compile(rf"{key}-metrics")).click()
    for label, version in (("model", model["version"]), ("champion", chain.champion["version"]),
                           ("baseline", "seasonal naive")):
        # a forced retrain of the champion's own data: the champion saw every backtest row, so the
        # table shows its version with "n/a" metrics (freshet.modeling.report.fmt), not a score on seen rows
        scores = metrics[label]
        row = " ".join([label, version, *(f"{scores[k]:.4f}" if scores else "n/a" for k in ("mae", "rmse", "wape"))])
        expect(page.get_by_role("row", name=row, exact=True)).to_be_visible()
    ui.shot("ui-metrics")

    page.go_back()
    page.get_by_role("link", name=re.compile(rf"{key}-report")).click()
    expect(page.get_by_role("heading", name=f"{DATASET}: model {model['version']}")).to_be_visible()
    decision = "promoted to champion" if model["decision"]["promote"] else "not promoted"
    # the rendered markdown (the raw source on the other tab reads "**Decision:**")
    expect(page.get_by_text(f"Decision: {decision} ({model['decision']['reason']})")).to_be_visible()
    ui.assert_reaches_api()
    ui.shot("ui-report")


def test_the_forecast_run_renders_its_table_and_its_chart(ui: UI, e2e: E2E, chain: Chain):
    from playwright.sync_api import expect

    page = ui.page
    lake = Lake(str(e2e.lake))
    # A forecast by a model of this dataset: the first champion's, normally. Under a loaded suite the
    # forecast run its promotion triggered can wait in the deployment's queue until the custom run's
    # model (test above) is champion, and then forecasts with that one: a forecast reads the champion
    # when it runs.
    pointer = poll(f"a forecast of {DATASET} by a model",
                   lambda: next((p for p in forecast_pointers(lake, DATASET) if p["method"] == "model"), None),
                   RUN_TIMEOUT, every=1.0)
    version = pointer["model_version"]
    assert version in {m["version"] for m in registry.list_models(lake, DATASET)}
    # the file is published before the run draws its chart and creates its artifacts: open the run
    # once it has finished, as a person opening it from the runs list would see it
    run = finished_run(e2e, pointer["flow_run_id"])
    assert run["state_type"] == "COMPLETED", run["state"]
    run_page = f"/v2/runs/flow-run/{pointer['flow_run_id']}"
    key = f"freshet-{DATASET.replace('_', '-')}-forecast"

    def open_artifact(name: re.Pattern, shows) -> None:
        """Open the run's artifact link named ``name`` that shows ``shows`` (a run that forecast again,
        because data landed while it ran, has one report and one table per forecast)."""
        ui.open(run_page)
        page.get_by_role("tab", name="Artifacts").click()
        links = page.get_by_role("link", name=name)
        expect(links.first).to_be_visible()
        for href in [link.get_attribute("href") for link in links.all()]:
            ui.open(href)
            try:
                expect(shows).to_be_visible(timeout=10_000)
                return
            except AssertionError:
                continue
        raise AssertionError(f"no {name.pattern} artifact of run {pointer['flow_run_id']} shows {shows}")

    open_artifact(re.compile(rf"{key}-report"),
                  page.get_by_role("heading", name=f"{DATASET}: forecast {pointer['forecast_id']}"))
    expect(page.get_by_text(f"model {version}", exact=True)).to_be_visible()
    chart = page.get_by_role("img", name="actuals and forecast")
    expect(chart).to_be_visible()
    # the embedded PNG decoded: a broken image has no natural width
    assert chart.evaluate("img => img.complete && img.naturalWidth") > 100
    ui.assert_reaches_api()
    ui.shot("ui-forecast")

    open_artifact(re.compile(rf"{key}(?!-report)"),
                  page.get_by_role("cell", name=version, exact=True).first)
    for column in publish.read_forecast(lake, pointer).columns:
        expect(page.get_by_role("columnheader", name=column, exact=True)).to_be_visible()


def test_the_automations_and_the_event_feed_show_the_chain(ui: UI, e2e: E2E, chain: Chain):
    from playwright.sync_api import expect

    page = ui.page
    page.get_by_role("link", name="Automations", exact=True).first.click()
    trigger = page.get_by_role("listitem", name="automation item freshet-train-on-data-landed")
    expect(trigger).to_contain_text(f"Retrain a dataset when {events.DATA_LANDED} is announced for it.")
    expect(trigger.get_by_role("link", name="train", exact=True)).to_be_visible()
    for dataset in ("retail_sales", *EXTRA_DATASETS):
        alarm = page.get_by_role("listitem", name=f"automation item freshet-stale-{dataset}")
        expect(alarm).to_contain_text(f"No {events.DATA_LANDED} for {dataset} within")
        expect(alarm.get_by_role("link", name="watchdog", exact=True)).to_be_visible()
    ui.assert_reaches_api()
    ui.shot("ui-automations")

    # the event feed, filtered to the dataset and the two events (what its filter boxes do)
    page.get_by_role("link", name="Event Feed", exact=True).first.click()
    page.wait_for_url(re.compile(r"/events"))
    # An explicit range, as a person picks one: the feed's default "Past day" ends at the start
    # of the current minute, so it hides events from the last minute, which these are.
    now = datetime.now(timezone.utc)
    query = urlencode({"resource": json.dumps([f"{events.RESOURCE_PREFIX}{DATASET}"]),
                       "events": json.dumps([events.DATA_LANDED, events.MODEL_PROMOTED]),
                       "rangeType": "range",
                       "start": (now - timedelta(hours=1)).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                       "end": (now + timedelta(minutes=5)).isoformat(timespec="milliseconds").replace("+00:00", "Z")})
    ui.open(f"/v2/events?{query}")
    for event, run in ((events.DATA_LANDED, chain.ingest_run), (events.MODEL_PROMOTED, chain.promoting_run)):
        item = page.get_by_role("listitem").filter(has_text=event)
        expect(item.get_by_role("link", name=f"Flow run {run['name']}", exact=True)).to_be_visible()
    ui.assert_reaches_api()
    ui.shot("ui-events")
