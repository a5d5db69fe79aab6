"""``freshet serve`` reads the same deployments as ``prefect deploy``: prefect.yaml is the one source.

The served path itself (runs picked up, killed, recovered) is exercised end to end by the
SQLite e2e stack, which runs its flows with ``freshet serve`` (``tests/e2e/stack.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from freshet.ops.serve import deployment_specs, flow_options

REPO = Path(__file__).resolve().parents[2]
SPECS = {s["name"]: s for s in deployment_specs(REPO)}


@pytest.mark.parametrize("name", sorted(SPECS))
def test_every_deployment_of_prefect_yaml_is_served_with_its_own_settings(name: str) -> None:
    spec = SPECS[name]
    options = flow_options(spec)
    assert options["name"] == name
    assert options["tags"] == spec["tags"]
    assert options["parameters"] == spec.get("parameters")
    assert options["description"] == " ".join(spec["description"].split())
    triggers = options["triggers"] or []
    assert len(triggers) == len(spec.get("triggers") or [])
    for trigger, written in zip(triggers, spec.get("triggers") or []):
        assert trigger.name == written["name"]
        assert trigger.expect == set(written["expect"])
        assert trigger.match.model_dump() == written["match"]
        assert trigger.for_each == set(written["for_each"])
        assert trigger.within.total_seconds() == written["within"]
        assert trigger.parameters == written["parameters"]
    limit = spec.get("concurrency_limit")
    if limit:
        assert options["concurrency_limit"].limit == limit["limit"]
        assert options["concurrency_limit"].collision_strategy.value == limit["collision_strategy"]
    else:
        assert options["concurrency_limit"] is None
    assert options["interval"] == ([s["interval"] for s in spec["schedules"]] if spec.get("schedules") else None)


def test_a_schedule_serve_cannot_express_is_refused_by_name() -> None:
    spec = {**SPECS["watchdog"], "schedules": [{"cron": "0 * * * *"}]}
    with pytest.raises(ValueError, match=r"deployment watchdog: .*interval schedules, not \['cron'\]"):
        flow_options(spec)


FORK_PROBE = '''
import json, os, sys
from prefect import flow
from prefect.flow_engine import run_flow_in_subprocess
from freshet.ops.serve import use_fork_server

@flow
def probe(out: str):
    with open(out, "w") as f:
        json.dump({"pid": os.getpid(), "ppid": os.getppid(), "polars": "polars" in sys.modules,
                   "xgboost": "xgboost" in sys.modules}, f)

if __name__ == "__main__":
    if sys.argv[2] == "fork":
        use_fork_server()
    process = run_flow_in_subprocess(probe, parameters={"out": sys.argv[1]})
    process.join()
    print(json.dumps({"me": os.getpid(), "exitcode": process.exitcode}))
'''


@pytest.mark.parametrize("how", ["fork", "spawn"])
def test_served_runs_start_from_the_preloaded_fork_server(how: str, prefect_api, tmp_path: Path) -> None:
    """The patched runner path: a run's process is forked from the fork server, with XGBoost already loaded.

    ``spawn`` is Prefect's own behaviour, shown beside it: a fresh interpreter with neither.
    """
    import json
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    script, out = tmp_path / "probe.py", tmp_path / "probe.json"
    script.write_text(FORK_PROBE)
    done = subprocess.run([sys.executable, str(script), str(out), how], capture_output=True, text=True, timeout=180,
                          env={**__import__("os").environ, "PREFECT_API_URL": PREFECT_API_URL.value()})
    assert done.returncode == 0, done.stderr[-2000:]
    parent = json.loads(done.stdout.strip().splitlines()[-1])
    assert parent["exitcode"] == 0
    child = json.loads(out.read_text())  # the flow ran, in its own process
    assert child["pid"] != parent["me"]
    if how == "fork":
        assert child["ppid"] != parent["me"], "the run's process should be the fork server's child"
        assert child["polars"] and child["xgboost"]
    else:
        assert child["ppid"] == parent["me"]
        assert not child["xgboost"]
