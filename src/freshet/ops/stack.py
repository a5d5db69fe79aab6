"""The local stack behind ``freshet up`` / ``down``: a real Prefect server and the process that runs flows.

Everything binds to 127.0.0.1. The server keeps its SQLite database in a
project-local Prefect home (``<stack_dir>/prefect-home``). Flows run in a ``freshet serve``
process (``FRESHET_RUNNER=serve``, the default here) or a process worker of pool
``freshet`` (``FRESHET_RUNNER=worker``); either is recorded as ``worker``. Logs go to
``<stack_dir>/server.log`` and ``worker.log``; ``<stack_dir>/state.json`` records
the process ids (with their start times, so a recycled pid is never killed),
the port, the runner and the environment it got. ``down`` stops exactly those.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from base64 import b64encode
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from freshet.ops.serve import QUERY_SECONDS
from freshet.settings import Settings

POOL = "freshet"
# Low pickup latency: the worker asks for runs every second (Prefect's default is 10 s)
# and may start runs scheduled up to 5 s ahead.
# OMP_WAIT_POLICY=PASSIVE: XGBoost's idle OpenMP threads sleep instead of spinning, which
# otherwise slows a fit many times over when several runs share 2 cores.
WORKER_ENV = {"PREFECT_WORKER_QUERY_SECONDS": "1", "PREFECT_WORKER_PREFETCH_SECONDS": "5", "OMP_WAIT_POLICY": "PASSIVE"}
WORKER_LIMIT = 4
# A run held back by a deployment concurrency limit (ENQUEUE) is retried after this many
# seconds (Prefect's default is 30). Slot leases are kept on disk (under PREFECT_HOME), not in
# the server's memory (Prefect's default): a lease held when the server stops (a restart, a
# crash, `freshet down` during a run) is otherwise forgotten while its slot stays taken in the
# database, and the dataset's lock or the forecast deployment's limit stays full for ever
# (measured: a 60 s lease held across a restart still held its slot 100 s later; on disk, freed).
SERVER_ENV = {"PREFECT_SERVER_API_HOST": "127.0.0.1", "PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS": "2",
              "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem"}


class StackError(RuntimeError):
    """The local stack could not be started or reached; the message says where to look."""


def project_root() -> Path:
    """The checkout holding deployments/prefect.yaml: the current directory upwards, else the package's."""
    here = Path.cwd().resolve()
    for candidate in [here, *here.parents, Path(__file__).resolve().parents[3]]:
        if (candidate / "deployments" / "prefect.yaml").is_file():
            return candidate
    raise StackError("cannot find deployments/prefect.yaml: run freshet from its checkout")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _start_time(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _zombie(pid: int) -> bool:
    """Has the process exited without being reaped? (Reap it if it is our child.)"""
    try:
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
            return False
    except (OSError, IndexError):
        return False
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    return True


def alive(proc: dict) -> bool:
    """Is the recorded process still the one we started (same pid and start time), and not a zombie?"""
    pid = proc.get("pid")
    if not pid or _zombie(pid):
        return False
    started = _start_time(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return proc.get("start_time") is None
    return started == proc.get("start_time")


def auth_headers(auth: str | None = None) -> dict[str, str]:
    auth = auth or os.environ.get("PREFECT_API_AUTH_STRING")
    return {"Authorization": "Basic " + b64encode(auth.encode()).decode()} if auth else {}


def healthy(api_url: str, timeout: float = 2.0, auth: str | None = None) -> bool:
    """Prefect's health endpoint answers without credentials; sending them does no harm."""
    try:
        req = urllib.request.Request(f"{api_url}/health", headers=auth_headers(auth))
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status == 200 and resp.read().strip() == b"true"
    except OSError:
        return False


def wait_until(what: str, check: Callable[[], bool], timeout: float, log_hint: str = "", every: float = 5.0,
               out=print) -> None:
    """Poll ``check`` until it holds, printing progress; raise ``StackError`` at the deadline."""
    start = time.monotonic()
    last = start
    while not check():
        now = time.monotonic()
        if now - start > timeout:
            raise StackError(f"{what}: not ready after {timeout:.0f} s. {log_hint}".strip())
        if now - last >= every:
            out(f"  ... {what} ({now - start:.0f} s)")
            last = now
        time.sleep(0.25)


@dataclass
class Stack:
    """The local stack's files and processes."""

    settings: Settings
    extra_env: dict[str, str] | None = None  # e.g. basic-auth strings for a stack started by tests

    @property
    def dir(self) -> Path:
        return self.settings.stack_dir

    @property
    def state_path(self) -> Path:
        return self.dir / "state.json"

    @property
    def home(self) -> Path:
        return self.dir / "prefect-home"

    def state(self) -> dict:
        try:
            return json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {}

    def save(self, state: dict) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.state_path)

    def api_url(self) -> str | None:
        state = self.state()
        return f"http://127.0.0.1:{state['port']}/api" if state.get("port") else None

    def ui_url(self) -> str | None:
        """Where a person opens the Prefect UI this stack serves."""
        api = self.api_url()
        return api.removesuffix("/api") if api else None

    def running(self) -> bool:
        state = self.state()
        return bool(state) and alive(state.get("server", {})) and healthy(self.api_url() or "")

    def client_env(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        """Environment for Prefect clients and workers talking to this stack."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        keep = ("PREFECT_API_AUTH_STRING", "PREFECT_SERVER_API_AUTH_STRING", "PREFECT_LOGGING_LEVEL")
        env.update({k: os.environ[k] for k in keep if k in os.environ})
        env.update(self.extra_env or {})
        env.update({
            "PREFECT_HOME": str(self.home),
            "PREFECT_API_URL": self.api_url() or "",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "FRESHET_LAKE_URL": self.settings.lake_url,
            "FRESHET_CONTRACTS_DIR": str(self.settings.contracts_dir),
            "FRESHET_STACK_DIR": str(self.settings.stack_dir),
        })
        env.update(extra or {})
        return env

    def server_env(self) -> dict[str, str]:
        """Environment for ``prefect server start``.

        The UI runs in the browser and calls the API itself; Prefect tells it the API is at
        ``PREFECT_SERVER_API_PORT`` (4200 by default), not the ``--port`` the server was
        started with, so the UI is told the stack's API URL. A user's own
        ``PREFECT_SERVER_UI_API_URL`` (e.g. behind a reverse proxy) wins.
        """
        env = self.client_env(SERVER_ENV)
        env.pop("PREFECT_API_URL")
        env["PREFECT_SERVER_UI_API_URL"] = (os.environ.get("PREFECT_SERVER_UI_API_URL")
                                            or os.environ.get("PREFECT_UI_API_URL") or self.api_url())
        return env

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str], cwd: Path, **popen) -> dict:
        log = open(self.dir / f"{name}.log", "ab")
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True, **popen)
        log.close()
        time.sleep(0.05)
        return {"pid": proc.pid, "start_time": _start_time(proc.pid), "cmd": cmd[:4]}

    def up(self, out=print) -> str:
        """Start the server, deployments, automations and the flows' runner; return the API URL."""
        root = project_root()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        state = self.state()
        if self.running():
            out(f"server already running on {self.api_url()} (pid {state['server']['pid']})")
        else:
            # a restart keeps the port, so running workers and clients find the server again
            port = state.get("port") or self.settings.stack_port or free_port()
            if port_in_use(port):
                port = free_port()
                out(f"port {self.settings.stack_port} is busy; using {port}")
            state = {**{k: v for k, v in state.items() if k in ("worker", "runner")}, "port": port}
            self.save(state)
            env = self.server_env()
            out(f"starting Prefect server on http://127.0.0.1:{port} (log: {self.dir / 'server.log'})")
            # `prefect server start`, with freshet.ops.prefect_server's fix for SQLite (a 60 s freeze under bursts)
            state["server"] = self._spawn("server", [sys.executable, "-m", "freshet.ops.prefect_server", "start",
                                                     "--host", "127.0.0.1", "--port", str(port)], env, root)
            self.save(state)
            wait_until("waiting for the server's health check", lambda: healthy(self.api_url(), auth=env.get("PREFECT_SERVER_API_AUTH_STRING")), 180,
                       f"See {self.dir / 'server.log'}.", out=out)
            out("server is healthy")
        self.start_runners(state, self.client_env(), root, out)
        out(f"UI: {self.ui_url()}   lake: {self.settings.lake_url}")
        return self.api_url()

    # how flows run unless FRESHET_RUNNER says otherwise (or processes of the other kind still run)
    default_runner = "serve"

    def worker_names(self) -> list[str]:
        return ["worker"]

    def worker_env(self) -> dict[str, str]:
        return {**self.client_env(), **WORKER_ENV}

    def workers_online(self, env: dict[str, str]) -> int:
        """How many of this stack's workers the API lists as ONLINE in pool ``freshet``."""
        req = urllib.request.Request(
            f"{env['PREFECT_API_URL']}/work_pools/{POOL}/workers/filter", data=b"{}", method="POST",
            headers={"Content-Type": "application/json", **auth_headers(env.get("PREFECT_API_AUTH_STRING"))})
        try:
            with urllib.request.urlopen(req, timeout=3) as resp:
                names = {f"freshet-{n}" for n in self.worker_names()}
                return sum(w.get("status") == "ONLINE" and w.get("name") in names for w in json.loads(resp.read()))
        except OSError:
            return 0

    def start_runners(self, state: dict, env: dict[str, str], root: Path, out=print) -> None:
        """Deploy, and start the processes that run flows: workers or ``freshet serve`` (FRESHET_RUNNER).

        The state keeps them as ``worker``, ``worker-2``, ... whichever they are, under ``runner``.
        """
        names = self.worker_names()
        running = [n for n in names if alive(state.get(n, {}))]
        runner = self.settings.runner or (state.get("runner", "worker") if running else self.default_runner)
        if running and state.get("runner", "worker") != runner:
            raise StackError(f"this stack runs its flows with {state.get('runner', 'worker')} processes, not "
                             f"FRESHET_RUNNER={runner}: run `freshet down` first, then `freshet up`")
        worker_env = self.worker_env()
        state["runner"] = runner
        state["worker_env"] = {k: worker_env[k] for k in (*WORKER_ENV, "PREFECT_API_URL", "FRESHET_LAKE_URL",
                                                          "FRESHET_CONTRACTS_DIR")}
        if runner == "worker":
            out(f"creating work pool '{POOL}' and deploying from deployments/prefect.yaml (through {env['PREFECT_API_URL']})")
            _run([_prefect_executable(), "--no-prompt", "work-pool", "create", POOL, "--type", "process", "--overwrite"],
                 env, root, self.dir)
            deploy(env, root, self.dir)
            for name in names:
                if name not in running:
                    state[name] = self._spawn(name, [_prefect_executable(), "worker", "start", "--pool", POOL, "--type",
                                                     "process", "--limit", str(WORKER_LIMIT), "--name",
                                                     f"freshet-{name}"], worker_env, root)
            self.save(state)
            wait_until(f"waiting for {len(names)} worker(s) to come online",
                       lambda: self.workers_online(env) >= len(names), 120, f"See {self.dir}/worker*.log.", out=out)
            out(f"{len(names)} worker(s) polling pool '{POOL}' every {WORKER_ENV['PREFECT_WORKER_QUERY_SECONDS']} s "
                f"through {worker_env['PREFECT_API_URL']}")
        else:
            # one after the other: each registers the deployments (and recreates their triggers)
            for name in names:
                if name in running:
                    continue
                ready = self.dir / f"{name}.ready"
                ready.unlink(missing_ok=True)
                out(f"starting `freshet serve` ({name}; log: {self.dir / (name + '.log')})")
                state[name] = self._spawn(name, [sys.executable, "-m", "freshet.ops.cli", "serve", "--limit",
                                                 str(WORKER_LIMIT), "--ready-file", str(ready)], worker_env, root)
                self.save(state)
                wait_until(f"waiting for {name} to register the deployments",
                           lambda: ready.exists() or not alive(state[name]), 120, f"See {self.dir / (name + '.log')}.",
                           out=out)
                if not ready.exists():
                    raise StackError(f"`freshet serve` ({name}) exited: see {self.dir / (name + '.log')}")
            out(f"{len(names)} `freshet serve` process(es) serving deployments/prefect.yaml's flows, asking for runs "
                f"every {QUERY_SECONDS} s through {worker_env['PREFECT_API_URL']}")
        self.save(state)

    def down(self, out=print) -> list[int]:
        """Stop exactly the processes ``up`` started (their process groups), nothing else."""
        state = self.state()
        stopped = []
        for name in (*self.worker_names(), "server"):
            proc = state.get(name)
            if not proc:
                continue
            if not alive(proc):
                out(f"{name} (pid {proc['pid']}) is not running")
                continue
            _terminate_group(proc["pid"])
            stopped.append(proc["pid"])
            out(f"stopped {name} (pid {proc['pid']})")
        if state:
            self.save({k: v for k, v in state.items() if k not in ("server", *self.worker_names())})
        return stopped


def _prefect_executable() -> str:
    exe = Path(sys.executable).with_name("prefect")
    return str(exe) if exe.exists() else (shutil.which("prefect") or "prefect")


def _run(cmd: list[str], env: dict[str, str], cwd: Path, logdir: Path) -> str:
    result = subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True)
    with open(logdir / "setup.log", "a") as log:
        log.write(f"$ {' '.join(cmd)}\n{result.stdout}\n{result.stderr}\n")
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines() if line.strip()]
        raise StackError(f"`{' '.join(cmd[1:4])} ...` failed (exit {result.returncode}): {lines[-1] if lines else 'no output'}"
                         f"; full output in {logdir / 'setup.log'}")
    return result.stdout


def deploy(env: dict[str, str], root: Path, logdir: Path) -> None:
    """``prefect deploy --all`` from deployments/prefect.yaml, then the code-defined automations."""
    logdir.mkdir(parents=True, exist_ok=True)
    prefect = _prefect_executable()
    _run([prefect, "--no-prompt", "deploy", "--all", "--prefect-file", "deployments/prefect.yaml"], env, root, logdir)
    _run([sys.executable, "deployments/automations.py"], env, root, logdir)


def _terminate_group(pid: int, sig: int = signal.SIGTERM, grace: float = 15.0) -> None:
    """Signal a process group we started (``sig``, SIGTERM by default); SIGKILL it after ``grace`` seconds."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        try:
            os.killpg(pid, 0)
        except ProcessLookupError:
            return
        try:  # reap if it is our child
            os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            pass
        time.sleep(0.2)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
