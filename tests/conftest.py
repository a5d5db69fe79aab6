"""Shared fixtures: a Prefect test server, local and S3 (moto) lakes, landing-file helpers.

Layers (see STYLE.md): pure-function tests need none of these; flow tests ask for
``prefect_api`` (one temporary Prefect server for the whole session) and a lake
(``lake_env`` for a local folder, ``s3_lake`` for moto, or ``any_lake`` for both);
end-to-end fixtures live in ``tests/e2e/stack.py`` (imported at the bottom of this file).

Every test starts with no ``FRESHET_*`` variable set, so a developer's own
settings never leak into a run.
"""

from __future__ import annotations

import io
import os
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Before anything imports prefect: no telemetry from the temporary servers, and the
# test server writes received events every half second (default 5 s) so tests that
# read events back wait less.
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL", "0.5")
# XGBoost's OpenMP threads spin while waiting; on a busy 2-core machine (the test
# server and moto share it) that makes a fit 10-25x slower. Passive waiting avoids it.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

import polars as pl
import pytest

from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import read_manifest
from freshet.data.lake import Lake
from freshet.settings import get_settings
from freshet.ops.stack import free_port

DATASET = "retail_sales"
BUCKET = "freshet-test"
FAKE_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


# one polling helper for every layer (defined beside the end-to-end fixtures)
from tests.e2e.stack import poll as wait_for  # noqa: E402


# --------------------------------------------------------------------- order
@pytest.hookimpl(trylast=True)  # after pytest has grouped the items by the e2e stack's topology
@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: absent without xdist
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup`` here: every test under ``tests/e2e/`` in one group, the rest one test a unit.

    One worker then starts each stack once and runs the e2e tests in their order, from the start
    (the largest group is handed out first), while the other runs everything else. Our own
    scheduler, not xdist's ``xdist_group`` mark: xdist groups by appending ``@group`` to a test's
    ``_nodeid``, which pytest 9.2 no longer reads (its ``nodeid`` comes from ``_id``), so the
    mark was silently ignored and both workers started their own stacks.
    """
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class E2EOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "e2e" if nodeid.startswith("tests/e2e/") else nodeid

    return E2EOnOneWorker(config, log)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The end-to-end tests run last, in the order pytest grouped them.

    A session-scoped stack is stopped only when the session ends: run in the middle, the
    last topology's stack (PostgreSQL, Redis, two API servers, services, two workers)
    would keep polling beside every later test, on the same two cores.

    Under pytest-xdist (``make test`` runs ``-n 2 --dist loadgroup``) the e2e tests form one
    group (``pytest_xdist_make_scheduler``): one worker runs them all, in this order, from the
    start of the session, while the other worker runs everything else. They mostly wait
    (trigger windows, leases, polls), so the rest of the suite fits beside them. Some e2e
    tests build on an earlier one's data (the server-down test on the burst test's dataset),
    so they must share one worker and its stacks.
    """
    items.sort(key=lambda item: "e2e" in getattr(item, "fixturenames", ()))


# --------------------------------------------------------------------- isolation
@pytest.fixture(autouse=True)
def _clean_freshet_env(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """No FRESHET_* setting from the developer's shell reaches a test (e2e tests configure their own)."""
    if request.node.get_closest_marker("e2e"):
        return
    for name in list(os.environ):
        if name.startswith("FRESHET_"):
            monkeypatch.delenv(name)


# --------------------------------------------------------------------- Prefect
@pytest.fixture(scope="session")
def prefect_api() -> Iterator[None]:
    """One temporary Prefect server (SQLite) for the session; flows run against it.

    It runs the event and trigger services but executes nothing by itself:
    calling a flow function runs it in the test process.
    """
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90):
        yield


# --------------------------------------------------------------------- lakes
@dataclass
class LakeHandle:
    """A configured lake (settings live in the environment) plus test helpers."""

    kind: str  # "local" | "s3"
    url: str

    @property
    def lake(self) -> Lake:
        return Lake.from_settings(get_settings())

    def uri(self, *parts: str) -> str:
        lake = self.lake
        return lake.uri(lake.path(*parts))

    def land(self, data: pl.DataFrame | bytes, name: str, dataset: str = DATASET) -> str:
        """Drop a landing file (CSV or parquet by ``name``'s suffix); returns its URI."""
        if isinstance(data, pl.DataFrame):
            if name.endswith(".csv"):
                body = data.write_csv().encode()
            else:
                buf = io.BytesIO()
                data.write_parquet(buf)
                body = buf.getvalue()
        else:
            body = data
        lake = self.lake
        path = lake.path("landing", dataset, name)
        lake.write_bytes(path, body)
        return lake.uri(path)

    def manifest(self, dataset: str = DATASET) -> list[dict[str, Any]]:
        return read_manifest(self.lake, dataset)

    def listing(self, *parts: str) -> list[str]:
        """Names (not paths) of the published entries under a lake folder."""
        lake = self.lake
        return [p.rsplit("/", 1)[-1] for p in lake.list(lake.path(*parts))]

    def read_json(self, *parts: str) -> Any:
        lake = self.lake
        return lake.read_json(lake.path(*parts))

    def read_parquet(self, *parts: str) -> pl.DataFrame:
        lake = self.lake
        return pl.read_parquet(io.BytesIO(lake.read_bytes(lake.path(*parts))))


