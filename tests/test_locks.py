"""``locks._enter``: taking a slot is tried again when the API fails to answer.

The failing acquisition is a hand-made context manager raising Prefect's own
``ConcurrencySlotAcquisitionError`` (what ``concurrency()`` raises when its request to an
overloaded server fails); making a real server fail on exactly one request is not possible here.
The slots themselves are exercised against a real server in tests/flows and tests/e2e.
"""

from __future__ import annotations

from contextlib import ExitStack, contextmanager

import pytest
from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError

from freshet import locks


def _flaky(failures: int, log: list[str]):
    @contextmanager
    def slot():
        if len([x for x in log if x == "fail"]) < failures:
            log.append("fail")
            raise ConcurrencySlotAcquisitionError("Unable to acquire concurrency slots on ['freshet-train-slots']")
        log.append("held")
        try:
            yield
        finally:
            log.append("released")

    return slot


def test_a_failed_acquisition_is_tried_again_and_the_slot_is_released_with_the_stack(monkeypatch):
    monkeypatch.setattr(locks, "ACQUIRE_BACKOFF_SECONDS", 0.0)
    log: list[str] = []
    with ExitStack() as stack:
        locks._enter(stack, _flaky(2, log), attempts=3)
        assert log == ["fail", "fail", "held"]
    assert log[-1] == "released"


def test_an_acquisition_failing_every_attempt_raises_the_last_error(monkeypatch):
    monkeypatch.setattr(locks, "ACQUIRE_BACKOFF_SECONDS", 0.0)
    log: list[str] = []
    with ExitStack() as stack, pytest.raises(ConcurrencySlotAcquisitionError, match="freshet-train-slots"):
        locks._enter(stack, _flaky(5, log), attempts=3)
    assert log == ["fail", "fail", "fail"]
