"""``freshet demo``: the whole chain once on the local stack, and the demo data it lands.

Starts the local stack (``freshet up``), lands the next weekly batch of the demo
dataset and the week after it's known-in-advance values, runs the ``ingest``
deployment, waits for the automation to start ``train`` and for the forecast, and
prints what happened. Reads freshet's settings (``FRESHET_STACK_DIR``, the lake).
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from datetime import date, datetime, timedelta

from freshet.ops.cli.errors import CliError
from freshet.ops.cli.output import Steps, steps
from freshet.settings import get_settings

DEMO_DATASET = "retail_sales"
DEMO_START = date(2024, 1, 1)
DEMO_HISTORY_DAYS = 600
DEMO_BATCHES = 52
DEMO_STEPS = 5  # land, ingest, the automation starts train, train ends, the forecast is published


def _sha256(path: str, fs) -> str:
    digest = hashlib.sha256()
    with fs.open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def land_demo_batches(lake) -> list[str]:
    """Land the next demo batch (the first time: the history and one batch), and the week after it's future values."""
    import polars as pl

    from freshet.data.generate import generate_retail_sales, split_into_batches

    folder = lake.landing_dir(DEMO_DATASET)
    lake.fs.makedirs(folder, exist_ok=True)
    present = {p.rsplit("/", 1)[-1] for p in lake.list(folder)}
    full = generate_retail_sales(seed=7, days=DEMO_HISTORY_DAYS + 7 * DEMO_BATCHES + 7, start=DEMO_START)
    frame = full.filter(pl.col("date") < full["date"].max() - timedelta(days=6))
    batches = split_into_batches(frame, DEMO_BATCHES + 1)
    names = [f"demo-{i:03d}-{b['date'].min()}-{b['date'].max()}.csv" for i, b in enumerate(batches)]
    todo = [i for i, n in enumerate(names) if n not in present]
    if not todo:
        raise CliError(f"every demo batch is already landed in {folder}; remove the landing folder to start over")
    take = todo[:2] if todo[0] == 0 else todo[:1]
    uris = []
    for i in take:
        with lake.staged(f"{folder}/{names[i]}") as local:
            batches[i].write_csv(local)
        uris.append(lake.uri(f"{folder}/{names[i]}"))
    land_demo_future(lake, full, batches[take[-1]]["date"].max())
    return uris


def land_demo_future(lake, full, watermark) -> str:
    """Land the week after ``watermark`` without its target: the known-in-advance prices and promotions."""
    import polars as pl

    from freshet.data.future import future_lake

    future = future_lake(lake)
    rows = full.filter((pl.col("date") > watermark) & (pl.col("date") <= watermark + timedelta(days=7))).drop("units_sold")
    path = f"{future.landing_dir(DEMO_DATASET)}/future-{rows['date'].min()}-{rows['date'].max()}.csv"
    future.fs.makedirs(future.landing_dir(DEMO_DATASET), exist_ok=True)
    with future.staged(path) as local:
        rows.write_csv(local)
    return future.uri(path)


def _wait_run(client, run_id, label: str, timeout: float, progress: Steps):
    start = last = time.monotonic()
    while True:
        run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        if time.monotonic() - start > timeout:
            raise CliError(f"{label} run {run.name} still {run.state.name if run.state else '?'} after {timeout:.0f} s")
        if time.monotonic() - last > 3:
            progress.now(f"  ... {label} run {run.name}: {run.state.name if run.state else 'pending'} "
                         f"({time.monotonic() - start:.0f} s)")
            last = time.monotonic()
        time.sleep(0.5)


