"""Reliability of the chain, with faults injected for real against the e2e stack.

Bursts and duplicates of ``data.landed``, a staleness alarm, a worker killed
(SIGKILL) during training, and a Prefect server that is down while ``ingest``
announces its data. Each test asserts the outcome a user relies on: no lost
files, bounded training, no half-written model visible, and recovery.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import polars as pl
import pytest

from tests.e2e.stack import AUTH, E2E, REPO, poll, write_contract
from freshet import events
from freshet.modeling import registry
from freshet.ops.stack import alive
from freshet.data.generate import generate_retail_sales
from freshet.data.lake import Lake

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def land(e2e: E2E, dataset: str, name: str, frame: pl.DataFrame) -> str:
    folder = e2e.lake / "landing" / dataset
    folder.mkdir(parents=True, exist_ok=True)
    frame.write_csv(folder / name)
    return str(folder / name)


def announce(dataset: str, uris: list[str], key: str | None = None):
    """What an external ingestion job sends: data.landed naming the files."""
    payload = {"dataset": dataset, "uris": uris}
    event = events.build_event(events.DATA_LANDED, dataset, payload, [key or ",".join(uris)])
    events.emit(event)
    return event


def train_runs_all(client):
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    dep = client.read_deployment_by_name("train/train")
    return client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])), limit=200)


def train_runs(client, dataset: str):
    return [r for r in train_runs_all(client) if r.parameters.get("dataset") == dataset]


def all_final(client, dataset: str):
    runs = train_runs(client, dataset)
    return runs if runs and all(r.state and r.state.is_final() for r in runs) else None


def daily_batches(seed: int, history_days: int, batches: int, stores: int = 3, items: int = 4) -> list[pl.DataFrame]:
    """A history file and then one file per day."""
    start = date(2024, 1, 1)
    frame = generate_retail_sales(seed=seed, stores=stores, items=items, days=history_days + batches, start=start)
    cut = start + timedelta(days=history_days)
    out = [frame.filter(pl.col("date") < cut)]
    out += [frame.filter(pl.col("date") == cut + timedelta(days=i)) for i in range(batches)]
    return out


def test_interleaved_bursts_train_each_dataset_at_most_twice_and_cover_every_file(e2e: E2E, e2e_client):
    lake = Lake(str(e2e.lake))
    # the deployment's 2 slots are shared by every dataset: start when earlier tests' runs are done,
    # so the timeline below is about these two datasets only
    poll("earlier train runs to finish", lambda: all(r.state.is_final() for r in train_runs_all(e2e_client)), 180)
    files = {}
    for ds, seed in (("burst_a", 21), ("burst_b", 22)):
        files[ds] = [land(e2e, ds, f"{ds}-{i:02d}.csv", f) for i, f in enumerate(daily_batches(seed, 260, 49))]
    # 100 events within ~8 s: 50 per dataset, interleaved
    for a, b in zip(files["burst_a"], files["burst_b"]):
        announce("burst_a", [a])
        announce("burst_b", [b])
        time.sleep(0.08)

    def covered(ds):
        champ = registry.champion(lake, ds)
        return champ if champ and {i["uri"] for i in champ["lineage"]} == set(files[ds]) else None

    champs = {ds: poll(f"{ds}'s champion to cover all 50 files", lambda ds=ds: covered(ds), 300) for ds in files}
    for ds in files:
        runs = poll(f"every {ds} train run to finish", lambda ds=ds: all_final(e2e_client, ds), 180)
        assert all(r.state.is_completed() for r in runs), [(r.name, r.state.message) for r in runs]
        models = registry.list_models(lake, ds)
        assert 1 <= len(models) <= 2, f"{ds}: {len(models)} trainings for one burst"
        assert champs[ds]["rows"]["total"] == sum(pl.read_csv(f).height for f in files[ds])
    # each dataset trained on its own: while a dataset waited for its training (from its
    # first run's creation to its training's start), at most one training of the other
    # dataset finished, and no run of the other dataset created after it ran to its end
    # (runs the worker picks up in the same poll start in arbitrary order; that is no delay)
    runs = {ds: train_runs(e2e_client, ds) for ds in files}
    trainers = {ds: {m["flow_run_id"] for m in registry.list_models(lake, ds)} for ds in files}
    timeline = "\n".join(
        f"{ds} {r.name} created {r.created} start {r.start_time} end {r.end_time} "
        f"{'trained' if str(r.id) in trainers[ds] else 'nothing new'}"
        for ds in files for r in sorted(runs[ds], key=lambda r: r.created)
    )
    first = min(r.created for ds in files for r in runs[ds])
    others = [r for r in train_runs_all(e2e_client) if r.parameters.get("dataset") not in files
              and (r.end_time is None or r.end_time > first)]
    timeline += "".join(f"\nother {r.parameters.get('dataset')} {r.name} created {r.created} start {r.start_time} "
                        f"end {r.end_time} {r.state_name}" for r in others)
    for ds, other in (("burst_a", "burst_b"), ("burst_b", "burst_a")):
        created = min(r.created for r in runs[ds])
        trained = e2e_client.read_flow_run(registry.list_models(lake, ds)[0]["flow_run_id"]).start_time
        waited_for = [r for r in runs[other] if str(r.id) in trainers[other] and r.end_time and created < r.end_time < trained]
        overtook = [r for r in runs[other] if r.created > created and r.end_time and r.end_time < trained]
        assert len(waited_for) <= 1 and not overtook, f"{ds} waited behind {other}:\n{timeline}"


def test_duplicate_events_create_no_second_run_or_model(e2e: E2E, e2e_client):
    lake = Lake(str(e2e.lake))
    ds = "dup_e"  # its own dataset: this test needs no other test's state
    uri = land(e2e, ds, "dup-0.csv", generate_retail_sales(seed=51, stores=2, items=2, days=150))
    first_sent = time.monotonic()
    announce(ds, [uri], key="dup-first")
    poll(f"the first {ds} champion", lambda: registry.champion(lake, ds), 240)
    poll(f"every {ds} train run to finish", lambda: all_final(e2e_client, ds), 120)
    before_models = registry.list_models(lake, ds)
    before_runs = {r.id for r in train_runs(e2e_client, ds)}
    # the trigger drops a dataset's events for `within` (10 s) after one fires: out of that window first
    poll("the trigger's 10 s throttle window to pass", lambda: time.monotonic() - first_sent > 11, 30, every=0.5)

    event = announce(ds, [uri], key="duplicate-check")
    sent = time.monotonic()

    def runs_of(e):
        return [r for r in train_runs(e2e_client, ds) if r.parameters.get("event_id") == str(e.id)]

    (run,) = poll("the run of the announced event to finish", lambda: [r for r in runs_of(event) if r.state.is_final()],
                  120)
    assert run.state.is_completed(), run.state.message
    # the same announcement again, as a re-sending ingestion job builds it (same id, a new `occurred`), once the
    # trigger's throttle window has passed: only Prefect's memory of the id stops a second run
    poll("the throttle window of that event to pass", lambda: time.monotonic() - sent > 11, 30, every=0.5)
    again = announce(ds, [uri], key="duplicate-check")
    assert again.id == event.id and again.occurred > event.occurred
    # then the same content under a new id: a run that ends "nothing new". The trigger service takes events
    # in order, so once a run follows the re-sent event, a run for it would exist too.
    later = announce(ds, [uri], key="duplicate-check-later")

    def next_runs():
        new = [r for r in train_runs(e2e_client, ds) if r.id not in before_runs and r.id != run.id]
        return new if new and all(r.state.is_final() for r in new) else None

    new = poll("the run after the re-sent event to finish", next_runs, 120)
    assert [r.parameters.get("event_id") for r in new] == [str(later.id)], "the re-sent event started a run"
    assert new[0].state.is_completed(), new[0].state.message
    # the data was covered already: both runs ended "nothing new", without training
    assert registry.list_models(lake, ds) == before_models, "a duplicate event trained a second model"


@pytest.mark.topologies("sqlite", "scale")
def test_staleness_alarm_fires_for_a_dataset_without_data(e2e: E2E, e2e_client):
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    ds = "quiet_d"
    contract = write_contract(e2e.contracts, ds, staleness_hours=0.003)  # 10.8 s window
    env = {**e2e.env, "PREFECT_API_AUTH_STRING": AUTH}
    try:
        subprocess.run([sys.executable, "deployments/automations.py"], env=env, cwd=REPO, check=True, timeout=120,
                       capture_output=True)
        alarm = poll(f"the {events.DATASET_STALE} event for {ds}", lambda: e2e_client.read_events(
            filter=EventFilter(event=EventNameFilter(name=[events.DATASET_STALE]),
                               resource=EventResourceFilter(id=[f"{events.RESOURCE_PREFIX}{ds}"])), limit=5).events, 120)
        assert alarm[0].payload["dataset"] == ds
        runs = [r for r in e2e_client.read_flow_runs(limit=200)
                if r.parameters.get("dataset") == ds and r.parameters.get("reason") == "stale"]
        assert runs and runs[0].created_by and runs[0].created_by.type == "AUTOMATION"
    finally:
        contract.unlink()
        for automation in e2e_client.read_automations_by_name(f"freshet-stale-{ds}"):
            e2e_client.delete_automation(automation.id)


def _kill_runners(e2e: E2E) -> None:
    """SIGKILL every process that runs flows, and the runs with them (their process groups):
    ``freshet serve`` on the SQLite stack, both process workers on the scale topology."""
    state = e2e.stack.state()
    for name in e2e.stack.worker_names():
        os.killpg(state[name]["pid"], signal.SIGKILL)
    # SIGKILL is asynchronous: a process holding a large frame takes a moment to exit, and until it
    # has, `freshet up` (the restart below) sees it alive and starts no new one
    for name in e2e.stack.worker_names():
        poll(f"{name} (pid {state[name]['pid']}) to exit after SIGKILL", lambda name=name: not alive(state[name]), 30,
             every=0.05)


@pytest.mark.topologies("sqlite", "scale")  # serve on SQLite, process workers on scale
def test_worker_killed_during_training_leaves_a_complete_champion_and_recovers(e2e: E2E, e2e_client):
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    lake = Lake(str(e2e.lake))
    ds = "crash_c"
    # 160,800 rows in all: the killed fit (on both files) is long enough to kill; the first champion's
    # fit, on the first 150 days only, is quick
    batches = daily_batches(31, 150, 252, stores=20, items=20)
    first = land(e2e, ds, "crash-0.csv", batches[0])
    announce(ds, [first])
    poll("the first crash_c champion", lambda: registry.champion(lake, ds), 240)
    poll("the first crash_c run to finish", lambda: all_final(e2e_client, ds), 120)  # its drain loop too
    champion_before = registry.champion(lake, ds)["version"]
    second = land(e2e, ds, "crash-1.csv", pl.concat(batches[1:]))
    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        run = run_deployment("train/train", parameters={"dataset": ds}, timeout=0)
    # kill the runner(s), and the run with them, while XGBoost is fitting
    poll("the fit task to be running", lambda: any(
        t.name.startswith("fit") and t.state and t.state.is_running()
        for t in e2e_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    ), 240, every=0.1)
    _kill_runners(e2e)

    # nothing half-written is visible; the champion resolves to a complete, loadable model
    for meta in registry.list_models(lake, ds):
        registry.load_booster(lake, ds, meta["version"])
    champ = registry.champion(lake, ds)
    assert champ["version"] == champion_before, "the killed run cannot have promoted before its fit finished"
    registry.load_booster(lake, ds, champ["version"])
    assert not list((e2e.lake / "models" / ds).glob("**/.*tmp*")), "a temporary file is visible"

    # restart them (as `freshet up` would) and retrain: one model covers both files
    e2e.stack.up(out=lambda line: None)
    models_before = len(registry.list_models(lake, ds))
    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        rerun = run_deployment("train/train", parameters={"dataset": ds}, timeout=0)
    done = poll("the re-run to finish", lambda: (r := e2e_client.read_flow_run(rerun.id)).state.is_final() and r, 300)
    assert done.state.is_completed(), done.state.message
    # the re-run trains, or ends at once because another run (the scheduled watchdog's) already waits
    # for the dataset and will train instead: either way one model ends up covering both files
    latest = poll("a model on both files", lambda: next((m for m in registry.list_models(lake, ds)
                                                        if {i["uri"] for i in m["lineage"]} == {first, second}), None), 300)
    fingerprints = [m["fingerprint"] for m in registry.list_models(lake, ds)]
    assert len(fingerprints) == len(set(fingerprints)), "the same data was trained twice"
    assert len(registry.list_models(lake, ds)) == models_before + 1 and latest


def test_worker_killed_during_ingestion_write_leaves_no_partial_partition(e2e: E2E, e2e_client):
    """What it proves is the lake's atomic write, whichever process runs the flow: SQLite stack only
    (the kill and restart of each runner are proven on both topologies by the training test)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    ds = "crash_c"
    big = generate_retail_sales(seed=41, stores=40, items=50, days=700, start=date(2023, 1, 1))  # ~1.4 M rows
    uri = land(e2e, ds, "crash-big.csv", big)
    manifest_before = len(list((e2e.lake / "manifest" / ds).glob("*.json")))
    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        run = run_deployment("ingest/ingest", parameters={"dataset": ds, "uris": [uri]}, timeout=0)
    poll("the admit task to be running", lambda: any(
        t.name.startswith("admit") and t.state and t.state.is_running()
        for t in e2e_client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
    ), 240, every=0.05)
    _kill_runners(e2e)

    # every visible partition is complete, and the manifest names only complete partitions
    curated = e2e.lake / "curated" / ds
    for part in curated.glob("part-*.parquet"):
        pl.read_parquet(part)
    for entry in (e2e.lake / "manifest" / ds).glob("*.json"):
        meta = json.loads(entry.read_text())
        assert pl.read_parquet(curated / f"part-{meta['content_hash']}.parquet").height == meta["rows"]

    # re-running completes the work exactly once
    e2e.stack.up(out=lambda line: None)
    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        rerun = run_deployment("ingest/ingest", parameters={"dataset": ds, "uris": [uri]}, timeout=0)
    done = poll("the ingest re-run to finish", lambda: (r := e2e_client.read_flow_run(rerun.id)).state.is_final() and r, 300)
    assert done.state.is_completed(), done.state.message
    entries = [json.loads(p.read_text()) for p in (e2e.lake / "manifest" / ds).glob("*.json")]
    assert len(entries) == manifest_before + 1
    assert [e["rows"] for e in entries if e["uri"] == uri] == [big.height]


