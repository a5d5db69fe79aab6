"""``prefect server start``, with one fix for Prefect on SQLite: the stack's server runs this.

    python -m freshet.ops.prefect_server start --host 127.0.0.1 --port 4200

Same arguments as ``prefect server start``. Two fixes, for SQLite only (PostgreSQL is
untouched): a SQLite cursor is finalised on its connection's own thread, never on the event
loop's (the freeze below); and every transaction Prefect begins takes SQLite's write lock
at once (:func:`immediate_transactions`: no more instant "database is locked" 503s).

Why. A Prefect server on SQLite froze for 60 s at a time under freshet's bursts (every
request timed out, ``freshet emit`` failed with ``EmitError``, triggered runs started a
minute late). ``py-spy dump --native`` of the frozen server showed the deadlock:

- the event loop's thread, in the garbage collector, finalising a cursor left unclosed when
  its statement raised (such as "database is locked"): CPython resets the statement, and
  ``sqlite3_reset`` waits for the connection's mutex;
- that connection's aiosqlite thread holds the mutex: it is in ``sqlite3_step``, in
  SQLite's busy handler, waiting for the write lock (``PRAGMA busy_timeout = 60000``);
- the write lock is held by another connection whose transaction needs the event loop
  to go on to its commit.

Nothing moves until the busy timeout expires. SQLAlchemy's aiosqlite adapter closes its
cursor on success but not when ``execute`` raises, so such cursors are left to the
garbage collector. aiosqlite runs each connection's calls on one thread fed by a queue;
:func:`close_cursors_on_their_thread` makes a cursor that is dropped unclosed hand its
close to that queue, so it is closed in order, on its own thread, and the event loop
never waits for a connection's mutex. ``tests/ops/test_prefect_server.py`` reproduces
the freeze and shows it gone.
"""

from __future__ import annotations

import sys


def close_cursors_on_their_thread() -> None:
    """Patch ``aiosqlite.Cursor``: a cursor dropped without ``close()`` is closed on its connection's thread."""
    from aiosqlite.cursor import Cursor

    if getattr(Cursor, "_freshet_closes_on_its_thread", False):
        return
    close = Cursor.close

    async def close_and_mark(self: Cursor) -> None:
        await close(self)
        self._freshet_closed = True

    def __del__(self: Cursor) -> None:
        if getattr(self, "_freshet_closed", False):
            return
        try:
            # the queue the connection's thread executes; the bound method keeps the sqlite3
            # cursor alive until that thread has closed it (a stopped connection never runs it,
            # and then nothing else uses that connection either)
            self._conn._tx.put_nowait((None, self._cursor.close))
        except Exception:  # interpreter shutdown, or a cursor that was never set up
            pass

    Cursor.close = close_and_mark
    Cursor.__del__ = __del__
    Cursor._freshet_closes_on_its_thread = True


def immediate_transactions() -> None:
    """Patch Prefect's SQLite configuration: every transaction it begins starts with ``BEGIN IMMEDIATE``.

    Prefect begins most write transactions ``DEFERRED``. One that reads first and writes
    after another connection has committed (``create_flow_run`` from a deployment reads the
    deployment, then inserts the run) cannot take the write lock from its stale snapshot:
    SQLite fails it at once with "database is locked", without waiting (its busy handler is
    not consulted), and the API answers 503. Prefect's client retries that after 2 s (the
    2 s "created" of triggered runs on SQLite in BENCHMARKS.md); the UI does not, and its
    Submit shows "Unknown error while creating flow run.". ``IMMEDIATE`` takes the write
    lock at ``BEGIN``, so a second writer waits in the busy handler (on its connection's
    thread, never the event loop's) instead of failing. Prefect already does this for the
    transactions it marks ``with_for_update``; reads outside a transaction are unchanged.
    """
    from prefect.server.database.configurations import AioSqliteConfiguration

    if getattr(AioSqliteConfiguration, "_freshet_immediate", False):
        return
    begin = AioSqliteConfiguration.begin_transaction

    def begin_transaction(self, session, with_for_update: bool = False):
        return begin(self, session, with_for_update=True)

    AioSqliteConfiguration.begin_transaction = begin_transaction
    AioSqliteConfiguration._freshet_immediate = True


def main(argv: list[str] | None = None) -> int:
    close_cursors_on_their_thread()
    immediate_transactions()
    from prefect.cli import app

    sys.argv = ["prefect", "server", *(sys.argv[1:] if argv is None else argv)]
    return app()


if __name__ == "__main__":
    sys.exit(main())
