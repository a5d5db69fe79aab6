"""Retraining policies for the scheduling lab: pure functions from an arrival trace to training times.

A policy answers one question: given what lands, and when, at which moments does
it start a training run for which dataset? ``schedule(trace)`` returns those
moments. It is a pure function of the trace (no I/O, no clock, no randomness), so
it can be tested on hand-made traces with known answers, and it must be causal:
a training it schedules at time ``t`` may depend only on arrivals landed at or
before ``t`` (``tests/lab/test_policies.py`` checks every shipped policy for this).

What happens at a scheduled moment is the replay's business
(``freshet.lab.engine``), and follows ``train``: the run takes the dataset's training
slot, reads what has landed by then, ends as "nothing new" if a model was already
trained on exactly that data, and otherwise trains, evaluates and maybe promotes.

Arrivals that landed at or before ``trace.start`` are the history: every policy
starts from a model trained on them, so policies schedule only in
``(trace.start, trace.end]``.

Adding a policy: write a frozen dataclass with a ``name`` and a
``schedule(self, trace) -> list[TrainAt]`` method, e.g.::

    @dataclass(frozen=True)
    class EveryOtherArrival:
        name: str = "every 2nd file"

        def schedule(self, trace: Trace) -> list[TrainAt]:
            return [TrainAt(a.dataset, a.landed_at)
                    for d in trace.datasets for a in trace.new_arrivals(d)[1::2]]

and pass it to ``freshet.lab.run.run_lab(..., policies=[*default_policies(), EveryOtherArrival()])``.
Reads no settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import NamedTuple, Protocol, runtime_checkable


@dataclass(frozen=True)
class Arrival:
    """One landed batch (a file admitted to the lake): what a ``data.landed`` event announces."""

    dataset: str
    batch: str  # unique id, e.g. the manifest's content hash
    landed_at: datetime
    rows: int
    min_time: date | datetime
    max_time: date | datetime


@dataclass(frozen=True)
class Trace:
    """Every arrival of every dataset, oldest first, and the replayed window ``(start, end]``."""

    arrivals: tuple[Arrival, ...]
    start: datetime
    end: datetime
    _by_dataset: dict[str, tuple[Arrival, ...]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise ValueError(f"trace ends ({self.end}) before it starts ({self.start})")
        ordered = tuple(sorted(self.arrivals, key=lambda a: (a.landed_at, a.dataset, a.batch)))
        if len({(a.dataset, a.batch) for a in ordered}) != len(ordered):
            raise ValueError("batch ids must be unique per dataset")
        object.__setattr__(self, "arrivals", ordered)
        groups: dict[str, list[Arrival]] = {}
        for a in ordered:
            groups.setdefault(a.dataset, []).append(a)
        object.__setattr__(self, "_by_dataset", {d: tuple(v) for d, v in sorted(groups.items())})

    @property
    def datasets(self) -> tuple[str, ...]:
        return tuple(self._by_dataset)

    def of(self, dataset: str) -> tuple[Arrival, ...]:
        """Every arrival of one dataset, oldest first."""
        return self._by_dataset.get(dataset, ())

    def history(self, dataset: str) -> tuple[Arrival, ...]:
        """Arrivals landed at or before the start: what every policy's first model is trained on."""
        return tuple(a for a in self.of(dataset) if a.landed_at <= self.start)

    def new_arrivals(self, dataset: str) -> tuple[Arrival, ...]:
        """Arrivals inside the replayed window ``(start, end]``."""
        return tuple(a for a in self.of(dataset) if self.start < a.landed_at <= self.end)

    def landed_by(self, dataset: str, moment: datetime) -> tuple[Arrival, ...]:
        """What a run starting at ``moment`` can read: arrivals landed at or before it."""
        return tuple(a for a in self.of(dataset) if a.landed_at <= moment)


class TrainAt(NamedTuple):
    """A policy's decision: start a training run for ``dataset`` at ``at``."""

    dataset: str
    at: datetime


