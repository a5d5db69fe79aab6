"""The local stack's configuration (the processes themselves are exercised by tests/e2e)."""

from __future__ import annotations

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
