"""The ``forecast`` flow: the champion (or seasonal naive) forecasts the next horizon after the newest data.

Started by ``model.promoted`` (a new champion forecasts at once) and ``data.landed``
(the current champion forecasts on the new actuals without waiting for training),
or by hand. The forecast's file name is derived from the model version, the manifest's
data fingerprint and the future values' fingerprint, so a duplicate event or a rerun
publishes no second file. Runs of one dataset are serialised (a Prefect global
concurrency limit ``freshet-forecast-<dataset>``), and an event-triggered run looks at
the manifest again once its trigger's throttle window has passed, so a burst whose
later events Prefect dropped is still forecast. Modeling is ``forecast_frame`` only.
"""

from __future__ import annotations

import base64
import time
from datetime import datetime, timezone
from typing import Any

import polars as pl
import polars.selectors as cs
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from freshet import events
from freshet.data.contracts import Contract, load_contract
from freshet.data.future import MAX_LOOKAHEAD_HOURS, future_contract, future_lake
from freshet.data.ingestion import admit_file, admit_uris, load_curated, read_manifest, unadmitted_uris, unknown_landing_files
from freshet.data.lake import Lake
from freshet.locks import dataset_lock
from freshet.modeling import publish, registry
from freshet.modeling.forecast import MODEL, SEASONAL_NAIVE, coverage, forecast_frame, format_coverage, known_in_advance
from freshet.settings import Settings, get_settings

class MissingFutureValues(RuntimeError):
    """No series could be forecast: every one was retired or left out under ``on_missing_future = "skip"``."""


@task(name="admit-pending", cache_policy=NO_CACHE)
def admit_pending(contract: Contract, uris: list[str], settings: Settings) -> None:
    """Validate and admit event URIs the manifest does not hold yet (an announcement from outside Prefect)."""
    admit_uris(Lake.from_settings(settings), contract, uris, settings, get_run_logger())


@task(name="admit-future", cache_policy=NO_CACHE)
def admit_future(contract: Contract, settings: Settings) -> list[str]:
    """Admit new files under ``future/landing/<dataset>/``; quarantine and announce bad ones. Returns problems."""
    lake, log = future_lake(Lake.from_settings(settings)), get_run_logger()
    fcontract = future_contract(contract)
    problems = []
    for uri in unknown_landing_files(lake, contract.name, read_manifest(lake, contract.name)):
        a = admit_file(lake, fcontract, uri, future_tolerance_hours=MAX_LOOKAHEAD_HOURS, on_bad_rows=settings.on_bad_rows)
        (log.info if a.ok else log.error)("future values: " + a.message())
        if a.status in ("rejected", "partial"):
            problems.append(a.message())
            payload = events.rejected_payload(contract.name, a.uri, a.content_hash, a.reasons, a.quarantine or "",
                                              a.rows_rejected, a.entry["rows"] if a.entry else 0)
            _emit(events.build_event(events.DATA_REJECTED, contract.name, payload, [a.content_hash or a.uri]))
    return problems


@task(name="load", cache_policy=NO_CACHE)
def load_inputs(contract: Contract, entries: list[dict], future_entries: list[dict], champ: dict | None,
                settings: Settings) -> tuple[pl.DataFrame, pl.DataFrame | None, Any]:
    """The curated history, the admitted future values and the champion's booster."""
    lake = Lake.from_settings(settings)
    history = load_curated(lake, entries, contract).collect()
    future = None
    if future_entries and known_in_advance(contract):
        future = load_curated(future_lake(lake), future_entries, future_contract(contract)).collect()
    booster = registry.load_booster(lake, contract.name, champ["version"]) if champ else None
    return history, future, booster


