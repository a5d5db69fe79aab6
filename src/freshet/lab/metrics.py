"""The policy lab's measures (Prefect-free): staleness, lag, error and the report of a replay.

Pure functions of arrivals and the moments their data reached an output
(``inclusion_times``, ``staleness``, ``share_lagging``, ``lag_at``), the forecast a
user had in hand (``in_hand``), and ``summarize``: per (retraining policy, forecast
mode) and per dataset cost, staleness and accuracy, the report that
``freshet.lab.report`` prints and charts. ``seed_spread`` summarises reports over
several seeds. Reads no settings.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import numpy as np
import polars as pl

from freshet.data.contracts import Contract
from freshet.lab.engine import LAB_XGB, PolicyRun, Promotion, Published, Replay, Run
from freshet.lab.live import in_hand
from freshet.lab.policies import AFTER_TRAINING, FORECAST_MODES, ON_LANDING, Arrival, Never, Policy, default_combinations
from freshet.modeling import features as F
from freshet.modeling import forecast as FC
from freshet.modeling import model as M
from freshet.modeling import training as TR


def inclusion_times(arrivals: Sequence[Arrival], promotions: Sequence[tuple[datetime, datetime]]) -> dict[str, datetime | None]:
    """When each batch first reached an output (a promoted model, a published forecast): the earliest
    ``available_at`` of one whose run started at or after the batch landed (``None``: never, within the trace)."""
    out = {}
    for a in arrivals:
        times = [available for started, available in promotions if started >= a.landed_at]
        out[a.batch] = min(times) if times else None
    return out


def staleness(arrivals: Sequence[Arrival], included: dict[str, datetime | None], end: datetime) -> tuple[list[timedelta], int]:
    """Per batch, landing to serving; a batch not served by ``end`` counts as ``end - landed`` (a lower bound)."""
    out, censored = [], 0
    for a in arrivals:
        at = included[a.batch]
        if at is None or at > end:
            censored += 1
            at = end
        out.append(at - a.landed_at)
    return out, censored


def _lag_intervals(arrivals: Sequence[Arrival], included: dict[str, datetime | None], end: datetime,
                   threshold: timedelta) -> list[tuple[datetime, datetime]]:
    spans = sorted((a.landed_at + threshold, min(included[a.batch] or end, end)) for a in arrivals)
    merged: list[list[datetime]] = []
    for lo, hi in spans:
        if hi <= lo:
            continue
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
        else:
            merged.append([lo, hi])
    return [(lo, hi) for lo, hi in merged]


def share_lagging(arrivals: Sequence[Arrival], included: dict[str, datetime | None], start: datetime, end: datetime,
                  threshold: timedelta) -> float:
    """Share of ``(start, end]`` during which some landed batch had waited more than ``threshold`` to be served."""
    total = sum(((min(hi, end) - max(lo, start)) for lo, hi in _lag_intervals(arrivals, included, end, threshold)
                 if min(hi, end) > max(lo, start)), timedelta(0))
    return total / (end - start)


def lag_at(arrivals: Sequence[Arrival], included: dict[str, datetime | None], moment: datetime) -> timedelta:
    """How long the oldest landed-but-not-served batch has been waiting at ``moment`` (zero if none)."""
    waiting = [a.landed_at for a in arrivals if a.landed_at <= moment and (included[a.batch] is None or included[a.batch] > moment)]
    return moment - min(waiting) if waiting else timedelta(0)


def _hours(td: timedelta) -> float:
    return td.total_seconds() / 3600


def _percentiles(values: list[timedelta]) -> dict[str, float | None]:
    if not values:
        return {"p50_h": None, "p95_h": None, "max_h": None}
    h = np.array([_hours(v) for v in values])
    return {"p50_h": float(np.percentile(h, 50)), "p95_h": float(np.percentile(h, 95)), "max_h": float(h.max())}


def _error(actual: list[np.ndarray], forecast: list[np.ndarray]) -> dict[str, float | None]:
    if not actual or not sum(len(x) for x in actual):
        return {"wape": None, "mae": None, "rows": 0}
    m = M.metrics(np.concatenate(actual), np.concatenate(forecast))
    return {"wape": m["wape"], "mae": m["mae"], "rows": m["rows"]}


def combination_name(policy: str, mode: str) -> str:
    return f"{policy} / forecast {mode}"


def summarize(engine: Replay, results: list[PolicyRun], *, source: str, runtime_seconds: float | None = None,
              shown: Sequence[tuple[str, str]] | None = None) -> dict[str, Any]:
    """The lab's report: per (retraining policy, forecast mode) and per dataset cost, staleness and accuracy.

    ``shown``: the (policy name, mode) pairs of the default table (default: ``default_combinations``);
    every combination is in the report, with ``shown`` telling which the table prints.
    """
    trace, cfg = engine.trace, engine.config
    if shown is None:
        by_name = {r.policy.name: r.policy for r in results}
        shown = [(p.name, m) for p, m in default_combinations(list(by_name.values()))]
    shown_set = set(shown)
    grid = []
    t = trace.start
    while t <= trace.end:
        grid.append(t)
        t += cfg.sample_every
    days = [trace.start.date() + timedelta(days=k) for k in range((trace.end - trace.start).days + 1)]
    report: dict[str, Any] = {
        "source": source,
        "generated_at": datetime.now(timezone.utc).isoformat(),
        "config": {"train_latency_minutes": _hours(cfg.train_latency) * 60,
                   "forecast_latency_minutes": _hours(cfg.forecast_latency) * 60,
                   "threshold_hours": _hours(cfg.threshold),
                   "lab_xgboost": LAB_XGB,
                   "target_transform": {d: getattr(c, "target_transform", None) for d, c in engine.contracts.items()},
                   "evaluation_periods": {d: F.evaluation_periods(c, engine.settings) for d, c in engine.contracts.items()},
                   "min_improvement": engine.settings.min_improvement,
                   "engine": {"train": f"{TR.train_model.__module__}.{TR.train_model.__name__}",
                              "forecast": f"{FC.forecast_frame.__module__}.{FC.forecast_frame.__name__}"}},
        "trace": {"start": trace.start.isoformat(), "end": trace.end.isoformat(), "datasets": {
            d: {"history_rows": sum(a.rows for a in trace.history(d)), "arrivals": len(trace.new_arrivals(d)),
                "new_rows": sum(a.rows for a in trace.new_arrivals(d)),
                "first_model_promoted": engine.first_champion[d] is not None} for d in trace.datasets}},
        "policies": [],
        "runs": [],
        "published": [],
        "curves": {"times": [g.isoformat() for g in grid], "lag_hours": {}, "days": [d.isoformat() for d in days],
                   "wape": {}},
    }
    for res in results:
        report["runs"] += [_run_json(r) for r in res.runs]
        for mode in FORECAST_MODES:
            report["policies"].append(_combination(engine, res, mode, (res.policy.name, mode) in shown_set, report,
                                                   grid, days))
    report["policies"].append(_naive_reference(engine, report, grid, days))
    report["distinct_trainings"] = len(engine.fits)
    report["distinct_forecasts"] = len(engine.forecasts)
    report["training_cpu_seconds_spent"] = engine.fit_cpu_seconds
    report["forecast_cpu_seconds_spent"] = engine.forecast_cpu_seconds
    report["runtime_seconds"] = runtime_seconds
    return report


def _combination(engine: Replay, res: PolicyRun, mode: str, shown: bool, report: dict[str, Any],
                 grid: list[datetime], days: list[date], name: str | None = None) -> dict[str, Any]:
    trace, cfg = engine.trace, engine.config
    name = name or combination_name(res.policy.name, mode)
    per_dataset: dict[str, Any] = {}
    pooled: dict[str, list] = {"stale": [], "model": [], "acts": [], "fcs": [], "shares": [], "lags": [], "censored": [0],
                               "hand_acts": [], "hand_fcs": [], "covered": []}
    daily: dict[date, tuple[list, list]] = {d: ([], []) for d in days}
    for d in trace.datasets:
        new = trace.new_arrivals(d)
        pubs = res.forecasts[mode][d]
        # a forecast with no rows (every series lacked its known-in-advance values) delivers nothing
        included = inclusion_times(new, [(p.started_at, p.published_at) for p in pubs if p.forecast.frame.height])
        stale, censored = staleness(new, included, trace.end)
        promos = [(p.started_at, p.available_at) for p in res.promotions[d] if p.fit is not None]
        model_stale, model_censored = staleness(new, inclusion_times(new, promos), trace.end)
        share = share_lagging(new, included, trace.start, trace.end, cfg.threshold)
        pooled["lags"].append([_hours(lag_at(new, included, g)) for g in grid])
        acts = [p.forecast.errors[0] for p in pubs if p.forecast.errors]
        fcs = [p.forecast.errors[1] for p in pubs if p.forecast.errors]
        history = [a.max_time for a in trace.history(d)]
        hand_act, hand_fc, covered, hand_rows = in_hand(pubs, engine.actuals(d), engine.contracts[d],
                                                        max(history) if history else None)
        pooled["hand_acts"].append(hand_act)
        pooled["hand_fcs"].append(hand_fc)
        pooled["covered"].append((covered, hand_rows))
        for p in pubs:
            if p.forecast.errors and p.published_at.date() in daily:
                daily[p.published_at.date()][0].append(p.forecast.errors[0])
                daily[p.published_at.date()][1].append(p.forecast.errors[1])
            report["published"].append({"combination": name, "dataset": d, "trigger": p.trigger,
                                        "started_at": p.started_at.isoformat(), "published_at": p.published_at.isoformat(),
                                        "watermark": str(p.forecast.watermark), "model_batches": len(p.forecast.model or ()),
                                        "method": "model" if p.forecast.model is not None else "seasonal naive",
                                        "rows": p.forecast.frame.height, "scored_rows": p.forecast.scored_rows,
                                        "wape": p.forecast.wape, "mae": p.forecast.mae})
        runs = [r for r in res.runs if r.dataset == d]
        train_cpu = sum(r.cpu_seconds for r in runs)
        fc_cpu = sum(p.forecast.cpu_seconds for p in pubs)
        per_dataset[d] = {
            "runs": sum(r.outcome != "not-started" for r in runs),
            "trainings": sum(r.outcome in ("trained", "failed") for r in runs),
            "nothing_new": sum(r.outcome == "nothing-new" for r in runs),
            "promotions": sum(p.fit is not None for p in res.promotions[d][1:]),
            "forecasts": len(pubs),
            "train_cpu_seconds": train_cpu,
            "forecast_cpu_seconds": fc_cpu,
            "cpu_seconds": train_cpu + fc_cpu,
            "staleness": {**_percentiles(stale), "not_served_by_end": censored},
            "model_staleness": {**_percentiles(model_stale), "not_served_by_end": model_censored},
            "share_lagging": share,
            "error": _error(acts, fcs),
            "in_hand": {**_error([hand_act], [hand_fc]), "covered": covered / hand_rows if hand_rows else None},
        }
        pooled["stale"] += stale
        pooled["model"] += model_stale
        pooled["censored"][0] += censored
        pooled["shares"].append(share)
        pooled["acts"] += acts
        pooled["fcs"] += fcs
    total = {k: sum(v[k] for v in per_dataset.values()) for k in
             ("runs", "trainings", "nothing_new", "promotions", "forecasts", "train_cpu_seconds",
              "forecast_cpu_seconds", "cpu_seconds")}
    total |= {"staleness": {**_percentiles(pooled["stale"]), "not_served_by_end": pooled["censored"][0]},
              "model_staleness": {**_percentiles(pooled["model"]),
                                  "not_served_by_end": sum(v["model_staleness"]["not_served_by_end"]
                                                           for v in per_dataset.values())},
              "share_lagging": float(np.mean(pooled["shares"])) if pooled["shares"] else 0.0,
              "error": _error(pooled["acts"], pooled["fcs"]),
              "in_hand": {**_error(pooled["hand_acts"], pooled["hand_fcs"]),
                          "covered": (sum(c for c, _ in pooled["covered"]) / sum(n for _, n in pooled["covered"])
                                      if sum(n for _, n in pooled["covered"]) else None)}}
    report["curves"]["lag_hours"][name] = [float(np.mean(col)) for col in zip(*pooled["lags"])] if pooled["lags"] else []
    report["curves"]["wape"][name] = _rolling_wape(daily, days, cfg.error_window_days)
    return {"name": name, "retrain": res.policy.name, "forecast": mode, "shown": shown,
            "description": (type(res.policy).__doc__ or "").strip(), "params": _params(res.policy),
            "total": total, "datasets": per_dataset, "replay_seconds": res.seconds}


def _naive_reference(engine: Replay, report: dict[str, Any], grid: list[datetime], days: list[date]) -> dict[str, Any]:
    """Seasonal naive forecasts on every landing: no model at all, the reference every model must beat."""
    trace = engine.trace
    promotions = {d: [Promotion(trace.start, trace.start, None)] for d in trace.datasets}
    res = PolicyRun(Never(name=NAIVE), [], promotions, 0.0,
                    {ON_LANDING: {d: engine.publish(d, ON_LANDING, [], promotions[d]) for d in trace.datasets},
                     AFTER_TRAINING: {d: [] for d in trace.datasets}})
    out = _combination(engine, res, ON_LANDING, True, report, grid, days, name=NAIVE)
    out.update( retrain="-", description="Seasonal-naive forecasts on every landing, no model: the reference.")
    return out


NAIVE = "seasonal naive (no model)"


def _rolling_wape(daily: dict[date, tuple[list, list]], days: list[date], window: int) -> list[float | None]:
    out = []
    for k in range(len(days)):
        acts = [x for d in days[max(0, k - window + 1): k + 1] for x in daily[d][0]]
        fcs = [x for d in days[max(0, k - window + 1): k + 1] for x in daily[d][1]]
        out.append(_error(acts, fcs)["wape"])
    return out


def _params(policy: Policy) -> dict[str, str]:
    try:
        return {k: str(v) for k, v in asdict(policy).items() if k != "name"}
    except TypeError:
        return {}


def _run_json(r: Run) -> dict[str, Any]:
    out = asdict(r)
    for k in ("requested_at", "started_at"):
        out[k] = out[k].isoformat() if out[k] else None
    return out


SPREAD_MEASURES = {"served_p50_h": lambda t: t["staleness"]["p50_h"], "wape": lambda t: t["error"]["wape"],
                   "cpu_seconds": lambda t: t["cpu_seconds"], "trainings": lambda t: t["trainings"],
                   "promotions": lambda t: t["promotions"]}


def seed_spread(reports: list[dict[str, Any]]) -> dict[str, Any]:
    """Median, min and max of each measure per combination over the reports, and the WAPE rank per seed."""
    names = [p["name"] for p in reports[0]["policies"]]
    out: dict[str, Any] = {"combinations": {}, "wape_rank": {}}
    for name in names:
        rows = [next(p for p in r["policies"] if p["name"] == name) for r in reports]
        entry = {"shown": rows[0]["shown"]}
        for key, get in SPREAD_MEASURES.items():
            values = [get(r["total"]) for r in rows]
            values = [v for v in values if v is not None]
            entry[key] = ({"median": float(np.median(values)), "min": float(min(values)), "max": float(max(values)),
                           "values": values} if values else None)
        out["combinations"][name] = entry
    for r in reports:
        shown = sorted((p for p in r["policies"] if p["shown"] and p["total"]["error"]["wape"] is not None),
                       key=lambda p: p["total"]["error"]["wape"])
        out["wape_rank"][r["source"]] = [p["name"] for p in shown]
    return out
