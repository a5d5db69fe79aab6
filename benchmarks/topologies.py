"""Both topologies side by side, in one run: SQLite (``freshet up``) and scale (``freshet up --scale``).

For each topology and each way of running flows (``FRESHET_RUNNER``: process workers, or
``freshet serve``), one after the other in the same process (only one stack runs at a time),
started exactly as the CLI starts it in a temporary folder, with two worker (or serve)
processes on both:

- **trigger latency**: events for one dataset, one at a time, each spaced past the trigger's
  10 s throttle; event ``occurred`` -> run created / Pending / Running (p50, p95). Every run
  ends "nothing new" after a few seconds.
- **load**: 20 datasets land in bursts (waves of 5 datasets, 3 files per dataset within about
  a second, a wave every 5 s); trainings, runs, per-dataset lag from the first file's event
  to its champion's promotion, wall time and the CPU seconds of every process of the stack.

    .venv/bin/python benchmarks/run.py --only topologies [--quick]

Results are keyed ``sqlite``, ``sqlite+serve``, ``scale``, ``scale+serve``;
``FRESHET_BENCH_TOPOLOGIES=scale+serve,sqlite`` runs only those.

Events are sent to the clients' API server; on the scale topology the workers poll the
other one, so every event crosses Redis.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from common import median, percentile, say
from live import LiveStack, _seconds

LATENCY_DS = "bench_latency"
LOAD_DS = "bench_load_{:02d}"
LOAD_DATASETS = 20
WAVE = 5
FILES_PER_DATASET = 3


def config_name(topology: str, runner: str) -> str:
    """The results' key of one configuration: ``scale``, ``scale+serve``, ``sqlite``, ``sqlite+serve``."""
    return topology + ("+serve" if runner == "serve" else "")


class TopologyStack(LiveStack):
    """``LiveStack`` on either topology, with two workers and its own set of datasets."""

    def __init__(self, topology: str, runner: str = "worker", keep: bool = False) -> None:
        from freshet.settings import BUNDLED_CONTRACTS

        self.topology, self.runner, self.keep = topology, runner, keep
        self.tmp = Path(tempfile.mkdtemp(prefix=f"freshet-bench-{topology}-"))
        self.tmp.chmod(0o755)  # the scale topology's PostgreSQL runs as its own user
        self.contracts = self.tmp / "contracts"
        self.contracts.mkdir()
        text = (BUNDLED_CONTRACTS / "retail_sales.toml").read_text()
        for ds in [LATENCY_DS, *(LOAD_DS.format(i) for i in range(LOAD_DATASETS))]:
            (self.contracts / f"{ds}.toml").write_text(text.replace('name = "retail_sales"', f'name = "{ds}"'))

    def __enter__(self) -> "TopologyStack":
        from prefect.settings import PREFECT_API_URL, PREFECT_HOME, temporary_settings

        from freshet.ops import stack as S
        from freshet.ops.scale import ScaleStack
        from freshet.settings import Settings

        self.settings = Settings(lake_url=str(self.tmp / "lake"), stack_dir=self.tmp / "stack", stack_port=0,
                                 contracts_dir=self.contracts, scale_workers=2, runner=self.runner)
        if self.topology == "scale":
            self.stack = ScaleStack(self.settings)
        else:  # two worker (or serve) processes, as the scale topology has
            self.stack = S.Stack(self.settings)
            self.stack.worker_names = lambda: ["worker", "worker-2"]
        started = time.monotonic()
        try:
            api = self.stack.up(out=lambda line: say(f"{self.name}: {line}"))
        except BaseException:
            self._down()
            raise
        self.startup_s = time.monotonic() - started
        os.environ.update({"FRESHET_LAKE_URL": self.settings.lake_url, "FRESHET_CONTRACTS_DIR": str(self.contracts)})
        self._settings_cm = temporary_settings({PREFECT_API_URL: api, PREFECT_HOME: str(self.stack.home)})
        self._settings_cm.__enter__()
        from prefect.client.orchestration import get_client

        from freshet.data.lake import Lake

        self.lake = Lake.from_settings(self.settings)
        self._client_cm = get_client(sync_client=True)
        self.client = self._client_cm.__enter__()
        self.train_dep = self.client.read_deployment_by_name("train/train")
        self.worker_settings = dict(self.stack.state().get("worker_env", {}))
        return self

    @property
    def name(self) -> str:
        return config_name(self.topology, self.runner)

    def _down(self) -> None:
        self.stack.down(out=lambda line: say(f"{self.name}: {line}"))

    def __exit__(self, *exc: Any) -> None:
        try:
            self._client_cm.__exit__(None, None, None)
            self._settings_cm.__exit__(None, None, None)
        finally:
            self._down()
            if not self.keep:
                shutil.rmtree(self.tmp, ignore_errors=True)

    def stack_cpu(self) -> float:
        """CPU seconds of every process the stack started (and their children, reaped ones included)."""
        import psutil  # the bench extra (`make bench`): without it the figure would silently be 0

        total = 0.0
        for name, proc in self.stack.state().items():
            if isinstance(proc, dict) and proc.get("pid"):
                try:
                    total += self.tree_cpu(name)
                except psutil.Error:  # a process that is gone counts nothing
                    pass
        return total


