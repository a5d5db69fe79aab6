"""The scale-out topology behind ``freshet up --scale``: Prefect on PostgreSQL and Redis.

Processes, all on 127.0.0.1 (each recorded with its pid and start time in
``<stack_dir>/scale/state.json``; ``freshet down`` stops exactly those):

- ``postgres``: a throwaway cluster created with ``initdb`` in ``<stack_dir>/scale/postgres``,
  unless ``FRESHET_SCALE_DATABASE_URL`` names an existing database. PostgreSQL refuses
  to run as root; as root the cluster belongs to the system user ``freshet-pg``
  (created with ``useradd`` on first use).
- ``redis``: a local ``redis-server`` without persistence, unless ``FRESHET_SCALE_REDIS_URL``.
- ``services``: ``prefect server services start``: triggers, automations, scheduler,
  the event persister, lease and late-run services; the one process that runs them.
- ``server`` and ``server_b``: two ``prefect server start --no-services`` API servers on
  their own ports. Clients (ingestion jobs, ``freshet emit``, tests) use ``server``;
  the workers use ``server_b``, so every event crosses Redis to reach the trigger
  service, and every run a worker starts was created through the other server.
- ``worker``, ``worker-2``, ...: ``FRESHET_SCALE_WORKERS`` process workers of pool ``freshet``, or
  ``freshet serve`` processes with ``FRESHET_RUNNER=serve`` (see ``freshet.ops.serve``).

Every Prefect process gets the Redis messaging settings below, including
``PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE=1`` (prefect-redis' default batches 5
messages or 10 s, which delays triggered runs by up to 10 s), and
``PREFECT_SERVER_DOCKET_URL`` on Redis (the default ``memory://`` only works in one process).
Settings read: ``FRESHET_STACK_DIR``, ``FRESHET_SCALE_*``, ``FRESHET_POSTGRES_BIN_DIR``.
"""

from __future__ import annotations

import importlib.util
import os
import pwd
import shutil
import signal
import socket
import stat
import subprocess
from pathlib import Path

from freshet.ops.stack import (
    SERVER_ENV, WORKER_ENV, Stack, StackError, _prefect_executable, _terminate_group, alive, free_port, healthy,
    port_in_use, project_root, wait_until,
)

PG_USER = "freshet-pg"
REDIS_PREFECT_ENV = {
    "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
    "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
    "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
    "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
    "PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE": "1",
}
SERVERS = ("server", "server_b")
# stopped in this order (clients before what they use)
ORDER_DOWN = ("workers", "server", "server_b", "services", "redis", "postgres")


def missing_requirements(settings) -> list[str]:
    """What this machine lacks to run the scale topology, each with what to install."""
    problems = []
    for module, what in (("prefect_redis", "prefect-redis"), ("asyncpg", "asyncpg")):
        if importlib.util.find_spec(module) is None:
            problems.append(f"Python package {what} is missing: pip install -e '.[scale]'")
    if not settings.scale_database_url:
        for exe in ("initdb", "postgres", "pg_isready"):
            if not (settings.postgres_bin_dir / exe).exists():
                problems.append(f"PostgreSQL server binaries are missing ({settings.postgres_bin_dir / exe}): "
                                "apt-get install -y postgresql-15 (or set FRESHET_POSTGRES_BIN_DIR, "
                                "or FRESHET_SCALE_DATABASE_URL to an existing database)")
                break
    if not settings.scale_redis_url and not shutil.which("redis-server"):
        problems.append("redis-server is missing: apt-get install -y redis-server "
                        "(or set FRESHET_SCALE_REDIS_URL to an existing Redis)")
    return problems


