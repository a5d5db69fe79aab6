"""The local stack's configuration (the processes themselves are exercised by tests/e2e)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from freshet.ops.stack import Stack
from freshet.settings import Settings


def test_the_server_tells_its_ui_the_api_on_the_stacks_own_port(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # without it the UI calls http://127.0.0.1:4200/api whatever port the server has
    for name in ("PREFECT_SERVER_UI_API_URL", "PREFECT_UI_API_URL"):
        monkeypatch.delenv(name, raising=False)
    stack = Stack(Settings(stack_dir=tmp_path))
    stack.save({"port": 43123})
    env = stack.server_env()
    assert env["PREFECT_SERVER_UI_API_URL"] == "http://127.0.0.1:43123/api"
    assert "PREFECT_API_URL" not in env
    assert stack.ui_url() == "http://127.0.0.1:43123"
    # behind a reverse proxy the user's own value wins
    monkeypatch.setenv("PREFECT_SERVER_UI_API_URL", "https://prefect.example.com/api")
    assert stack.server_env()["PREFECT_SERVER_UI_API_URL"] == "https://prefect.example.com/api"


def test_a_killed_process_not_yet_reaped_is_not_alive() -> None:
    """`freshet up` restarts a worker killed with SIGKILL even before anyone reaped it (a zombie)."""
    import signal
    import subprocess
    import time

    from freshet.ops.stack import _start_time, alive

    proc = subprocess.Popen(["sleep", "60"])
    record = {"pid": proc.pid, "start_time": _start_time(proc.pid)}
    assert alive(record)
    os.kill(proc.pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not reaped
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert not alive(record)
    assert not Path(f"/proc/{proc.pid}").exists(), "alive() reaps its own child"
    assert not alive({"pid": proc.pid, "start_time": record["start_time"]})
