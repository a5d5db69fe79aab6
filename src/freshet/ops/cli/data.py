"""``freshet generate``, ``emit`` and ``requeue``: synthetic landing files, the ``data.landed`` event for files
any ingestion job landed, and a quarantined file re-admitted after a fix.

Reads freshet's settings (the lake, the contracts, the ingestion rules) and, to send
an event, the Prefect API of ``freshet.ops.cli.api``.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from freshet.ops.cli.api import api_url, require_api, use_stack_api
from freshet.ops.cli.demo import DEMO_DATASET
from freshet.ops.cli.errors import CliError
from freshet.ops.cli.output import steps
from freshet.settings import get_settings


def generate(
    dataset: Annotated[str, typer.Option(help="the dataset (only retail_sales is generated)")] = DEMO_DATASET,
    files: Annotated[int, typer.Option(help="a history file, then weekly batches")] = 3,
    days: Annotated[int, typer.Option(help="days of data")] = 730,
    stores: Annotated[int, typer.Option(help="stores (series = stores x items)")] = 8,
    items: Annotated[int, typer.Option(help="items per store")] = 12,
    seed: Annotated[int, typer.Option(help="seed of the generator")] = 7,
    start: Annotated[datetime, typer.Option(formats=["%Y-%m-%d"], metavar="YYYY-MM-DD", show_default="2024-01-01",
                                            help="first date")] = datetime(2024, 1, 1),
    out: Annotated[Optional[str], typer.Option(help="a local folder instead of the lake's landing/<dataset>/")] = None,
) -> int:
    """write synthetic retail_sales landing files"""
    from freshet.data.generate import generate_retail_sales, split_into_batches
    from freshet.data.lake import Lake

    if dataset != DEMO_DATASET:
        raise CliError(f"freshet generate only makes {DEMO_DATASET!r} data; use --dataset {DEMO_DATASET}", code=2)
    lake = Lake.from_settings(get_settings())
    frame = generate_retail_sales(seed=seed, stores=stores, items=items, days=days, start=start.date())
    batches = split_into_batches(frame, files)
    folder = out.rstrip("/") if out else lake.landing_dir(dataset)
    if out:
        Path(folder).mkdir(parents=True, exist_ok=True)
    with steps(len(batches), "writing landing files") as progress:
        for batch in batches:
            name = f"{folder}/{dataset}-seed{seed}-{batch['date'].min()}-{batch['date'].max()}.csv"
            if out:
                batch.write_csv(name)
                progress.say(name)
            else:
                with lake.staged(name) as local:  # appears whole, never half-written
                    batch.write_csv(local)
                progress.say(lake.uri(name))
            progress.advance()
    print(f"wrote {len(batches)} file(s), {frame.height} rows", file=sys.stderr)
    return 0


def emit(
    dataset: Annotated[str, typer.Option(help="the dataset the files belong to")],
    uri: Annotated[list[str], typer.Option(help="a landing file URI; repeat for several")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print the event instead of sending it")] = False,
) -> int:
    """announce data.landed for landing files (from any ingestion job)"""
    from freshet import events
    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import inspect_file
    from freshet.data.lake import Lake

    settings = get_settings()
    use_stack_api()
    contract = load_contract(dataset, settings.contracts_dir)
    lake = Lake.from_settings(settings)
    files, problems = [], []
    with steps(len(uri), "checking the files against the contract") as progress:
        for one in uri:
            progress.now(f"checking {one.rsplit('/', 1)[-1]}")
            result = inspect_file(lake, contract, one, now=datetime.now(timezone.utc),
                                  future_tolerance_hours=settings.future_tolerance_hours,
                                  on_bad_rows=settings.on_bad_rows, publish=False)
            if result.status == "rejected":
                problems.append(result.message())
            else:
                files.append({**result.entry, "uri": one})
            progress.advance()
    if problems:
        raise CliError("not announcing: the contract refuses " + "; ".join(problems), code=2)
    payload = events.landed_payload(dataset, files)
    event = events.build_event(events.DATA_LANDED, dataset, payload, payload["content_hashes"])
    if dry_run:
        print(json.dumps(event.model_dump(mode="json"), indent=2))
        return 0
    require_api(api_url())
    events.emit(event)
    print(f"emitted {events.DATA_LANDED} {event.id} for {dataset}: {payload['rows']} rows in "
          f"{len(files)} file(s), watermark {payload['watermark']}")
    return 0


def requeue(
    dataset: Annotated[str, typer.Option(help="the dataset the file belongs to")],
    file: Annotated[str, typer.Argument(help="the file's name under landing/<dataset>/ (or its URI)")],
) -> int:
    """re-admit a quarantined landing file after fixing it (or its contract)"""
    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import RequeueError, requeue as requeue_file
    from freshet.data.lake import Lake

    settings = get_settings()
    contract = load_contract(dataset, settings.contracts_dir)
    try:
        result = requeue_file(Lake.from_settings(settings), contract, file,
                              future_tolerance_hours=settings.future_tolerance_hours, on_bad_rows=settings.on_bad_rows)
    except RequeueError as exc:
        raise CliError(str(exc), code=2) from None
    print(result.message())
    if result.entry is None:
        return 1
    print(f"to train on it now: freshet emit --dataset {dataset} --uri {result.uri}")
    return 0
