"""End-to-end fixtures: a real ``prefect server start``, work pool, deployments and worker.

The stack is started exactly as ``freshet up`` starts it (``freshet.stack.Stack``):
a Prefect server on a free port of 127.0.0.1 with a temporary Prefect home, the
``freshet`` process pool, ``prefect deploy --all --prefect-file
deployments/prefect.yaml`` run from the repository root, the code-defined
automations, and a process worker. Everything it starts it stops, by process id.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freshet.settings import Settings
from freshet.stack import Stack

REPO = Path(__file__).resolve().parent.parent


@dataclass
class E2E:
    stack: Stack
    api_url: str
    lake: Path
    env: dict[str, str]

    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the ``prefect`` CLI against this stack, as a user's shell would."""
        exe = str(Path(os.sys.executable).with_name("prefect"))
        return subprocess.run([exe, *args], env=self.env, cwd=REPO, capture_output=True, text=True, check=check,
                              timeout=120)

    def logs(self) -> str:
        parts = []
        for name in ("server", "worker", "setup"):
            path = self.stack.dir / f"{name}.log"
            if path.exists():
                parts.append(f"--- {name}.log (tail) ---\n" + "\n".join(path.read_text().splitlines()[-40:]))
        return "\n".join(parts)


def poll(what: str, fn: Callable[[], Any], timeout: float, every: float = 0.5) -> Any:
    """Call ``fn`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    base = tmp_path_factory.mktemp("e2e")
    settings = Settings(
        lake_url=str(base / "lake"),
        stack_dir=base / "stack",
        stack_port=0,
    )
    stack = Stack(settings)
    saved = {k: os.environ.get(k) for k in ("FRESHET_LAKE_URL",)}
    os.environ["FRESHET_LAKE_URL"] = settings.lake_url  # flows started by deploy import settings too
    try:
        api = stack.up(out=lambda line: print(f"[e2e] {line}"))
        env = stack.client_env()
        yield E2E(stack=stack, api_url=api, lake=base / "lake", env=env)
    finally:
        stack.down(out=lambda line: print(f"[e2e] {line}"))
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture()
def e2e_client(e2e: E2E):
    """A sync Prefect client bound to the e2e server, and freshet settings pointing at its lake."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: e2e.api_url}):
        with get_client(sync_client=True) as client:
            yield client
