"""The SQLite freeze of a Prefect server, reproduced with real aiosqlite on a real database file.

A cursor whose statement failed ("database is locked") is dropped on the event loop's thread
while its connection's thread waits in SQLite's busy handler for a write lock, and the
transaction holding that lock needs the event loop to commit. Without the fix the loop
stops until the busy timeout, and the waiting write fails; with
``freshet.ops.prefect_server.close_cursors_on_their_thread`` the commit goes through and
the write succeeds. Each case runs in its own interpreter (the fix patches aiosqlite).

The 503 of a write that read first: through Prefect's own SQLite configuration, a
transaction reads, another connection writes and commits, then the first writes. Begun
``DEFERRED`` (Prefect's default, as in ``create_flow_run`` from a deployment) it fails at
once with "database is locked" (the API's 503); with
``freshet.ops.prefect_server.immediate_transactions`` the second writer waits and both
writes land.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

SCENARIO = textwrap.dedent("""
    import asyncio, gc, sys
    import aiosqlite

    async def main(path, fixed):
        if fixed:
            from freshet.ops.prefect_server import close_cursors_on_their_thread
            close_cursors_on_their_thread()
        async with aiosqlite.connect(path, isolation_level=None) as a, \\
                aiosqlite.connect(path, isolation_level=None) as x:
            await a.execute("PRAGMA journal_mode = WAL")
            await a.execute("CREATE TABLE t (v INTEGER)")
            await a.execute("BEGIN IMMEDIATE")
            await a.execute("INSERT INTO t VALUES (1)")          # a holds the write lock
            await x.execute("PRAGMA busy_timeout = 100")
            failed = await x.cursor()
            try:
                await failed.execute("INSERT INTO t VALUES (2)")  # fails: database is locked
            except aiosqlite.OperationalError as error:
                print("first write:", error)
            await x.execute("PRAGMA busy_timeout = 3000")
            waiting = asyncio.create_task(x.execute("INSERT INTO t VALUES (3)"))  # x's thread waits for the lock
            await asyncio.sleep(0.3)
            del failed
            gc.collect()                                       # on the event loop's thread
            await a.execute("COMMIT")                           # needs the event loop
            try:
                await waiting
                print("waiting write: ok")
            except aiosqlite.OperationalError as error:
                print("waiting write:", error)

    asyncio.run(main(sys.argv[1], sys.argv[2] == "fixed"))
""")


def _run(tmp_path: Path, mode: str) -> str:
    result = subprocess.run([sys.executable, "-c", SCENARIO, str(tmp_path / f"{mode}.sqlite"), mode],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "first write: database is locked" in result.stdout, result.stdout
    return result.stdout


@pytest.mark.parametrize("mode", ["unfixed", "fixed"])
def test_a_failed_cursor_dropped_on_the_event_loop_freezes_it_unless_fixed(tmp_path: Path, mode: str) -> None:
    out = _run(tmp_path, mode)
    if mode == "unfixed":  # the freeze exists: the loop could not commit before the busy timeout
        assert "waiting write: database is locked" in out, out
    else:
        assert "waiting write: ok" in out, out



READ_THEN_WRITE = textwrap.dedent('''
import asyncio, sys
import sqlalchemy as sa

async def main(path, fixed):
    if fixed:
        from freshet.ops.prefect_server import immediate_transactions
        immediate_transactions()
    from prefect.server.database.configurations import AioSqliteConfiguration
    cfg = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{path}")
    engine = await cfg.engine()
    async with engine.begin() as conn:
        await conn.execute(sa.text("CREATE TABLE t (v INTEGER)"))
    read = asyncio.Event()

    async def a():
        session = await cfg.session(engine)
        async with session:
            try:
                async with cfg.begin_transaction(session):
                    await session.execute(sa.text("SELECT count(*) FROM t"))   # a read first, as create_flow_run reads its deployment
                    read.set()
                    await asyncio.sleep(0.5)
                    await session.execute(sa.text("INSERT INTO t VALUES (1)"))
                return "ok"
            except Exception as error:
                read.set()
                return f"{type(error).__name__}: {str(error).splitlines()[0]}"

    async def b():
        await read.wait()
        session = await cfg.session(engine)
        async with session:
            async with cfg.begin_transaction(session):
                await session.execute(sa.text("INSERT INTO t VALUES (2)"))
        return "ok"

    ra, rb = await asyncio.gather(a(), b())
    async with engine.connect() as conn:
        rows = (await conn.execute(sa.text("SELECT count(*) FROM t"))).scalar()
    print(f"reader-then-writer: {ra}; writer: {rb}; rows: {rows}")
    await engine.dispose()

asyncio.run(main(sys.argv[1], sys.argv[2] == "fixed"))
''')


@pytest.mark.parametrize("mode", ["unfixed", "fixed"])
def test_a_transaction_that_reads_then_writes_fails_with_database_locked_unless_fixed(tmp_path: Path, mode: str) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home")}
    result = subprocess.run([sys.executable, "-c", READ_THEN_WRITE, str(tmp_path / f"{mode}.sqlite"), mode],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 0, result.stderr
    if mode == "unfixed":  # the 503's cause exists: the reader's write fails at once
        assert "reader-then-writer: OperationalError: (sqlite3.OperationalError) database is locked" in result.stdout, \
            result.stdout
        assert "rows: 1" in result.stdout, result.stdout
    else:
        assert "reader-then-writer: ok; writer: ok; rows: 2" in result.stdout, result.stdout
