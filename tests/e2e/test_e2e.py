"""The whole chain against a real Prefect server and worker (see ``tests/e2e/stack.py``).

An ingestion (through the ``ingest`` deployment, and then from outside Prefect
with ``prefect event emit``) must make the ``data.landed`` automation start a
``train`` run that receives the event's parameters, completes on the worker and
promotes a champion whose lineage names the landed file. Nothing here starts a
train run itself.
"""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import polars as pl

import pytest

from tests.e2e.stack import E2E, REPO, poll
from freshet import events
from freshet.modeling import registry
from freshet.data.generate import generate_retail_sales
from freshet.data.lake import Lake

pytestmark = [pytest.mark.e2e]

DATASET = "retail_sales"


def _land(e2e: E2E, name: str, frame) -> str:
    folder = e2e.lake / "landing" / DATASET
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    frame.write_csv(path)
    return str(path)


def _sha(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def _train_runs(client):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = client.read_deployment_by_name("train/train")
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])), limit=200)


def _final(client, run_id, timeout: float, e2e: E2E):
    def done():
        run = client.read_flow_run(run_id)
        return run if run.state and run.state.is_final() else None

    try:
        return poll(f"flow run {run_id} to finish", done, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{e2e.logs()}") from None


@pytest.fixture(scope="module")
def frames():
    # 500 days split at day 200; the demand shift at day 300 makes the second batch's model clearly
    # better than a champion that never saw the shift.
    start = date(2024, 1, 1)
    data = generate_retail_sales(seed=11, stores=4, items=6, days=500, start=start)
    cut = start + timedelta(days=200)
    return data.filter(pl.col("date") < cut), data.filter(pl.col("date") >= cut)


@pytest.mark.topologies("sqlite", "scale")
def test_ingest_then_external_emit_each_trigger_a_promoting_train_run(e2e: E2E, e2e_client, frames):
    from prefect.deployments import run_deployment

    client = e2e_client
    lake = Lake(str(e2e.lake))

    # 1. ingestion through the ingest deployment, as a scheduled job would run it
    first = _land(e2e, "e2e-first.csv", frames[0])
    ingest_run = run_deployment("ingest/ingest", parameters={"dataset": DATASET, "uris": [first]}, timeout=0)
    ingest_run = _final(client, ingest_run.id, 180, e2e)
    assert ingest_run.state.is_completed(), ingest_run.state.message
    expected_event = str(events.event_id(events.DATA_LANDED, DATASET, [_sha(first)]))

    run = poll("the automation to create a train run for the ingest event",
               lambda: next((r for r in _train_runs(client) if r.parameters.get("event_id") == expected_event), None), 60)
    assert run.created_by is not None and run.created_by.type == "AUTOMATION", run.created_by
    assert run.created_by.display_value == "freshet-train-on-data-landed"
    assert run.parameters["dataset"] == DATASET
    assert run.parameters["uris"] == [first]
    run = _final(client, run.id, 300, e2e)
    assert run.state.is_completed(), f"{run.state.message}\n{e2e.logs()}"
    champ = registry.champion(lake, DATASET)
    assert champ is not None and champ["flow_run_id"] == str(run.id)
    assert [item["uri"] for item in champ["lineage"]] == [first]
    assert champ["event_id"] == expected_event

    # 2. an ingestion job outside Prefect lands a file and announces it with the Prefect CLI
    second = _land(e2e, "e2e-second.csv", frames[1])
    e2e.prefect(
        "event", "emit", events.DATA_LANDED,
        "--resource", json.dumps(events.dataset_resource(DATASET)),
        "--payload", json.dumps({"dataset": DATASET, "uris": [second]}),
    )
    run2 = poll("the automation to create a train run for the external event",
                lambda: next((r for r in _train_runs(client) if r.parameters.get("uris") == [second]), None), 60)
    assert run2.created_by is not None and run2.created_by.type == "AUTOMATION"
    assert run2.parameters["dataset"] == DATASET and run2.parameters["event_id"]
    run2 = _final(client, run2.id, 300, e2e)
    assert run2.state.is_completed(), f"{run2.state.message}\n{e2e.logs()}"
    champ2 = registry.champion(lake, DATASET)
    assert champ2["flow_run_id"] == str(run2.id), champ2["decision"]
    assert {item["uri"] for item in champ2["lineage"]} == {first, second}
    assert champ2["event_id"] == run2.parameters["event_id"]
    # the externally announced file went through validation into the manifest
    manifest = [json.loads(p.read_text()) for p in (e2e.lake / "manifest" / DATASET).glob("*.json")]
    assert {m["uri"] for m in manifest} == {first, second}
    assert sum(m["rows"] for m in manifest) == frames[0].height + frames[1].height


def test_deploying_twice_leaves_one_automation_of_each(e2e: E2E, e2e_client):
    from freshet.ops.stack import _terminate_group, deploy

    def names():
        return sorted(a.name for a in e2e_client.read_automations())

    before = names()
    assert before.count("freshet-train-on-data-landed") == 1
    assert before.count(f"freshet-stale-{DATASET}") == 1
    if e2e.stack.state()["runner"] == "serve":
        # a served stack deploys when `freshet serve` starts: restart it, as `freshet up` would
        old = e2e.stack.state()["worker"]["pid"]
        _terminate_group(old)
        e2e.stack.up(out=lambda line: print(f"[e2e] {line}"))
        assert e2e.stack.state()["worker"]["pid"] != old
    else:
        deploy(e2e.env, REPO, e2e.stack.dir)
    assert names() == before


@pytest.mark.topologies("sqlite", "scale")
def test_the_stack_enforces_basic_auth(e2e: E2E):
    import urllib.error
    import urllib.request

    request = urllib.request.Request(f"{e2e.api_url}/flows/filter", data=b"{}", method="POST",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=10)
    assert refused.value.code == 401
    # the same call with the credentials the deployments and the worker use
    assert e2e.prefect("flow", "ls").returncode == 0


def test_the_sqlite_server_runs_with_the_cursor_fix(e2e: E2E):
    """The server the suites drive is started as users' `freshet up` starts it: through
    freshet.ops.prefect_server (tests/ops/test_prefect_server.py shows the freeze it prevents)."""
    pid = e2e.stack.state()["server"]["pid"]
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert b"freshet.ops.prefect_server" in cmdline and b"start" in cmdline, cmdline


def test_a_contract_with_string_boolean_and_zero_heavy_columns_trains_through_the_deployed_chain(e2e: E2E, e2e_client):
    """A user's first real contract: the ingest deployment admits it, the automation's train run trains it."""
    from prefect.deployments import run_deployment

    from tests.flows.test_train import BIKES_CONTRACT
    from tests.modeling.test_training import bikes

    ds = "e2e_bikes"
    (e2e.contracts / f"{ds}.toml").write_text(BIKES_CONTRACT.replace('name = "bikes"', f'name = "{ds}"'))
    data = bikes(days=30)
    assert (data["wind"] == 0).mean() > 0.5 and data["weather"].dtype == pl.String and data["workday"].dtype == pl.Boolean
    folder = e2e.lake / "landing" / ds
    folder.mkdir(parents=True, exist_ok=True)
    data.write_csv(folder / "bikes.csv")
    lake = Lake(str(e2e.lake))

    run = run_deployment("ingest/ingest", parameters={"dataset": ds, "uris": [str(folder / "bikes.csv")]}, timeout=0)
    assert _final(e2e_client, run.id, 180, e2e).state.is_completed()
    model = poll(f"a model of {ds} from the automation's train run",
                 lambda: next(iter(registry.list_models(lake, ds)), None), 300)
    assert model["rows"]["total"] == data.height
    assert model["feature_spec"]["categories"]["weather"] == ["clear", "mist", "rain"]
    assert "wind_lag_24" in model["features"] and "wind" not in model["features"]
    assert model["decision"]["promote"], model["decision"]["reason"]
    # the champion pointer is written after the model (registered first, then promoted)
    poll(f"{ds}'s champion", lambda: (registry.champion(lake, ds) or {}).get("version") == model["version"], 60)
