"""The train flow's debounce (``freshet.data.settle``) on a real local lake, with a hand-driven clock."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

from tests.conftest import DATASET, LakeHandle
from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import admit_file
from freshet.data.settle import entry_age, settled_entries, throttle_window_end
from freshet.settings import BUNDLED_CONTRACTS

RETAIL = load_contract(DATASET, BUNDLED_CONTRACTS)
LOG = logging.getLogger("test-settle")


class Clock:
    """Monotonic and wall time that move only when the code under test sleeps."""

    def __init__(self, wall: float) -> None:
        self.t, self.wall0, self.sleeps = 100.0, wall, []

    def monotonic(self) -> float:
        return self.t

    def wall(self) -> float:
        return self.wall0 + self.t - 100.0

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.t += s


def admitted_one(lake_env: LakeHandle) -> dict:
    frame = generate_retail_sales(seed=5, stores=1, items=2, days=10)
    assert admit_file(lake_env.lake, RETAIL, lake_env.land(frame, "one.csv")).status == "admitted"
    (entry,) = [lake_env.lake.read_json(p) for p in lake_env.lake.list(lake_env.lake.manifest_dir(DATASET), suffix=".json")]
    return entry


def settle(lake_env: LakeHandle, clock: Clock, quiet: float, not_before: float = 0.0) -> list[dict]:
    return settled_entries(lake_env.lake, DATASET, lambda uris: None, not_before=not_before, quiet=quiet,
                           deadline=clock.t + 60, log=LOG, clock=clock.monotonic, sleep=clock.sleep, wall=clock.wall)


def test_a_file_admitted_longer_ago_than_the_quiet_period_is_not_waited_for(lake_env: LakeHandle) -> None:
    entry = admitted_one(lake_env)
    admitted = datetime.fromisoformat(entry["admitted_at"]).timestamp()
    clock = Clock(wall=admitted + 5)  # the run looks 5 s after the admission
    assert [e["content_hash"] for e in settle(lake_env, clock, quiet=3)] == [entry["content_hash"]]
    assert clock.sleeps == []
    clock = Clock(wall=admitted + 1)  # positive control: 1 s after it, the run waits the 2 s left of quiet
    assert len(settle(lake_env, clock, quiet=3)) == 1
    assert sum(clock.sleeps) == 2.0


def test_not_before_holds_the_look_even_when_quiet(lake_env: LakeHandle) -> None:
    entry = admitted_one(lake_env)
    clock = Clock(wall=datetime.fromisoformat(entry["admitted_at"]).timestamp() + 60)
    assert len(settle(lake_env, clock, quiet=0, not_before=104.0)) == 1
    assert sum(clock.sleeps) == 4.0


def test_entry_age_is_clipped_and_tolerates_a_missing_timestamp() -> None:
    now = datetime(2026, 12, 3, 12, tzinfo=timezone.utc)
    at = lambda s: {"admitted_at": (now - timedelta(seconds=s)).isoformat()}  # noqa: E731
    assert entry_age(at(2), now.timestamp(), cap=3) == 2
    assert entry_age(at(10), now.timestamp(), cap=3) == 3
    assert entry_age(at(-5), now.timestamp(), cap=3) == 0  # a writer's clock ahead of ours: no credit
    assert entry_age({}, now.timestamp(), cap=3) == entry_age(None, now.timestamp(), cap=3) == 0


def test_the_throttle_window_ends_its_length_after_the_event() -> None:
    event_at = datetime.now(timezone.utc) - timedelta(seconds=4)
    end = throttle_window_end(10, event_at, clock=lambda: 1000.0)
    assert 1005.5 < end <= 1006.0  # 10 s after an event 4 s ago (less the test's own runtime)
    assert throttle_window_end(10, None, clock=lambda: 1000.0) == 1010.0
    assert throttle_window_end(10, event_at - timedelta(seconds=30), clock=lambda: 1000.0) == 1000.0


def test_a_landing_announced_by_nobody_is_admitted_while_settling(lake_env: LakeHandle) -> None:
    frame = generate_retail_sales(seed=6, stores=1, items=2, days=10)
    uri = lake_env.land(frame, "unannounced.csv")
    admitted: list[list[str]] = []

    def admit(uris: list[str]) -> None:
        admitted.append(uris)
        for u in uris:
            admit_file(lake_env.lake, RETAIL, u)

    clock = Clock(wall=datetime.now(timezone.utc).timestamp())
    entries = settled_entries(lake_env.lake, DATASET, admit, not_before=0, quiet=0, deadline=clock.t + 60, log=LOG,
                              clock=clock.monotonic, sleep=clock.sleep, wall=clock.wall)
    assert admitted == [[uri]] and len(entries) == 1
    assert entries[0]["uri"] == uri