@task(name="predict", cache_policy=NO_CACHE)
def predict(history: pl.DataFrame, contract: Contract, booster: Any, meta: dict | None,
            future: pl.DataFrame | None) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Features and prediction for the next horizon (``forecast_frame``)."""
    return forecast_frame(history, contract, booster, meta, future=future)


@task(name="write", cache_policy=NO_CACHE)
def write(dataset: str, path: str, frame: pl.DataFrame, pointer: dict[str, Any], settings: Settings) -> bool:
    """Publish the forecast file and its pointer document, then move ``latest.json`` (never back to an older forecast).

    The sidecar ``<name>.json`` is written after the parquet and is the commit point.
    """
    lake = Lake.from_settings(settings)
    publish.write_forecast(lake, path, frame)
    lake.write_json(path.removesuffix(".parquet") + ".json", pointer)
    if publish.newer_than(pointer, publish.read_latest(lake, dataset)):
        lake.write_json(publish.latest_path(lake, dataset), pointer)
        return True
    return False


def _emit(event) -> None:
    events.emit_or_log(event, get_run_logger(), "the forecast is published on the lake, nothing is lost")


def _state(lake: Lake, dataset: str) -> tuple[list[dict], list[dict], dict | None]:
    return read_manifest(lake, dataset), read_manifest(future_lake(lake), dataset), registry.champion(lake, dataset)


def _fingerprints(entries: list[dict], future_entries: list[dict], champ: dict | None) -> tuple[str, str, str, str]:
    version = champ["version"] if champ else SEASONAL_NAIVE
    data_fp = registry.data_fingerprint([e["content_hash"] for e in entries])
    future_fp = registry.data_fingerprint([e["content_hash"] for e in future_entries]) if future_entries else "-"
    return version, data_fp, future_fp, publish.forecast_id(version, data_fp, future_fp)


def forecast_once(contract: Contract, settings: Settings, event_id: str | None) -> dict[str, Any]:
    """Publish the forecast for the lake's current data and champion, unless it is already published."""
    log = get_run_logger()
    lake = Lake.from_settings(settings)
    dataset = contract.name
    timings: dict[str, float] = {}
    admit_future(contract, settings)
    entries, future_entries, champ = _state(lake, dataset)
    if not entries:
        return {"dataset": dataset, "status": "no-data"}
    version, data_fp, future_fp, fid = _fingerprints(entries, future_entries, champ)
    watermark = max(e["max_time"] for e in entries)
    path = publish.forecast_path(lake, dataset, watermark, fid)
    sidecar = path.removesuffix(".parquet") + ".json"
    if lake.exists(sidecar):
        latest = publish.read_latest(lake, dataset)
        if latest is None or latest["forecast_id"] != fid and str(latest["watermark"]) <= str(watermark):
            log.warning("completing the interrupted publication of %s", path)
            lake.write_json(publish.latest_path(lake, dataset), lake.read_json(sidecar))
        return {"dataset": dataset, "status": "already-published", "forecast_id": fid, "uri": lake.uri(path),
                "model_version": version, "watermark": watermark}

    start = time.perf_counter()
    history, future, booster = load_inputs(contract, entries, future_entries, champ, settings)
    timings["load"] = round(time.perf_counter() - start, 3)
    start = time.perf_counter()
    frame, missing = predict(history, contract, booster, champ, future)
    timings["predict"] = round(time.perf_counter() - start, 3)  # features and prediction (forecast_frame)
    method = MODEL if champ else SEASONAL_NAIVE
    if frame.height == 0:
        raise MissingFutureValues(
            f"{dataset}: no series was forecast: all {missing.height} were left out "
            f"({'; '.join(sorted(set(missing['reason'])))}) for the {contract.horizon} periods after {watermark} "
            f"(the contract's retire_after and on_missing_future decide this); future values of "
            f"{', '.join(known_in_advance(contract)) or '-'} go "
            f"under {future_lake(lake).uri(future_lake(lake).landing_dir(dataset))}/ (the contract's columns without "
            f"{contract.target!r}); nothing was filled in or published")
    issued_at = datetime.now(timezone.utc)
    shares = coverage(frame, missing, contract)
    out = frame.with_columns(
        pl.lit(version).alias("model_version"),
        pl.lit(str(watermark)).alias("data_watermark"),
        pl.lit(issued_at).alias("issued_at"),
    )
    pointer = {
        "dataset": dataset, "forecast_id": fid, "path": path, "uri": lake.uri(path), "model_version": version,
        "method": method, "watermark": str(watermark), "issued_at": issued_at.isoformat(), "rows": out.height,
        "series": out.select(contract.series_keys).n_unique() if out.height else 0,
        "missing_series": missing.height, "missing_example": missing.head(10).to_dicts(),
        "coverage": shares, "quantiles": list(contract.quantiles),
        "data_fingerprint": data_fp, "future_fingerprint": future_fp, "files": len(entries),
        "horizon": contract.horizon, "event_id": event_id, "flow_run_id": str(flow_run.get_id() or ""),
        "timings": timings,
    }
    start = time.perf_counter()
    moved = write(dataset, path, out, pointer, settings)
    timings["write"] = round(time.perf_counter() - start, 3)
    if not moved:
        log.warning("a newer forecast is already the latest; %s is kept but latest.json stays", path)
    payload = events.forecast_payload(dataset, version, method, str(watermark), out.height, lake.uri(path), fid,
                                      missing.height, event_id, shares)
    _emit(events.build_event(events.FORECAST_PUBLISHED, dataset, payload, [fid]))
    result = {"dataset": dataset, "status": "published", **{k: pointer[k] for k in (
        "forecast_id", "uri", "model_version", "method", "watermark", "rows", "series", "missing_series", "coverage")},
        "timings": timings, "missing": missing.to_dicts()}
    _publish_artifacts(contract, history, out, missing, pointer)
    return result


