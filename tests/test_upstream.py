"""The checks on the third-party internals freshet patches: each passes on the installed versions,
and fires, with advice, when the code it depends on differs (modified fakes stand in for a new release)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from freshet import locks
from freshet.ops import prefect_server, serve
from freshet.upstream import Expectation, UpstreamChanged, resolve, verify

EXPECTATIONS = {
    "aiosqlite cursor": prefect_server.AIOSQLITE_CURSOR,
    "immediate transactions": prefect_server.IMMEDIATE_TRANSACTIONS,
    "fork server": serve.FORK_SERVER,
    "private exceptions": locks.PRIVATE_EXCEPTIONS,
}
CASES = [(key, name) for key, expect in EXPECTATIONS.items() for name in expect.sources]


def changed_upstream(*args, **kwargs):  # a "new release" of whatever it replaces
    return "different code"


@pytest.mark.parametrize("key", sorted(EXPECTATIONS))
def test_each_check_passes_on_the_installed_versions(key: str) -> None:
    expect = EXPECTATIONS[key]
    verify(expect)
    assert all(resolve(name) is not None for name in expect.sources)


@pytest.mark.parametrize(("key", "name"), CASES)
def test_each_check_fires_with_advice_when_its_target_changed_or_is_gone(key: str, name: str) -> None:
    expect: Expectation = EXPECTATIONS[key]
    real = {n: resolve(n) for n in expect.sources}
    with pytest.raises(UpstreamChanged) as changed:
        verify(expect, {**real, name: changed_upstream})
    message = str(changed.value)
    assert f"{name} has changed" in message and f"checked with {expect.package} {expect.checked}" in message
    assert expect.advice in message and expect.what in message
    with pytest.raises(UpstreamChanged, match=f"{name} is gone"):
        verify(expect, {**real, name: None})


# The checks run where the patches are applied: a changed target stops the import (or the patch) loudly.
CHANGED_AT_IMPORT = {
    "prefect_server": ("import aiosqlite.cursor\n"
                       "async def close(self):\n    pass\n"
                       "aiosqlite.cursor.Cursor.close = close\n"
                       "import freshet.ops.prefect_server\n", "aiosqlite.cursor:Cursor.close has changed"),
    "locks": ("import prefect.concurrency._asyncio as a\n"
              "class ConcurrencySlotAcquisitionError(RuntimeError):\n    pass\n"
              "a.ConcurrencySlotAcquisitionError = ConcurrencySlotAcquisitionError\n"
              "import freshet.locks\n", "prefect.concurrency._asyncio:ConcurrencySlotAcquisitionError has changed"),
}


@pytest.mark.parametrize("module", sorted(CHANGED_AT_IMPORT))
def test_a_changed_target_stops_the_import_with_advice(module: str) -> None:
    code, expected = CHANGED_AT_IMPORT[module]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "UpstreamChanged" in done.stderr and expected in done.stderr, done.stderr[-2000:]
    assert "or pin " in done.stderr


def test_the_fork_server_is_not_installed_over_a_changed_flow_engine(monkeypatch) -> None:
    import multiprocessing

    import prefect.flow_engine as engine

    monkeypatch.setattr(engine, "run_flow_in_subprocess", changed_upstream)
    with pytest.raises(UpstreamChanged, match="prefect.flow_engine:run_flow_in_subprocess has changed"):
        serve.use_fork_server()
    assert engine.multiprocessing is multiprocessing  # nothing patched
