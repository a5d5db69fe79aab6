"""The ``train`` flow: features, XGBoost, evaluation against champion and baseline, promotion.

Started by the ``data.landed`` deployment trigger (``uris`` and ``event_id`` come from the
event) or by a person from the UI, which trains on everything the manifest holds. The manifest,
not the event, decides what is new: when the registry already holds a model for exactly the
manifest's data, the run ends in seconds as "nothing new". Runs for one dataset are serialised
by a Prefect global concurrency limit (at most one run waits; ``freshet.locks``), fitting takes
one of the machine's shared training slots, and a run looks at the manifest again after training
(the last look once the trigger's throttle window has passed) so data that landed meanwhile,
announced or not, is not left behind.
"""

from __future__ import annotations

import time
from typing import Any

import polars as pl
import xgboost as xgb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from freshet import events
from freshet.data.contracts import Contract, load_contract
from freshet.data.ingestion import admit_uris, load_curated, unadmitted_uris
from freshet.data.lake import Lake
from freshet.data.settle import settled_entries, throttle_window_end
from freshet.modeling import registry, report
from freshet.modeling import training as T
from freshet.locks import dataset_lock, training_slot
from freshet.settings import Settings, get_settings

# Every task takes ``cache_policy=NO_CACHE``: Prefect's default policy hashes each input,
# which pickles whole frames (about 1 s and a full copy per million rows); the manifest,
# not a task cache, is what makes a run idempotent.


@task(name="admit-pending", cache_policy=NO_CACHE)
def admit_pending(contract: Contract, uris: list[str], settings: Settings) -> list[str]:
    """Validate and admit event URIs the manifest does not hold yet; returns problems found."""
    return admit_uris(Lake.from_settings(settings), contract, uris, settings, get_run_logger())


@task(name="gather-manifest", cache_policy=NO_CACHE)
def gather(contract: Contract, settings: Settings, quiet: float, not_before: float = 0.0) -> list[dict[str, Any]]:
    """The manifest once no file has landed for ``quiet`` s, not before ``not_before`` (``freshet.data.settle``)."""
    return settled_entries(Lake.from_settings(settings), contract.name,
                           lambda uris: admit_pending.fn(contract, uris, settings), not_before=not_before,
                           quiet=quiet, deadline=time.monotonic() + settings.debounce_max_wait_seconds,
                           log=get_run_logger())


def load_data(contract: Contract, entries: list[dict[str, Any]], settings: Settings) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """The curated rows as a lazy plan, and their row count and time range (one cheap scan)."""
    data = load_curated(Lake.from_settings(settings), entries, contract)
    t = pl.col(contract.time_column)
    stats = data.select(pl.len().alias("rows"), t.min().alias("min"), t.max().alias("max")).collect()
    return data, stats.row(0, named=True)


def load_champion(dataset: str, settings: Settings) -> tuple[xgb.Booster, dict[str, Any]] | None:
    """The current champion's booster and meta.json, None before the first promotion."""
    lake = Lake.from_settings(settings)
    meta = registry.champion(lake, dataset)
    return None if meta is None else (registry.load_booster(lake, dataset, meta["version"]), meta)


def register(dataset: str, version: str, booster: xgb.Booster, meta: dict, settings: Settings) -> None:
    registry.register(Lake.from_settings(settings), dataset, version, booster, meta)


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(dataset: str, version: str, settings: Settings) -> None:
    registry.promote(Lake.from_settings(settings), dataset, version)


# Each step of a training runs as a task of the step's name (the UI shows them in order);
# their order lives in ``training.train_model``, not here.
TASK_NAMES = {"load": "load-curated", "champion": "load-champion", "features": "build-features", "fit": "fit",
              "evaluate": "evaluate", "refit": "refit", "register": "register"}


def _as_task(name: str, fn):
    return task(fn, name=TASK_NAMES[name], cache_policy=NO_CACHE)


def train_once(contract: Contract, entries: list[dict[str, Any]], settings: Settings, event_id: str | None) -> dict[str, Any]:
    """Train, evaluate, register and maybe promote one model on the given manifest entries."""
    log = get_run_logger()
    dataset = contract.name
    steps = T.Steps(wrap=_as_task)
    fingerprint = registry.data_fingerprint([e["content_hash"] for e in entries])
    data, stats = steps("load", load_data, contract, entries, settings)
    champion = steps("champion", load_champion, dataset, settings)
    result = T.train_model(data, contract, champion, settings, stats, steps=steps)
    if result.champion_note:
        log.warning(result.champion_note)
    version = registry.new_version(fingerprint)
    meta = registry.model_record(result.meta, dataset=dataset, version=version, fingerprint=fingerprint,
                                 entries=entries, champion_meta=champion[1] if champion else None,
                                 contract_fingerprint=contract.fingerprint, event_id=event_id,
                                 flow_run_id=str(flow_run.get_id() or ""))
    meta["timings"]["register"] = 0.0  # written before it is measured; the run's outcome has the real figure
    steps("register", register, dataset, version, result.booster, meta, settings)
    meta["timings"]["register"] = steps.timings["register"]
    _emit(events.MODEL_TRAINED, dataset, events.model_payload(meta), [fingerprint])
    lag = None
    if result.promote:
        promote_task(dataset, version, settings)
        lag = registry.freshness_lag_seconds(meta)
        _emit(events.MODEL_PROMOTED, dataset, events.model_payload(meta) | {"freshness_lag_seconds": lag}, [fingerprint])
        log.info("PROMOTED %s %s: %s", dataset, version, result.reason)
    else:
        _emit(events.MODEL_REJECTED, dataset, events.model_payload(meta), [fingerprint])
        log.info("NOT PROMOTED %s %s: %s", dataset, version, result.reason)
    key = f"freshet-{dataset.replace('_', '-')}"
    create_table_artifact(key=f"{key}-metrics", table=report.metrics_rows(meta), description=f"Holdout metrics for {dataset}")
    create_markdown_artifact(key=f"{key}-report", markdown=report.train_report(meta, lag),
                             description=f"Training report for {dataset}")
    return {"version": version, "promoted": result.promote, "reason": result.reason, "metrics": result.scores,
            "timings": meta["timings"], "fingerprint": fingerprint, "rows": stats["rows"],
            "watermark": str(stats["max"]), "files": len(entries), "freshness_lag_seconds": lag}


