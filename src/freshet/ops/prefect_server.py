"""``prefect server start``, with one fix for Prefect on SQLite: the stack's server runs this.

    python -m freshet.ops.prefect_server start --host 127.0.0.1 --port 4200

Same arguments as ``prefect server start``. Two fixes, for SQLite only (PostgreSQL is
untouched): a SQLite cursor is finalised on its connection's own thread, never on the event
loop's (the freeze below); and every transaction Prefect begins takes SQLite's write lock
at once (:func:`immediate_transactions`: no more instant "database is locked" 503s).
Both patched internals are checked at import against the source they were written for
(``freshet.upstream``): an upgrade that changed them stops the server with advice.

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

from freshet.upstream import Expectation, verify

# What the two patches below depend on, as checked (see freshet.upstream).
AIOSQLITE_CURSOR = Expectation(
    what="freshet.ops.prefect_server.close_cursors_on_their_thread (an unclosed aiosqlite cursor is closed on "
         "its connection's thread)",
    package="aiosqlite", checked="0.22.1",
    sources={
        # the cursor keeps its connection in _conn and the sqlite3 cursor in _cursor; close() queues _cursor.close
        "aiosqlite.cursor:Cursor.__init__": "d7a65c29a8b86b54550fd136d51691dd4afd44d6e7b95998735c962874ce3f8c",
        "aiosqlite.cursor:Cursor.close": "57f80074d0d5b187e3f6ffe11eb14a7725e33b36281145b391bcdb857a8736ab",
        # the connection's thread executes (future, function) pairs from _tx and accepts future=None
        "aiosqlite.core:Connection.__init__": "3aed416ac99323f1df06749851cebf16d34877b4bd38dc76f1f730e5a0809eac",
        "aiosqlite.core:_connection_worker_thread": "17e364bc23e051c3b645d00675390cffd7511c64a5f2f44d1f6ccc980461032b",
    },
    advice="Read the new aiosqlite.cursor.Cursor and aiosqlite.core (does a dropped cursor still need closing "
           "on its connection's thread? is (None, fn) on Connection._tx still executed?), then update "
           "close_cursors_on_their_thread and these hashes, or pin aiosqlite==0.22.1; "
           "tests/ops/test_prefect_server.py reproduces the freeze the patch prevents.",
)
IMMEDIATE_TRANSACTIONS = Expectation(
    what="freshet.ops.prefect_server.immediate_transactions (every SQLite transaction Prefect begins is "
         "BEGIN IMMEDIATE)",
    package="prefect", checked="3.9.1",
    sources={
        # begin_transaction(self, session, with_for_update=False): with_for_update=True means BEGIN IMMEDIATE
        "prefect.server.database.configurations:AioSqliteConfiguration.begin_transaction":
            "c9ea33bf1b494ec8d39c907dfbb2927ba29668ad639677bf441fff25fe2649bc",
    },
    advice="Read the new AioSqliteConfiguration.begin_transaction in prefect/server/database/configurations.py "
           "(does with_for_update=True still begin IMMEDIATE? does Prefect now do it itself?), then update "
           "immediate_transactions and this hash, or pin prefect==3.9.1; tests/ops/test_prefect_server.py "
           "reproduces the 'database is locked' the patch prevents.",
)


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


# Checked at import: the server this module starts must not run with a patch that no longer fits.
verify(AIOSQLITE_CURSOR)
verify(IMMEDIATE_TRANSACTIONS)

if __name__ == "__main__":
    sys.exit(main())