@runtime_checkable
class Policy(Protocol):
    """A retraining policy: a name for reports and a pure, causal schedule."""

    name: str

    def schedule(self, trace: Trace) -> list[TrainAt]: ...


def clock_ticks(start: datetime, end: datetime, at: time, every: timedelta) -> list[datetime]:
    """Wall-clock moments ``at`` (in ``start``'s time zone), one ``every`` apart, inside ``(start, end]``."""
    tick = datetime.combine(start.date(), at, tzinfo=start.tzinfo)
    while tick <= start:
        tick += every
    out = []
    while tick <= end:
        out.append(tick)
        tick += every
    return out


def _sorted(items: list[TrainAt]) -> list[TrainAt]:
    return sorted(items, key=lambda t: (t.at, t.dataset))


@dataclass(frozen=True)
class FixedInterval:
    """Retrain every dataset on a clock, e.g. daily at 09:00, whether or not anything landed."""

    every: timedelta = timedelta(days=1)
    at: time = time(9, 0)
    name: str = "daily 09:00"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        return _sorted([TrainAt(d, t) for t in clock_ticks(trace.start, trace.end, self.at, self.every)
                        for d in trace.datasets])


@dataclass(frozen=True)
class Weekly:
    """Retrain every dataset once a week, e.g. Monday 09:00 (weekday 0 is Monday)."""

    weekday: int = 0
    at: time = time(9, 0)
    name: str = "weekly Mon 09:00"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        ticks = clock_ticks(trace.start, trace.end, self.at, timedelta(days=1))
        return _sorted([TrainAt(d, t) for t in ticks if t.weekday() == self.weekday for d in trace.datasets])


@dataclass(frozen=True)
class RoundRobin:
    """One dataset per slot, in turn (alphabetical), e.g. one training each day at 09:00."""

    every: timedelta = timedelta(days=1)
    at: time = time(9, 0)
    name: str = "round-robin daily"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        names = trace.datasets
        if not names:
            return []
        ticks = clock_ticks(trace.start, trace.end, self.at, self.every)
        return [TrainAt(names[i % len(names)], t) for i, t in enumerate(ticks)]


@dataclass(frozen=True)
class EventDriven:
    """Train on every ``data.landed``: one run per arrival, at its landing time (freshet's default)."""

    name: str = "event-driven"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        return _sorted([TrainAt(a.dataset, a.landed_at) for d in trace.datasets for a in trace.new_arrivals(d)])


def _debounce(times: Sequence[datetime], quiet: timedelta, max_wait: timedelta, end: datetime) -> list[datetime]:
    """Fire ``quiet`` after the last of a run of arrivals, or ``max_wait`` after its first, whichever is sooner."""
    out: list[datetime] = []
    first = last = None
    for t in times:
        if first is not None and t > min(last + quiet, first + max_wait):
            out.append(min(last + quiet, first + max_wait))
            first = None
        if first is None:
            first = t
        last = t
    if first is not None:
        out.append(min(last + quiet, first + max_wait))
    return [t for t in out if t <= end]


@dataclass(frozen=True)
class Debounced:
    """Event-driven, but wait for a quiet period (no arrival for ``quiet``), at most ``max_wait`` after the first."""

    quiet: timedelta = timedelta(hours=1)
    max_wait: timedelta = timedelta(hours=6)
    name: str = "debounce 1h / max 6h"

    def __post_init__(self) -> None:
        if self.quiet < timedelta(0) or self.max_wait < self.quiet:
            raise ValueError(f"need 0 <= quiet <= max_wait, got quiet={self.quiet}, max_wait={self.max_wait}")

    def schedule(self, trace: Trace) -> list[TrainAt]:
        return _sorted([TrainAt(d, t) for d in trace.datasets
                        for t in _debounce([a.landed_at for a in trace.new_arrivals(d)], self.quiet, self.max_wait,
                                           trace.end)])


