"""Retraining policies: hand-made traces with known schedules, known staleness, and causality."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

import pytest

from freshet.lab.policies import (
    Arrival,
    Debounced,
    EventDriven,
    FixedInterval,
    Gated,
    Never,
    RoundRobin,
    Trace,
    TrainAt,
    Weekly,
    checked_schedule,
    clock_ticks,
    default_policies,
)
from freshet.lab.metrics import inclusion_times, lag_at, share_lagging, staleness
from freshet.lab.traces import synthetic_trace

MONDAY = datetime(2025, 3, 3, tzinfo=timezone.utc)  # 2025-03-03 is a Monday
H = timedelta(hours=1)
DAY = timedelta(days=1)


def arrival(dataset: str, batch: str, landed_at: datetime, rows: int = 10) -> Arrival:
    return Arrival(dataset, batch, landed_at, rows, date(2025, 1, 1), date(2025, 1, 1))


def trace_of(*arrivals: Arrival, days: float = 14, history: tuple[str, ...] = ("a",), history_rows: int = 1000) -> Trace:
    """A trace starting Monday 00:00 with a history batch per named dataset."""
    hist = tuple(arrival(d, "history", MONDAY, history_rows) for d in history)
    return Trace(hist + arrivals, MONDAY, MONDAY + timedelta(days=days))


def daily_trace(days: int = 14, at: time = time(10, 0), dataset: str = "a") -> Trace:
    """One batch a day at ``at``, from Monday on."""
    return trace_of(*(arrival(dataset, f"d{n:02d}", datetime.combine((MONDAY + n * DAY).date(), at, tzinfo=timezone.utc))
                      for n in range(days)), days=days, history=(dataset,))


def at(day: int, hours: float = 0) -> datetime:
    return MONDAY + day * DAY + timedelta(hours=hours)


# ----------------------------------------------------------------- the trace
def test_trace_sorts_arrivals_and_splits_history_from_the_window() -> None:
    late, early = arrival("a", "late", at(2)), arrival("a", "early", at(1))
    trace = trace_of(late, early, arrival("b", "x", at(1, 5)), history=("a", "b"))
    assert [a.batch for a in trace.of("a")] == ["history", "early", "late"]
    assert trace.datasets == ("a", "b")
    assert [a.batch for a in trace.history("a")] == ["history"]
    assert [a.batch for a in trace.new_arrivals("a")] == ["early", "late"]
    assert [a.batch for a in trace.landed_by("a", at(1, 23))] == ["history", "early"]


@pytest.mark.parametrize(
    ("arrivals", "start", "end", "message"),
    [
        ((arrival("a", "x", MONDAY), arrival("a", "x", at(1))), MONDAY, at(2), "unique"),
        ((), MONDAY, MONDAY, "before it starts"),
    ],
)
def test_trace_rejects_inconsistent_input(arrivals, start, end, message) -> None:
    with pytest.raises(ValueError, match=message):
        Trace(arrivals, start, end)


# ----------------------------------------------------------------- clocks
@pytest.mark.parametrize(
    ("start", "end", "clock", "every", "expected"),
    [
        (MONDAY, at(3), time(9), DAY, [at(0, 9), at(1, 9), at(2, 9)]),
        (at(0, 9), at(2, 9), time(9), DAY, [at(1, 9), at(2, 9)]),  # (start, end]: not the start itself
        (at(0, 10), at(1), time(9), DAY, []),
        (MONDAY, at(0, 12), time(0), 4 * H, [at(0, 4), at(0, 8), at(0, 12)]),
    ],
)
def test_clock_ticks(start, end, clock, every, expected) -> None:
    assert clock_ticks(start, end, clock, every) == expected


def test_fixed_interval_trains_every_dataset_at_every_tick() -> None:
    trace = trace_of(days=2, history=("a", "b"))
    assert FixedInterval().schedule(trace) == [TrainAt("a", at(0, 9)), TrainAt("b", at(0, 9)),
                                               TrainAt("a", at(1, 9)), TrainAt("b", at(1, 9))]


def test_weekly_trains_on_mondays_only() -> None:
    trace = trace_of(days=15)
    assert Weekly().schedule(trace) == [TrainAt("a", at(0, 9)), TrainAt("a", at(7, 9)), TrainAt("a", at(14, 9))]
    assert Weekly(weekday=2, at=time(18)).schedule(trace) == [TrainAt("a", at(2, 18)), TrainAt("a", at(9, 18))]


def test_round_robin_gives_one_dataset_each_slot_in_turn() -> None:
    trace = trace_of(days=7, history=("c", "a", "b"))
    assert [t.dataset for t in RoundRobin().schedule(trace)] == ["a", "b", "c", "a", "b", "c", "a"]
    assert [t.at for t in RoundRobin().schedule(trace)] == [at(n, 9) for n in range(7)]


# ----------------------------------------------------------------- event-driven family
def test_event_driven_trains_once_per_new_arrival_at_its_landing() -> None:
    trace = trace_of(arrival("a", "x", at(1, 6)), arrival("a", "y", at(1, 6.1)), arrival("a", "z", at(20)), days=7)
    assert EventDriven().schedule(trace) == [TrainAt("a", at(1, 6)), TrainAt("a", at(1, 6.1))]  # z is after the end


@pytest.mark.parametrize(
    ("offsets_h", "expected_h"),
    [
        pytest.param([0], [1], id="single-file"),
        pytest.param([0, 1 / 6, 2 / 6], [1 + 2 / 6], id="burst-then-quiet"),
        pytest.param([0, 2], [1, 3], id="two-separate-files"),
        pytest.param([0, 1], [2], id="arrival-exactly-at-the-deadline-joins-the-run"),
        pytest.param([k / 2 for k in range(17)], [6, 9], id="steady-trickle-bounded-by-max-wait"),
    ],
)
def test_debounce_waits_for_quiet_bounded_by_max_wait(offsets_h, expected_h) -> None:
    trace = trace_of(*(arrival("a", f"b{k}", at(1, h)) for k, h in enumerate(offsets_h)), days=7)
    assert Debounced(quiet=H, max_wait=6 * H).schedule(trace) == [TrainAt("a", at(1, h)) for h in expected_h]


def test_debounce_drops_a_firing_after_the_end_and_checks_its_parameters() -> None:
    trace = trace_of(arrival("a", "x", at(0, 23.5)), days=1)
    assert Debounced(quiet=H, max_wait=6 * H).schedule(trace) == []
    with pytest.raises(ValueError, match="quiet <= max_wait"):
        Debounced(quiet=2 * H, max_wait=H)


def test_gated_trains_when_new_rows_reach_a_share_of_the_trained_rows() -> None:
    # history 1000 rows, 5%: the first gate is 50 rows (3 files of 20), then 5% of 1060 = 53 (3 more files)
    trace = trace_of(*(arrival("a", f"b{k}", at(k + 1), rows=20) for k in range(7)), days=10, history_rows=1000)
    assert Gated(min_new_share=0.05).schedule(trace) == [TrainAt("a", at(3)), TrainAt("a", at(6))]


def test_gated_max_wait_bounds_a_trickle() -> None:
    trace = trace_of(arrival("a", "x", at(1), rows=1), arrival("a", "y", at(5), rows=1), days=10)
    assert Gated(min_new_share=0.5).schedule(trace) == []
    assert Gated(min_new_share=0.5, max_wait=2 * DAY).schedule(trace) == [TrainAt("a", at(3)), TrainAt("a", at(7))]


def test_never_schedules_nothing() -> None:
    assert Never().schedule(daily_trace()) == []


# ----------------------------------------------------------------- staleness with known answers
def _served(policy, trace: Trace, latency: timedelta = timedelta(0)):
    """Staleness if every scheduled run trained on everything landed and was promoted."""
    runs = [(t.at, t.at + latency) for t in policy.schedule(trace)]
    new = trace.new_arrivals("a")
    return new, inclusion_times(new, runs)


def test_weekly_policy_on_a_daily_trace_is_up_to_seven_days_stale() -> None:
    trace = daily_trace(days=14, at=time(10))  # batches land at 10:00, the weekly run is Monday 09:00
    new, included = _served(Weekly(), trace)
    waits, censored = staleness(new, included, trace.end)
    first_week = [w / H for w in waits[:7]]
    assert first_week == [7 * 24 - 1 - 24 * k for k in range(7)]  # Monday's batch waits 6 days 23 hours ...
    assert max(first_week) == 167 and max(waits) < 7 * DAY
    assert censored == 7  # the second week's batches are only served after the end (Monday 00:00 of week 3)


def test_daily_and_event_driven_staleness_on_a_daily_trace() -> None:
    trace = daily_trace(days=7, at=time(6))
    new, included = _served(FixedInterval(), trace)
    waits, censored = staleness(new, included, trace.end)
    assert (waits, censored) == ([3 * H] * 7, 0)  # 06:00 to 09:00, every day
    new, included = _served(EventDriven(), trace, latency=10 * timedelta(minutes=1))
    assert staleness(new, included, trace.end) == ([timedelta(minutes=10)] * 7, 0)


def test_share_of_time_lagging_and_lag_curve() -> None:
    trace = daily_trace(days=14, at=time(10))
    new, included = _served(Weekly(), trace)
    # some batch is older than 24 h from Tuesday 10:00 (Monday's batch + 24 h) to the next Monday 09:00;
    # in the second week until the end (Monday 00:00), when it is still waiting
    expected = ((6 * DAY - H) + (6 * DAY - 10 * H)) / (14 * DAY)
    assert share_lagging(new, included, trace.start, trace.end, 24 * H) == pytest.approx(expected)
    assert share_lagging(new, included, trace.start, trace.end, 7 * DAY) == 0.0
    assert lag_at(new, included, at(3, 10)) == 3 * DAY  # Monday 10:00's batch is the oldest still waiting
    assert lag_at(new, included, at(7, 9)) == timedelta(0)  # just served
    assert lag_at(new, included, at(0, 9)) == timedelta(0)  # nothing landed yet


# ----------------------------------------------------------------- properties of every shipped policy
@pytest.fixture(scope="module")
def irregular() -> Trace:
    trace, _, _ = synthetic_trace(datasets=3, days=21, seed=3)
    return trace


@pytest.mark.parametrize("policy", default_policies(), ids=lambda p: p.name)
def test_policies_are_pure_and_stay_inside_the_window(policy, irregular: Trace) -> None:
    first = checked_schedule(policy, irregular)
    assert first == checked_schedule(policy, irregular)
    assert all(irregular.start < t.at <= irregular.end for t in first)


@pytest.mark.parametrize("policy", default_policies(), ids=lambda p: p.name)
def test_policies_are_causal(policy, irregular: Trace) -> None:
    """A decision at time t is the same whether or not the trace holds arrivals after t."""
    full = policy.schedule(irregular)
    for cut in sorted({a.landed_at for a in irregular.arrivals if a.landed_at > irregular.start})[::3]:
        prefix = Trace(tuple(a for a in irregular.arrivals if a.landed_at < cut), irregular.start, irregular.end)
        assert [t for t in policy.schedule(prefix) if t.at < cut] == [t for t in full if t.at < cut], cut


def test_the_irregular_trace_has_bursts_quiet_days_and_late_files(irregular: Trace) -> None:
    gaps = {d: [b.landed_at - a.landed_at for a, b in zip(irregular.new_arrivals(d), irregular.new_arrivals(d)[1:])]
            for d in irregular.datasets}
    assert any(g < timedelta(minutes=15) for gs in gaps.values() for g in gs), "no burst"
    assert all(any(g > 36 * H for g in gs) for gs in gaps.values()), "a dataset without a quiet day"
    late = [a for a in irregular.arrivals if a.landed_at > irregular.start
            and any(b.landed_at < a.landed_at and b.max_time > a.max_time for b in irregular.of(a.dataset))]
    assert late, "no late file (a batch landing after newer data)"


# ----------------------------------------------------------------- extending
@dataclass(frozen=True)
class EveryOtherArrival:
    name: str = "every 2nd file"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        return [TrainAt(a.dataset, a.landed_at) for d in trace.datasets for a in trace.new_arrivals(d)[1::2]]


def test_a_user_policy_needs_only_a_name_and_a_schedule() -> None:
    trace = daily_trace(days=4)
    assert checked_schedule(EveryOtherArrival(), trace) == [TrainAt("a", at(1, 10)), TrainAt("a", at(3, 10))]


@pytest.mark.parametrize(
    ("decision", "message"),
    [(TrainAt("zz", at(1)), "unknown dataset"), (TrainAt("a", MONDAY), "outside"), (TrainAt("a", at(30)), "outside")],
)
def test_checked_schedule_refuses_impossible_decisions(decision, message) -> None:
    @dataclass(frozen=True)
    class Broken:
        name: str = "broken"

        def schedule(self, trace: Trace) -> list[TrainAt]:
            return [decision]

    with pytest.raises(ValueError, match=message):
        checked_schedule(Broken(), daily_trace(days=4))
