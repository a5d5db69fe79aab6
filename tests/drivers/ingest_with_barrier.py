"""Fault-injection driver: run the ``ingest`` flow, pausing before each event emission.

The test stops the Prefect server while the flow waits here, then releases the
barrier: the emission that follows is the real one, against a server that is
really down. The barrier only controls timing; nothing is mocked.

    python ingest_with_barrier.py BARRIER_DIR DATASET URI [URI ...]
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the checkout, for flows/

from freshet import events  # noqa: E402

barrier = Path(sys.argv[1])
real_emit = events.emit


def emit_after_barrier(event, timeout: float = 20.0):
    (barrier / "ready").touch()
    deadline = time.monotonic() + 300
    while not (barrier / "go").exists():
        if time.monotonic() > deadline:
            raise SystemExit("the test never released the barrier")
        time.sleep(0.1)
    return real_emit(event, timeout)


events.emit = emit_after_barrier

from flows.ingest import ingest  # noqa: E402 - after the barrier is in place

state = ingest(dataset=sys.argv[2], uris=sys.argv[3:], return_state=True)
print(f"FINAL STATE {state.type.value}: {state.message}", flush=True)