@pytest.fixture
def lake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LakeHandle:
    """A local lake in a fresh temporary folder (FRESHET_LAKE_URL)."""
    url = str(tmp_path / "lake")
    monkeypatch.setenv("FRESHET_LAKE_URL", url)
    return LakeHandle("local", url)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """An S3 API (moto) on 127.0.0.1 and a free port; yields its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_lake(moto_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[LakeHandle]:
    """A lake at s3://freshet-test/lake on a freshly reset moto server."""
    import boto3
    import requests
    from s3fs import S3FileSystem

    for name, value in FAKE_AWS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    requests.post(f"{moto_server}/moto-api/reset", timeout=10).raise_for_status()
    S3FileSystem.clear_instance_cache()
    boto3.client("s3", endpoint_url=moto_server, region_name="us-east-1").create_bucket(Bucket=BUCKET)
    url = f"s3://{BUCKET}/lake"
    monkeypatch.setenv("FRESHET_LAKE_URL", url)
    monkeypatch.setenv("FRESHET_S3_ENDPOINT_URL", moto_server)
    # Fail fast instead of backing off for seconds if moto misbehaves.
    monkeypatch.setenv("FRESHET_IO_RETRY_BASE_DELAY", "0.05")
    yield LakeHandle("s3", url)
    S3FileSystem.clear_instance_cache()


@pytest.fixture
def lake_backoffs(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The lake's retry backoffs (``Lake.call``'s waits), recorded and still waited: ``[]`` means no retry.

    How a test proves an error was not retried, without asserting on elapsed time.
    """
    import freshet.data.lake as lake_module

    backoffs: list[float] = []
    real = lake_module.backoff
    monkeypatch.setattr(lake_module, "backoff", lambda s: (backoffs.append(s), real(s))[1])
    return backoffs


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.s3)])
def any_lake(request: pytest.FixtureRequest) -> LakeHandle:
    """The same test on a local lake and on an S3 lake."""
    return request.getfixturevalue("lake_env" if request.param == "local" else "s3_lake")


# --------------------------------------------------------------------- data
# Small enough to train in a couple of seconds, long enough for 28-day lags plus a
# 28-day validation and a 28-day holdout. Tests that need the shipped default size
# call generate_retail_sales() themselves.
SMALL = dict(stores=3, items=4, days=300)


@pytest.fixture(scope="session")
def small_sales() -> pl.DataFrame:
    """Training-sized data shared by the session (same content, hence same event ids, everywhere)."""
    return generate_retail_sales(**SMALL)


def seed_for(request: pytest.FixtureRequest) -> int:
    """A seed unique to the running test (and its parameters).

    Event ids are deterministic in the content of the files they announce, and the
    session shares one Prefect server: tests that read events back land unique
    content so they only ever find their own.
    """
    return zlib.crc32(request.node.nodeid.encode())


@pytest.fixture
def tiny_sales(request: pytest.FixtureRequest) -> pl.DataFrame:
    """Three weeks of two series, unique to the test: enough to ingest, too little to train on."""
    return generate_retail_sales(seed=seed_for(request), stores=1, items=2, days=21, missing_rate=0.0)


# --------------------------------------------------------------------- reading back from Prefect
def flow_run_id(state: Any) -> str:
    return str(state.state_details.flow_run_id)


def run_events(run_id: str, name: str, count: int = 1, timeout: float = 30.0) -> list[Any]:
    """Events called ``name`` emitted by one flow run, read back from the API (polled)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventRelatedFilter

    flt = EventFilter(event=EventNameFilter(name=[name]), related=EventRelatedFilter(id=[f"prefect.flow-run.{run_id}"]))

    def probe() -> list[Any] | None:
        with get_client(sync_client=True) as client:
            found = client.read_events(flt, limit=50).events  # the server caps a page at 50
        return found if len(found) >= count else None

    return wait_for(f"{count} {name} event(s) of flow run {run_id}", probe, timeout)


# --------------------------------------------------------------------- end-to-end
# The real stack (`prefect server start` + deployments + a worker, marker `e2e`) lives
# in tests/e2e/stack.py; its fixtures are imported here so test modules can request
# them. Nothing above depends on them, and the flow tests above never start it.
from tests.e2e.stack import e2e, e2e_client, pytest_generate_tests  # noqa: E402,F401
