"""Benchmarks against the real local stack: trigger latency, freshness lag, burst cost.

One ``freshet.ops.stack.Stack`` (``prefect server start`` on a free 127.0.0.1 port, the
``freshet`` process pool, ``prefect deploy`` of deployments/prefect.yaml, the
staleness automations and a process worker with the shipped settings), started as
``freshet up`` starts it, in a temporary folder. Each benchmark gets its own dataset
(a copy of the bundled ``retail_sales`` contract under another name), so their lakes,
locks and models never meet. Prefect is imported only after the stack is up, with
``PREFECT_API_URL`` pointing at it.

Clocks: event times are taken where the event is built (this process), run and
state times by the server; both are this machine's clock.
"""

from __future__ import annotations

import os
import random
import shutil
import tempfile
import time
import traceback
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from common import REPO, cached_data, median, percentile, say

BASE_CONTRACT = REPO / "src" / "freshet" / "data" / "bundled_contracts" / "retail_sales.toml"
LATENCY_DS = "bench_latency"
BURST_DS = "bench_burst"
FRESH_DS = "bench_fresh_{}"
PREFECT_DEFAULT_WORKER = {"PREFECT_WORKER_QUERY_SECONDS": "10", "PREFECT_WORKER_PREFETCH_SECONDS": "10"}


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


