"""Operations: the local Prefect stack (server, pool, deployments, worker) and the ``freshet`` CLI."""
