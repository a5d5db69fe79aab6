"""Letting a burst of landings settle before training: the ``train`` flow's debounce, Prefect-free.

An event-started run looks no earlier than ``not_before`` (events Prefect dropped
meanwhile have landed by then), then waits for ``quiet`` seconds without a new manifest
entry, at most until ``deadline``. Landing files nobody announced are admitted on the way.
The manifest is read incrementally: each poll lists the folder and reads only new entries.
"""

from __future__ import annotations

import time
from typing import Any, Callable

from freshet.data.ingestion import ManifestReader, unknown_landing_files
from freshet.data.lake import Lake

POLL_SECONDS = 0.5


def settled_entries(lake: Lake, dataset: str, admit: Callable[[list[str]], Any], *, not_before: float,
                    quiet: float, deadline: float, log: Any, clock: Callable[[], float] = time.monotonic,
                    sleep: Callable[[float], None] = time.sleep) -> list[dict[str, Any]]:
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
            seen, last_change = len(entries), now
        if (now >= not_before and now - last_change >= quiet) or now >= deadline:
            return entries
        sleep(POLL_SECONDS)