class LiveStack:
    """The local stack for the duration of the live benchmarks; stops only what it started."""

    def __init__(self, keep: bool = False) -> None:
        self.keep = keep
        self.tmp = Path(tempfile.mkdtemp(prefix="freshet-bench-stack-"))
        self.contracts = self.tmp / "contracts"
        self.contracts.mkdir()
        text = BASE_CONTRACT.read_text()
        for ds in [LATENCY_DS, BURST_DS, *(FRESH_DS.format(i) for i in range(1, 4)), "bench_forecast"]:
            (self.contracts / f"{ds}.toml").write_text(text.replace('name = "retail_sales"', f'name = "{ds}"'))

    def __enter__(self) -> "LiveStack":
        from freshet.settings import Settings
        from freshet.ops.stack import Stack

        self.settings = Settings(lake_url=str(self.tmp / "lake"), stack_dir=self.tmp / "stack", stack_port=0,
                                 contracts_dir=self.contracts)
        self.stack = Stack(self.settings)
        started = time.monotonic()
        try:
            api = self.stack.up(out=lambda line: say(f"stack: {line}"))
        except BaseException:
            self.stack.down(out=lambda line: say(f"stack: {line}"))
            raise
        self.startup_s = time.monotonic() - started
        os.environ.update({
            "PREFECT_API_URL": api, "PREFECT_HOME": str(self.stack.home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "FRESHET_LAKE_URL": self.settings.lake_url, "FRESHET_CONTRACTS_DIR": str(self.contracts),
        })
        from prefect.client.orchestration import get_client

        from freshet.data.lake import Lake

        self.lake = Lake.from_settings(self.settings)
        self._client_cm = get_client(sync_client=True)
        self.client = self._client_cm.__enter__()
        self.train_dep = self.client.read_deployment_by_name("train/train")
        self.worker_settings = dict(self.stack.state().get("worker_env", {}))
        return self

    def __exit__(self, *exc: Any) -> None:
        try:
            self._client_cm.__exit__(None, None, None)
        finally:
            self.stack.down(out=lambda line: say(f"stack: {line}"))
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)

    # ------------------------------------------------------------------ data and events
    def land(self, ds: str, frame, name: str) -> str:
        path = f"{self.lake.landing_dir(ds)}/{name}"
        with self.lake.staged(path) as local:
            frame.write_csv(local)
        return self.lake.uri(path)

    def admit(self, ds: str, frame, name: str) -> dict:
        """Land a file and admit it here, as the ``ingest`` flow's task would; returns its manifest entry."""
        from freshet.data.contracts import load_contract
        from freshet.data.ingestion import admit_file

        uri = self.land(ds, frame, name)
        result = admit_file(self.lake, load_contract(ds, self.contracts), uri)
        assert result.status == "admitted", result.message()
        return result.entry

    def emit_landed(self, ds: str, entries: list[dict], nonce: str):
        """Announce ``data.landed`` as ``ingest`` does; the nonce makes every event id distinct."""
        from freshet import events

        payload = events.landed_payload(ds, entries)
        event = events.build_event(events.DATA_LANDED, ds, payload, [*payload["content_hashes"], nonce])
        events.emit(event)
        return event

    # ------------------------------------------------------------------ runs
    def train_runs(self, limit: int = 200) -> list:
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort

        return self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[self.train_dep.id])),
            sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit)

    def runs_for_events(self, event_ids: set[str], timeout: float, settle: float | None = None) -> dict[str, Any]:
        """The train run the automation created for each event id (matched by its event_id parameter).

        With ``settle``, stop once some runs were found and no new one appeared for that long
        (the trigger's throttle drops most events of a burst, so most ids never get a run).
        """
        deadline = time.monotonic() + timeout
        found: dict[str, Any] = {}
        last_new = time.monotonic()
        while True:
            for run in self.train_runs(limit=max(50, 2 * len(event_ids))):
                eid = str(run.parameters.get("event_id"))
                if eid in event_ids and eid not in found:
                    found[eid] = run
                    last_new = time.monotonic()
            if len(found) == len(event_ids) or time.monotonic() > deadline:
                return found
            if settle is not None and found and time.monotonic() - last_new > settle:
                return found
            time.sleep(0.1)

    def wait_final(self, run_ids: list, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        final: dict = {}
        while True:
            for rid in [r for r in run_ids if r not in final]:
                run = self.client.read_flow_run(rid)
                if run.state and run.state.is_final():
                    final[rid] = run
            if len(final) == len(run_ids):
                return final
            if time.monotonic() > deadline:
                raise TimeoutError(f"{len(run_ids) - len(final)} run(s) not final after {timeout:.0f} s; "
                                   f"see {self.stack.dir}/worker.log")
            time.sleep(0.25)

    def wait_quiet(self, quiet_s: float = 5.0, timeout: float = 600) -> float:
        """Wait until no flow run is pending, running or due for ``quiet_s`` seconds in a row (a promotion's
        forecast run, started by an automation a second or two after the training, included); the seconds waited."""
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
        from prefect.client.schemas.objects import StateType

        busy = FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[
            StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING])))
        start = quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < quiet_s:
            due = datetime.now(timezone.utc) + timedelta(seconds=quiet_s)  # a schedule far ahead is not work
            if any(r.state.type != StateType.SCHEDULED or (r.expected_start_time or due) < due
                   for r in self.client.read_flow_runs(flow_run_filter=busy, limit=50)):
                quiet_since = time.monotonic()
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"flow runs still busy after {timeout:.0f} s; see {self.stack.dir}/worker.log")
            time.sleep(0.5)
        return time.monotonic() - start

    def state_times(self, run_id) -> dict[str, datetime]:
        """The first time the run entered each state type (SCHEDULED, PENDING, RUNNING, ...)."""
        out: dict[str, datetime] = {}
        for state in sorted(self.client.read_flow_run_states(run_id), key=lambda s: s.timestamp):
            out.setdefault(state.type.value, state.timestamp)
        return out

    def trigger_and_wait(self, ds: str, entries: list[dict], nonce: str, timeout: float = 600) -> Any:
        event = self.emit_landed(ds, entries, nonce)
        runs = self.runs_for_events({str(event.id)}, 60)
        if not runs:
            raise TimeoutError(f"no train run for event {event.id} within 60 s")
        run = next(iter(runs.values()))
        return event, self.wait_final([run.id], timeout)[run.id]

    # ------------------------------------------------------------------ CPU accounting
    def tree_cpu(self, name: str) -> float:
        """CPU seconds of a stack process and all its descendants, the exited (reaped) ones included."""
        import psutil

        pid = self.stack.state()[name]["pid"]
        proc = psutil.Process(pid)
        total = 0.0
        t = proc.cpu_times()
        total += t.user + t.system + t.children_user + t.children_system
        for child in proc.children(recursive=True):
            try:
                c = child.cpu_times()
                # its own reaped children too: a fork server reaps the runs it forked
                total += c.user + c.system + c.children_user + c.children_system
            except psutil.Error:
                pass
        return total

    def event_received(self, event_id) -> datetime | None:
        """When the server received an event (its ``received`` stamp)."""
        resp = self.client.request("POST", "/events/filter",
                                   json={"filter": {"id": {"id": [str(event_id)]}}, "limit": 1})
        found = resp.json().get("events", [])
        return datetime.fromisoformat(found[0]["received"].replace("Z", "+00:00")) if found else None

    def trigger_throttle(self) -> float:
        """The ``within`` of the deployed train trigger (a leading-edge throttle per dataset)."""
        found = self.client.read_automations_by_name("freshet-train-on-data-landed")
        return found[0].trigger.within.total_seconds() if found else 0.0

    def set_trigger_within(self, seconds: float) -> float:
        """Change the deployed train trigger's ``within`` in place; returns the previous value."""
        from prefect.automations import AutomationCore

        automation = self.client.read_automations_by_name("freshet-train-on-data-landed")[0]
        before = automation.trigger.within.total_seconds()
        core = AutomationCore(**{k: getattr(automation, k) for k in AutomationCore.model_fields if k != "owner_resource"})
        core.trigger = core.trigger.model_copy(update={"within": timedelta(seconds=seconds)})
        # the update API refuses owner_resource (the read API never returns it anyway)
        body = core.model_dump(mode="json", exclude={"owner_resource"})
        self.client.request("PUT", f"/automations/{automation.id}", json=body).raise_for_status()
        return before

    def restart_worker(self, extra_env: dict[str, str]) -> None:
        """Replace the stack's worker (ours, by its recorded pid) with one using other worker settings."""
        from freshet.ops import stack as S

        state = self.stack.state()
        S._terminate_group(state["worker"]["pid"])
        env = {**self.stack.client_env(), **S.WORKER_ENV, **extra_env}
        cmd = [S._prefect_executable(), "worker", "start", "--pool", S.POOL, "--type", "process",
               "--limit", str(S.WORKER_LIMIT)]
        state["worker"] = self.stack._spawn("worker", cmd, env, S.project_root())
        self.stack.save(state)
        time.sleep(3)
        S.wait_until("worker online", lambda: S._worker_online(env), 90, out=say)


