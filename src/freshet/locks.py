"""Training slots, as Prefect global concurrency limits (created on first use).

Three limits, taken in this order by a ``train`` run:

- ``freshet-train-wait-<dataset>`` (one slot): the dataset's waiting room. A run
  that finds it taken (for ``WAITING_ROOM_PROBE_SECONDS``) ends: the run already waiting has not read the
  manifest yet, so it will train on this run's (already admitted) data too. So a
  dataset never has more than one run waiting, however many events arrive while it
  trains. A forced run skips the waiting room (``force`` must not be lost).
- ``freshet-train-<dataset>`` (one slot): one training at a time per dataset. The
  waiting-room slot is released once this one is held, before the manifest is read.
- ``freshet-train-slots`` (``FRESHET_TRAIN_SLOTS``, default 2): the machine's
  training capacity, shared by every dataset, held only while fitting, not while a
  run waits for its dataset or for a burst to settle. A busy dataset therefore
  cannot hold capacity another dataset needs (the deployment has no concurrency
  limit of its own).

Every slot is a lease: if a worker dies mid-training, the lease expires and the
next run proceeds, so a crash never wedges a dataset. Taking a slot is tried again
(``ACQUIRE_ATTEMPTS``) when the API fails to answer (an overloaded SQLite server timed
out a ``freshet-train-slots`` request in the topology benchmark and failed the run); a
request that did reach the server only leaves a lease that expires.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

from freshet.upstream import Expectation, verify

# Prefect's private exception for "the API did not grant the slots", which _enter retries, and the
# TimeoutError subclass dataset_lock takes as "another run is waiting" (see freshet.upstream).
PRIVATE_EXCEPTIONS = Expectation(
    what="freshet.locks (retrying ConcurrencySlotAcquisitionError, Prefect's private exception for a slot "
         "request the API did not answer)",
    package="prefect", checked="3.9.1",
    sources={
        "prefect.concurrency._asyncio:ConcurrencySlotAcquisitionError":
            "a3a2e12d62fdc4760de9b4a276be46a0465544fa1894b91d910ee6d9e87a1605",
        "prefect.concurrency._asyncio:AcquireConcurrencySlotTimeoutError":
            "0ba9634456ec8cd30c0cf8a3388f7b5346393d617a47fe6cec3fec041e0e6d92",
        # raises the first for an HTTP error or any failure to answer, the second on timeout
        "prefect.concurrency._asyncio:aacquire_concurrency_slots_with_lease":
            "a0e533e8967eb211806f5e9da07cc2a3e3792d31e3e83ccdb95a3dd7f6fec8fc",
    },
    advice="Read the new prefect/concurrency/_asyncio.py (which exception does a failed or timed-out slot "
           "request raise now?), then update _enter and dataset_lock in freshet/locks.py and these hashes, "
           "or pin prefect==3.9.1.",
)
verify(PRIVATE_EXCEPTIONS)  # at import, before anything relies on it

from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError  # noqa: E402 - checked just above

LEASE_SECONDS = 60.0
TRAIN_SLOTS = "freshet-train-slots"
# How long a run tries for the waiting room before concluding another run holds it. Generous on
# purpose: a timeout also fires when the server is merely slow to answer (1 s did, on a loaded
# SQLite server, and a run wrongly handed its data to a waiter that did not exist). Trying for
# longer is always safe: if the waiter takes the dataset's lock meanwhile, this run waits instead.
WAITING_ROOM_PROBE_SECONDS = 30.0
ACQUIRE_ATTEMPTS = 3
ACQUIRE_BACKOFF_SECONDS = 2.0


def _enter(stack: ExitStack, make: Callable[[], AbstractContextManager], attempts: int = ACQUIRE_ATTEMPTS) -> None:
    """Enter ``make()`` on ``stack``; a failed acquisition (the API did not answer) is tried again with backoff."""
    for attempt in range(1, attempts + 1):
        try:
            stack.enter_context(make())
            return
        except ConcurrencySlotAcquisitionError:
            if attempt == attempts:
                raise
            time.sleep(ACQUIRE_BACKOFF_SECONDS * attempt)


def lock_name(dataset: str, kind: str = "train") -> str:
    return f"freshet-{kind}-{dataset.replace('_', '-')}"


def waiting_room_name(dataset: str, kind: str = "train") -> str:
    return f"freshet-{kind}-wait-{dataset.replace('_', '-')}"


def ensure_lock(dataset: str, kind: str = "train") -> str:
    """The dataset's one-slot limit for ``kind`` ("train" or "forecast"), created if needed."""
    return ensure_limit(lock_name(dataset, kind), 1)


def ensure_limit(name: str, limit: int) -> str:
    """Create the limit, or set its size, if needed (safe to race)."""
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, limit)
        except ObjectAlreadyExists:
            pass  # another run created it between our read and our create
    return name


@contextmanager
def dataset_lock(dataset: str, queue: bool = True, kind: str = "train") -> Iterator[bool]:
    """Hold the dataset's training (``kind="forecast"``: forecasting) slot for the block; yields
    False (holding nothing) when ``queue`` and another run is already waiting for it."""
    with ExitStack() as held:
        waiting = None
        if queue:
            waiting = ExitStack()
            try:
                waiting.enter_context(concurrency(ensure_limit(waiting_room_name(dataset, kind), 1), occupy=1, strict=True,
                                                  timeout_seconds=WAITING_ROOM_PROBE_SECONDS,
                                                  lease_duration=LEASE_SECONDS))
            except TimeoutError:
                yield False
                return
            held.push(waiting)  # released on any error while waiting for the lock below
        _enter(held, lambda: concurrency(ensure_lock(dataset, kind), occupy=1, strict=True, lease_duration=LEASE_SECONDS))
        if waiting is not None:
            waiting.close()  # the next arrival may wait now: this run reads the manifest after this point
        yield True


@contextmanager
def training_slot(slots: int) -> Iterator[None]:
    """Hold one of the machine's ``slots`` training slots (shared by every dataset)."""
    with ExitStack() as held:
        _enter(held, lambda: concurrency(ensure_limit(TRAIN_SLOTS, slots), occupy=1, strict=True,
                                         lease_duration=LEASE_SECONDS))
        yield
