"""The scale topology's wiring, without starting it (the e2e suites start it: tests/e2e, topology ``scale``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from freshet.ops.scale import ScaleStack, missing_requirements
from freshet.settings import Settings


def test_missing_binaries_are_named_with_the_package_to_install(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server on it
    problems = missing_requirements(Settings(postgres_bin_dir=tmp_path / "nowhere"))
    assert any("apt-get install -y postgresql-15" in p for p in problems), problems
    assert any("apt-get install -y redis-server" in p for p in problems), problems
    # existing services need no local binaries
    assert missing_requirements(Settings(postgres_bin_dir=tmp_path / "nowhere", scale_database_url="postgresql+asyncpg://x/y",
                                         scale_redis_url="redis://x:6379/0")) == []


@pytest.mark.parametrize("external", [False, True])
def test_every_server_process_gets_redis_messaging_with_unbatched_publishing(tmp_path: Path, external: bool) -> None:
    settings = Settings(stack_dir=tmp_path, lake_url=str(tmp_path / "lake"),
                        **({"scale_database_url": "postgresql+asyncpg://u@db:5432/p", "scale_redis_url": "redis://r:6379/0"}
                           if external else {}))
    stack = ScaleStack(settings)
    stack.save({"ports": {"postgres": 5555, "redis": 6666, "server": 7001, "server_b": 7002}})
    env = stack.server_env()
    redis = "redis://r:6379/0" if external else "redis://127.0.0.1:6666/0"
    assert env["PREFECT_API_DATABASE_CONNECTION_URL"] == (
        "postgresql+asyncpg://u@db:5432/p" if external else "postgresql+asyncpg://postgres@127.0.0.1:5555/postgres")
    assert env["PREFECT_REDIS_MESSAGING_URL"] == env["PREFECT_SERVER_DOCKET_URL"] == redis
    assert env["PREFECT_MESSAGING_BROKER"] == env["PREFECT_MESSAGING_CACHE"] == "prefect_redis.messaging"
    assert env["PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"] == "prefect_redis.lease_storage"
    assert env["PREFECT_REDIS_MESSAGING_PUBLISHER_BATCH_SIZE"] == "1"
    assert "PREFECT_API_URL" not in env
    # clients talk to one API server, workers to the other: every event crosses Redis
    assert stack.client_env()["PREFECT_API_URL"] == "http://127.0.0.1:7001/api"
    assert stack.worker_env()["PREFECT_API_URL"] == "http://127.0.0.1:7002/api"
    assert stack.dir == tmp_path / "scale"
