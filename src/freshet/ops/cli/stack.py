"""``freshet up``, ``serve``, ``down`` and ``deploy``: the local stack, serving the flows, deploying elsewhere.

Reads freshet's settings (``FRESHET_STACK_DIR``, ``FRESHET_RUNNER``, the scale
settings) and, for ``deploy``, the Prefect API of ``freshet.ops.cli.api``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal, Optional

import typer

from freshet.ops.cli.api import api_url, require_api, use_stack_api
from freshet.ops.stack import WORKER_LIMIT
from freshet.settings import get_settings


def up(
    scale: Annotated[bool, typer.Option("--scale", help="the scale-out topology: PostgreSQL, Redis, Prefect's "
                                        "services, two API servers, FRESHET_SCALE_WORKERS workers")] = False,
    runner: Annotated[Optional[Literal["worker", "serve"]], typer.Option(
        help="how flows run: long-lived `freshet serve` processes (the default of the local stack), or process "
             "workers of work pool 'freshet' (the default of --scale); FRESHET_RUNNER")] = None,
) -> int:
    """start the local Prefect server, deployments, automations and the processes that run flows"""
    from freshet.ops.scale import ScaleStack
    from freshet.ops.stack import Stack

    if runner:
        os.environ["FRESHET_RUNNER"] = runner
    (ScaleStack if scale else Stack)(get_settings()).up()
    return 0


def serve(
    limit: Annotated[int, typer.Option(help="runs at once")] = WORKER_LIMIT,
    ready_file: Annotated[Optional[Path], typer.Option(
        help="write this process's id to this file once the deployments are registered")] = None,
) -> int:
    """serve deployments/prefect.yaml's flows from this process (no work pool; runs until stopped)"""
    from freshet.ops.serve import serve as serve_flows
    from freshet.ops.stack import project_root

    use_stack_api()
    serve_flows(project_root(), limit, ready_file)
    return 0


def down() -> int:
    """stop the processes `freshet up` started"""
    from freshet.ops.scale import ScaleStack
    from freshet.ops.stack import Stack

    stack = Stack(get_settings())
    if not any(k in stack.state() for k in ("server", "worker")):
        print(f"no local stack recorded in {stack.dir}; nothing to stop")
    stack.down()
    ScaleStack(get_settings()).down()  # the scale topology's processes, if `up --scale` started any
    return 0


def deploy(
    create_pool: Annotated[bool, typer.Option("--create-pool", help="also create the 'freshet' process work pool")] = False,
) -> int:
    """deploy to the Prefect API in PREFECT_API_URL (own server or Cloud)"""
    from freshet.ops.stack import POOL, _prefect_executable, _run, deploy as deploy_flows, project_root

    require_api(api_url())
    root = project_root()
    logdir = get_settings().stack_dir
    logdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if create_pool:
        print(f"creating work pool '{POOL}' ...", flush=True)
        _run([_prefect_executable(), "--no-prompt", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
             env, root, logdir)
    print("deploying from deployments/prefect.yaml and upserting the automations ...", flush=True)
    deploy_flows(env, root, logdir)
    print(f"deployed ingest, train and watchdog, and the staleness automations (log: {logdir / 'setup.log'})")
    return 0
