"""``freshet serve``: run freshet's flows from one long-lived process instead of a work pool.

The faster of the two ways the stack runs flows (``FRESHET_RUNNER``):

- ``worker`` (default): ``prefect deploy`` puts the deployments in work pool ``freshet`` and
  process workers poll it. For every run the worker starts ``python -m prefect.engine``,
  which imports Prefect and loads the flow from its entrypoint: about 2.5 s of a fresh
  interpreter before the run is Running, on top of the worker's poll.
- ``serve``: this process loads every flow of ``deployments/prefect.yaml`` once and serves
  them with a Prefect ``Runner`` (``Runner.add_flow``, what ``flow.serve`` does) that asks
  for runs every ``query_seconds``. Each run still gets its own process (a crash or a
  killed run never takes the runner down), but Prefect starts it with the flow object
  handed over, without the worker's command, pull step and entrypoint lookup, and freshet
  has it forked from a fork server that already imported Prefect, polars and XGBoost
  (``use_fork_server``) instead of a new interpreter.

Both read the deployments from ``deployments/prefect.yaml`` (name, entrypoint, description,
tags, parameters, triggers, schedules, concurrency limit): one source of truth; ``freshet
serve`` registers them, and the staleness alarms, when it starts, as ``freshet deploy`` does. Served
deployments belong to no work pool, so one stack uses one way or the other, never both:
``freshet up`` starts the processes ``FRESHET_RUNNER`` names, and whichever registered a
deployment last owns it.
"""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from freshet.upstream import Expectation, UpstreamChanged, verify

# How often a runner asks the API for runs (Prefect's default is 10 s), as the workers do.
QUERY_SECONDS = 1


def deployment_specs(root: Path) -> list[dict[str, Any]]:
    """The deployments of ``deployments/prefect.yaml``, as written there."""
    return yaml.safe_load((root / "deployments" / "prefect.yaml").read_text())["deployments"]


def flow_options(spec: dict[str, Any]) -> dict[str, Any]:
    """``Runner.add_flow`` keyword arguments for one prefect.yaml deployment (everything but the flow)."""
    from pydantic import TypeAdapter
    from prefect.client.schemas.objects import ConcurrencyLimitConfig
    from prefect.events import DeploymentTriggerTypes

    triggers = [TypeAdapter(DeploymentTriggerTypes).validate_python({"name": f"{spec['name']}__automation_{i}", **t})
                for i, t in enumerate(spec.get("triggers") or [], start=1)]
    unsupported = [k for s in spec.get("schedules") or [] for k in s if k not in ("interval", "active")]
    if unsupported:
        raise ValueError(f"deployment {spec['name']}: freshet serve only reads interval schedules, not {unsupported}")
    intervals = [s["interval"] for s in spec.get("schedules") or [] if s.get("active", True)]
    limit = spec.get("concurrency_limit")
    return {
        "name": spec["name"],
        "description": " ".join(str(spec.get("description") or "").split()) or None,
        "tags": spec.get("tags"),
        "parameters": spec.get("parameters"),
        "triggers": triggers or None,
        "interval": intervals or None,
        "concurrency_limit": ConcurrencyLimitConfig(**limit) if isinstance(limit, dict) else limit,
    }


# Imported once by the fork server, so a run's process starts with them loaded (about 2 s of a
# fresh interpreter on 2 cores). Importing does not start polars' or OpenMP's thread pools,
# so forking after it is safe; nothing here runs a flow.
PRELOAD = ["prefect", "prefect.flow_engine", "polars", "xgboost", "freshet.data.ingestion", "freshet.modeling.training",
           "freshet.modeling.forecast"]


