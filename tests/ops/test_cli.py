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


def _publish_seasonal_naive(lake_env: LakeHandle, frame: pl.DataFrame) -> dict:
    """A published forecast as the forecast flow writes it (file, description, latest.json)."""
    from datetime import datetime, timezone

    from freshet.data.contracts import load_contract
    from freshet.modeling import publish
    from freshet.modeling.forecast import forecast_frame
    from freshet.settings import get_settings

    lake = lake_env.lake
    out, _ = forecast_frame(frame, load_contract(DATASET, get_settings().contracts_dir), None, None)
    watermark = str(frame["date"].max())
    path = publish.forecast_path(lake, DATASET, watermark, "abc123")
    issued = datetime.now(timezone.utc)
    publish.write_forecast(lake, path, out.with_columns(pl.lit("seasonal_naive").alias("model_version"),
                                                        pl.lit(watermark).alias("data_watermark"),
                                                        pl.lit(issued).alias("issued_at")))
    pointer = {"forecast_id": "abc123", "path": path, "uri": lake.uri(path), "model_version": "seasonal_naive",
               "method": "seasonal_naive", "watermark": watermark, "issued_at": issued.isoformat(), "rows": out.height}
    lake.write_json(publish.latest_path(lake, DATASET), pointer)
    return pointer


def test_forecast_prints_or_writes_the_latest_forecast_and_status_shows_its_age(
        lake_env: LakeHandle, tiny_sales, tmp_path: Path, capsys) -> None:
    assert main(["forecast", "--dataset", DATASET]) == 1
    assert "no forecast published" in capsys.readouterr().err
    pointer = _publish_seasonal_naive(lake_env, tiny_sales)
    assert main(["forecast", "--dataset", DATASET]) == 0
    printed = capsys.readouterr().out
    assert pointer["uri"] in printed and "seasonal naive (no champion yet)" in printed
    for name in ("f.csv", "f.parquet"):
        assert main(["forecast", "--dataset", DATASET, "--out", str(tmp_path / name)]) == 0
        back = pl.read_csv(tmp_path / name) if name.endswith(".csv") else pl.read_parquet(tmp_path / name)
        assert back.height == pointer["rows"] == 2 * 7 and set(back["method"]) == {"seasonal_naive"}
    assert main(["forecast", "--dataset", DATASET, "--out", str(tmp_path / "f.txt")]) == 2
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["forecast"]["watermark"] == pointer["watermark"] and row["forecast"]["uri"] == pointer["uri"]
    assert 0 <= row["forecast"]["age_hours"] < 1
