"""The ``train`` flow: features, XGBoost, evaluation against champion and baseline, promotion.

Started by the ``data.landed`` deployment trigger (``uris`` and ``event_id`` come
from the event) or by a person from the UI with defaults, which trains on
everything the manifest holds. The manifest, not the event, decides what is new:
when the registry already holds a model for exactly the manifest's data, the run
ends in seconds as "nothing new". Runs for one dataset are serialised by a
Prefect global concurrency limit (at most one run waits; see ``freshet.locks``),
fitting takes one of the machine's shared training slots, and a run re-checks the
manifest after training so data that landed meanwhile is not left behind.
"""

from __future__ import annotations

import platform
import time
from datetime import datetime, timezone
from typing import Any

import polars as pl
import xgboost as xgb
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

import freshet
from freshet import events
from freshet.modeling import registry
from freshet.modeling import model as M
from freshet.modeling import training as T
from freshet.data.contracts import Contract, load_contract
from freshet.data.ingestion import (ManifestReader, admit_file, load_curated, unadmitted_uris,
                                    unknown_landing_files)
from freshet.data.lake import Lake
from freshet.locks import dataset_lock, training_slot
from freshet.settings import Settings, get_settings

# Every task takes ``cache_policy=NO_CACHE``: Prefect's default policy hashes each input,
# which pickles whole frames (about 1 s and a full copy per million rows); the manifest,
# not a task cache, is what makes a run idempotent.


@task(name="admit-pending", cache_policy=NO_CACHE)
def admit_pending(contract: Contract, uris: list[str], settings: Settings) -> list[str]:
    """Validate and admit event URIs the manifest does not hold yet; returns problems found."""
    lake = Lake.from_settings(settings)
    log = get_run_logger()
    problems = []
    for uri in uris:
        result = admit_file(lake, contract, uri, future_tolerance_hours=settings.future_tolerance_hours,
                            on_bad_rows=settings.on_bad_rows)
        (log.info if result.ok else log.warning)(result.message())
        if not result.ok:
            problems.append(result.message())
    return problems


@task(name="gather-manifest", cache_policy=NO_CACHE)
def gather(contract: Contract, settings: Settings, triggered: bool) -> list[dict[str, Any]]:
    """The manifest to train on, after admitting unannounced landing files and letting a burst settle.

    An event-triggered run looks no earlier than ``trigger_throttle_seconds`` after its
    event (events Prefect dropped meanwhile have landed by then), and then waits for
    ``debounce_quiet_seconds`` without a new file, at most ``debounce_max_wait_seconds``.
    """
    log = get_run_logger()
    lake = Lake.from_settings(settings)
    start = time.monotonic()
    not_before = start
    if triggered:
        scheduled = flow_run.get_scheduled_start_time()
        since_event = (datetime.now(timezone.utc) - scheduled).total_seconds() if scheduled else 0.0
        not_before = start + max(0.0, settings.trigger_throttle_seconds - since_event)
    deadline = start + settings.debounce_max_wait_seconds
    quiet = settings.debounce_quiet_seconds if triggered else 0.0
    seen, last_change = -1, start
    manifest = ManifestReader(lake, contract.name)  # each poll lists the folder and reads only new entries
    while True:
        entries = manifest.entries()
        unknown = unknown_landing_files(lake, contract.name, entries, manifest.aliases())
        if unknown:
            log.info("admitting %d landing file(s) nobody announced", len(unknown))
            admit_pending.fn(contract, unknown, settings)
            entries = manifest.entries()
        now = time.monotonic()
        if len(entries) != seen:
            if seen >= 0:
                log.info("debounce: %d new file(s) landed; waiting for %.0f s of quiet", len(entries) - seen, quiet)
            seen, last_change = len(entries), now
        if (now >= not_before and now - last_change >= quiet) or now >= deadline:
            return entries
        time.sleep(0.5)


