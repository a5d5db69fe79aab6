"""The ``freshet`` command line: generate, emit, requeue, up, down, deploy, demo, status, forecast, policies.

Settings come from ``FRESHET_*`` environment variables (see ``freshet.settings``);
``up`` records the local stack's API URL so later commands find it.

Errors a person can fix (bad arguments, an unknown dataset, a broken contract, a refused
URI, no stack, an unreachable server, ...) are raised as they are and turned into one line
``freshet: error: ...`` with a non-zero exit code by ``main()``, the one place that
handles them; ``--debug`` shows the traceback instead. Anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

from freshet.settings import get_settings

DEMO_DATASET = "retail_sales"
DEMO_START = date(2024, 1, 1)
DEMO_HISTORY_DAYS = 600
DEMO_BATCHES = 52


class CliError(Exception):
    """An expected failure, with what to do about it; ``main()`` prints it as one line."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # argparse's usage errors become one line too
        raise CliError(f"{message} (see `{self.prog} --help`)", code=2)


def _expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the user can fix this", not "freshet has a bug"."""
    from pydantic import ValidationError

    from freshet.data.contracts import ContractError
    from freshet.data.ingestion import UriRejected
    from freshet.data.lake import StorageError
    from freshet.events import EmitError
    from freshet.ops.stack import StackError

    types: list[type[BaseException]] = [CliError, ContractError, UriRejected, StorageError, EmitError, StackError,
                                        ValidationError]
    try:
        from freshet.lab.traces import LabError
        types.append(LabError)
    except ImportError:  # the lab's optional imports are missing: its errors cannot occur
        pass
    return tuple(types)


def _one_line(exc: BaseException) -> str:
    """The message of an expected error, on one line, with what to do where the type implies it."""
    from pydantic import ValidationError

    from freshet.data.ingestion import UriRejected
    from freshet.events import EmitError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = "_".join(str(part) for part in err["loc"]).upper()
        message = f"invalid setting FRESHET_{field}: {err['msg']} (see the settings table in README.md)"
    else:
        message = str(exc)
        if isinstance(exc, UriRejected):
            message += "; land files under <FRESHET_LAKE_URL>/landing/<dataset>/ first"
        elif isinstance(exc, EmitError):
            message += "; is PREFECT_API_URL right (or `freshet up` running)?"
    return " ".join(message.split())


def _require_api(url: str | None) -> str:
    """The Prefect API to talk to, checked to answer; a one-line error saying what to do if not."""
    from freshet.ops.stack import healthy

    if not url:
        raise CliError("no Prefect server to talk to: start the local one with `freshet up`, "
                       "or set PREFECT_API_URL (and PREFECT_API_AUTH_STRING or PREFECT_API_KEY)")
    if "api.prefect.cloud" not in url and not healthy(url, timeout=5):
        raise CliError(f"cannot reach the Prefect API at {url}: start the server (`freshet up` for the local one) "
                       "or fix PREFECT_API_URL")
    return url


def _api_url() -> str | None:
    """PREFECT_API_URL as Prefect resolves it (environment, profile), else the local stack's."""
    from prefect.settings import PREFECT_API_URL

    return _use_stack_api() or PREFECT_API_URL.value()


def _use_stack_api() -> str | None:
    """Point Prefect clients at the local stack unless PREFECT_API_URL is already set."""
    from freshet.ops.stack import Stack

    stack = Stack(get_settings())
    if not os.environ.get("PREFECT_API_URL") and not stack.running():
        from freshet.ops.scale import ScaleStack

        stack = ScaleStack(get_settings()) if ScaleStack(get_settings()).running() else stack
    url = os.environ.get("PREFECT_API_URL") or (stack.api_url() if stack.running() else None)
    if url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = url
        lake = stack.state().get("worker_env", {}).get("FRESHET_LAKE_URL")
        if lake and "FRESHET_LAKE_URL" not in os.environ:
            os.environ["FRESHET_LAKE_URL"] = lake
    return url