# ====================================================================== trigger latency
def _latency_series(live: LiveStack, entry: dict, n: int, label: str) -> dict[str, Any]:
    """n events, one at a time; each waits out the trigger's per-dataset throttle so none is dropped."""
    received, created, pending, running, cpu_before = [], [], [], [], live.tree_cpu("worker")
    throttle = live.trigger_throttle()
    last = None
    for i in range(n):
        if last is not None:
            time.sleep(max(0.0, throttle + 0.5 - _seconds(last, datetime.now(timezone.utc))))
        event, run = live.trigger_and_wait(LATENCY_DS, [entry], f"{label}-{i}-{uuid.uuid4().hex}", timeout=180)
        times = live.state_times(run.id)
        occurred = last = event.occurred
        got = live.event_received(event.id)
        received.append(_seconds(occurred, got) if got else None)
        created.append(_seconds(occurred, run.created))
        pending.append(_seconds(occurred, times["PENDING"]) if "PENDING" in times else None)
        running.append(_seconds(occurred, times["RUNNING"]) if "RUNNING" in times else None)
        if run.state.type.value != "COMPLETED":
            raise RuntimeError(f"latency run {run.name} ended {run.state.name}: {run.state.message}")
        time.sleep(random.uniform(0.3, 1.3))  # decorrelate from the worker's poll phase
    time.sleep(2)
    cpu = live.tree_cpu("worker") - cpu_before
    return {
        "events": n, "trigger_throttle_s": throttle,
        "received_s": received, "received_p50": median(received),
        "created_s": created, "pending_s": pending, "running_s": running,
        "created_p50": median(created), "created_p95": percentile(created, 95),
        "pending_p50": median(pending), "pending_p95": percentile(pending, 95),
        "running_p50": median(running), "running_p95": percentile(running, 95),
        "worker_cpu_s_per_run": cpu / n,
    }


