"""The freshet command line: generate, emit (the same event ingest would send), status, requeue."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from tests.conftest import DATASET, LakeHandle
from tests.lab.conftest import REPO, write_daily_files
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


def test_status_reads_as_a_table(lake_env: LakeHandle, tiny_sales, capsys) -> None:
    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import admit_file
    from freshet.settings import get_settings

    admit_file(lake_env.lake, load_contract(DATASET, get_settings().contracts_dir), lake_env.land(tiny_sales, "t.csv"))
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| dataset "))
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(lines[header])[:3] == ["dataset", "files", "rows"] and "champion" in cells(lines[header])
    assert set(lines[header + 1]) == {"|", "-", ":"}  # the rule under the header; numbers right-aligned
    row = cells(lines[header + 2])
    assert row[:3] == [DATASET, "1", str(tiny_sales.height)]
    assert row[5] == "none" and row[-1] == "never"
    assert len(lines) == header + 3, "one row per dataset"


# ---------------------------------------------------------------- errors a person meets
# The real `freshet` entry point in a subprocess, so the one-line message (and no
# traceback) is what a shell really shows.
FRESHET = str(Path(sys.executable).with_name("freshet"))
BAD_CONTRACT = 'name = "shop"\n[columns]\nprice = "Float"\n'


def _freshet(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("FRESHET_", "PREFECT_"))}
    clean.update({"FRESHET_LAKE_URL": str(tmp_path / "lake"), "FRESHET_STACK_DIR": str(tmp_path / "stack"),
                  "PREFECT_HOME": str(tmp_path / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **env})
    return subprocess.run([FRESHET, *args], env=clean, cwd=tmp_path, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case, args, env, code, message", [
    ("bad arguments", ["emit", "--dataset", DATASET], {}, 2, "Missing option '--uri'. (see `freshet emit --help`)"),
    ("bad option value", ["up", "--runner", "cloud"], {}, 2, "'cloud' is not one of 'worker', 'serve'"),
    ("unknown command", ["trian"], {}, 2, "No such command 'trian'"),
    ("no command", [], {}, 2, "Missing command. (see `freshet --help`)"),
    ("unknown dataset", ["emit", "--dataset", "nope", "--uri", "{landed}", "--dry-run"], {}, 1,
     "unknown dataset 'nope'"),
    ("bad contract", ["emit", "--dataset", "shop", "--uri", "{landed}", "--dry-run"], {"FRESHET_CONTRACTS_DIR": "{contracts}"}, 1,
     "field 'columns.price': unknown dtype 'Float'"),
    ("refused URI", ["emit", "--dataset", DATASET, "--uri", "/etc/passwd", "--dry-run"], {}, 1,
     "is outside the lake's landing area"),
    ("bad setting", ["status"], {"FRESHET_STACK_PORT": "many"}, 1, "invalid setting FRESHET_STACK_PORT"),
    ("no contracts folder", ["status"], {"FRESHET_CONTRACTS_DIR": "{contracts}/nonexistent"}, 1,
     "the contracts folder {contracts}/nonexistent does not exist: point FRESHET_CONTRACTS_DIR at a folder"),
    ("empty contracts folder", ["status", "--json"], {"FRESHET_CONTRACTS_DIR": "{empty}"}, 1,
     "the contracts folder {empty} holds no <dataset>.toml contracts"),
    ("no stack running", ["emit", "--dataset", DATASET, "--uri", "{landed}"], {}, 1,
     "no Prefect server to talk to: start the local one with `freshet up`"),
    ("server unreachable", ["deploy"], {"PREFECT_API_URL": "http://127.0.0.1:{port}/api"}, 1,
     "cannot reach the Prefect API at http://127.0.0.1:"),
])
def test_an_expected_error_is_one_line_saying_what_to_do(case, args, env, code, message, tmp_path, tiny_sales) -> None:
    from freshet.ops.stack import free_port

    landing = tmp_path / "lake" / "landing" / DATASET
    landing.mkdir(parents=True)
    tiny_sales.write_csv(landing / "a.csv")
    (tmp_path / "contracts").mkdir()
    (tmp_path / "contracts" / "shop.toml").write_text(BAD_CONTRACT)
    (tmp_path / "empty").mkdir()
    fill = {"landed": str(landing / "a.csv"), "contracts": str(tmp_path / "contracts"), "empty": str(tmp_path / "empty"),
            "port": str(free_port())}
    result = _freshet([a.format(**fill) for a in args], tmp_path, **{k: v.format(**fill) for k, v in env.items()})
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"{case}: expected one line, got:\n{result.stderr}"
    assert lines[0].startswith("freshet: error: ") and message.format(**fill) in lines[0], lines[0]
    assert result.stdout == "", "an error prints nothing else"


# every command and option of the README's command reference, by name
COMMANDS = {
    "generate": ["--dataset", "--files", "--days", "--stores", "--items", "--seed", "--start", "--out"],
    "emit": ["--dataset", "--uri", "--dry-run"],
    "requeue": ["--dataset"],
    "up": ["--scale", "--runner"],
    "serve": ["--limit", "--ready-file"],
    "down": [],
    "deploy": ["--create-pool"],
    "demo": [],
    "status": ["--json"],
    "forecast": ["--dataset", "--out", "--rows"],
    "policies": ["--out", "--datasets", "--days", "--seed", "--seeds", "--threshold-hours", "--from-lake", "--from-dir",
                 "--contract", "--landing-delay-hours", "--landed-at"],
}


def _words(text: str) -> str:
    """Help text without rich's panel borders and line wrapping."""
    return " ".join(text.replace("│", " ").split())


