"""The freshet command line: generate, emit (the same event ingest would send), status."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from tests.conftest import DATASET, LakeHandle
from freshet import events
from freshet.ops.cli import main


def test_generate_writes_landing_files_covering_every_row(lake_env: LakeHandle, capsys) -> None:
    assert main(["generate", "--files", "3", "--days", "120", "--stores", "2", "--items", "3", "--seed", "5"]) == 0
    uris = capsys.readouterr().out.split()
    assert len(uris) == 3 and all(u.endswith(".csv") for u in uris)
    frames = [pl.read_csv(u) for u in uris]
    dates = pl.concat(frames)["date"]
    assert dates.is_sorted() and dates.n_unique() == 120
    assert sum(f.height for f in frames) == pl.concat(frames).unique().height


def test_emit_dry_run_builds_the_event_ingest_would_send(lake_env: LakeHandle, tiny_sales, capsys) -> None:
    uri = lake_env.land(tiny_sales, "external.csv")
    assert main(["emit", "--dataset", DATASET, "--uri", uri, "--dry-run"]) == 0
    event = json.loads(capsys.readouterr().out)
    sha = hashlib.sha256(Path(uri).read_bytes()).hexdigest()
    assert event["event"] == events.DATA_LANDED
    assert event["resource"] == events.dataset_resource(DATASET)
    assert event["id"] == str(events.event_id(events.DATA_LANDED, DATASET, [sha]))
    assert event["payload"]["uris"] == [uri] and event["payload"]["rows"] == tiny_sales.height
    assert event["payload"]["content_hashes"] == [sha]
    assert lake_env.manifest() == [], "emit validates without admitting"


def test_emit_refuses_to_announce_a_file_that_breaks_the_contract(lake_env: LakeHandle, capsys) -> None:
    uri = lake_env.land(b"ts,sensor\n2024-01-01,a\n", "wrong.csv")
    assert main(["emit", "--dataset", DATASET, "--uri", uri]) == 2
    assert "missing_column" in capsys.readouterr().err


def test_emit_sends_the_event_to_prefect(prefect_api, lake_env: LakeHandle, tiny_sales, capsys) -> None:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter

    from tests.conftest import wait_for

    uri = lake_env.land(tiny_sales, "announced.csv")
    assert main(["emit", "--dataset", DATASET, "--uri", uri]) == 0
    sha = hashlib.sha256(Path(uri).read_bytes()).hexdigest()
    expected = events.event_id(events.DATA_LANDED, DATASET, [sha])
    assert str(expected) in capsys.readouterr().out

    def find():
        with get_client(sync_client=True) as client:
            return client.read_events(EventFilter(id=EventIDFilter(id=[expected])), limit=1).events

    [event] = wait_for("the emitted event", find)
    assert event.payload["uris"] == [uri]


def test_status_reports_landings_and_the_champion(lake_env: LakeHandle, tiny_sales, capsys) -> None:
    from freshet.data.ingestion import admit_file
    from freshet.data.contracts import load_contract
    from freshet.settings import get_settings

    admit_file(lake_env.lake, load_contract(DATASET, get_settings().contracts_dir), lake_env.land(tiny_sales, "s.csv"))
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["dataset"] == DATASET and row["files"] == 1 and row["rows"] == tiny_sales.height
    assert row["champion"] is None and row["files_not_in_any_model"] == 1
    assert row["watermark"] == str(tiny_sales["date"].max())
