"""The ``freshet`` command line: generate, emit, up, down, deploy, demo, status, policies.

Settings come from ``FRESHET_*`` environment variables (see ``freshet.settings``);
``up`` records the local stack's API URL so later commands find it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from datetime import date, datetime, timezone
from pathlib import Path

from freshet.settings import get_settings

DEMO_DATASET = "retail_sales"
DEMO_START = date(2024, 1, 1)
DEMO_HISTORY_DAYS = 600
DEMO_BATCHES = 52


def _use_stack_api() -> str | None:
    """Point Prefect clients at the local stack unless PREFECT_API_URL is already set."""
    from freshet.ops.stack import Stack

    stack = Stack(get_settings())
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
        print(f"freshet generate only knows how to make {DEMO_DATASET!r} data", file=sys.stderr)
        return 2
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
        print("not announcing: these files break the contract:\n" + "\n".join(problems), file=sys.stderr)
        return 2
    payload = events.landed_payload(args.dataset, files)
    event = events.build_event(events.DATA_LANDED, args.dataset, payload, payload["content_hashes"])
    if args.dry_run:
        print(json.dumps(event.model_dump(mode="json"), indent=2))
        return 0
    try:
        events.emit(event)
    except events.EmitError as exc:
        print(f"{exc}\nIs PREFECT_API_URL right (or `freshet up` running)?", file=sys.stderr)
        return 1
    print(f"emitted {events.DATA_LANDED} {event.id} for {args.dataset}: {payload['rows']} rows in "
          f"{len(files)} file(s), watermark {payload['watermark']}")
    return 0


# ---------------------------------------------------------------- stack
def cmd_up(args: argparse.Namespace) -> int:
    from freshet.ops.stack import Stack, StackError

    try:
        Stack(get_settings()).up()
    except StackError as exc:
        print(f"freshet up failed: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    from freshet.ops.stack import Stack

    Stack(get_settings()).down()
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Deploy to the Prefect API in PREFECT_API_URL (your own server or Prefect Cloud)."""
    from freshet.ops.stack import POOL, StackError, _prefect_executable, _run, deploy, project_root

    if not os.environ.get("PREFECT_API_URL") and not _use_stack_api():
        print("set PREFECT_API_URL (or `prefect cloud login`) first", file=sys.stderr)
    root = project_root()
    logdir = get_settings().stack_dir
    env = dict(os.environ)
    try:
        if args.create_pool:
            _run([_prefect_executable(), "--no-prompt", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
                 env, root, logdir)
        deploy(env, root, logdir)
    except StackError as exc:
        print(f"freshet deploy failed: {exc}", file=sys.stderr)
        return 1
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
    """Land the next demo batch (the first time: the history and one batch)."""
    from freshet.data.generate import generate_retail_sales, split_into_batches

    folder = lake.landing_dir(DEMO_DATASET)
    lake.fs.makedirs(folder, exist_ok=True)
    present = {p.rsplit("/", 1)[-1] for p in lake.list(folder)}
    frame = generate_retail_sales(seed=7, days=DEMO_HISTORY_DAYS + 7 * DEMO_BATCHES, start=DEMO_START)
    batches = split_into_batches(frame, DEMO_BATCHES + 1)
    names = [f"demo-{i:03d}-{b['date'].min()}-{b['date'].max()}.csv" for i, b in enumerate(batches)]
    todo = [i for i, n in enumerate(names) if n not in present]
    if not todo:
        raise SystemExit(f"every demo batch is already landed in {folder}; remove the landing folder to start over")
    take = todo[:2] if todo[0] == 0 else todo[:1]
    uris = []
    for i in take:
        with lake.staged(f"{folder}/{names[i]}") as local:
            batches[i].write_csv(local)
        uris.append(lake.uri(f"{folder}/{names[i]}"))
    return uris


def _wait_run(client, run_id, label: str, timeout: float):
    start = last = time.monotonic()
    while True:
        run = client.read_flow_run(run_id)
        if run.state and run.state.is_final():
            return run
        if time.monotonic() - start > timeout:
            raise SystemExit(f"{label} run {run.name} still {run.state.name if run.state else '?'} after {timeout:.0f} s")
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
    from freshet.ops.stack import Stack, StackError

    settings = get_settings()
    stack = Stack(settings)
    try:
        api = stack.up()
    except StackError as exc:
        print(f"freshet demo: the local stack did not start: {exc}", file=sys.stderr)
        return 1
    # Prefect reads its settings when first imported: point it at the stack before that.
    os.environ["PREFECT_API_URL"] = api
    os.environ["PREFECT_HOME"] = str(stack.home)
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from freshet import events
    from freshet.modeling import registry
    from freshet.data.lake import Lake
    ui = api.removesuffix("/api")
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
            print(f"ingest run {ingest_run.name} ended {ingest_run.state.name}: {ingest_run.state.message}\n"
                  f"see {ui}/runs/flow-run/{ingest_run.id}", file=sys.stderr)
            return 1
        print(f"ingest completed; {events.DATA_LANDED} event {expected} announced")
        train_dep = client.read_deployment_by_name("train/train")
        print("waiting for the automation to start 'train/train' ...")
        deadline = time.monotonic() + 120
        run = None
        while run is None:
            run = find_triggered_run(client, train_dep.id, expected)
            if run is None:
                if time.monotonic() > deadline:
                    print("no train run was triggered within 120 s; check the automation "
                          f"'freshet-train-on-data-landed' at {ui}/automations", file=sys.stderr)
                    return 1
                time.sleep(0.5)
        print(f"automation created train run {run.name} ({time.monotonic() - started:.1f} s after ingestion started)")
        run = _wait_run(client, run.id, "train", 900)
        creator = run.created_by.display_value if run.created_by else "?"
        if not run.state.is_completed():
            print(f"train run {run.name} ended {run.state.name}: {run.state.message}\n"
                  f"see {ui}/runs/flow-run/{run.id}", file=sys.stderr)
            return 1
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
        print(f"holdout     WAPE {s['model']['wape']:.3f} vs seasonal-naive {s['baseline']['wape']:.3f}"
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
    print(f"UI          {ui}/runs/flow-run/{run.id}   (deployments: {ui}/deployments, automations: {ui}/automations)")
    print(f"done in {time.monotonic() - started:.1f} s. `freshet status` shows the datasets; `freshet down` stops the stack.")
    return 0


# ---------------------------------------------------------------- status
def dataset_status(lake, name: str, now: datetime) -> dict:
    from freshet.modeling import registry
    from freshet.data.ingestion import read_manifest

    entries = read_manifest(lake, name)
    models = registry.list_models(lake, name)
    champ = registry.champion(lake, name)
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
    print(f"lake {settings.lake_url}")
    for r in rows:
        c = r["champion"]
        t = r["last_training"]
        print(f"\n{r['dataset']}")
        print(f"  last landing   {r['last_landing'] or 'never'}"
              + (f" ({r['staleness_hours']} h ago)" if r["staleness_hours"] is not None else ""))
        print(f"  data           {r['files']} file(s), {r['rows']} rows, watermark {r['watermark'] or '-'}")
        print(f"  champion       " + (f"{c['version']} (data to {c['watermark']}), WAPE {c['wape']:.3f} vs baseline {c['baseline_wape']:.3f}" if c else "none"))
        print(f"  not yet trained on: {r['files_not_in_any_model']} file(s)")
        print(f"  last training  " + (f"{t['version']} {'promoted' if t['promoted'] else 'not promoted'}: {t['reason']}" if t else "never"))
    return 0


# ---------------------------------------------------------------- policies
def cmd_policies(args: argparse.Namespace) -> int:
    """Replay an arrival trace through the retraining and forecasting policies; print the table, write
    report.json and chart.png (and, with several seeds, the spread over seeds)."""
    from datetime import timedelta

    from freshet.data.contracts import ContractError
    from freshet.lab import replay
    from freshet.lab.policies import default_policies

    settings = get_settings()
    say = lambda msg: print(msg, flush=True)  # noqa: E731 - progress lines while it runs
    config = replay.LabConfig(threshold=timedelta(hours=args.threshold_hours))
    seeds = [int(s) for s in str(args.seeds or args.seed).split(",") if s.strip()]
    if (args.from_dir or args.contract) and not (args.from_dir and args.contract):
        print("freshet policies: --from-dir and --contract go together", file=sys.stderr)
        return 2
    try:
        if args.from_dir:
            trace, source, contracts = replay.dir_trace(Path(args.from_dir), Path(args.contract), days=args.days,
                                                        delay=timedelta(hours=args.landing_delay_hours),
                                                        landed_at=Path(args.landed_at) if args.landed_at else None)
            name = f"folder {args.from_dir}"
            if getattr(source, "dropped_rows", 0):
                say(f"{source.dropped_rows} row(s) break the contract's rules and are left out")
        elif args.from_lake:
            trace, source, contracts = replay.build_trace(True, args.datasets, args.days, seeds[0], settings)
            name = "lake"
        else:
            trace, source, contracts = replay.synthetic_trace(datasets=args.datasets, days=args.days, seed=seeds[0])
            name = f"synthetic seed {seeds[0]}"
        report = replay.run_lab(trace, source, contracts, default_policies(), replay.lab_settings(settings), config,
                                source_name=name, progress=say)
        spread = None
        if len(seeds) > 1 and not (args.from_dir or args.from_lake):
            more = replay.run_seeds(seeds[1:], args.datasets, args.days, default_policies(),
                                    replay.lab_settings(settings), config, progress=say)
            spread = replay.seed_spread([report, *more["reports"]])
            spread_reports = [report, *more["reports"]]
    except (replay.LabError, ContractError) as exc:
        print(f"freshet policies: {exc}", file=sys.stderr)
        return 1
    if spread:
        report["seeds"] = {"seeds": seeds, "spread": spread,
                           "reports": [{k: r[k] for k in ("source", "policies", "trace")} for r in spread_reports[1:]]}
    path, chart = replay.write_outputs(report, Path(args.out))
    print("\n" + replay.format_report(report))
    if spread:
        print(f"\nOver seeds {', '.join(map(str, seeds))} (median [min .. max]):\n" + replay.format_spread(spread))
    print(f"\nwrote {path} and {chart} in {report['runtime_seconds']:.0f} s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="freshet", description="Event-driven retraining for Prefect.")
    sub = parser.add_subparsers(dest="command", required=True)

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

    sub.add_parser("up", help="start the local Prefect server, deployments, automations and worker").set_defaults(fn=cmd_up)
    sub.add_parser("down", help="stop the processes `freshet up` started").set_defaults(fn=cmd_down)
    d = sub.add_parser("deploy", help="deploy to the Prefect API in PREFECT_API_URL (own server or Cloud)")
    d.add_argument("--create-pool", action="store_true", help="also create the 'freshet' process work pool")
    d.set_defaults(fn=cmd_deploy)
    sub.add_parser("demo", help="run the whole chain once on the local stack").set_defaults(fn=cmd_demo)
    s = sub.add_parser("status", help="per dataset: landings, champion, staleness, last training")
    s.add_argument("--json", action="store_true")
    s.set_defaults(fn=cmd_status)
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

    args = parser.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
