"""Isolation between datasets (both topologies) and the faults that only exist on the scale topology.

On ``scale`` (``freshet up --scale``: PostgreSQL, Redis, Prefect's services, two API
servers, two workers) the test process talks to API server ``server`` and the workers
to ``server_b``. Faults are injected for real: an API server killed during a burst,
PostgreSQL restarted while a model is fitting, Redis restarted (it keeps nothing: the
local one runs without persistence).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import polars as pl
import pytest

from tests.e2e.stack import AUTH, E2E, poll
from tests.e2e.test_reliability_e2e import all_final, announce, daily_batches, land, train_runs
from freshet import events
from freshet.data.lake import Lake
from freshet.modeling import registry
from freshet.ops.stack import auth_headers

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _covering(lake: Lake, ds: str, uris: list[str]):
    champ = registry.champion(lake, ds)
    return champ if champ and set(uris) <= {i["uri"] for i in champ["lineage"]} else None


def _run_logs(client, run_id) -> str:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    return "\n".join(log.message for log in client.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))))


def _start(e2e: E2E, deployment: str, parameters: dict):
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        return run_deployment(deployment, parameters=parameters, timeout=0)


# On the scale topology only: the isolation is freshet's own logic (dataset lock and waiting room,
# topology-independent), and every train run of the SQLite suites already takes the same global
# limits; the scale topology adds what differs there, leases kept in Redis.
@pytest.mark.topologies("scale")
def test_a_busy_dataset_does_not_delay_another_datasets_training(e2e: E2E, e2e_client):
    from freshet.locks import lock_name

    lake = Lake(str(e2e.lake))
    busy, other = "iso_busy", "iso_other"
    a, b = daily_batches(51, 260, 1), daily_batches(52, 260, 1)
    a0, b0 = land(e2e, busy, "busy-0.csv", a[0]), land(e2e, other, "other-0.csv", b[0])
    # the busy dataset's training slot is taken (as by a long training) for the whole first part
    e2e_client.upsert_global_concurrency_limit_by_name(lock_name(busy), 1)
    lease = e2e_client.increment_concurrency_slots_with_lease(
        names=[lock_name(busy)], slots=1, mode="concurrency", lease_duration=900).json()["lease_id"]
    try:
        announce(busy, [a0])
        poll(f"{busy}'s triggered run to be running", lambda: any(r.state.is_running() for r in train_runs(e2e_client, busy)), 120)
        a1 = land(e2e, busy, "busy-1.csv", a[1])  # lands meanwhile, announced by nobody
        _start(e2e, "train/train", {"dataset": busy})  # a second run, as the watchdog would start it
        # a dataset never has two runs waiting: one of the two ends at once and says why
        def one_ended():
            runs = train_runs(e2e_client, busy)
            return len(runs) == 2 and [r for r in runs if r.state.is_final()]

        done = poll(f"one of {busy}'s two runs to end while the other waits", one_ended, 120)
        assert len(done) == 1 and done[0].state.is_completed(), [(r.name, r.state.name, r.state.message) for r in done]
        poll("the ended run's explanation in its logs",
             lambda: "already waiting for this dataset's training slot" in _run_logs(e2e_client, done[0].id), 60)
        # the other dataset trains while the busy one still holds its slot
        announce(other, [b0])
        champ = poll(f"{other}'s champion while {busy} is busy", lambda: _covering(lake, other, [b0]), 300)
        assert champ["rows"]["total"] == b[0].height
        assert registry.list_models(lake, busy) == [], f"{busy} trained although its slot was held"
    finally:
        e2e_client.release_concurrency_slots_with_lease(lease)
    # released: the waiting run trains once, on both files
    poll(f"{busy}'s champion on both files", lambda: _covering(lake, busy, [a0, a1]), 300)
    runs = poll(f"every {busy} run to finish", lambda: all_final(e2e_client, busy), 120)
    assert all(r.state.is_completed() for r in runs), [(r.name, r.state.message) for r in runs]
    assert len(registry.list_models(lake, busy)) == 1


def _post_events(url: str, body: list[dict]) -> bool:
    request = urllib.request.Request(f"{url}/events", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json", **auth_headers(AUTH)})
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status < 300
    except (urllib.error.URLError, OSError):
        return False


@pytest.mark.topologies("scale")
def test_an_api_server_killed_during_a_burst_loses_no_event(e2e: E2E, e2e_client):
    """Clients spread a burst over both API servers (as a load balancer would) and fail over when one dies."""
    lake = Lake(str(e2e.lake))
    ds = "fault_e"
    uris = [land(e2e, ds, f"fault-{i:02d}.csv", f) for i, f in enumerate(daily_batches(61, 260, 19))]
    servers = [e2e.stack.api_url("server_b"), e2e.stack.api_url("server")]
    sent: dict[str, str] = {}
    accepted_by: list[str] = []
    for i, uri in enumerate(uris):
        if i == 6:
            e2e.stack.stop("server", out=print)  # the clients' server dies mid-burst
        event = events.build_event(events.DATA_LANDED, ds, {"dataset": ds, "uris": [uri]}, [uri, "api-kill"])
        body = [event.model_dump(mode="json")]
        for url in (servers[i % 2], servers[(i + 1) % 2]):
            if _post_events(url, body):
                sent[str(event.id)] = url
                accepted_by.append(url)
                break
    assert len(sent) == len(uris), "an event was accepted by neither API server"
    assert set(accepted_by[:6]) == set(servers), "before the kill the burst went through both servers"
    assert set(accepted_by[6:]) == {servers[0]}, "after the kill the surviving server took every event"
    e2e.stack.up(out=print)  # the dead server comes back (same port, same database)

    # every event was persisted (through Redis, by the services process) and the data was trained
    from prefect.events.filters import EventFilter, EventIDFilter

    def stored():
        found = e2e_client.read_events(filter=EventFilter(id=EventIDFilter(id=list(sent))), limit=50).events
        return found if len(found) == len(sent) else None

    poll("every event of the burst to be stored", stored, 60)
    champ = poll(f"{ds}'s champion on all {len(uris)} files", lambda: _covering(lake, ds, uris), 300)
    assert champ["rows"]["total"] == sum(pl.read_csv(u).height for u in uris)
    runs = poll(f"every {ds} run to finish", lambda: all_final(e2e_client, ds), 180)
    assert all(r.state.is_completed() for r in runs), [(r.name, r.state.message) for r in runs]
    assert any(r.created_by and r.created_by.type == "AUTOMATION" for r in runs)


@pytest.mark.topologies("scale")
def test_redis_restarted_then_events_still_trigger_training(e2e: E2E, e2e_client):
    lake = Lake(str(e2e.lake))
    ds = "burst_a"
    first = land(e2e, ds, "redis-0.csv", daily_batches(71, 260, 0)[0])
    e2e.stack.stop("redis", out=print)
    e2e.stack.up(out=print)  # an empty Redis: streams, consumer groups and leases are gone
    event = announce(ds, [first])
    run = poll("the automation to create a train run after the Redis restart", lambda: next(
        (r for r in train_runs(e2e_client, ds) if r.parameters.get("event_id") == str(event.id)), None), 120)
    assert run.created_by and run.created_by.type == "AUTOMATION"
    poll(f"{ds}'s champion after the Redis restart", lambda: _covering(lake, ds, [first]), 300)


@pytest.mark.topologies("scale")
def test_postgres_restarted_during_training_then_the_watchdog_recovers(e2e: E2E, e2e_client):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    lake = Lake(str(e2e.lake))
    ds = "pg_restart"  # its own dataset: the kill tests of test_reliability_e2e.py fill crash_c on this topology too
    batches = daily_batches(31, 150, 252, stores=20, items=20)  # 160,800 rows: the second fit is long enough to interrupt
    first = land(e2e, ds, "pg-0.csv", batches[0])
    announce(ds, [first])
    poll(f"the first {ds} champion", lambda: _covering(lake, ds, [first]), 300)
    poll(f"the first {ds} run to finish", lambda: all_final(e2e_client, ds), 120)
    second = land(e2e, ds, "pg-1.csv", pl.concat(batches[1:]))
    run = _start(e2e, "train/train", {"dataset": ds})
    poll("the fit task to be running", lambda: any(
        t.name.startswith("fit") and t.state and t.state.is_running()
        for t in e2e_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    ), 240, every=0.1)
    e2e.stack.stop("postgres", out=print)
    e2e.stack.up(out=print)  # PostgreSQL back on the same port and data folder; the servers reconnect
    ended = poll("the interrupted run to end (completed, or failed cleanly)",
                 lambda: (r := e2e_client.read_flow_run(run.id)).state.is_final() and r, 300)
    # whatever happened to the run: nothing half-written, the champion loads
    for meta in registry.list_models(lake, ds):
        registry.load_booster(lake, ds, meta["version"])
    registry.load_booster(lake, ds, registry.champion(lake, ds)["version"])
    # the safety net: the watchdog retrains whatever no model has seen yet
    wd = _start(e2e, "watchdog/watchdog", {"dataset": ds})
    wd = poll("the watchdog run to finish", lambda: (r := e2e_client.read_flow_run(wd.id)).state.is_final() and r, 240)
    assert wd.state.is_completed(), wd.state.message
    poll(f"a model on both {ds} files", lambda: any(
        {first, second} <= {i["uri"] for i in m["lineage"]} for m in registry.list_models(lake, ds)), 300)
    fingerprints = [m["fingerprint"] for m in registry.list_models(lake, ds)]
    assert len(fingerprints) == len(set(fingerprints)), f"the same data was trained twice ({ended.state.name})"
