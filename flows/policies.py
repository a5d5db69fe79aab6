"""The ``policies`` flow: the policy lab as a Prefect flow, runnable from the UI, with artifacts.

Replays an arrival trace (generated, or the lake's own manifest) through the
retraining policies of ``freshet.lab.policies``, each with forecasts on every
landing and forecasts after each training, with the replay engine of
``freshet.lab.engine`` (the shipped ``train_model`` and ``forecast_frame``), writes ``report.json`` and ``chart.png`` to ``out``, and
publishes a table artifact (``freshet-policies``) and a markdown report with the
chart embedded (``freshet-policies-report``). Reads freshet's settings like
``train`` does (the lake for ``from_lake``, holdout and promotion settings), with
the lab's smaller XGBoost budget on top.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from freshet.lab.engine import LabConfig, PolicyRun, Replay, lab_settings
from freshet.lab.policies import Policy, Trace, default_policies
from freshet.lab.report import chart_data_uri, format_report, format_table, table_rows, write_outputs
from freshet.lab.run import run_lab
from freshet.lab.traces import build_trace
from freshet.settings import get_settings


@task(name="build-trace", cache_policy=NO_CACHE)
def trace_task(from_lake: bool, datasets: int, days: int, seed: int) -> tuple[Trace, Any, dict]:
    return build_trace(from_lake, datasets, days, seed, get_settings())


# The engine holds the memoised trainings: tasks run in this process, one after another.
@task(name="replay-policy", task_run_name="replay {policy.name}", cache_policy=NO_CACHE)
def replay_task(engine: Replay, policy: Policy) -> PolicyRun:
    return engine.run_policy(policy)


@task(name="publish-lab-artifacts", cache_policy=NO_CACHE)
def publish(report: dict[str, Any], chart: Path, report_path: Path) -> None:
    create_table_artifact(key="freshet-policies", table=table_rows(report),
                          description="Retraining x forecasting policies: cost, served staleness and accuracy, all datasets")
    per_dataset = "\n\n".join(f"### {d}\n\n{format_table(table_rows(report, d))}"
                              for d in report["trace"]["datasets"])
    notes = format_report(report).rsplit("\n\n", 1)[-1]
    markdown = (
        f"# Retraining policies\n\n{report['source']} trace, {report['trace']['start'][:10]} .. "
        f"{report['trace']['end'][:10]}; replay took {report['runtime_seconds']:.0f} s.\n\n"
        f"{format_table(table_rows(report))}\n\n{notes}\n\n"
        f"![staleness and error over time]({chart_data_uri(chart)})\n\n"
        f"Chart: `{chart}`, report: `{report_path}`\n\n## Per dataset\n\n{per_dataset}\n"
    )
    create_markdown_artifact(key="freshet-policies-report", markdown=markdown,
                             description="Retraining policies compared on a replayed arrival trace")


@flow(name="policies", log_prints=True)
def policies(datasets: int = 3, days: int = 56, seed: int = 7, threshold_hours: float = 24.0,
             from_lake: bool = False, out: str = ".freshet/policies") -> dict:
    """Compare retraining policies (clock, weekly, round-robin, event-driven, debounced, gated, on drift) on a replayed trace.

    Args:
        datasets: Number of synthetic datasets in the generated trace (ignored with from_lake).
        days: Days of arrivals in the generated trace (ignored with from_lake).
        seed: Seed of the generated trace, for a reproducible comparison.
        threshold_hours: Report the share of time the serving model lags the newest landed data by more than this.
        from_lake: Replay what really landed: the manifest of every dataset in the lake (FRESHET_LAKE_URL).
        out: Folder (on the machine running the flow) for report.json and chart.png.
    """
    log = get_run_logger()
    settings = get_settings()
    trace, source, contracts = trace_task(from_lake, datasets, days, seed)
    report = run_lab(trace, source, contracts, default_policies(), lab_settings(settings),
                            LabConfig(threshold=timedelta(hours=threshold_hours)),
                            source_name="lake" if from_lake else "synthetic", progress=log.info, runner=replay_task)
    report_path, chart = write_outputs(report, Path(out))
    publish(report, chart, report_path)
    print(format_report(report))
    return {"report": str(report_path.resolve()), "chart": str(chart.resolve()),
            "policies": {p["name"]: p["total"] for p in report["policies"]}}