def _emit(name: str, dataset: str, payload: dict, keys: list[str]) -> None:
    events.emit_or_log(events.build_event(name, dataset, payload, keys), get_run_logger(),
                       "the registry already holds the outcome, nothing is lost")


@flow(name="train", log_prints=True)
def train(dataset: str = "retail_sales", uris: list[str] | None = None, event_id: str | None = None,
          force: bool = False, reason: str | None = None) -> dict:
    """Train an XGBoost forecaster on everything the manifest holds; promote it if it beats the champion.

    Args:
        dataset: Dataset name; a contract file <dataset>.toml must exist in FRESHET_CONTRACTS_DIR.
        uris: Landing URIs named by the triggering data.landed event. Any not yet in the manifest are validated and admitted first. Leave empty when starting by hand.
        event_id: Id of the triggering event (for lineage); filled in by the automation.
        force: Train even when a model for exactly this data already exists.
        reason: Why the run was started, when not by data.landed (model.degraded fills in the drift evidence).
    """
    settings = get_settings()
    if reason:
        print(f"train {dataset}: started because {reason}")
        create_markdown_artifact(key=f"freshet-{dataset.replace('_', '-')}-trigger", markdown=f"# Why train ran\n\n{reason}",
                                 description=f"What started this {dataset} training run")
    contract = load_contract(dataset, settings.contracts_dir)
    lake = Lake.from_settings(settings)
    if pending := unadmitted_uris(lake, dataset, list(uris or []), settings.max_event_uris, event_id):
        admit_pending(contract, pending, settings)

    with dataset_lock(dataset, queue=not force) as holder:
        if not holder:
            print(f"train {dataset}: another run is already waiting for this dataset's training slot and will "
                  "train on this run's data too; done")
            return {"dataset": dataset, "status": "queued-behind"}
        outcomes: list[dict[str, Any]] = []
        look_until = (throttle_window_end(settings.trigger_throttle_seconds, flow_run.get_scheduled_start_time())
                      if event_id else 0.0)  # the automation schedules its run at the event's time
        for i in range(rounds := settings.max_train_rounds_per_run):  # the last round waits out the window
            quiet = settings.debounce_quiet_seconds if event_id and not outcomes else 0.0
            entries = gather(contract, settings, quiet, look_until if i == rounds - 1 else 0.0)
            if (existing := registry.model_for(lake, dataset, entries)) and not force and time.monotonic() < look_until:
                entries = gather(contract, settings, 0.0, look_until)  # files whose events the trigger dropped
                existing = registry.model_for(lake, dataset, entries)
            if not entries:
                print(f"train {dataset}: the manifest is empty; land and ingest data first")
                return {"dataset": dataset, "status": "no-data"}
            if existing and not force:
                _finish_interrupted_promotion(lake, dataset, existing, settings)
                break
            with training_slot(settings.train_slots):
                outcomes.append(train_once(contract, entries, settings, event_id))
            force = False
        if not outcomes:
            print(f"train {dataset}: nothing new: model {existing['version']} already covers all "
                  f"{len(entries)} file(s) in the manifest; done")
            return {"dataset": dataset, "status": "nothing-new", "version": existing["version"]}
    last = outcomes[-1]
    m = last["metrics"]
    print(
        f"train {dataset}: model {last['version']} {'PROMOTED' if last['promoted'] else 'not promoted'} "
        f"on {last['files']} file(s), {last['rows']} rows up to {last['watermark']}: WAPE {m['model']['wape']:.4f} vs "
        f"baseline {m['baseline']['wape']:.4f}, naive {report.fmt(m.get('naive'), 'wape')}, champion {report.fmt(m['champion'], 'wape')} ({len(outcomes)} training round(s))"
    )
    return {"dataset": dataset, "status": "trained", "rounds": len(outcomes), **last}


def _finish_interrupted_promotion(lake: Lake, dataset: str, existing: dict, settings: Settings) -> None:
    """A crash between registering a winner and moving the pointer is completed here."""
    champ = registry.champion(lake, dataset)
    if existing["decision"]["promote"] and (champ is None or champ["version"] < existing["version"]):
        get_run_logger().warning("completing the interrupted promotion of %s %s", dataset, existing["version"])
        promote_task(dataset, existing["version"], settings)