def _redis_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class ScaleStack(Stack):
    """Postgres, Redis, Prefect's services, two API servers and N workers (see the module docstring)."""

    # workers of a work pool: the recipe for several machines (``prefect deploy`` once, workers anywhere)
    default_runner = "worker"

    @property
    def dir(self) -> Path:
        return self.settings.stack_dir / "scale"

    @property
    def pg_dir(self) -> Path:
        return self.dir / "postgres"

    def api_url(self, name: str = "server") -> str | None:
        port = self.state().get("ports", {}).get(name)
        return f"http://127.0.0.1:{port}/api" if port else None

    def worker_api_url(self) -> str | None:
        return self.api_url("server_b")

    def running(self) -> bool:
        state = self.state()
        return bool(state) and all(alive(state.get(n, {})) and healthy(self.api_url(n) or "") for n in SERVERS)

    def worker_names(self) -> list[str]:
        return ["worker"] + [f"worker-{i}" for i in range(2, self.settings.scale_workers + 1)]

    # ------------------------------------------------------------------ settings of each process
    def database_url(self) -> str:
        if self.settings.scale_database_url:
            return self.settings.scale_database_url
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.state()['ports']['postgres']}/postgres"

    def redis_url(self) -> str:
        return self.settings.scale_redis_url or f"redis://127.0.0.1:{self.state()['ports']['redis']}/0"

    def server_env(self) -> dict[str, str]:
        """What every Prefect server process (both API servers and the services) needs."""
        env = self.client_env({**SERVER_ENV, **REDIS_PREFECT_ENV})
        env.pop("PREFECT_API_URL")
        env.update({
            "PREFECT_API_DATABASE_CONNECTION_URL": self.database_url(),
            "PREFECT_REDIS_MESSAGING_URL": self.redis_url(),
            "PREFECT_SERVER_DOCKET_URL": self.redis_url(),
        })
        return env

    def worker_env(self) -> dict[str, str]:
        return {**self.client_env(), **WORKER_ENV, "PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE": "1",
                "PREFECT_API_URL": self.worker_api_url() or ""}

    # ------------------------------------------------------------------ components
    def _ports(self, state: dict) -> dict[str, int]:
        ports = dict(state.get("ports", {}))
        for name in ("postgres", "redis", *SERVERS):
            if not ports.get(name) or (not alive(state.get(name, {})) and port_in_use(ports[name])):
                ports[name] = free_port()
        return ports

    def _pg_user(self) -> dict:
        """Run PostgreSQL as ourselves, or as freshet-pg when we are root (it refuses root)."""
        if os.geteuid() != 0:
            return {}
        try:
            pwd.getpwnam(PG_USER)
        except KeyError:
            subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", PG_USER],
                           check=True, capture_output=True)
        for parent in self.pg_dir.parents:
            mode = parent.stat().st_mode
            if not mode & stat.S_IXOTH:
                raise StackError(f"PostgreSQL runs as user {PG_USER}, who cannot reach {self.pg_dir}: {parent} is not "
                                 f"searchable by others (chmod o+x {parent}), or set FRESHET_STACK_DIR elsewhere, "
                                 "or FRESHET_SCALE_DATABASE_URL to an existing database")
        return {"user": PG_USER}

    def _start_postgres(self, state: dict, out) -> None:
        bins = self.settings.postgres_bin_dir
        as_user = self._pg_user()
        if not (self.pg_dir / "PG_VERSION").exists():
            self.pg_dir.mkdir(parents=True, exist_ok=True)
            if as_user:
                shutil.chown(self.pg_dir, PG_USER, PG_USER)
            out(f"creating a throwaway PostgreSQL cluster in {self.pg_dir} (initdb)")
            result = subprocess.run([str(bins / "initdb"), "-D", str(self.pg_dir), "-U", "postgres", "--auth=trust",
                                     "-E", "UTF8"], capture_output=True, text=True, cwd="/", **as_user)
            if result.returncode != 0:
                raise StackError(f"initdb failed: {(result.stderr or result.stdout).strip()[-800:]}")
        port = state["ports"]["postgres"]
        out(f"starting PostgreSQL on 127.0.0.1:{port} (log: {self.dir / 'postgres.log'})")
        cmd = [str(bins / "postgres"), "-D", str(self.pg_dir), "-p", str(port), "-c", "listen_addresses=127.0.0.1",
               "-c", f"unix_socket_directories={self.pg_dir}", "-c", "max_connections=200"]
        state["postgres"] = self._spawn("postgres", cmd, {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8"},
                                        Path("/"), **as_user)
        self.save(state)
        wait_until("waiting for PostgreSQL", lambda: subprocess.run(
            [str(bins / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)], capture_output=True).returncode == 0,
            60, f"See {self.dir / 'postgres.log'}.", out=out)

    def _start_redis(self, state: dict, out) -> None:
        port = state["ports"]["redis"]
        out(f"starting Redis on 127.0.0.1:{port} (no persistence; log: {self.dir / 'redis.log'})")
        (self.dir / "redis").mkdir(parents=True, exist_ok=True)
        state["redis"] = self._spawn("redis", [shutil.which("redis-server") or "redis-server", "--port", str(port),
                                               "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                               "--dir", str(self.dir / "redis")], dict(os.environ), self.dir)
        self.save(state)
        wait_until("waiting for Redis", lambda: _redis_ping(port), 30, f"See {self.dir / 'redis.log'}.", out=out)

    def _start_server(self, name: str, state: dict, root: Path, out) -> None:
        port = state["ports"][name]
        out(f"starting Prefect API server {name} (--no-services) on http://127.0.0.1:{port} "
            f"(log: {self.dir / (name + '.log')})")
        state[name] = self._spawn(name, [_prefect_executable(), "server", "start", "--host", "127.0.0.1", "--port",
                                         str(port), "--no-services"], self.server_env(), root)
        self.save(state)

    def _wait_server(self, name: str, out) -> None:
        auth = self.server_env().get("PREFECT_SERVER_API_AUTH_STRING")
        wait_until(f"waiting for API server {name}'s health check", lambda: healthy(self.api_url(name), auth=auth),
                   240, f"See {self.dir / (name + '.log')}.", out=out)

    def up(self, out=print) -> str:
        """Start whatever of the topology is not running; deploy; return the clients' API URL."""
        problems = missing_requirements(self.settings)
        if problems:
            raise StackError("the scale topology cannot start here:\n  " + "\n  ".join(problems))
        root = project_root()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.home.mkdir(parents=True, exist_ok=True)
        state = self.state()
        state["ports"] = self._ports(state)
        state["topology"] = "scale"
        self.save(state)
        if not self.settings.scale_database_url and not alive(state.get("postgres", {})):
            self._start_postgres(state, out)
        if not self.settings.scale_redis_url and not alive(state.get("redis", {})):
            self._start_redis(state, out)
        # the first API server migrates the database; the other processes start once it is healthy
        if not alive(state.get("server", {})):
            self._start_server("server", state, root, out)
        self._wait_server("server", out)
        if not alive(state.get("services", {})):
            out(f"starting Prefect's services (log: {self.dir / 'services.log'})")
            state["services"] = self._spawn("services", [_prefect_executable(), "server", "services", "start"],
                                            self.server_env(), root)
            self.save(state)
        if not alive(state.get("server_b", {})):
            self._start_server("server_b", state, root, out)
        self._wait_server("server_b", out)
        self.start_runners(state, self.client_env(), root, out)
        out(f"clients use {self.api_url()}")
        out(f"database {self.database_url()}   redis {self.redis_url()}   lake {self.settings.lake_url}")
        return self.api_url()

    def stop(self, name: str, out=print) -> int | None:
        """Stop one recorded process (PostgreSQL with a fast shutdown); ``up`` starts it again."""
        state = self.state()
        proc = state.get(name)
        if not proc or not alive(proc):
            if proc:
                out(f"{name} (pid {proc['pid']}) is not running")
            return None
        _terminate_group(proc["pid"], signal.SIGINT if name == "postgres" else signal.SIGTERM, grace=20.0)
        out(f"stopped {name} (pid {proc['pid']})")
        return proc["pid"]

    def down(self, out=print) -> list[int]:
        """Stop exactly the processes ``up`` started, clients first, the database last."""
        state = self.state()
        names = [n for group in ORDER_DOWN for n in (self.worker_names() + [k for k in state if k.startswith("worker-")]
                                                      if group == "workers" else [group])]
        stopped = [pid for name in dict.fromkeys(names) if (pid := self.stop(name, out)) is not None]
        if state:
            self.save({k: v for k, v in self.state().items() if not isinstance(v, dict) or "pid" not in v})
        return stopped
