"""The ``watchdog`` flow: the safety net for lost events, and the staleness alarm's action.

Scheduled (every 15 minutes in ``deployments/prefect.yaml``), it starts the
``train`` deployment for every dataset whose manifest holds files that no
registered model was trained on, or whose landing folder holds files never
ingested (``train`` admits them through validation first), so a lost
``data.landed`` delays a model but never strands data. Started by a dataset's staleness automation
(``reason="stale"``), it also logs the alarm and emits ``freshet.dataset.stale``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from prefect import flow, get_run_logger
from prefect.deployments import run_deployment

from freshet import events
from freshet.modeling import registry
from freshet.data.contracts import list_datasets, load_contract
from freshet.data.ingestion import read_manifest, unknown_landing_files
from freshet.data.lake import Lake
from freshet.settings import get_settings


@flow(name="watchdog", log_prints=True)
def watchdog(dataset: str | None = None, reason: str = "schedule") -> dict:
    """Retrain datasets whose manifest holds data no model has seen; raise the staleness alarm.

    Args:
        dataset: One dataset to check; empty checks every dataset with a contract.
        reason: "schedule" for the periodic sweep, "stale" when started by a staleness automation.
    """
    log = get_run_logger()
    settings = get_settings()
    lake = Lake.from_settings(settings)
    names = [dataset] if dataset else list_datasets(settings.contracts_dir)
    report: dict[str, Any] = {}
    for name in names:
        contract = load_contract(name, settings.contracts_dir)
        entries = read_manifest(lake, name)
        missing = registry.uncovered(entries, registry.list_models(lake, name))
        unannounced = unknown_landing_files(lake, name, entries)
        last_landing = max((e["landed_at"] for e in entries), default=None)
        item: dict[str, Any] = {"files": len(entries), "uncovered": len(missing), "unannounced": len(unannounced),
                                "last_landing": last_landing}
        if reason == "stale":
            log.warning(
                "STALE: no data.landed for %s within %.0f h (last landing %s). Check the ingestion job.",
                name, contract.staleness_hours, last_landing or "never",
            )
            payload = {"dataset": name, "last_landing": last_landing, "window_hours": contract.staleness_hours,
                       "at": datetime.now(timezone.utc).isoformat()}
            try:
                events.emit(events.build_event(events.DATASET_STALE, name, payload, [payload["at"]]))
            except events.EmitError as exc:
                log.error("%s", exc)
        if missing or unannounced:
            run = run_deployment(settings.train_deployment, parameters={"dataset": name}, timeout=0,
                                 tags=["freshet", "watchdog"])
            item["train_run"] = str(run.id)
            print(f"watchdog {name}: {len(missing)} admitted file(s) no model has seen, {len(unannounced)} landing "
                  f"file(s) never ingested; started train run {run.name} ({run.id})")
        else:
            print(f"watchdog {name}: every one of {len(entries)} file(s) is covered by a model")
        report[name] = item
    return report