@task(name="load-curated", cache_policy=NO_CACHE)
def load_data(contract: Contract, entries: list[dict[str, Any]], settings: Settings) -> tuple[pl.LazyFrame, dict[str, Any]]:
    """The curated rows as a lazy plan, and their row count and time range (one cheap scan)."""
    data = load_curated(Lake.from_settings(settings), entries, contract)
    t = pl.col(contract.time_column)
    stats = data.select(pl.len().alias("rows"), t.min().alias("min"), t.max().alias("max")).collect()
    return data, stats.row(0, named=True)


@task(name="build-features", cache_policy=NO_CACHE)
def features_task(contract: Contract, data: pl.LazyFrame, stats: dict[str, Any], settings: Settings) -> T.Prepared:
    """The feature spec fitted to the history, and train / validation / backtest frames (about 5 M rows of series at a time)."""
    return T.prepare(data, contract, settings, stats)


@task(name="fit", cache_policy=NO_CACHE)
def fit_task(prep: T.Prepared, settings: Settings) -> tuple[T.Candidate, list[T.Candidate]]:
    """One early-stopped fit per target-transform candidate; the best on validation is chosen."""
    return T.fit_candidates(prep, settings)


@task(name="evaluate", cache_policy=NO_CACHE)
def evaluate(prep: T.Prepared, chosen: T.Candidate, champ: dict | None, settings: Settings) -> tuple[dict, list, str | None]:
    """Rolling-origin backtest: the new model, the champion and seasonal naive on every window."""
    champion = None
    if champ is not None:
        champion = (registry.load_booster(Lake.from_settings(settings), prep.contract.name, champ["version"]), champ)
    scores, windows, note = T.backtest(prep, chosen, champion)
    if note:
        get_run_logger().warning(note)
    return scores, windows, note


@task(name="refit", cache_policy=NO_CACHE)
def refit_task(prep: T.Prepared, chosen: T.Candidate, settings: Settings) -> M.FitResult:
    """The serving model: refit on every row up to the newest with the evaluation's rounds."""
    return T.refit(prep, chosen, settings)


@task(name="register", cache_policy=NO_CACHE)
def register_task(dataset: str, version: str, booster: xgb.Booster, meta: dict, settings: Settings) -> None:
    registry.register(Lake.from_settings(settings), dataset, version, booster, meta)


@task(name="promote", cache_policy=NO_CACHE)
def promote_task(dataset: str, version: str, settings: Settings) -> None:
    registry.promote(Lake.from_settings(settings), dataset, version)


