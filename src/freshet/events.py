"""Event names, resources, payloads and ids: the contract between ingestion and training.

Every module that emits or matches a freshet event imports it from here.
Event ids are deterministic (uuid5 of the event name, dataset and content
hashes), so a retried emission is recognisably the same event and Prefect's
trigger service ignores the copy.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import datetime, timezone
from typing import Any

DATA_LANDED = "data.landed"
DATA_REJECTED = "data.rejected"
MODEL_TRAINED = "model.trained"
MODEL_PROMOTED = "model.promoted"
MODEL_REJECTED = "model.rejected"
DATASET_STALE = "freshet.dataset.stale"
FORECAST_PUBLISHED = "forecast.published"
FORECAST_SCORED = "forecast.scored"
MODEL_DEGRADED = "model.degraded"

RESOURCE_PREFIX = "freshet.dataset."
DATASET_LABEL = "freshet.dataset"
MAX_PAYLOAD_BYTES = 256 * 1024

_NAMESPACE = uuid.UUID("6f0f1c5e-6d1b-4c53-9a5e-2f7c0b1d9e41")


class EmitError(RuntimeError):
    """An event could not be delivered to the Prefect API."""


def dataset_resource(dataset: str) -> dict[str, str]:
    return {"prefect.resource.id": f"{RESOURCE_PREFIX}{dataset}", DATASET_LABEL: dataset}


def event_id(event: str, dataset: str, keys: list[str]) -> uuid.UUID:
    """Deterministic id: the same event about the same content always gets the same id."""
    return uuid.uuid5(_NAMESPACE, f"{event}|{dataset}|{','.join(sorted(keys))}")


def landed_payload(dataset: str, files: list[dict[str, Any]]) -> dict[str, Any]:
    """Payload of ``data.landed`` from manifest-style file records.

    Each record has ``uri``, ``content_hash``, ``rows``, ``min_time`` and ``max_time``.
    """
    starts = [f["min_time"] for f in files if f.get("min_time")]
    ends = [f["max_time"] for f in files if f.get("max_time")]
    return {
        "dataset": dataset,
        "uris": [f["uri"] for f in files],
        "content_hashes": [f["content_hash"] for f in files],
        "rows": sum(int(f.get("rows") or 0) for f in files),
        "time_range": {"start": min(starts) if starts else None, "end": max(ends) if ends else None},
        "watermark": max(ends) if ends else None,
        "files": [
            {k: f.get(k) for k in ("uri", "content_hash", "rows", "min_time", "max_time", "landed_at")} for f in files
        ],
    }


def rejected_payload(dataset: str, uri: str, content_hash: str | None, reasons: list[dict], quarantine: str, rows_rejected: int, rows_admitted: int) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "uri": uri,
        "content_hash": content_hash,
        "quarantine": quarantine,
        "rows_rejected": rows_rejected,
        "rows_admitted": rows_admitted,
        "reasons": [{k: r[k] for k in ("column", "rule", "rows")} | {"detail": r.get("detail", "")} for r in reasons],
    }


def model_payload(meta: dict[str, Any]) -> dict[str, Any]:
    """``model.trained`` / ``model.promoted`` / ``model.rejected``: the model's identity, metrics and decision."""
    return {
        "dataset": meta["dataset"],
        "version": meta["version"],
        "fingerprint": meta["fingerprint"],
        "watermark": meta["data_watermark"],
        "metrics": meta["metrics"],
        "decision": meta["decision"],
        "files": len(meta["lineage"]),
        "event_id": meta["event_id"],
    }


def forecast_payload(dataset: str, model_version: str, method: str, watermark: str, rows: int, uri: str,
                     forecast_id: str, missing_series: int, event_id: str | None,
                     coverage: dict[str, float] | None = None) -> dict[str, Any]:
    """Payload of ``forecast.published`` (``coverage``: share of series x periods by method)."""
    return {
        "dataset": dataset,
        "model_version": model_version,
        "method": method,
        "watermark": watermark,
        "rows": rows,
        "uri": uri,
        "forecast_id": forecast_id,
        "missing_series": missing_series,
        "coverage": coverage or {},
        "event_id": event_id,
    }


def scored_payload(summary: dict[str, Any]) -> dict[str, Any]:
    """Payload of ``forecast.scored`` (and ``model.degraded``): the headline figures of one scoring pass."""
    return {k: summary[k] for k in ("dataset", "key", "uri", "watermark", "unforecast_rows", "overall", "by_model",
                                    "drift")}


def build_event(name: str, dataset: str, payload: dict[str, Any], keys: list[str], related: list[dict[str, str]] | None = None):
    """A Prefect ``Event`` with freshet's resource, deterministic id and bounded payload."""
    from prefect.events import Event

    body = json.dumps(payload, default=str)
    if len(body) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"{name} payload for {dataset} is {len(body)} bytes, over the {MAX_PAYLOAD_BYTES} limit")
    return Event(
        event=name,
        resource=dataset_resource(dataset),
        related=related or [],
        payload=json.loads(body),
        id=event_id(name, dataset, keys),
        occurred=datetime.now(timezone.utc),
    )


def emit(event, timeout: float = 20.0, attempts: int = 2) -> None:
    """Deliver one event and wait for the API to take it; raise ``EmitError`` if it can't.

    Unlike ``prefect.events.emit_event`` (fire-and-forget, drops the event after
    retries), this tells the caller whether the announcement reached Prefect.
    An attempt that times out (a busy API: SQLite's single writer under load) is
    made again, up to ``attempts`` in all; the event id is the same, so a copy that
    did arrive is ignored by the trigger service. A refused connection is not
    retried here (the events client already reconnects twice).
    """
    from prefect.client.orchestration import get_client
    from prefect.events.clients import get_events_client
    from prefect.events.related import related_resources_from_run_context
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def _send() -> None:
        if not event.related:
            # link the event to the flow run, flow and deployment emitting it (outside a run: none)
            async with get_client() as api:
                event.related = await related_resources_from_run_context(api)
        async with get_events_client(reconnection_attempts=2, checkpoint_every=1) as client:
            await client.emit(event)

    for attempt in range(1, attempts + 1):
        try:
            run_coro_as_sync(asyncio.wait_for(_send(), timeout))
            return
        except Exception as exc:  # noqa: BLE001 - any failure means "not delivered"
            if isinstance(exc, TimeoutError) and attempt < attempts:
                continue
            raise EmitError(f"could not deliver {event.event} ({event.id}) to the Prefect API after {attempt} "
                            f"attempt(s): {type(exc).__name__}: {exc}") from exc


def emit_or_log(event, log: Any, consequence: str) -> None:
    """``emit``, logging an undelivered event as an error with what it means (``consequence``) instead of raising.

    For announcements after the outcome is already on the lake: a lost event delays a
    reaction, it loses nothing.
    """
    try:
        emit(event)
    except EmitError as exc:
        log.error("%s; %s", exc, consequence)