def test_the_help_lists_every_command_with_its_docstring(capsys) -> None:
    from freshet.ops.cli.app import app

    assert main(["--help"]) == 0
    out = _words(capsys.readouterr().out)
    registered = {c.callback.__name__: c.callback for c in app.registered_commands}
    assert list(registered) == list(COMMANDS)
    for name, fn in registered.items():
        assert f"{name} {_words(fn.__doc__.splitlines()[0])}" in out
    assert "--debug" in out


@pytest.mark.parametrize("command, options", COMMANDS.items())
def test_each_command_keeps_its_options_and_describes_them(command, options, capsys) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    described = [line for line in out.splitlines() if any(f"{o} " in line for o in options)]
    for option in options:
        line = next((x for x in described if f" {option} " in x), None)
        assert line is not None, f"freshet {command} --help lists no {option}"
        assert len(_words(line).split()) > 3, f"{option} has no help text: {line!r}"


def test_debug_shows_the_traceback(tmp_path) -> None:
    result = _freshet(["--debug", "emit", "--dataset", DATASET, "--uri", "/etc/passwd", "--dry-run"], tmp_path)
    assert result.returncode == 1
    assert "Traceback (most recent call last)" in result.stderr and "UriRejected" in result.stderr
    assert "freshet: error:" not in result.stderr


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


# ---------------------------------------------------------------- policies
def test_cli_prints_the_table_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from freshet.ops.cli import main

    assert main(["policies", "--datasets", "1", "--days", "4", "--seed", "2", "--threshold-hours", "12",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[4/7] event-driven:" in out and "| event-driven" in out and "| on landing" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["threshold_hours"] == 12 and list(report["trace"]["datasets"]) == ["shop_a"]
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_cli_from_an_empty_lake_explains(lake_env: LakeHandle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from freshet.ops.cli import main

    assert main(["policies", "--from-lake", "--out", str(tmp_path)]) == 1
    assert "land and ingest data first" in capsys.readouterr().err


def test_cli_replays_a_folder_with_its_contract(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from freshet.ops.cli import main

    write_daily_files(tmp_path / "files", last=3)
    # price and promotion as observed: the folder holds no plan of their future values
    contract = tmp_path / "retail_sales.toml"
    contract.write_text((REPO / "src/freshet/data/bundled_contracts/retail_sales.toml").read_text()
                        .replace('known = ["price", "on_promo"]\nobserved = []', 'known = []\nobserved = ["price", "on_promo"]'))
    assert main(["policies", "--from-dir", str(tmp_path / "files"), "--contract", str(contract), "--days", "3",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| event-driven" in out and "| on landing" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"].startswith("folder ") and report["trace"]["datasets"]["retail_sales"]["arrivals"] == 2
    event = next(p for p in report["policies"] if p["name"] == "event-driven / forecast on landing")
    assert event["total"]["staleness"]["p50_h"] == pytest.approx(1 / 60)
    assert main(["policies", "--from-dir", str(tmp_path / "files"), "--out", str(tmp_path / "out")]) == 2
