"""``freshet generate``, ``emit`` and ``requeue``: landing files, the event ingest would send, a file re-admitted."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import polars as pl

from freshet import events
from freshet.ops.cli import main

from tests.conftest import DATASET, LakeHandle


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
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("freshet: error: not announcing") and "missing_column" in line


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


# ----------------------------------------------------------------- requeue
def test_freshet_requeue_readmits_a_fixed_file_and_refuses_in_one_line(lake_env: LakeHandle, tiny_sales,
                                                                       capsys) -> None:
    from freshet.data.ingestion import admit_file
    from freshet.data.contracts import load_contract
    from freshet.settings import BUNDLED_CONTRACTS

    uri = lake_env.land(tiny_sales.drop("price"), "week.csv")
    assert admit_file(lake_env.lake, load_contract(DATASET, BUNDLED_CONTRACTS), uri).status == "rejected"
    assert main(["requeue", "--dataset", DATASET, "week.csv"]) == 1  # not fixed yet: quarantined again
    assert "missing_column" in capsys.readouterr().out
    lake_env.land(tiny_sales, "week.csv")
    assert main(["requeue", "--dataset", DATASET, "week.csv"]) == 0
    out = capsys.readouterr().out
    assert f"{uri}: admitted {tiny_sales.height} rows" in out and f"freshet emit --dataset {DATASET} --uri {uri}" in out
    assert main(["requeue", "--dataset", DATASET, "week.csv"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("freshet: error: ") and "is not quarantined" in err and len(err.splitlines()) == 1