# ---------------------------------------------------------------- generate
def cmd_generate(args: argparse.Namespace) -> int:
    from freshet.data.generate import generate_retail_sales, split_into_batches
    from freshet.data.lake import Lake

    if args.dataset != DEMO_DATASET:
        raise CliError(f"freshet generate only makes {DEMO_DATASET!r} data; use --dataset {DEMO_DATASET}", code=2)
    lake = Lake.from_settings(get_settings())
    frame = generate_retail_sales(seed=args.seed, stores=args.stores, items=args.items, days=args.days,
                                  start=date.fromisoformat(args.start))
    batches = split_into_batches(frame, args.files)
    out = args.out.rstrip("/") if args.out else lake.landing_dir(args.dataset)
    if args.out:
        Path(out).mkdir(parents=True, exist_ok=True)
    for batch in batches:
        name = f"{out}/{args.dataset}-seed{args.seed}-{batch['date'].min()}-{batch['date'].max()}.csv"
        if args.out:
            batch.write_csv(name)
            print(name)
        else:
            with lake.staged(name) as local:  # appears whole, never half-written
                batch.write_csv(local)
            print(lake.uri(name))
    print(f"wrote {len(batches)} file(s), {frame.height} rows", file=sys.stderr)
    return 0


# ---------------------------------------------------------------- emit
def cmd_emit(args: argparse.Namespace) -> int:
    from freshet import events
    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import inspect_file
    from freshet.data.lake import Lake

    settings = get_settings()
    _use_stack_api()
    contract = load_contract(args.dataset, settings.contracts_dir)
    lake = Lake.from_settings(settings)
    files, problems = [], []
    for uri in args.uri:
        result = inspect_file(lake, contract, uri, now=datetime.now(timezone.utc),
                              future_tolerance_hours=settings.future_tolerance_hours,
                              on_bad_rows=settings.on_bad_rows, publish=False)
        if result.status == "rejected":
            problems.append(result.message())
        else:
            files.append({**result.entry, "uri": uri})
    if problems:
        raise CliError("not announcing: the contract refuses " + "; ".join(problems), code=2)
    payload = events.landed_payload(args.dataset, files)
    event = events.build_event(events.DATA_LANDED, args.dataset, payload, payload["content_hashes"])
    if args.dry_run:
        print(json.dumps(event.model_dump(mode="json"), indent=2))
        return 0
    _require_api(_api_url())
    events.emit(event)
    print(f"emitted {events.DATA_LANDED} {event.id} for {args.dataset}: {payload['rows']} rows in "
          f"{len(files)} file(s), watermark {payload['watermark']}")
    return 0


# ---------------------------------------------------------------- requeue
def cmd_requeue(args: argparse.Namespace) -> int:
    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import RequeueError, requeue
    from freshet.data.lake import Lake

    settings = get_settings()
    contract = load_contract(args.dataset, settings.contracts_dir)
    try:
        result = requeue(Lake.from_settings(settings), contract, args.file,
                         future_tolerance_hours=settings.future_tolerance_hours, on_bad_rows=settings.on_bad_rows)
    except RequeueError as exc:
        raise CliError(str(exc), code=2) from None
    print(result.message())
    if result.entry is None:
        return 1
    print(f"to train on it now: freshet emit --dataset {args.dataset} --uri {result.uri}")
    return 0