def run_latency(live: LiveStack, quick: bool) -> dict[str, Any]:
    from freshet.data.generate import generate_retail_sales

    n = 6 if quick else 20
    entry = live.admit(LATENCY_DS, generate_retail_sales(stores=3, items=4, days=300), "history.csv")
    say("trigger latency: first event trains the dataset's first model (not measured)")
    _, run = live.trigger_and_wait(LATENCY_DS, [entry], "setup")
    assert run.state.type.value == "COMPLETED", run.state.message
    say(f"trigger latency: {n} data.landed events, shipped worker settings {live.worker_settings}")
    out = {"shipped": {"worker": live.worker_settings, **_latency_series(live, entry, n, "lat")}}
    if quick:
        return out
    m = 12
    say(f"trigger latency: {m} events with the trigger's within set to 0 (no per-dataset throttle bucket)")
    before = None
    try:
        before = live.set_trigger_within(0)
        time.sleep(2)
        out["within_0"] = _latency_series(live, entry, m, "lat-within0")
    except Exception as exc:  # noqa: BLE001 - a variant; the shipped figures stand
        traceback.print_exc()
        out["within_0"] = {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if before is not None:
            live.set_trigger_within(before)
    return out


def run_latency_prefect_defaults(live: LiveStack, quick: bool) -> dict[str, Any]:
    """The same measurement with Prefect's default worker polling (what the shipped setting buys)."""
    from freshet.data.ingestion import read_manifest

    n = 3 if quick else 6
    entry = read_manifest(live.lake, LATENCY_DS)[0]
    say(f"trigger latency: restarting the worker with Prefect's defaults {PREFECT_DEFAULT_WORKER}")
    live.restart_worker(PREFECT_DEFAULT_WORKER)
    live.trigger_and_wait(LATENCY_DS, [entry], f"warmup-{uuid.uuid4().hex}")
    say(f"trigger latency: {n} events with Prefect's default worker settings")
    return {"worker": PREFECT_DEFAULT_WORKER, **_latency_series(live, entry, n, "lat-default")}


# ====================================================================== freshness
def run_freshness(live: LiveStack, quick: bool) -> dict[str, Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    from freshet.modeling import registry

    rows = 100_000 if quick else 1_000_000
    reps = 1 if quick else 2
    data = cached_data("csv", rows)
    out: dict[str, Any] = {"rows": data["rows"], "bytes": data["bytes"], "runs": []}
    for rep in range(1, reps + 1):
        ds = FRESH_DS.format(rep)
        say(f"freshness {rep}/{reps}: a {data['rows']:,}-row file lands in {ds}; ingest deployment, automation, train")
        path = f"{live.lake.landing_dir(ds)}/landing-{rep}.csv"
        os.makedirs(os.path.dirname(path), exist_ok=True)
        hidden = f"{os.path.dirname(path)}/.landing-{rep}.tmp"
        shutil.copyfile(data["path"], hidden)
        os.replace(hidden, path)  # the file "appears" now, whole
        uri = live.lake.uri(path)
        ingest = run_deployment("ingest/ingest", parameters={"dataset": ds, "uris": [uri]}, timeout=0)
        ingest = live.wait_final([ingest.id], 600)[ingest.id]
        if ingest.state.type.value != "COMPLETED":
            raise RuntimeError(f"ingest run {ingest.name} ended {ingest.state.name}: {ingest.state.message}")
        deadline = time.monotonic() + 120
        train = None
        while train is None and time.monotonic() < deadline:
            train = next((r for r in live.train_runs(50) if r.parameters.get("dataset") == ds), None)
            time.sleep(0.2)
        if train is None:
            raise RuntimeError(f"no train run was triggered for {ds}")
        train = live.wait_final([train.id], 1800)[train.id]
        if train.state.type.value != "COMPLETED":
            raise RuntimeError(f"train run {train.name} ended {train.state.name}: {train.state.message}")
        champ = registry.champion(live.lake, ds)
        if champ is None:
            raise RuntimeError(f"{ds}: no champion after training (the model did not beat the baseline?)")
        pointer = live.lake.read_json(live.lake.champion_path(ds))
        landed = datetime.fromisoformat(champ["lineage"][0]["landed_at"])
        promoted = datetime.fromisoformat(pointer["promoted_at"])
        tasks = live.client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[ingest.id])))
        admit = next(t for t in tasks if t.name.startswith("admit"))
        ingest_times, train_times = live.state_times(ingest.id), live.state_times(train.id)
        train_tasks = live.client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[train.id])))
        gather = [x for x in train_tasks if x.name.startswith("gather-manifest") and x.end_time]
        t = champ["timings"]
        stages = {
            "ingest": _seconds(landed, admit.end_time),
            "announce": _seconds(admit.end_time, train.created),
            "pickup": _seconds(train.created, train_times["RUNNING"]),
            "debounce": sum(_seconds(x.start_time, x.end_time) for x in gather),
            **{k: t.get(k, 0.0) for k in ("load", "features", "fit", "evaluate", "register")},
        }
        stages["other"] = _seconds(landed, promoted) - sum(stages.values())
        out["runs"].append({
            "dataset": ds, "lag_s": _seconds(landed, promoted), "stages": stages,
            "detail": {
                "ingest_run_running_after_s": _seconds(landed, ingest_times["RUNNING"]),
                "admit_task_s": _seconds(admit.start_time, admit.end_time),
                "rounds": champ["rounds"], "rows_train": champ["rows"]["train"],
                "wape_model": champ["metrics"]["model"]["wape"], "wape_baseline": champ["metrics"]["baseline"]["wape"],
            },
        })
    lags = [r["lag_s"] for r in out["runs"]]
    out["lag_median_s"] = median(lags)
    out["stages_median"] = {k: median([r["stages"][k] for r in out["runs"]]) for k in out["runs"][0]["stages"]}
    return out


