"""The command line as a whole: every command and option with its help, and every expected error on one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from freshet.ops.cli import main

from tests.conftest import DATASET


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
    "scores": ["--dataset", "--out", "--rows"],
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