def find_triggered_run(client, deployment_id, event_id: str):
    """The train run the automation created for this event (matched by its event_id parameter)."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter

    runs = client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])), limit=200,
        flow_run_filter=FlowRunFilter(),
    )
    for run in runs:
        if str(run.parameters.get("event_id")) == event_id:
            return run
    return None


def demo() -> int:
    """run the whole chain once on the local stack"""
    from freshet.ops.stack import Stack

    settings = get_settings()
    stack = Stack(settings)
    api = stack.up()
    # Prefect reads its settings when first imported: point it at the stack before that.
    os.environ["PREFECT_API_URL"] = api
    os.environ["PREFECT_HOME"] = str(stack.home)
    from freshet import events
    from freshet.data.lake import Lake

    ui = stack.ui_url()
    lake = Lake.from_settings(settings)
    with steps(DEMO_STEPS, "landing the next batch", log_status=True) as progress:
        uris = land_demo_batches(lake)
        expected = str(events.event_id(events.DATA_LANDED, DEMO_DATASET,
                                       [_sha256(lake.contains(u) or u, lake.fs) for u in uris]))
        progress.say(f"landed {len(uris)} file(s) in {lake.uri(lake.landing_dir(DEMO_DATASET))}/: "
                     + ", ".join(u.rsplit('/', 1)[-1] for u in uris))
        progress.advance()
        started = time.monotonic()
        run = _ingest_then_train(uris, expected, ui, started, progress)
        champ = _print_summary(lake, run, uris, expected)
        _demo_forecast(lake, champ, progress)
    print(f"UI          {ui}/runs/flow-run/{run.id}   (deployments: {ui}/deployments, automations: {ui}/automations)")
    print(f"done in {time.monotonic() - started:.1f} s. `freshet status` shows the datasets; `freshet down` stops the stack.")
    return 0


def _ingest_then_train(uris: list[str], expected: str, ui: str, started: float, progress: Steps):
    """Run the ``ingest`` deployment on ``uris``, then wait for the train run the automation starts for the
    event ``expected``; returns that run, completed."""
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from freshet import events

    progress.now("running ingestion through the 'ingest/ingest' deployment ...")
    ingest_run = run_deployment("ingest/ingest", parameters={"dataset": DEMO_DATASET, "uris": uris}, timeout=0)
    with get_client(sync_client=True) as client:
        ingest_run = _wait_run(client, ingest_run.id, "ingest", 300, progress)
        if not ingest_run.state.is_completed():
            raise CliError(f"ingest run {ingest_run.name} ended {ingest_run.state.name}: {ingest_run.state.message}; "
                           f"see {ui}/runs/flow-run/{ingest_run.id}")
        progress.say(f"ingest completed; {events.DATA_LANDED} event {expected} announced")
        progress.advance()
        train_dep = client.read_deployment_by_name("train/train")
        progress.now("waiting for the automation to start 'train/train' ...")
        deadline = time.monotonic() + 120
        run = None
        while run is None:
            run = find_triggered_run(client, train_dep.id, expected)
            if run is None:
                if time.monotonic() > deadline:
                    raise CliError("no train run was triggered within 120 s; check the automation "
                                   f"'freshet-train-on-data-landed' at {ui}/automations")
                time.sleep(0.5)
        progress.say(f"automation created train run {run.name} "
                     f"({time.monotonic() - started:.1f} s after ingestion started)")
        progress.advance()
        run = _wait_run(client, run.id, "train", 900, progress)
        if not run.state.is_completed():
            raise CliError(f"train run {run.name} ended {run.state.name}: {run.state.message}; "
                           f"see {ui}/runs/flow-run/{run.id}")
        progress.advance()
    return run


def _print_summary(lake, run, uris: list[str], expected: str) -> dict | None:
    """What the train run did: its models, backtests, decision and freshness; returns the champion."""
    from freshet import events
    from freshet.modeling import registry

    creator = run.created_by.display_value if run.created_by else "?"
    models = [m for m in registry.list_models(lake, DEMO_DATASET) if m.get("flow_run_id") == str(run.id)]
    champ = registry.champion(lake, DEMO_DATASET)
    print("\n=== freshet demo summary ===")
    print(f"event       {events.DATA_LANDED} {expected} ({len(uris)} file(s))")
    print(f"train run   {run.name} created by {run.created_by.type if run.created_by else '?'} '{creator}', "
          f"{run.state.name}, params dataset={run.parameters.get('dataset')} uris={len(run.parameters.get('uris') or [])}")
    promoted_here = False
    for m in models:
        s = m["metrics"]
        promoted_here |= bool(champ and champ["version"] == m["version"])
        print(f"model       {m['version']} on {len(m['lineage'])} file(s), data up to {m['data_watermark']}")
        print(f"backtest    WAPE {s['model']['wape']:.3f} vs seasonal-naive {s['baseline']['wape']:.3f}"
              + (f" vs champion {s['champion']['wape']:.3f}" if s["champion"] else "")
              + f" -> {'PROMOTED' if m['decision']['promote'] else 'not promoted'} ({m['decision']['reason']})")
    if champ and promoted_here:
        landed = [e["landed_at"] for e in champ["lineage"] if e["content_hash"] in champ["new_files"]]
        promoted_at = lake.read_json(lake.champion_path(DEMO_DATASET))["promoted_at"]
        if landed:
            lag = (datetime.fromisoformat(promoted_at) - datetime.fromisoformat(min(landed))).total_seconds()
            print(f"freshness   {lag:.1f} s from landing to promotion of champion {champ['version']}")
    elif champ:
        print(f"champion    unchanged: {champ['version']} (data to {champ['data_watermark']})")
    _print_live(lake)
    return champ


def _print_live(lake) -> None:
    """How the forecasts published before this landing did on it (scored by the ingest run)."""
    from freshet.modeling import live

    found = live.latest(lake, DEMO_DATASET)
    if found is None:
        print("live        nothing scored yet: the forecast published now is scored when the next week lands "
              "(run `make demo` again)")
        return
    s = found[0]
    print(f"live        {s['overall']['rows']} forecast rows scored on the actuals up to {s['watermark']}: "
          f"{live.live_wape_line(s)}")
    print(f"            drift: {s['drift_text']}  (`freshet scores --dataset {DEMO_DATASET}`)")


def _demo_forecast(lake, champ, progress: Steps, timeout: float = 120.0) -> None:
    """Wait for the forecast that uses the newest data and the champion, then show it and where it is."""
    from freshet.data.ingestion import read_manifest
    from freshet.modeling import publish
    from freshet.ops.cli.status import coverage_line, forecast_by

    watermark = max(e["max_time"] for e in read_manifest(lake, DEMO_DATASET))
    want = champ["version"] if champ else "seasonal_naive"
    deadline = time.monotonic() + timeout
    progress.now("waiting for the forecast of the newest data ...")
    while True:
        latest = publish.read_latest(lake, DEMO_DATASET)
        if latest and str(latest["watermark"]) >= watermark and latest["model_version"] == want:
            break
        if time.monotonic() > deadline:
            print(f"forecast    not published within {timeout:.0f} s (latest: {latest and latest['forecast_id']}); "
                  "see the 'forecast' runs in the UI", file=sys.stderr)
            return
        time.sleep(0.5)
    progress.advance()
    frame = publish.read_forecast(lake, latest)
    lag = (datetime.fromisoformat(latest["issued_at"]) - datetime.fromisoformat(
        max(e["landed_at"] for e in read_manifest(lake, DEMO_DATASET)))).total_seconds()
    print(f"forecast    {latest['rows']} rows, {latest['series']} series, by {forecast_by(latest)}, "
          f"data to {latest['watermark']}, issued {lag:.1f} s after the newest landing")
    print(f"            {coverage_line(latest)}; quantile columns {', '.join(c for c in frame.columns if c[1:2].isdigit())}")
    if champ and (champ.get("intervals") or {}).get("coverage"):
        cover = ", ".join(f"{k} {100 * v['empirical']:.0f}% (nominal {100 * v['nominal']:.0f}%)"
                          for k, v in champ["intervals"]["coverage"].items())
        print(f"            range calibrated on the champion's backtest: {cover}")
    print(f"            {latest['uri']}  (`freshet forecast --dataset {DEMO_DATASET} --out forecast.csv`)")
    import polars as pl

    shown = [c for c in frame.columns if c not in ("issued_at", "data_watermark", "model_version", "stale_periods")]
    # a few model rows and the first rows the ladder made (each row once: the head may hold ladder rows too)
    sample = pl.concat([frame.filter(pl.col("method") == "model").head(4),
                        frame.filter(pl.col("method") != "model").head(2)])
    with pl.Config(tbl_cols=-1, tbl_width_chars=200, fmt_str_lengths=80, tbl_hide_dataframe_shape=True):
        print(sample.select(shown))