@dataclass(frozen=True)
class Gated:
    """Event-driven, but only once the rows landed since the last training reach ``min_new_share`` of the
    rows that training used (``max_wait``, if set, bounds how long a trickle of small files can wait)."""

    min_new_share: float = 0.01
    max_wait: timedelta | None = None
    name: str = "gated >= 1% new rows"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        out: list[TrainAt] = []
        for d in trace.datasets:
            trained_rows = sum(a.rows for a in trace.history(d))
            new_rows, first_new = 0, None
            for a in trace.new_arrivals(d):
                if self.max_wait is not None and first_new is not None and a.landed_at > first_new + self.max_wait:
                    out.append(TrainAt(d, first_new + self.max_wait))
                    trained_rows, new_rows, first_new = trained_rows + new_rows, 0, None
                new_rows += a.rows
                first_new = first_new or a.landed_at
                if new_rows >= self.min_new_share * trained_rows:
                    out.append(TrainAt(d, a.landed_at))
                    trained_rows, new_rows, first_new = trained_rows + new_rows, 0, None
            if self.max_wait is not None and first_new is not None and first_new + self.max_wait <= trace.end:
                out.append(TrainAt(d, first_new + self.max_wait))
        return _sorted(out)


@dataclass(frozen=True)
class Never:
    """Train once, on the history, and never again: the first model serves forever (a reference point)."""

    name: str = "once"

    def schedule(self, trace: Trace) -> list[TrainAt]:
        return []


@dataclass(frozen=True)
class OnDrift:
    """Retrain only when ``model.degraded`` would fire: at a landing after which the champion's live WAPE over
    the contract's ``drift_window`` exceeds its backtest WAPE by more than ``drift_tolerance``.

    The one policy that depends on the replay, not the trace alone (live accuracy needs the forecasts the
    champion published): ``schedule`` is empty and ``freshet.lab.engine.Replay`` asks, at each landing, what
    the deployed ``ingest`` flow's scoring would say (``freshet.lab.live.degraded``). Causal all the same: the
    verdict at a landing reads only forecasts published and actuals landed by then.
    """

    name: str = "on drift"
    reactive: bool = field(default=True, repr=False)

    def schedule(self, trace: Trace) -> list[TrainAt]:
        return []


def default_policies() -> list[Policy]:
    """The policies the lab compares by default, clocks first, then the event-driven family."""
    return [FixedInterval(), Weekly(), RoundRobin(), EventDriven(), Debounced(), Gated(), OnDrift(), Never()]


# When to forecast: on every landing (and every promotion), as freshet's ``forecast`` deployment does, or only
# after a training run (a nightly "retrain, then score" batch job).
ON_LANDING, AFTER_TRAINING = "on landing", "after training"
FORECAST_MODES = (ON_LANDING, AFTER_TRAINING)


def default_combinations(policies: Sequence[Policy] | None = None) -> list[tuple[Policy, str]]:
    """The (retraining policy, forecast mode) pairs of the default table: every policy with forecasts on
    landing, and the usual batch set-ups (a clock or every landing, then forecast) with forecasts after training.
    The lab replays and reports every combination; this only chooses what the table shows first."""
    policies = list(policies if policies is not None else default_policies())
    batch = (FixedInterval, Weekly, EventDriven)
    return ([(p, ON_LANDING) for p in policies]
            + [(p, AFTER_TRAINING) for p in policies if isinstance(p, batch)])


def checked_schedule(policy: Policy, trace: Trace) -> list[TrainAt]:
    """``policy.schedule(trace)``, refusing decisions outside the window or for unknown datasets."""
    out = list(policy.schedule(trace))
    known = set(trace.datasets)
    for item in out:
        if item.dataset not in known:
            raise ValueError(f"policy {policy.name!r} scheduled unknown dataset {item.dataset!r}")
        if not trace.start < item.at <= trace.end:
            raise ValueError(f"policy {policy.name!r} scheduled {item.dataset} at {item.at}, outside "
                             f"the replayed window ({trace.start}, {trace.end}]")
    return _sorted(out)
