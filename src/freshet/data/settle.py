"""Letting a burst of landings settle before training: the ``train`` flow's debounce, Prefect-free.

A run waits until no manifest entry is newer than ``quiet`` seconds (the newest entry's
``admitted_at`` counts, so a file admitted long enough ago is not waited for again), not
before ``not_before`` and at most until ``deadline``. Landing files nobody announced are
admitted on the way. The manifest is read incrementally: each poll lists the folder and
reads only new entries.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Callable

from freshet.data.ingestion import ManifestReader, unknown_landing_files
from freshet.data.lake import Lake

POLL_SECONDS = 0.5


def settled_entries(lake: Lake, dataset: str, admit: Callable[[list[str]], Any], *, not_before: float,
                    quiet: float, deadline: float, log: Any, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep, wall: Callable[[], float] = time.time,
                    ) -> list[dict[str, Any]]:
    """The manifest entries once no file has landed for ``quiet`` seconds (times on ``clock``'s scale)."""
    manifest = ManifestReader(lake, dataset)
    seen, last_change = -1, clock()
    while True:
        entries = manifest.entries()
        unknown = unknown_landing_files(lake, dataset, entries, manifest.aliases())
        if unknown:
            log.info("admitting %d landing file(s) nobody announced", len(unknown))
            admit(unknown)
            entries = manifest.entries()
        now = clock()
        if len(entries) != seen:
            if seen >= 0:
                log.info("debounce: %d new file(s) landed; waiting for %.0f s of quiet", len(entries) - seen, quiet)
            seen, last_change = len(entries), now - entry_age(entries[-1] if entries else None, wall(), quiet)
        if (now >= not_before and now - last_change >= quiet) or now >= deadline:
            return entries
        sleep(POLL_SECONDS)


def entry_age(entry: dict[str, Any] | None, now: float, cap: float) -> float:
    """Seconds since a manifest entry was admitted (epoch ``now``), within [0, cap]; 0 when unknown."""
    try:
        admitted = datetime.fromisoformat(entry["admitted_at"]).timestamp()  # type: ignore[index]
    except (TypeError, KeyError, ValueError):
        return 0.0
    return min(max(now - admitted, 0.0), cap)


def throttle_window_end(throttle: float, event_at: datetime | None, clock: Callable[[], float] = time.monotonic) -> float:
    """When (on ``clock``'s scale) the trigger's throttle window after an event at ``event_at`` ends:
    the files whose events Prefect dropped in that window have landed by then."""
    since_event = (datetime.now(timezone.utc) - event_at).total_seconds() if event_at else 0.0
    return clock() + max(0.0, throttle - since_event)