# ---------------------------------------------------------------- stack
def cmd_up(args: argparse.Namespace) -> int:
    from freshet.ops.scale import ScaleStack
    from freshet.ops.stack import Stack

    if args.runner:
        os.environ["FRESHET_RUNNER"] = args.runner
    (ScaleStack if args.scale else Stack)(get_settings()).up()
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from freshet.ops.serve import serve
    from freshet.ops.stack import project_root

    _use_stack_api()
    serve(project_root(), args.limit, Path(args.ready_file) if args.ready_file else None)
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from freshet.ops.scale import ScaleStack
    from freshet.ops.stack import Stack

    stack = Stack(get_settings())
    if not any(k in stack.state() for k in ("server", "worker")):
        print(f"no local stack recorded in {stack.dir}; nothing to stop")
    stack.down()
    ScaleStack(get_settings()).down()  # the scale topology's processes, if `up --scale` started any
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy to the Prefect API in PREFECT_API_URL (your own server or Prefect Cloud)."""
    from freshet.ops.stack import POOL, _prefect_executable, _run, deploy, project_root

    _require_api(_api_url())
    root = project_root()
    logdir = get_settings().stack_dir
    logdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if args.create_pool:
        print(f"creating work pool '{POOL}' ...", flush=True)
        _run([_prefect_executable(), "--no-prompt", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
             env, root, logdir)
    print("deploying from deployments/prefect.yaml and upserting the automations ...", flush=True)
    deploy(env, root, logdir)
    print(f"deployed ingest, train and watchdog, and the staleness automations (log: {logdir / 'setup.log'})")
    return 0


# ---------------------------------------------------------------- demo
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


def _wait_run(client, run_id, label: str, timeout: float):
    start = last = time.monotonic()
    while True:
        run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        if time.monotonic() - start > timeout:
            raise CliError(f"{label} run {run.name} still {run.state.name if run.state else '?'} after {timeout:.0f} s")
        if time.monotonic() - last > 3:
            print(f"  ... {label} run {run.name}: {run.state.name if run.state else 'pending'} ({time.monotonic() - start:.0f} s)")
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


def cmd_demo(args: argparse.Namespace) -> int:
    from freshet.ops.stack import Stack

    settings = get_settings()
    stack = Stack(settings)
    api = stack.up()
    # Prefect reads its settings when first imported: point it at the stack before that.
    os.environ["PREFECT_API_URL"] = api
    os.environ["PREFECT_HOME"] = str(stack.home)
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from freshet import events
    from freshet.modeling import registry
    from freshet.data.lake import Lake
    ui = stack.ui_url()
    lake = Lake.from_settings(settings)
    uris = land_demo_batches(lake)
    hashes = [_sha256(lake.contains(u) or u, lake.fs) for u in uris]
    expected = str(events.event_id(events.DATA_LANDED, DEMO_DATASET, hashes))
    print(f"landed {len(uris)} file(s) in {lake.uri(lake.landing_dir(DEMO_DATASET))}/: "
          + ", ".join(u.rsplit('/', 1)[-1] for u in uris))
    started = time.monotonic()
    print("running ingestion through the 'ingest/ingest' deployment ...")
    ingest_run = run_deployment("ingest/ingest", parameters={"dataset": DEMO_DATASET, "uris": uris}, timeout=0)
    with get_client(sync_client=True) as client:
        ingest_run = _wait_run(client, ingest_run.id, "ingest", 300)
        if not ingest_run.state.is_completed():
            raise CliError(f"ingest run {ingest_run.name} ended {ingest_run.state.name}: {ingest_run.state.message}; "
                           f"see {ui}/runs/flow-run/{ingest_run.id}")
        print(f"ingest completed; {events.DATA_LANDED} event {expected} announced")
        train_dep = client.read_deployment_by_name("train/train")
        print("waiting for the automation to start 'train/train' ...")
        deadline = time.monotonic() + 120
        run = None
        while run is None:
            run = find_triggered_run(client, train_dep.id, expected)
            if run is None:
                if time.monotonic() > deadline:
                    raise CliError("no train run was triggered within 120 s; check the automation "
                                   f"'freshet-train-on-data-landed' at {ui}/automations")
                time.sleep(0.5)
        print(f"automation created train run {run.name} ({time.monotonic() - started:.1f} s after ingestion started)")
        run = _wait_run(client, run.id, "train", 900)
        creator = run.created_by.display_value if run.created_by else "?"
        if not run.state.is_completed():
            raise CliError(f"train run {run.name} ended {run.state.name}: {run.state.message}; "
                           f"see {ui}/runs/flow-run/{run.id}")
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
    _demo_forecast(lake, champ)
    print(f"UI          {ui}/runs/flow-run/{run.id}   (deployments: {ui}/deployments, automations: {ui}/automations)")
    print(f"done in {time.monotonic() - started:.1f} s. `freshet status` shows the datasets; `freshet down` stops the stack.")
    return 0


def _demo_forecast(lake, champ, timeout: float = 120.0) -> None:
    """Wait for the forecast that uses the newest data and the champion, then show it and where it is."""
    from freshet.data.ingestion import read_manifest
    from freshet.modeling import publish

    watermark = max(e["max_time"] for e in read_manifest(lake, DEMO_DATASET))
    want = champ["version"] if champ else "seasonal_naive"
    deadline = time.monotonic() + timeout
    while True:
        latest = publish.read_latest(lake, DEMO_DATASET)
        if latest and str(latest["watermark"]) >= watermark and latest["model_version"] == want:
            break
        if time.monotonic() > deadline:
            print(f"forecast    not published within {timeout:.0f} s (latest: {latest and latest['forecast_id']}); "
                  "see the 'forecast' runs in the UI", file=sys.stderr)
            return
        time.sleep(0.5)
    frame = publish.read_forecast(lake, latest)
    lag = (datetime.fromisoformat(latest["issued_at"]) - datetime.fromisoformat(
        max(e["landed_at"] for e in read_manifest(lake, DEMO_DATASET)))).total_seconds()
    by = "seasonal naive (no champion yet)" if latest["method"] == "seasonal_naive" else f"model {latest['model_version']}"
    print(f"forecast    {latest['rows']} rows, {latest['series']} series, by {by}, "
          f"data to {latest['watermark']}, issued {lag:.1f} s after the newest landing")
    print(f"            {latest['uri']}  (`freshet forecast --dataset {DEMO_DATASET} --out forecast.csv`)")
    print(frame.drop("issued_at", "data_watermark").head(8))


# ---------------------------------------------------------------- status
def dataset_status(lake, name: str, now: datetime) -> dict:
    from freshet.modeling import registry
    from freshet.data.ingestion import read_manifest

    entries = read_manifest(lake, name)
    models = registry.list_models(lake, name)
    champ = registry.champion(lake, name)
    from freshet.modeling import publish

    latest = publish.read_latest(lake, name)
    last_landing = max((e["landed_at"] for e in entries), default=None)
    return {
        "dataset": name,
        "files": len(entries),
        "rows": sum(e["rows"] for e in entries),
        "last_landing": last_landing,
        "staleness_hours": round((now - datetime.fromisoformat(last_landing)).total_seconds() / 3600, 2) if last_landing else None,
        "watermark": max((e["max_time"] for e in entries), default=None),
        "champion": champ and {"version": champ["version"], "watermark": champ["data_watermark"],
                               "wape": champ["metrics"]["model"]["wape"], "baseline_wape": champ["metrics"]["baseline"]["wape"]},
        "files_not_in_any_model": len(registry.uncovered(entries, models)),
        "last_training": models and {"version": models[-1]["version"], "promoted": models[-1]["decision"]["promote"],
                                     "reason": models[-1]["decision"]["reason"], "at": models[-1]["trained_at"]},
        "forecast": latest and {
            "uri": latest["uri"], "method": latest["method"], "model_version": latest["model_version"],
            "watermark": latest["watermark"], "issued_at": latest["issued_at"], "rows": latest["rows"],
            "age_hours": round((now - datetime.fromisoformat(latest["issued_at"])).total_seconds() / 3600, 2),
            "missing_series": latest.get("missing_series", 0)},
    }


def cmd_status(args: argparse.Namespace) -> int:
    from freshet.data.contracts import list_datasets
    from freshet.data.lake import Lake

    _use_stack_api()
    settings = get_settings()
    lake = Lake.from_settings(settings)
    now = datetime.now(timezone.utc)
    rows = [dataset_status(lake, n, now) for n in list_datasets(settings.contracts_dir)]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"lake {settings.lake_url}\n")
    print(format_table(["dataset", "files", "rows", "last landing", "watermark", "champion", "WAPE / baseline",
                        "untrained files", "forecast", "last training"], [_status_cells(r) for r in rows]))
    return 0


# ---------------------------------------------------------------- forecast
def cmd_forecast(args: argparse.Namespace) -> int:
    """Print the latest published forecast of a dataset, or write it to CSV / parquet."""
    from freshet.data.contracts import check_dataset_name
    from freshet.data.lake import Lake
    from freshet.modeling import publish

    _use_stack_api()
    dataset = check_dataset_name(args.dataset)
    lake = Lake.from_settings(get_settings())
    latest = publish.read_latest(lake, dataset)
    if latest is None:
        raise CliError(f"no forecast published for {dataset} yet in {lake.url}; it is published when data lands "
                       "or a model is promoted (or run the 'forecast' deployment)")
    frame = publish.read_forecast(lake, latest)
    by = "seasonal naive (no champion yet)" if latest["method"] == "seasonal_naive" else f"model {latest['model_version']}"
    header = (f"{dataset}: {latest['rows']} rows by {by}, data to "
              f"{latest['watermark']}, issued {latest['issued_at']}\n{latest['uri']}")
    if args.out:
        out = Path(args.out)
        if out.suffix.lower() in (".parquet", ".pq"):
            frame.write_parquet(out)
        elif out.suffix.lower() == ".csv":
            frame.write_csv(out)
        else:
            raise CliError(f"--out must end in .csv or .parquet, not {out.name!r}", code=2)
        print(f"{header}\nwrote {out}")
        return 0
    import polars as pl

    with pl.Config(tbl_rows=args.rows, tbl_cols=-1):
        print(header)
        print(frame)
    return 0


def _status_cells(r: dict) -> list[str]:
    c, t = r["champion"], r["last_training"]
    landing = "never" if not r["last_landing"] else f"{r['staleness_hours']} h ago"
    return [r["dataset"], str(r["files"]), str(r["rows"]), landing, r["watermark"] or "-",
            c["version"] if c else "none", f"{c['wape']:.3f} / {c['baseline_wape']:.3f}" if c else "-",
            str(r["files_not_in_any_model"]), _forecast_cell(r["forecast"]),
            f"{'promoted' if t['promoted'] else 'not promoted'}: {t['reason']}" if t else "never"]


def _forecast_cell(f: dict | None) -> str:
    if not f:
        return "none"
    by = "seasonal naive" if f["method"] == "seasonal_naive" else f["model_version"]
    return f"{f['age_hours']} h old, data to {f['watermark']}, {by}"


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    """A plain-text table: padded columns, a rule under the header."""
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(headers)]
    line = lambda cells: "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(row) for row in rows)])


# ---------------------------------------------------------------- policies
def cmd_policies(args: argparse.Namespace) -> int:
    """Replay an arrival trace through the retraining and forecasting policies; print the table, write
    report.json and chart.png (and, with several seeds, the spread over seeds)."""
    from datetime import timedelta

    from freshet.lab import engine, metrics, report as R, run, traces
    from freshet.lab.policies import default_policies

    settings = get_settings()
    say = lambda msg: print(msg, flush=True)  # noqa: E731 - progress lines while it runs
    config = engine.LabConfig(threshold=timedelta(hours=args.threshold_hours))
    seeds = [int(s) for s in str(args.seeds or args.seed).split(",") if s.strip()]
    if (args.from_dir or args.contract) and not (args.from_dir and args.contract):
        raise CliError("--from-dir and --contract go together", code=2)
    if args.from_dir:
        trace, source, contracts = traces.dir_trace(Path(args.from_dir), Path(args.contract), days=args.days,
                                                    delay=timedelta(hours=args.landing_delay_hours),
                                                    landed_at=Path(args.landed_at) if args.landed_at else None)
        name = f"folder {args.from_dir}"
        if getattr(source, "dropped_rows", 0):
            say(f"{source.dropped_rows} row(s) break the contract's rules and are left out")
    elif args.from_lake:
        trace, source, contracts = traces.build_trace(True, args.datasets, args.days, seeds[0], settings)
        name = "lake"
    else:
        trace, source, contracts = traces.synthetic_trace(datasets=args.datasets, days=args.days, seed=seeds[0])
        name = f"synthetic seed {seeds[0]}"
    report = run.run_lab(trace, source, contracts, default_policies(), engine.lab_settings(settings), config,
                            source_name=name, progress=say)
    spread = None
    if len(seeds) > 1 and not (args.from_dir or args.from_lake):
        more = run.run_seeds(seeds[1:], args.datasets, args.days, default_policies(),
                                engine.lab_settings(settings), config, progress=say)
        spread = metrics.seed_spread([report, *more["reports"]])
        spread_reports = [report, *more["reports"]]
    if spread:
        report["seeds"] = {"seeds": seeds, "spread": spread,
                           "reports": [{k: r[k] for k in ("source", "policies", "trace")} for r in spread_reports[1:]]}
    path, chart = R.write_outputs(report, Path(args.out))
    print("\n" + R.format_report(report))
    if spread:
        print(f"\nOver seeds {', '.join(map(str, seeds))} (median [min .. max]):\n" + R.format_spread(spread))
    print(f"\nwrote {path} and {chart} in {report['runtime_seconds']:.0f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from freshet.ops.stack import WORKER_LIMIT

    parser = _Parser(prog="freshet", description="Event-driven retraining for Prefect.")
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    g = sub.add_parser("generate", help="write synthetic retail_sales landing files")
    g.add_argument("--dataset", default=DEMO_DATASET)
    g.add_argument("--files", type=int, default=3, help="a history file, then weekly batches")
    g.add_argument("--days", type=int, default=730)
    g.add_argument("--stores", type=int, default=8)
    g.add_argument("--items", type=int, default=12)
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--start", default="2024-01-01", help="first date (YYYY-MM-DD)")
    g.add_argument("--out", help="a local folder instead of the lake's landing/<dataset>/")
    g.set_defaults(fn=cmd_generate)

    e = sub.add_parser("emit", help="announce data.landed for landing files (from any ingestion job)")
    e.add_argument("--dataset", required=True)
    e.add_argument("--uri", action="append", required=True, help="a landing file URI; repeat for several")
    e.add_argument("--dry-run", action="store_true", help="print the event instead of sending it")
    e.set_defaults(fn=cmd_emit)

    r = sub.add_parser("requeue", help="re-admit a quarantined landing file after fixing it (or its contract)")
    r.add_argument("--dataset", required=True)
    r.add_argument("file", help="the file's name under landing/<dataset>/ (or its URI)")
    r.set_defaults(fn=cmd_requeue)

    u = sub.add_parser("up", help="start the local Prefect server, deployments, automations and the processes that run flows")
    u.add_argument("--scale", action="store_true",
                   help="the scale-out topology: PostgreSQL, Redis, Prefect's services, two API servers, "
                        "FRESHET_SCALE_WORKERS workers")
    u.add_argument("--runner", choices=("worker", "serve"),
                   help="how flows run: long-lived `freshet serve` processes (the default of the local stack), "
                        "or process workers of work pool 'freshet' (the default of --scale); FRESHET_RUNNER")
    u.set_defaults(fn=cmd_up)
    v = sub.add_parser("serve", help="serve deployments/prefect.yaml's flows from this process (no work pool; "
                                     "runs until stopped)")
    v.add_argument("--limit", type=int, default=WORKER_LIMIT, help="runs at once")
    v.add_argument("--ready-file", help="write this process's id to this file once the deployments are registered")
    v.set_defaults(fn=cmd_serve)
    sub.add_parser("down", help="stop the processes `freshet up` started").set_defaults(fn=cmd_down)
    d = sub.add_parser("deploy", help="deploy to the Prefect API in PREFECT_API_URL (own server or Cloud)")
    d.add_argument("--create-pool", action="store_true", help="also create the 'freshet' process work pool")
    d.set_defaults(fn=cmd_deploy)
    sub.add_parser("demo", help="run the whole chain once on the local stack").set_defaults(fn=cmd_demo)
    s = sub.add_parser("status", help="per dataset: landings, champion, staleness, last training")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
    f = sub.add_parser("forecast", help="print the latest published forecast of a dataset, or write it (CSV or parquet)")
    f.add_argument("--dataset", required=True)
    f.add_argument("--out", help="a .csv or .parquet file to write instead of printing")
    f.add_argument("--rows", type=int, default=20, help="rows to print")
    f.set_defaults(fn=cmd_forecast)
    p = sub.add_parser("policies", help="compare retraining and forecasting policies on a replayed trace")
    p.add_argument("--out", default=".freshet/policies", help="folder for report.json and chart.png")
    p.add_argument("--datasets", type=int, default=3, help="synthetic datasets in the generated trace")
    p.add_argument("--days", type=int, default=56, help="days replayed: the generated trace's length, or the last "
                   "DAYS days of --from-dir (what landed before is the history)")
    p.add_argument("--seed", type=int, default=7, help="seed of the generated trace")
    p.add_argument("--seeds", help="several seeds, comma-separated (e.g. 7,8,9): the table for the first, then "
                   "each combination's median and range over all of them")
    p.add_argument("--threshold-hours", type=float, default=24.0, help="report the share of time the published forecast lags the newest data by more than this")
    p.add_argument("--from-lake", action="store_true", help="replay the lake's manifest (FRESHET_LAKE_URL) instead of a generated trace")
    p.add_argument("--from-dir", help="replay a folder of files (csv, parquet) of one dataset, one file an arrival")
    p.add_argument("--contract", help="the dataset's contract file (TOML), with --from-dir")
    p.add_argument("--landing-delay-hours", type=float, default=1.0, help="with --from-dir: a file lands this long "
                   "after the end of its newest row's period")
    p.add_argument("--landed-at", help="with --from-dir: a CSV with columns file,landed_at (ISO 8601, UTC if naive) "
                   "giving each file's landing time instead")
    p.set_defaults(fn=cmd_policies)

    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected error is one line on stderr and a non-zero exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    try:
        args = build_parser().parse_args(argv)
        return args.fn(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print("freshet: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if debug or not isinstance(exc, _expected_errors()):
            raise
        print(f"freshet: error: {_one_line(exc)}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else 1


if __name__ == "__main__":
    raise SystemExit(main())
