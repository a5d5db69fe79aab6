"""End-to-end fixtures: a real ``prefect server start``, work pool, deployments and worker.

The stack is started exactly as ``freshet up`` starts it (``freshet.ops.stack.Stack``):
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

from freshet.settings import BUNDLED_CONTRACTS, Settings
from freshet.ops.stack import Stack

REPO = Path(__file__).resolve().parents[2]


@dataclass
class E2E:
    stack: Stack
    api_url: str
    lake: Path
    env: dict[str, str]
    contracts: Path

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


def poll(what: str, fn: Callable[[], Any], timeout: float = 20.0, every: float = 0.2) -> Any:
    """Call ``fn`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


# The whole e2e session runs with Prefect's basic auth on, so every step (deploy,
# worker, automations, CLI, REST) is proven to work with it.
AUTH = "freshet:e2e-not-a-real-password"
EXTRA_DATASETS = ("burst_a", "burst_b", "crash_c")


def write_contract(folder: Path, name: str, **overrides: Any) -> Path:
    """A copy of the shipped retail_sales contract under another dataset name."""
    text = (BUNDLED_CONTRACTS / "retail_sales.toml").read_text().replace('name = "retail_sales"', f'name = "{name}"')
    for key, value in overrides.items():
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines())
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def e2e(tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    base = tmp_path_factory.mktemp("e2e")
    contracts = base / "contracts"
    contracts.mkdir()
    for name in ("retail_sales", *EXTRA_DATASETS):
        write_contract(contracts, name)
    settings = Settings(lake_url=str(base / "lake"), stack_dir=base / "stack", stack_port=0, contracts_dir=contracts)
    # credentials go to the stack's processes only, never into this test process's environment
    stack = Stack(settings, extra_env={
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "PREFECT_API_AUTH_STRING": AUTH,
        # task and flow run states reach the API sooner, so tests can act on them
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
    })
    try:
        api = stack.up(out=lambda line: print(f"[e2e] {line}"))
        yield E2E(stack=stack, api_url=api, lake=base / "lake", env=stack.client_env(), contracts=contracts)
    finally:
        stack.down(out=lambda line: print(f"[e2e] {line}"))


@pytest.fixture()
def e2e_client(e2e: E2E):
    """A sync Prefect client bound to the e2e server, and freshet settings pointing at its lake."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        with get_client(sync_client=True) as client:
            yield client
