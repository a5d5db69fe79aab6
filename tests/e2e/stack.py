"""End-to-end fixtures: a real ``prefect server start``, deployments, and the processes that run flows.

Two topologies, the ``topology`` parameter of the session fixture ``e2e``, each with the
way of running flows ``freshet up`` gives it by default, so both ways are proven:

- ``sqlite``: started exactly as ``freshet up`` starts it (``freshet.ops.stack.Stack``):
  a Prefect server on a free port of 127.0.0.1 with a temporary Prefect home, and a
  ``freshet serve`` process that registers the deployments of ``deployments/prefect.yaml``
  (run from the repository root) and runs them, then the code-defined automations.
- ``scale``: as ``freshet up --scale`` (``freshet.ops.scale.ScaleStack``): PostgreSQL,
  Redis, Prefect's services, two API servers (the tests talk to one, the workers to
  the other), ``prefect deploy`` to the ``freshet`` process pool and two process
  workers. Where PostgreSQL's or Redis' binaries are missing its
  tests skip, naming the package to install; ``FRESHET_REQUIRE_SCALE=1`` (set by
  ``.ci/run``) turns the skip into a failure.

Every e2e test runs on ``sqlite``; a test marked ``@pytest.mark.topologies("sqlite",
"scale")`` runs on both, ``topologies("scale")`` on the scale topology only. Only one
stack runs at a time. Everything a stack starts it stops, by process id.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from freshet.settings import BUNDLED_CONTRACTS, Settings
from freshet.ops.scale import ScaleStack, missing_requirements
from freshet.ops.stack import Stack

REPO = Path(__file__).resolve().parents[2]


@dataclass
class E2E:
    stack: Stack
    api_url: str
    lake: Path
    env: dict[str, str]
    contracts: Path
    topology: str = "sqlite"

    def prefect(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run the ``prefect`` CLI against this stack, as a user's shell would."""
        exe = str(Path(os.sys.executable).with_name("prefect"))
        return subprocess.run([exe, *args], env=self.env, cwd=REPO, capture_output=True, text=True, check=check,
                              timeout=120)

    def logs(self) -> str:
        parts = []
        for path in sorted(self.stack.dir.glob("*.log")):
            parts.append(f"--- {path.name} (tail) ---\n" + "\n".join(path.read_text(errors="replace").splitlines()[-40:]))
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
EXTRA_DATASETS = ("burst_a", "burst_b", "crash_c", "dup_e", "iso_busy", "iso_other", "fault_e", "pg_restart")
TOPOLOGIES = ("sqlite", "scale")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Every test that uses the e2e stack runs once per topology its ``topologies`` marker names."""
    if "e2e" in metafunc.fixturenames:
        marker = metafunc.definition.get_closest_marker("topologies")
        names = marker.args if marker else ("sqlite",)
        assert set(names) <= set(TOPOLOGIES), names
        metafunc.parametrize("topology", names, scope="session")


def write_contract(folder: Path, name: str, **overrides: Any) -> Path:
    """A copy of the shipped retail_sales contract under another dataset name."""
    text = (BUNDLED_CONTRACTS / "retail_sales.toml").read_text().replace('name = "retail_sales"', f'name = "{name}"')
    for key, value in overrides.items():
        text = "\n".join(f"{key} = {value}" if line.startswith(f"{key} =") else line for line in text.splitlines())
    path = folder / f"{name}.toml"
    path.write_text(text)
    return path


@pytest.fixture(scope="session")
def e2e(topology: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    base = tmp_path_factory.mktemp(f"e2e-{topology}")
    if topology == "scale":
        problems = missing_requirements(Settings())
        if problems:
            message = "scale topology unavailable: " + "; ".join(problems)
            if os.environ.get("FRESHET_REQUIRE_SCALE") == "1":
                pytest.fail(message + " (FRESHET_REQUIRE_SCALE=1)")
            pytest.skip(message)
        # PostgreSQL runs as its own user, who must reach its data folder: not under pytest's 0700 temp root
        base = Path(tempfile.mkdtemp(prefix="freshet-e2e-scale-"))
        base.chmod(0o755)
    contracts = base / "contracts"
    contracts.mkdir()
    for name in ("retail_sales", *EXTRA_DATASETS):
        write_contract(contracts, name)
    settings = Settings(lake_url=str(base / "lake"), stack_dir=base / "stack", stack_port=0, contracts_dir=contracts)
    # credentials go to the stack's processes only, never into this test process's environment
    stack = (ScaleStack if topology == "scale" else Stack)(settings, extra_env={
        "PREFECT_SERVER_API_AUTH_STRING": AUTH,
        "PREFECT_API_AUTH_STRING": AUTH,
        # task and flow run states reach the API sooner, so tests can act on them
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "0.5",
        # a killed run's slots (60 s leases, Prefect's minimum) are freed within 2 s of expiring, not up
        # to 15 s later (the repossessor's default loop): the kill tests' re-runs wait for them
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_LOOP_SECONDS": "2",
    })
    try:
        api = stack.up(out=lambda line: print(f"[e2e] {line}"))
        yield E2E(stack=stack, api_url=api, lake=base / "lake", env=stack.client_env(), contracts=contracts,
                  topology=topology)
    finally:
        stack.down(out=lambda line: print(f"[e2e] {line}"))
        if topology == "scale":
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture()
def e2e_client(e2e: E2E):
    """A sync Prefect client bound to the e2e server, and freshet settings pointing at its lake."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    with temporary_settings({PREFECT_API_URL: e2e.api_url, PREFECT_API_AUTH_STRING: AUTH}):
        with get_client(sync_client=True) as client:
            yield client


def forecast_pointers(lake: Any, dataset: str) -> list[dict]:
    """Every published forecast's pointer document (``<watermark>-<id>.json``) of ``dataset``, not ``latest.json``."""
    from freshet.modeling import publish

    return [lake.read_json(p) for p in lake.list(lake.forecasts_dir(dataset), suffix=".json")
            if not p.endswith(publish.LATEST)]
