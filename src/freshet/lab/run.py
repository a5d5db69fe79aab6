"""The policy lab's entry points (Prefect-free): replay every policy on a trace, or on several seeds.

``run_lab`` builds the ``Replay`` engine on a trace, runs each policy (through the
``runner`` the ``policies`` flow turns into a task) and summarises; ``run_seeds``
does that on synthetic traces of several seeds and adds the spread. Reads
``freshet.settings`` through ``lab_settings`` when no settings are given.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from freshet.data.contracts import Contract
from freshet.lab.engine import LabConfig, PolicyRun, Replay, lab_settings
from freshet.lab.metrics import seed_spread, summarize
from freshet.lab.policies import ON_LANDING, Policy, Trace
from freshet.lab.traces import BatchSource, synthetic_trace
from freshet.settings import Settings


def run_lab(trace: Trace, source: BatchSource, contracts: dict[str, Contract], policies: Sequence[Policy],
            settings: Settings | None = None, config: LabConfig = LabConfig(), *, source_name: str = "synthetic",
            progress: Callable[[str], None] = lambda _: None,
            runner: Callable[[Replay, Policy], PolicyRun] = Replay.run_policy) -> dict[str, Any]:
    """Replay every policy on the trace in every forecast mode and summarise (``runner`` lets the flow run each
    policy as a task)."""
    began = time.monotonic()
    progress(f"trace: {len(trace.datasets)} dataset(s), "
             f"{sum(len(trace.new_arrivals(d)) for d in trace.datasets)} arrivals from {trace.start:%Y-%m-%d %H:%M} "
             f"to {trace.end:%Y-%m-%d %H:%M} UTC; training the first model per dataset ...")
    engine = Replay(trace, source, contracts, settings or lab_settings(), config, progress)
    results = []
    for k, policy in enumerate(policies, 1):
        res = runner(engine, policy)
        results.append(res)
        trained = sum(r.outcome in ("trained", "failed") for r in res.runs)
        reused = sum(r.reused for r in res.runs)
        published = sum(len(v) for v in res.forecasts[ON_LANDING].values())
        progress(f"[{k}/{len(policies)}] {policy.name}: {len(res.runs)} runs, {trained} trainings "
                 f"({trained - reused} new, {reused} reused), {published} forecasts on landing in {res.seconds:.1f} s")
    progress("scoring the published forecasts ...")
    return summarize(engine, results, source=source_name, runtime_seconds=time.monotonic() - began)


def run_seeds(seeds: Sequence[int], datasets: int, days: int, policies: Sequence[Policy], settings: Settings | None = None,
              config: LabConfig = LabConfig(), progress: Callable[[str], None] = lambda _: None,
              runner: Callable[[Replay, Policy], PolicyRun] = Replay.run_policy) -> dict[str, Any]:
    """The synthetic lab on several seeds: per combination the median and range of its measures, and how
    often each pair of shown combinations swaps places in the WAPE ranking (``runner`` as in ``run_lab``)."""
    reports = []
    for seed in seeds:
        progress(f"seed {seed}:")
        trace, source, contracts = synthetic_trace(datasets=datasets, days=days, seed=seed)
        reports.append(run_lab(trace, source, contracts, policies, settings, config, source_name=f"synthetic seed {seed}",
                               progress=progress, runner=runner))
    return {"seeds": list(seeds), "reports": reports, "spread": seed_spread(reports)}