# What use_fork_server depends on, as checked (see freshet.upstream).
FORK_SERVER = Expectation(
    what="freshet.ops.serve.use_fork_server (served runs start from a fork server, not a new interpreter)",
    package="prefect", checked="3.9.1",
    sources={
        # it starts a run with multiprocessing.get_context("spawn"), through the module's own `multiprocessing`
        "prefect.flow_engine:run_flow_in_subprocess": "38820abf84e9cd5d904d6c9e86b19c8a48ad179a51b2310230b48162f98979cd",
    },
    advice="Read the new run_flow_in_subprocess in prefect/flow_engine.py (does it still take its context from "
           "the module's `multiprocessing`? does Prefect now preload or fork itself?), then update "
           "use_fork_server and this hash, or pin prefect==3.9.1; tests/ops/test_serve.py runs a flow through "
           "the fork server. FRESHET_RUNNER=worker runs flows without this patch meanwhile.",
)


class _ForkServerContexts:
    """``multiprocessing`` as flow_engine sees it, where every context is the fork server's."""

    def __getattr__(self, name: str):
        import multiprocessing

        return getattr(multiprocessing, name)

    @staticmethod
    def get_context(method: str | None = None):
        import multiprocessing

        return multiprocessing.get_context("forkserver")


def use_fork_server(preload: list[str] = PRELOAD) -> None:
    """Start each run's process from a fork server that has already imported ``preload``.

    Prefect's runner starts a served flow's runs with ``run_flow_in_subprocess``, which takes
    a ``spawn`` context: a new interpreter that imports Prefect and the flow's modules before
    the run can start. A ``forkserver`` context forks each run from a small single-threaded
    process that imported them once; the run still gets its own process (its own memory,
    killed alone on cancellation), and Prefect's own code does everything else: the flow is
    handed over pickled, with the same environment and control channel as under spawn.
    Checked before patching (``FORK_SERVER``): a changed ``prefect.flow_engine`` raises
    ``UpstreamChanged`` with advice instead of silently starting runs with spawn.
    """
    import multiprocessing
    import multiprocessing.forkserver

    import prefect.flow_engine as engine

    if isinstance(getattr(engine, "multiprocessing", None), _ForkServerContexts):
        return  # patched already
    verify(FORK_SERVER)
    if getattr(engine, "multiprocessing", None) is not multiprocessing:
        raise UpstreamChanged(f"{FORK_SERVER.what}: prefect.flow_engine.multiprocessing is not the multiprocessing "
                              f"module (something else patched it). {FORK_SERVER.advice}")
    multiprocessing.set_forkserver_preload(preload)
    multiprocessing.forkserver.ensure_running()  # pay the imports now, not on the first run
    engine.multiprocessing = _ForkServerContexts()


def serve(root: Path, limit: int, ready_file: Path | None = None) -> None:
    """Register and serve every deployment of prefect.yaml until stopped (SIGTERM or Ctrl-C)."""
    from prefect.flows import load_flow_from_entrypoint
    from prefect.runner import Runner

    os.chdir(root)  # entrypoints in prefect.yaml are relative to the repository root
    specs = deployment_specs(root)
    use_fork_server()
    runner = Runner(name=f"freshet-serve-{socket.gethostname()}-{os.getpid()}", query_seconds=QUERY_SECONDS,
                    limit=limit, pause_on_shutdown=False)

    async def main() -> None:
        for spec in specs:
            flow = load_flow_from_entrypoint(spec["entrypoint"])
            await runner.aadd_flow(flow, **flow_options(spec))
        # the automations prefect.yaml cannot express (staleness alarms), as `freshet deploy` does
        done = subprocess.run([sys.executable, "deployments/automations.py"], capture_output=True, text=True)
        print(done.stdout.strip(), flush=True)
        if done.returncode != 0:
            raise RuntimeError(f"deployments/automations.py failed: {done.stderr.strip()[-800:]}")
        print(f"serving {', '.join(s['name'] for s in specs)}: asking for runs every {QUERY_SECONDS} s, "
              f"at most {limit} at once (pid {os.getpid()})", flush=True)
        if ready_file:
            ready_file.write_text(str(os.getpid()))
        await runner.start()

    try:
        asyncio.run(main())
    except KeyboardInterrupt:
        pass
