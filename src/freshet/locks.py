"""One training at a time per dataset, through a Prefect global concurrency limit.

The limit ``freshet-train-<dataset>`` (one slot) is created on first use. Its
slot is a lease: if a worker dies mid-training, the lease expires and the next
run proceeds, so a crash never wedges a dataset.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from prefect.client.orchestration import get_client
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists

LEASE_SECONDS = 60.0


def lock_name(dataset: str, kind: str = "train") -> str:
    return f"freshet-{kind}-{dataset.replace('_', '-')}"


def ensure_lock(dataset: str, kind: str = "train") -> str:
    """Create the dataset's one-slot limit if it does not exist (safe to race)."""
    name = lock_name(dataset, kind)
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(name, 1)
        except ObjectAlreadyExists:
            pass  # another run created it between our read and our create
    return name


@contextmanager
def dataset_lock(dataset: str, kind: str = "train") -> Iterator[None]:
    """Hold the dataset's training (or ``kind="forecast"``: forecasting) slot for the duration of the block."""
    with concurrency(ensure_lock(dataset, kind), occupy=1, strict=True, lease_duration=LEASE_SECONDS):
        yield