def _publish_artifacts(contract: Contract, history: pl.DataFrame, out: pl.DataFrame, missing: pl.DataFrame,
                       pointer: dict[str, Any]) -> None:
    key = f"freshet-{contract.name.replace('_', '-')}-forecast"
    label = "seasonal naive (no champion yet)" if pointer["method"] == SEASONAL_NAIVE else f"model {pointer['model_version']}"
    create_table_artifact(key=key, table=out.head(50).with_columns(cs.temporal().cast(pl.String)).to_dicts(),
                          description=f"First rows of the {contract.name} forecast by {label}")
    png = publish.chart_png(history, out, list(contract.series_keys), contract.time_column, contract.target,
                            quantiles=contract.quantiles)
    missing_text = (f"**{missing.height} series were not forecast** ({'; '.join(sorted(set(missing['reason'])))}), "
                    f"e.g. {missing.drop('retired').head(10).to_dicts()}" if missing.height else
                    "Every series was forecast, every period.")
    shares = pointer["coverage"]
    by_method = "\n".join(f"| {m} | {100 * v:.1f}% |" for m, v in shares.items())
    ladder = out.filter(pl.col("method") != MODEL).select(*contract.series_keys, contract.time_column, "method",
                                                           "method_detail").head(10)
    ladder_text = "" if ladder.height == 0 else "\n\nRows not made by the model as trained (first 10):\n\n" + "\n".join(
        f"- {', '.join(f'{k}={r[k]}' for k in contract.series_keys)} {r[contract.time_column]}: {r['method']} "
        f"({r['method_detail']})" for r in ladder.iter_rows(named=True))
    md = f"""# {contract.name}: forecast {pointer['forecast_id']}

| | |
|---|---|
| method | {label} |
| data watermark | {pointer['watermark']} |
| issued at | {pointer['issued_at']} |
| rows / series | {pointer['rows']} / {pointer['series']} |
| file | `{pointer['uri']}` |
| quantiles | {', '.join(f'p{100 * q:g}' for q in pointer['quantiles'])} (band: the outermost pair) |

| method | share of series x periods |
|---|---|
{by_method}

{missing_text}{ladder_text}

![actuals and forecast](data:image/png;base64,{base64.b64encode(png).decode()})
"""
    create_markdown_artifact(key=f"{key}-report", markdown=md, description=f"Forecast report for {contract.name}")


@flow(name="forecast", log_prints=True)
def forecast(dataset: str = "retail_sales", uris: list[str] | None = None, event_id: str | None = None) -> dict:
    """Publish the champion's forecast (seasonal naive until a model is promoted) for the next horizon.

    Args:
        dataset: Dataset name; a contract file <dataset>.toml must exist in FRESHET_CONTRACTS_DIR.
        uris: Landing URIs named by a triggering data.landed event; any not yet in the manifest are validated and admitted first.
        event_id: Id of the triggering event (for lineage); filled in by the automation.
    """
    settings = get_settings()
    contract = load_contract(dataset, settings.contracts_dir)
    lake = Lake.from_settings(settings)
    if pending := unadmitted_uris(lake, dataset, list(uris or []), settings.max_event_uris, event_id):
        admit_pending(contract, pending, settings)

    results = []
    with dataset_lock(dataset, queue=False, kind="forecast"):
        for round_ in range(2):
            result = forecast_once(contract, settings, event_id)
            results.append(result)
            if result["status"] == "no-data" or not event_id or round_ > 0:
                break
            # the trigger drops this dataset's events for `within` seconds after ours: look again then
            scheduled = flow_run.get_scheduled_start_time()
            since = (datetime.now(timezone.utc) - scheduled).total_seconds() if scheduled else settings.trigger_throttle_seconds
            time.sleep(max(0.0, settings.trigger_throttle_seconds - since))
            if _fingerprints(*_state(lake, dataset))[3] == result.get("forecast_id"):
                break
    last = next((r for r in reversed(results) if r["status"] == "published"), results[-1])
    if last["status"] == "no-data":
        print(f"forecast {dataset}: no data yet: the manifest is empty; land and ingest data first")
        return last
    if last["status"] == "already-published":
        print(f"forecast {dataset}: nothing new: forecast {last['forecast_id']} by {last['model_version']} on data "
              f"to {last['watermark']} is already published at {last['uri']}")
        return last
    what = "seasonal naive (no champion yet)" if last["method"] == SEASONAL_NAIVE else f"model {last['model_version']}"
    gap = ""
    if last["missing_series"]:
        gap = f"; {last['missing_series']} series NOT forecast, e.g. {last['missing'][:5]}"
    print(f"forecast {dataset}: published {last['rows']} rows for {last['series']} series by {what}, data to "
          f"{last['watermark']}, at {last['uri']}; coverage {format_coverage(last['coverage'])}{gap}")
    return {k: v for k, v in last.items() if k != "missing"} | {"rounds": len(results)}
