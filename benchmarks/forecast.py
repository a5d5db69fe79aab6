"""Forecast freshness on the live stack: a file lands -> a forecast that uses it is published.

A dataset holds about 1 M rows of history and a champion trained on it by the ``train``
deployment. Then, each repetition, the next week lands as a file, goes through the
``ingest`` deployment, and the ``data.landed`` automation starts ``forecast``; the clock
stops when ``latest.json`` names a forecast whose watermark covers the new file. The
week's known-in-advance prices and promotions were landed under ``future/`` beforehand.
The train trigger is paused while measuring, so no repetition competes with the previous
one's 1 M-row training for the 2 cores (in production both run; see BENCHMARKS.md).
"""

from __future__ import annotations

import os
import time
from datetime import datetime, timedelta
from typing import Any

from common import cached_data, median, say

FORECAST_DS = "bench_forecast"


def _seconds(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds()


def run_forecast_freshness(live, quick: bool) -> dict[str, Any]:
    import polars as pl
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId, FlowRunFilter, FlowRunFilterId
    from prefect.deployments import run_deployment

    from freshet.data.future import future_lake
    from freshet.modeling import publish, registry

    reps = 2 if quick else 4
    data = cached_data("csv", 100_000 if quick else 1_000_000)
    frame = pl.read_csv(data["path"], try_parse_dates=True)
    last = frame["date"].max()
    cut = last - timedelta(days=7 * reps)
    weeks = [frame.filter((pl.col("date") > cut + timedelta(days=7 * i)) & (pl.col("date") <= cut + timedelta(days=7 * (i + 1))))
             for i in range(reps)]
    history = frame.filter(pl.col("date") <= cut)
    ds = FORECAST_DS
    say(f"forecast freshness: {history.height:,} rows of history in {ds}; training its champion with the train deployment")
    live.admit(ds, history, "history.csv")
    train = run_deployment("train/train", parameters={"dataset": ds}, timeout=0)
    train = live.wait_final([train.id], 1800)[train.id]
    champ = registry.champion(live.lake, ds)
    if champ is None:
        raise RuntimeError(f"{ds}: no champion after training ({train.state.message})")
    # the known-in-advance values for every week to come (and one more), landed before anything is measured
    fut = future_lake(live.lake)
    ahead = pl.concat(weeks).drop("units_sold")
    extra = weeks[-1].drop("units_sold").with_columns(pl.col("date") + timedelta(days=7))
    path = f"{fut.landing_dir(ds)}/future.csv"
    with fut.staged(path) as local:
        pl.concat([ahead, extra]).write_csv(local)
    train_auto = live.client.read_automations_by_name("freshet-train-on-data-landed")[0]
    live.client.pause_automation(train_auto.id)
    fc_dep = live.client.read_deployment_by_name("forecast/forecast")
    out: dict[str, Any] = {"rows_history": history.height, "rows_per_file": weeks[0].height,
                           "champion": champ["version"], "runs": []}
    try:
        for i, week in enumerate(weeks, 1):
            time.sleep(max(0.0, live.trigger_throttle() + 1))  # the forecast trigger's window of the last event passes
            say(f"forecast freshness {i}/{reps}: week to {week['date'].max()} lands in {ds}")
            name = f"week-{i}.csv"
            target = f"{live.lake.landing_dir(ds)}/{name}"
            tmp = f"{live.lake.landing_dir(ds)}/.{name}.tmp"
            week.write_csv(tmp)
            os.replace(tmp, target)  # the file appears now, whole
            landed_wall = datetime.now().astimezone()
            ingest = run_deployment("ingest/ingest", parameters={"dataset": ds, "uris": [live.lake.uri(target)]}, timeout=0)
            want = str(week["date"].max())
            deadline = time.monotonic() + 300
            while True:
                latest = publish.read_latest(live.lake, ds)
                if latest and str(latest["watermark"]) >= want:
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no forecast covering {want} within 300 s; see {live.stack.dir}/worker.log")
                time.sleep(0.1)
            published = datetime.fromisoformat(latest["issued_at"])
            runs = live.client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[fc_dep.id])),
                                              limit=50)
            run = next(r for r in runs if str(r.id) == latest["flow_run_id"])
            ingest = live.wait_final([ingest.id], 300)[ingest.id]
            tasks = live.client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[ingest.id])))
            admit = next(t for t in tasks if t.name.startswith("admit"))
            ftasks = live.client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run.id])))
            ft = {t.name.rsplit("-", 1)[0]: t for t in ftasks if t.end_time}
            running = live.state_times(run.id)["RUNNING"]
            stages = {
                "ingest": _seconds(landed_wall, admit.end_time),
                "event -> run created": _seconds(admit.end_time, run.created),
                "-> Running": _seconds(run.created, running),
                **{k: _seconds(ft[k].start_time, ft[k].end_time) for k in ("load", "predict", "write") if k in ft},
            }
            stages["other"] = _seconds(landed_wall, published) - sum(stages.values())
            out["runs"].append({"lag_s": _seconds(landed_wall, published), "stages": stages,
                                "model_version": latest["model_version"], "rows": latest["rows"],
                                "missing_series": latest.get("missing_series")})
            live.wait_final([run.id], 120)
    finally:
        live.client.resume_automation(train_auto.id)
    out["lag_median_s"] = median([r["lag_s"] for r in out["runs"]])
    out["stages_median"] = {k: median([r["stages"].get(k, 0.0) for r in out["runs"]]) for k in out["runs"][0]["stages"]}
    return out
