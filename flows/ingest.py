"""The ``ingest`` flow: land, validate, curate, announce.

Reads CSV or parquet landing files, validates them against the dataset's
contract, writes curated parquet and one manifest entry per admitted file, then
emits ``data.landed``. Bad rows or files go to quarantine with a reason and a
``data.rejected`` event, and the run fails with a message naming file, column
and rule. Re-ingesting a file changes nothing (content-hash idempotency).

After the announcement (so the landing-to-forecast latency is unchanged), the run
scores the published forecasts the landed actuals can now judge, over the trailing
``FRESHET_SCORING_SPAN`` of data time (``modeling.live``), emits ``forecast.scored`` and, when the champion's live WAPE
drifts past the contract's ``drift_tolerance``, ``model.degraded`` (the shipped
automation ``freshet-train-on-model-degraded`` then starts ``train``). A forecast
file that cannot be read fails the run; a retry scores the same state once.
"""

from __future__ import annotations

import base64
from datetime import datetime, timezone

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from freshet import events
from freshet.data.contracts import Contract, load_contract
from freshet.data.ingestion import Admission, admit_file, landing_path
from freshet.data.lake import Lake
from freshet.modeling import live, registry
from freshet.modeling import scoring as S
from freshet.settings import Settings, get_settings


class IngestRejected(RuntimeError):
    """One or more landing files broke the contract (their rows are in quarantine)."""


@task(name="admit-file", cache_policy=NO_CACHE, task_run_name="admit {uri}")
def admit(contract: Contract, uri: str, settings: Settings) -> Admission:
    """Validate one landing file and publish its curated partition and manifest entry."""
    lake = Lake.from_settings(settings)
    result = admit_file(
        lake, contract, uri,
        now=datetime.now(timezone.utc),
        future_tolerance_hours=settings.future_tolerance_hours,
        on_bad_rows=settings.on_bad_rows,
    )
    log = get_run_logger()
    (log.info if result.ok else log.error)(result.message())
    return result


@task(name="announce", cache_policy=NO_CACHE)
def announce(dataset: str, admissions: list[Admission]) -> list[str]:
    """Emit ``data.landed`` for newly admitted files and ``data.rejected`` for quarantined ones.

    Returns the problems met while announcing (empty when every event was delivered).
    """
    log = get_run_logger()
    problems = []
    landed = [a.entry for a in admissions if a.status in ("admitted", "partial")]
    to_send = []
    if landed:
        payload = events.landed_payload(dataset, landed)
        to_send.append(events.build_event(events.DATA_LANDED, dataset, payload, payload["content_hashes"]))
    for a in admissions:
        if a.status in ("rejected", "partial"):
            payload = events.rejected_payload(dataset, a.uri, a.content_hash, a.reasons, a.quarantine or "",
                                              a.rows_rejected, a.entry["rows"] if a.entry else 0)
            to_send.append(events.build_event(events.DATA_REJECTED, dataset, payload, [a.content_hash or a.uri]))
    for event in to_send:
        try:
            events.emit(event)
            log.info("emitted %s %s for %s", event.event, event.id, dataset)
        except events.EmitError as exc:
            problems.append(str(exc))
            log.error(
                "ANNOUNCEMENT FAILED: %s. The data is admitted and in the manifest; the watchdog "
                "(safety net) will retrain %s once the Prefect API is reachable again.", exc, dataset,
            )
    return problems


@task(name="score", cache_policy=NO_CACHE)
def score(contract: Contract, settings: Settings) -> dict | None:
    """Score the published forecasts on the landed actuals; announce the scores and any drift, once per state."""
    log = get_run_logger()
    lake = Lake.from_settings(settings)
    models = registry.list_models(lake, contract.name)
    scored = live.score_lake(lake, contract, settings.scoring_span, models)
    if scored is None:
        log.info("score %s: no published forecast covers a landed period yet", contract.name)
        return None
    summary = scored.summary
    if not scored.new:
        log.info("score %s: this state was scored before (%s); nothing to do", contract.name, scored.path)
        return summary
    dataset, key = contract.name, summary["key"]
    events.emit(events.build_event(events.FORECAST_SCORED, dataset, events.scored_payload(summary), [key]))
    log.info("score %s: %s; %d actual row(s) no forecast covered (ignored)", dataset, live.live_wape_line(summary),
             summary["unforecast_rows"])
    (log.warning if summary["drift"]["degraded"] else log.info)("drift %s: %s", dataset, summary["drift_text"])
    if summary["drift"]["degraded"]:
        payload = events.scored_payload(summary) | {"reason": summary["drift_text"]}
        events.emit(events.build_event(events.MODEL_DEGRADED, dataset, payload, [key]))
    _publish_live_artifact(contract, scored, models)
    live.commit(lake, scored)  # last: a run that failed before this scores the same state again, same event ids
    return summary