def _lineage(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keep = ("content_hash", "uri", "rows", "min_time", "max_time", "landed_at", "admitted_at")
    return [{k: e.get(k) for k in keep} for e in entries]


def _emit(name: str, dataset: str, payload: dict, keys: list[str]) -> None:
    try:
        events.emit(events.build_event(name, dataset, payload, keys))
    except events.EmitError as exc:
        get_run_logger().error("%s; the registry already holds the outcome, nothing is lost", exc)


def train_once(contract: Contract, entries: list[dict[str, Any]], settings: Settings, event_id: str | None) -> dict[str, Any]:
    """Train, evaluate, register and maybe promote one model on the given manifest entries."""
    log = get_run_logger()
    lake = Lake.from_settings(settings)
    dataset = contract.name
    timings: dict[str, float] = {}

    def timed(name: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        timings[name] = round(time.perf_counter() - start, 3)
        return result

    fingerprint = registry.data_fingerprint([e["content_hash"] for e in entries])
    data, stats = timed("load", load_data, contract, entries, settings)
    max_time = stats["max"]
    prep = timed("features", features_task, contract, data, stats, settings)
    chosen, candidates = timed("fit", fit_task, prep, settings)
    champ = registry.champion(lake, dataset)
    scores, windows, note = timed("evaluate", evaluate, prep, chosen, champ, settings)
    served = timed("refit", refit_task, prep, chosen, settings)
    result = T.finish(prep, chosen, candidates, scores, windows, note, served, settings, timings)
    promote, reason = result.promote, result.reason
    version = registry.new_version(fingerprint)
    covered_before = {c["content_hash"] for c in (champ or {}).get("lineage", [])}
    fresh = [e for e in entries if e["content_hash"] not in covered_before]
    meta = {
        "version": version,
        "dataset": dataset,
        "fingerprint": fingerprint,
        "trained_at": datetime.now(timezone.utc).isoformat(),
        "lineage": _lineage(entries),
        "new_files": [e["content_hash"] for e in fresh],
        "champion_version": champ["version"] if champ else None,
        **result.meta,
        "contract": contract.fingerprint,
        "versions": {"freshet": freshet.__version__, "xgboost": xgb.__version__, "polars": pl.__version__,
                     "prefect": _prefect_version(), "python": platform.python_version()},
        "event_id": event_id,
        "flow_run_id": str(flow_run.get_id() or ""),
    }
    timings = meta["timings"]
    timings["register"] = 0.0
    meta["timings"] = timings
    start = time.perf_counter()
    register_task(dataset, version, result.booster, meta, settings)
    timings["register"] = round(time.perf_counter() - start, 3)
    _emit(events.MODEL_TRAINED, dataset, _model_payload(meta), [fingerprint])
    outcome = {"version": version, "promoted": promote, "reason": reason, "metrics": scores, "timings": timings,
               "fingerprint": fingerprint, "rows": stats["rows"], "watermark": str(max_time), "files": len(entries)}
    if promote:
        promote_task(dataset, version, settings)
        landed = [e["landed_at"] for e in fresh if e.get("landed_at")]
        outcome["freshness_lag_seconds"] = (
            (datetime.now(timezone.utc) - datetime.fromisoformat(min(landed))).total_seconds() if landed else None
        )
        _emit(events.MODEL_PROMOTED, dataset, _model_payload(meta) | {"freshness_lag_seconds": outcome["freshness_lag_seconds"]}, [fingerprint])
        log.info("PROMOTED %s %s: %s", dataset, version, reason)
    else:
        _emit(events.MODEL_REJECTED, dataset, _model_payload(meta), [fingerprint])
        log.info("NOT PROMOTED %s %s: %s", dataset, version, reason)
    _publish_artifacts(contract, meta, outcome)
    return outcome


def _model_payload(meta: dict[str, Any]) -> dict[str, Any]:
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


def _prefect_version() -> str:
    import prefect

    return prefect.__version__


def _fmt(m: dict | None, key: str) -> str:
    return "n/a" if not m or m.get(key) is None else f"{m[key]:.4f}"


def _coverage(iv: dict | None) -> str:
    """``p10-p90 78% (nominal 80%)`` for each central interval; n/a without a cross-fitted score."""
    if not iv or not iv.get("coverage"):
        return "n/a"
    return "; ".join(f"{k} {100 * v['empirical']:.0f}% (nominal {100 * v['nominal']:.0f}%)" for k, v in iv["coverage"].items())


def _publish_artifacts(contract: Contract, meta: dict[str, Any], outcome: dict[str, Any]) -> None:
    key = f"freshet-{contract.name.replace('_', '-')}"
    s = meta["metrics"]
    rows = [
        {"model": name, "version": v, "mae": _fmt(s[name], "mae"), "rmse": _fmt(s[name], "rmse"), "wape": _fmt(s[name], "wape")}
        for name, v in (("model", meta["version"]), ("champion", meta["champion_version"] or "-"), ("baseline", "seasonal naive"))
    ]
    create_table_artifact(key=f"{key}-metrics", table=rows, description=f"Holdout metrics for {contract.name}")
    lag = outcome.get("freshness_lag_seconds")
    report = f"""# {contract.name}: model {meta['version']}

**Decision:** {'promoted to champion' if meta['decision']['promote'] else 'not promoted'} ({meta['decision']['reason']})

| | |
|---|---|
| data range | {meta['data_range']['start']} .. {meta['data_range']['end']} |
| rows (train / valid / holdout) | {meta['rows']['train']} / {meta['rows']['valid']} / {meta['rows']['holdout']} |
| files in lineage | {len(meta['lineage'])} ({len(meta['new_files'])} new since the champion) |
| freshness lag (landing to promotion) | {f'{lag:.1f} s' if lag is not None else 'n/a'} |
| target transform / objective | {meta['transform']} / {meta['objective']} (candidates: {', '.join(f"{c['transform']} {c['validation']['wape']:.4f}" for c in meta['candidates'])}) |
| boosting rounds | evaluation {meta['evaluation']['rounds']} (best {meta['evaluation']['best_iteration']}); serving refit {meta['rounds']} on {meta['rows']['refit']} rows |
| timings (s) | {', '.join(f'{k} {v}' for k, v in meta['timings'].items())} |

| backtest (pooled) | MAE | RMSE | WAPE |
|---|---|---|---|
""" + "\n".join(f"| {r['model']} ({r['version']}) | {r['mae']} | {r['rmse']} | {r['wape']} |" for r in rows) + """

| window | from | to | rows | model WAPE | champion WAPE | seasonal naive WAPE | interval coverage | pinball (scaled) |
|---|---|---|---|---|---|---|---|---|
""" + "\n".join(f"| {w['window']} | {w['start']} | {w['end']} | {w['model']['rows']} | {_fmt(w['model'], 'wape')} | "
               f"{_fmt(w['champion'], 'wape')} | {_fmt(w['baseline'], 'wape')} | {_coverage(w.get('intervals'))} | "
               f"{_fmt(w.get('intervals'), 'pinball_scaled')} |" for w in meta['backtest']['windows']) + f"""

**Prediction intervals** (quantiles {', '.join(f'p{100 * q:g}' for q in (meta.get('intervals') or {}).get('quantiles', []))}):
conformal, from the backtest's residuals scaled by each series' level; each window's coverage uses only the other
windows' residuals. Pooled: coverage {_coverage(meta.get('intervals'))}, scaled pinball loss
{_fmt(meta.get('intervals'), 'pinball_scaled')}."""
    create_markdown_artifact(key=f"{key}-report", markdown=report, description=f"Training report for {contract.name}")


@flow(name="train", log_prints=True)
def train(dataset: str = "retail_sales", uris: list[str] | None = None, event_id: str | None = None,
          force: bool = False) -> dict:
    """Train an XGBoost forecaster on everything the manifest holds; promote it if it beats the champion.

    Args:
        dataset: Dataset name; a contract file <dataset>.toml must exist in FRESHET_CONTRACTS_DIR.
        uris: Landing URIs named by the triggering data.landed event. Any not yet in the manifest are validated and admitted first. Leave empty when starting by hand.
        event_id: Id of the triggering event (for lineage); filled in by the automation.
        force: Train even when a model for exactly this data already exists.
    """
    settings = get_settings()
    contract = load_contract(dataset, settings.contracts_dir)
    lake = Lake.from_settings(settings)
    if pending := unadmitted_uris(lake, dataset, list(uris or []), settings.max_event_uris, event_id):
        admit_pending(contract, pending, settings)

    with dataset_lock(dataset, queue=not force) as holder:
        if not holder:
            print(f"train {dataset}: another run is already waiting for this dataset's training slot and will "
                  "train on this run's data too; done")
            return {"dataset": dataset, "status": "queued-behind"}
        outcomes = []
        for _ in range(settings.max_train_rounds_per_run):
            entries = gather(contract, settings, triggered=bool(event_id) and not outcomes)
            if not entries:
                print(f"train {dataset}: the manifest is empty; land and ingest data first")
                return {"dataset": dataset, "status": "no-data"}
            fingerprint = registry.data_fingerprint([e["content_hash"] for e in entries])
            existing = registry.covered_by(registry.list_models(lake, dataset), fingerprint)
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
        f"baseline {m['baseline']['wape']:.4f}, champion {_fmt(m['champion'], 'wape')} ({len(outcomes)} training round(s))"
    )
    return {"dataset": dataset, "status": "trained", "rounds": len(outcomes), **last}


def _finish_interrupted_promotion(lake: Lake, dataset: str, existing: dict, settings: Settings) -> None:
    """A crash between registering a winner and moving the pointer is completed here."""
    champ = registry.champion(lake, dataset)
    if existing["decision"]["promote"] and (champ is None or champ["version"] < existing["version"]):
        get_run_logger().warning("completing the interrupted promotion of %s %s", dataset, existing["version"])
        promote_task(dataset, existing["version"], settings)