def test_server_down_while_ingest_announces_then_the_watchdog_retrains(e2e: E2E, e2e_client, tmp_path: Path):
    """Runs last: it stops and restarts the Prefect server of the e2e stack."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from freshet.ops.stack import healthy

    lake = Lake(str(e2e.lake))
    ds = "burst_b"
    extra = daily_batches(22, 260, 52)[50:]  # two days after the burst test's files
    uri = land(e2e, ds, "after-outage.csv", pl.concat(extra))
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**e2e.env, "PREFECT_API_AUTH_STRING": AUTH, "PREFECT_CLIENT_MAX_RETRIES": "12"}
    driver = subprocess.Popen([sys.executable, str(REPO / "tests/drivers/ingest_with_barrier.py"), str(barrier), ds, uri],
                              env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    # a slot some run holds when the server stops (a dataset's lock, a forecast deployment's slot):
    # its lease must outlive the restart and expire, or the slot stays taken for ever
    held = f"freshet-test-held-across-restart-{uuid.uuid4().hex[:6]}"
    e2e_client.upsert_global_concurrency_limit_by_name(held, 1)
    e2e_client.increment_concurrency_slots_with_lease(names=[held], slots=1, mode="concurrency", lease_duration=60)
    assert e2e_client.read_global_concurrency_limit_by_name(held).active_slots == 1
    try:
        poll("ingest to reach its announcement", lambda: (barrier / "ready").exists() or driver.poll() is not None, 180)
        assert driver.poll() is None, driver.stdout.read()
        os.killpg(e2e.stack.state()["server"]["pid"], signal.SIGTERM)
        poll("the server to be down", lambda: not healthy(e2e.api_url), 60)
        (barrier / "go").touch()
        lines: list[str] = []

        def announced_failure():
            line = driver.stdout.readline()
            lines.append(line)
            return "ANNOUNCEMENT FAILED" in line

        poll("ingest to report the failed announcement", announced_failure, 120, every=0)
        e2e.stack.up(out=lambda line: None)  # the server comes back (same port, same database)
        out, _ = driver.communicate(timeout=300)
        output = "".join(lines) + out
    finally:
        if driver.poll() is None:
            driver.kill()
    assert "data admitted but not announced" in output or "ANNOUNCEMENT FAILED" in output
    entries = {json.loads(p.read_text())["uri"] for p in (e2e.lake / "manifest" / ds).glob("*.json")}
    assert uri in entries, "the data must be admitted even though the event was lost"
    assert not [r for r in train_runs(e2e_client, ds) if uri in (r.parameters.get("uris") or [])]

    # the safety net: the watchdog finds data no model has seen and retrains
    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        wd = run_deployment("watchdog/watchdog", parameters={"dataset": ds}, timeout=0)
    wd = poll("the watchdog run to finish", lambda: (r := e2e_client.read_flow_run(wd.id)).state.is_final() and r, 240)
    assert wd.state.is_completed(), wd.state.message

    def trained_on_it():
        return any(uri in {i["uri"] for i in m["lineage"]} for m in registry.list_models(lake, ds))

    poll("a model trained on the unannounced file", trained_on_it, 300)
    poll(f"the slot of {held}, leased for 60 s before the restart, to be free again",
         lambda: e2e_client.read_global_concurrency_limit_by_name(held).active_slots == 0, 120)
    e2e_client.delete_global_concurrency_limit_by_name(held)
