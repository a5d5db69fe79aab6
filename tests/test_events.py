"""``events.emit`` against a Prefect API that accepts connections and never answers (a stalled server).

A real TCP listener on 127.0.0.1 stands in for the stalled API: it accepts and reads, and sends
nothing back, which is what a server stuck behind SQLite's single writer looks like to a client.
"""

from __future__ import annotations

import socket
import threading

import pytest

from freshet import events


@pytest.fixture()
def stalled_api():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            accepted.append(conn)  # read nothing, answer nothing

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/api", accepted
    stop.set()
    thread.join()
    for conn in accepted:
        conn.close()
    server.close()


def test_an_emit_that_times_out_is_tried_again_then_fails_naming_the_event(stalled_api) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, accepted = stalled_api
    event = events.build_event(events.DATA_LANDED, "retail_sales", {"uris": ["a.csv"]}, ["a"],
                               related=[{"prefect.resource.id": "freshet.test", "prefect.resource.role": "test"}])
    with temporary_settings({PREFECT_API_URL: url}), pytest.raises(events.EmitError) as info:
        events.emit(event, timeout=1.0, attempts=2)
    message = str(info.value)
    assert f"could not deliver data.landed ({event.id})" in message
    assert "after 2 attempt(s): TimeoutError" in message
    assert len(accepted) >= 2, "the second attempt opened a connection of its own"
