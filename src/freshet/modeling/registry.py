"""Model registry on the lake: every trained model, and an atomic champion pointer.

``models/<dataset>/<version>/model.ubj`` (XGBoost's native format, never pickle)
is written first and ``meta.json`` last, so a version is visible only when it is
complete. ``champion.json`` names the champion version and is replaced in one
atomic write; it only ever names a version whose files are complete.
"""

from __future__ import annotations

import hashlib
import os
import platform
import tempfile
from datetime import datetime, timezone
from importlib.metadata import version as installed
from typing import Any

import polars as pl
import xgboost as xgb

import freshet
from freshet.data.lake import Lake


def data_fingerprint(content_hashes: list[str]) -> str:
    """One id for a set of admitted files: the same data always has the same fingerprint."""
    return hashlib.sha256(",".join(sorted(content_hashes)).encode()).hexdigest()[:16]


def covered_by(models: list[dict[str, Any]], fingerprint: str) -> dict[str, Any] | None:
    """The newest model already trained on exactly this data, if any."""
    matches = [m for m in models if m["fingerprint"] == fingerprint]
    return matches[-1] if matches else None


def model_for(lake: Lake, dataset: str, entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest registered model trained on exactly these manifest entries, if any."""
    fingerprint = data_fingerprint([e["content_hash"] for e in entries])
    return covered_by(list_models(lake, dataset), fingerprint) if entries else None


def uncovered(entries: list[dict[str, Any]], models: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Manifest entries that no registered model has in its lineage."""
    seen = {item["content_hash"] for m in models for item in m.get("lineage", [])}
    return [e for e in entries if e["content_hash"] not in seen]


def new_version(fingerprint: str, now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return f"{now.strftime('%Y%m%dT%H%M%S%fZ')}-{fingerprint[:8]}"


def register(lake: Lake, dataset: str, version: str, booster: xgb.Booster, meta: dict[str, Any]) -> None:
    """Write a model and its metadata; the metadata last, as the commit point."""
    base = lake.path("models", dataset, version)
    with tempfile.TemporaryDirectory(prefix="freshet-model-") as work:
        local = os.path.join(work, "model.ubj")
        booster.save_model(local)
        lake.publish_file(local, f"{base}/model.ubj")
    lake.write_json(f"{base}/meta.json", meta)


def list_models(lake: Lake, dataset: str) -> list[dict[str, Any]]:
    """Metadata of every complete model version, oldest first."""
    dirs = [d for d in lake.list(lake.models_dir(dataset)) if not d.endswith(".json")]
    metas = [f"{d}/meta.json" for d in dirs]
    found = []
    for meta_path in metas:
        if lake.exists(meta_path):
            found.append(meta_path)
    return sorted(lake.read_json_many(found), key=lambda m: m["version"])


def load_booster(lake: Lake, dataset: str, version: str) -> xgb.Booster:
    booster = xgb.Booster()
    booster.load_model(bytearray(lake.read_bytes(lake.path("models", dataset, version, "model.ubj"))))
    return booster


def champion(lake: Lake, dataset: str) -> dict[str, Any] | None:
    """The champion's metadata, or None before the first promotion."""
    pointer = lake.champion_path(dataset)
    if not lake.exists(pointer):
        return None
    version = lake.read_json(pointer)["version"]
    return lake.read_json(lake.path("models", dataset, version, "meta.json"))


def promote(lake: Lake, dataset: str, version: str) -> None:
    """Move the champion pointer to a complete version, atomically."""
    meta_path = lake.path("models", dataset, version, "meta.json")
    if not lake.exists(meta_path):
        raise ValueError(f"cannot promote {dataset} {version}: it is not a complete registered model")
    lake.write_json(
        lake.champion_path(dataset),
        {"version": version, "promoted_at": datetime.now(timezone.utc).isoformat()},
    )


LINEAGE_FIELDS = ("content_hash", "uri", "rows", "min_time", "max_time", "landed_at", "admitted_at")


def model_record(trained: dict[str, Any], *, dataset: str, version: str, fingerprint: str,
                 entries: list[dict[str, Any]], champion_meta: dict[str, Any] | None, contract_fingerprint: str,
                 event_id: str | None, flow_run_id: str) -> dict[str, Any]:
    """A model's meta.json: the training's fields (``TrainingResult.meta``) with lineage, versions and run ids.

    ``new_files`` are the manifest entries the champion had not seen: the landings this model answers.
    """
    seen = {c["content_hash"] for c in (champion_meta or {}).get("lineage", [])}
    return {
        "version": version,
        "dataset": dataset,
        "fingerprint": fingerprint,
        "trained_at": datetime.now(timezone.utc).isoformat(),
        "lineage": [{k: e.get(k) for k in LINEAGE_FIELDS} for e in entries],
        "new_files": [e["content_hash"] for e in entries if e["content_hash"] not in seen],
        "champion_version": champion_meta["version"] if champion_meta else None,
        **trained,
        "contract": contract_fingerprint,
        "versions": {"freshet": freshet.__version__, "xgboost": xgb.__version__, "polars": pl.__version__,
                     "prefect": installed("prefect"), "python": platform.python_version()},
        "event_id": event_id,
        "flow_run_id": flow_run_id,
    }


def freshness_lag_seconds(meta: dict[str, Any], now: datetime | None = None) -> float | None:
    """Seconds from the oldest new file's landing to ``now`` (the promotion), None without landing times."""
    fresh = set(meta["new_files"])
    landed = [e["landed_at"] for e in meta["lineage"] if e["content_hash"] in fresh and e.get("landed_at")]
    if not landed:
        return None
    return ((now or datetime.now(timezone.utc)) - datetime.fromisoformat(min(landed))).total_seconds()