def _latency(live: TopologyStack, n: int) -> dict[str, Any]:
    from freshet.data.generate import generate_retail_sales

    entry = live.admit(LATENCY_DS, generate_retail_sales(stores=3, items=4, days=300), "history.csv")
    _, run = live.trigger_and_wait(LATENCY_DS, [entry], "setup")  # the first model (not measured)
    assert run.state.type.value == "COMPLETED", run.state.message
    throttle = live.trigger_throttle()
    created, pending, running, last = [], [], [], None
    for i in range(n):
        if last is not None:
            time.sleep(max(0.0, throttle + 0.5 - _seconds(last, datetime.now(timezone.utc))))
        event, run = live.trigger_and_wait(LATENCY_DS, [entry], f"lat-{i}-{uuid.uuid4().hex}", timeout=180)
        times = live.state_times(run.id)
        last = event.occurred
        created.append(_seconds(event.occurred, run.created))
        pending.append(_seconds(event.occurred, times["PENDING"]) if "PENDING" in times else None)
        running.append(_seconds(event.occurred, times["RUNNING"]) if "RUNNING" in times else None)
    return {"events": n, "created_s": created, "pending_s": pending, "running_s": running,
            "created_p50": median(created), "created_p95": percentile(created, 95),
            "pending_p50": median(pending), "running_p50": median(running), "running_p95": percentile(running, 95)}


def _load(live: TopologyStack, quick: bool, deadline_s: float = 1800.0) -> dict[str, Any]:
    from freshet.data.generate import generate_retail_sales, split_into_batches
    from freshet.modeling import registry

    datasets = [LOAD_DS.format(i) for i in range(10 if quick else LOAD_DATASETS)]
    frames = {ds: generate_retail_sales(seed=100 + i, stores=3, items=4, days=300) for i, ds in enumerate(datasets)}
    cpu0, t0 = live.stack_cpu(), time.monotonic()
    first_event: dict[str, datetime] = {}
    for w in range(0, len(datasets), WAVE):
        wave_start = time.monotonic()
        for ds in datasets[w:w + WAVE]:
            for k, part in enumerate(split_into_batches(frames[ds], FILES_PER_DATASET)):
                entry = live.admit(ds, part, f"part-{k}.csv")
                event = live.emit_landed(ds, [entry], f"load-{k}")
                first_event.setdefault(ds, event.occurred)
        time.sleep(max(0.0, 5.0 - (time.monotonic() - wave_start)))
    say(f"load: {len(datasets)} datasets landed in {time.monotonic() - t0:.0f} s; waiting for every champion")
    deadline = time.monotonic() + deadline_s
    lags: dict[str, float] = {}
    while len(lags) < len(datasets) and time.monotonic() < deadline:
        for ds in datasets:
            if ds in lags:
                continue
            champ = registry.champion(live.lake, ds)
            if champ and len(champ["lineage"]) == FILES_PER_DATASET:
                promoted = datetime.fromisoformat(live.lake.read_json(live.lake.champion_path(ds))["promoted_at"])
                lags[ds] = _seconds(first_event[ds], promoted)
        time.sleep(0.5)
    runs = [r for r in live.train_runs(200) if r.parameters.get("dataset") in frames]
    live.wait_final([r.id for r in runs], 600)
    wall = time.monotonic() - t0
    trainings = {ds: len(registry.list_models(live.lake, ds)) for ds in datasets}
    return {"datasets": len(datasets), "files": len(datasets) * FILES_PER_DATASET, "runs": len(runs),
            "trainings": sum(trainings.values()), "max_trainings_per_dataset": max(trainings.values()),
            "champions_on_every_file": len(lags), "lag_s": lags, "lag_p50": median(list(lags.values())),
            "lag_p95": percentile(list(lags.values()), 95), "lag_max": max(lags.values(), default=None),
            "wall_s": wall, "stack_cpu_s": live.stack_cpu() - cpu0}


def run(quick: bool, keep: bool = False) -> dict[str, Any]:
    """Scale first; each topology's figures are also written to results/topologies-partial.json as soon as known."""
    import json

    from common import RESULTS

    out: dict[str, Any] = {}

    def save_partial() -> None:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "topologies-partial.json").write_text(json.dumps(out, indent=2, default=str))

    configs = (("scale", "worker"), ("scale", "serve"), ("sqlite", "worker"), ("sqlite", "serve"))
    only = [c for c in os.environ.get("FRESHET_BENCH_TOPOLOGIES", "").split(",") if c]
    for topology, runner in configs:
        if only and config_name(topology, runner) not in only:
            continue
        with TopologyStack(topology, runner, keep) as live:
            name = live.name
            say(f"topologies: {name} stack started in {live.startup_s:.0f} s")
            res: dict[str, Any] = {"startup_s": live.startup_s, "runner": runner, "worker": live.worker_settings}
            say(f"{name}: trigger latency")
            res["latency"] = _latency(live, 6 if quick else 10)
            out[name] = res
            save_partial()
            say(f"{name}: load run")
            res["load"] = _load(live, quick)
            save_partial()
        say(f"{name}: {res['latency']['created_p50']:.2f} s created p50, "
            f"{res['latency']['running_p50']:.2f} s Running p50; load lag p50 {res['load']['lag_p50']}")
    return out