def _publish_live_artifact(contract: Contract, scored: live.Scored, models: list[dict]) -> None:
    s, t = scored.summary, contract.time_column
    backtest = {m["version"]: m["metrics"]["model"]["wape"] for m in models}
    promotions = [(datetime.fromisoformat(m["data_watermark"]).date() if not contract.is_datetime
                   else datetime.fromisoformat(m["data_watermark"]), m["version"])
                  for m in models if m["decision"]["promote"]]
    first = scored.rows[t].min()
    png = live.chart_png(S.over_time(scored.rows, contract), t, backtest,
                         [(at, v) for at, v in promotions if at >= first], f"{contract.name}: {live.span_text(s)}")
    worst = S.worst_series(scored.rows, contract)
    cols = [*contract.series_keys, "rows", "wape", "mae", "bias"]
    table = "\n".join("| " + " | ".join(f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in cols) + " |"
                      for r in worst.to_dicts())
    models_md = "\n".join(
        f"| {m['model_version']} | {m['rows']} | {m['wape']:.3f} | "
        + (f"{m['backtest_wape']:.3f}" if m.get("backtest_wape") is not None else "-")
        + f" | {m['bias']:+.3f} | " + (f"{100 * m['coverage']:.0f}%" if m.get("coverage") is not None else "-") + " |"
        for m in s["by_model"])
    md = f"""# {contract.name}: live accuracy

**Drift:** {s['drift_text']}

Scored {s['overall']['rows']} series x periods of {live.span_text(s)} with the forecast in hand when each
period began; {s['unforecast_rows']} landed rows of the span no forecast covered (ignored). Older periods are not
rescored (their earlier scores stay under `scores/`). Scores: `{s['uri']}`.

| model | rows | live WAPE | backtest WAPE | bias | interval coverage |
|---|---|---|---|---|---|
{models_md}

![live WAPE vs backtest WAPE](data:image/png;base64,{base64.b64encode(png).decode()})

**Worst series** (largest absolute error)

| {' | '.join(cols)} |
|{'---|' * len(cols)}
{table}
"""
    create_markdown_artifact(key=f"freshet-{contract.name.replace('_', '-')}-live-accuracy", markdown=md,
                             description=f"Live accuracy of the published {contract.name} forecasts")


def resolve_uris(lake: Lake, dataset: str, uris: list[str] | None) -> list[str]:
    """The URIs to ingest: those given, or every file in the dataset's landing folder."""
    if uris:
        return list(dict.fromkeys(uris))
    folder = lake.landing_dir(dataset)
    return [lake.uri(p) for p in lake.list(folder) if p.lower().endswith((".csv", ".parquet", ".pq"))]


@flow(name="ingest", log_prints=True)
def ingest(dataset: str = "retail_sales", uris: list[str] | None = None) -> dict:
    """Validate landing files against the dataset contract, curate them and announce data.landed.

    Args:
        dataset: Dataset name; a contract file <dataset>.toml must exist in FRESHET_CONTRACTS_DIR.
        uris: Landing file URIs (CSV or parquet) inside the lake's landing/ area. Empty: every file in landing/<dataset>/.
    """
    settings = get_settings()
    contract = load_contract(dataset, settings.contracts_dir)
    lake = Lake.from_settings(settings)
    todo = resolve_uris(lake, dataset, uris)
    if len(todo) > settings.max_event_uris:
        raise ValueError(f"{len(todo)} URIs given; at most {settings.max_event_uris} per run (FRESHET_MAX_EVENT_URIS)")
    for uri in todo:
        landing_path(lake, uri)  # refuse URIs outside the landing area before reading anything
    admissions = [admit(contract, uri, settings) for uri in todo]
    problems = announce(dataset, admissions)
    # with the API unreachable nothing could announce the scores either: the next run scores this state
    scores = score(contract, settings) if not problems else None
    counts = {s: sum(a.status == s for a in admissions) for s in ("admitted", "partial", "duplicate", "rejected")}
    summary = {
        "dataset": dataset,
        **counts,
        "rows_admitted": sum(a.entry["rows"] for a in admissions if a.status in ("admitted", "partial")),
        "rows_quarantined": sum(a.rows_rejected for a in admissions),
        "announced": not problems,
        "scores": scores and {k: scores[k] for k in ("uri", "overall", "by_model", "unforecast_rows", "drift")},
        "files": [{"uri": a.uri, "status": a.status, "content_hash": a.content_hash} for a in admissions],
    }
    print(
        f"ingest {dataset}: {len(todo)} file(s): {counts['admitted']} admitted, {counts['partial']} partly admitted, "
        f"{counts['duplicate']} already known, {counts['rejected']} rejected; {summary['rows_admitted']} rows admitted, "
        f"{summary['rows_quarantined']} quarantined" + ("" if not problems else "; data.landed NOT announced")
    )
    bad = [a for a in admissions if a.status in ("rejected", "partial")]
    if bad:
        raise IngestRejected("\n".join(a.message() for a in bad))
    if problems:
        raise events.EmitError(
            "data admitted but not announced: " + "; ".join(problems)
            + ". Nothing is lost: the watchdog retrains from the manifest."
        )
    return summary