# ====================================================================== burst
def run_burst(live: LiveStack, quick: bool) -> dict[str, Any]:
    import polars as pl

    from freshet.modeling import registry
    from freshet.data.generate import generate_retail_sales
    from freshet.data.ingestion import read_manifest

    n, span = (10, 2.0) if quick else (50, 10.0)
    frame = generate_retail_sales(seed=7, days=730 + n + 1)
    last = frame["date"].max()
    days = [last - timedelta(days=k) for k in range(n, -1, -1)]  # n + 1 single days, oldest first
    base = frame.filter(pl.col("date") < days[0])
    say(f"burst: first model on {base.height:,} rows of {BURST_DS} (not measured)")
    entries = [live.admit(BURST_DS, base, "history.csv")]
    _, run = live.trigger_and_wait(BURST_DS, entries, "setup")
    assert run.state.type.value == "COMPLETED", run.state.message

    # the idle rate from a quiet stack: the setup model's promotion starts a forecast run, which must not count
    # as idle (it did in earlier runs: 1.25 CPU s per s, and every net figure came out negative)
    live.wait_quiet()
    idle_start, idle_cpu = time.monotonic(), live.tree_cpu("worker")
    time.sleep(10)
    idle_rate = (live.tree_cpu("worker") - idle_cpu) / (time.monotonic() - idle_start)

    def measured(fn):
        """Worker CPU from the events until the stack is quiet again: the trainings and the forecasts they start."""
        cpu0, srv0, t0 = live.tree_cpu("worker"), live.tree_cpu("server"), time.monotonic()
        value = fn()
        live.wait_quiet()
        time.sleep(2)  # let the worker reap the last run process
        wall = time.monotonic() - t0
        gross = live.tree_cpu("worker") - cpu0
        return value, {"worker_cpu_s": gross, "worker_cpu_net_s": gross - idle_rate * wall, "wall_s": wall,
                       "server_cpu_s": live.tree_cpu("server") - srv0}

    say("burst: one event, one training (the reference)")
    single_entry = live.admit(BURST_DS, frame.filter(pl.col("date") == days[0]), "day-000.csv")
    (_, single_run), single = measured(lambda: live.trigger_and_wait(BURST_DS, [single_entry], "single"))
    assert single_run.state.type.value == "COMPLETED", single_run.state.message
    single_models = [m for m in registry.list_models(live.lake, BURST_DS) if m.get("flow_run_id") == str(single_run.id)]
    single["trainings"] = len(single_models)
    single["stage_timings"] = single_models[-1]["timings"] if single_models else None

    say(f"burst: {n} data.landed events in {span:.0f} s, one new file each")
    started = datetime.now(timezone.utc)

    def burst():
        ids, t0 = [], time.monotonic()
        for i in range(1, n + 1):
            time.sleep(max(0.0, t0 + (i - 1) * span / n - time.monotonic()))
            entry = live.admit(BURST_DS, frame.filter(pl.col("date") == days[i]), f"day-{i:03d}.csv")
            ids.append(str(live.emit_landed(BURST_DS, [entry], f"burst-{i}").id))
        emitted = time.monotonic() - t0
        runs = live.runs_for_events(set(ids), 120, settle=live.trigger_throttle() + 15)
        final = live.wait_final([r.id for r in runs.values()], 1800)
        return ids, emitted, runs, final

    (ids, emitted, runs, final), cost = measured(burst)
    models = [m for m in registry.list_models(live.lake, BURST_DS)
              if datetime.fromisoformat(m["trained_at"]) >= started]
    states: dict[str, int] = {}
    for run in final.values():
        states[run.state.name] = states.get(run.state.name, 0) + 1
    everything = registry.data_fingerprint([e["content_hash"] for e in read_manifest(live.lake, BURST_DS)])
    cost.update({
        "events": n, "emitted_in_s": emitted, "runs_created": len(runs), "run_states": states,
        "trainings": len(models), "last_model_covers_every_file": any(m["fingerprint"] == everything for m in models),
        "training_stage_s": [sum(m["timings"].values()) for m in models],
    })
    return {"idle_worker_cpu_per_s": idle_rate, "single": single, "burst": cost,
            "x_single": cost["worker_cpu_net_s"] / single["worker_cpu_net_s"]}
