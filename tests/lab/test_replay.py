"""The scheduling lab's replay: no data from the future, train's code path, memoised cost, outputs, flow, CLI."""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import polars as pl
import pytest

from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales
from freshet.data.ingestion import admit_file
from freshet.lab import replay
from freshet.lab.policies import (AFTER_TRAINING, ON_LANDING, Arrival, Debounced, EventDriven, Trace, Weekly,
                                  default_combinations, default_policies)
from freshet.lab.replay import (
    NAIVE,
    FrameSource,
    FutureDataError,
    LabConfig,
    LabError,
    Replay,
    format_table,
    lab_settings,
    dir_trace,
    in_hand,
    lab_forecast,
    lake_trace,
    seed_spread,
    summarize,
    synthetic_trace,
    table_rows,
    write_outputs,
)
from freshet.settings import BUNDLED_CONTRACTS, Settings

from tests.conftest import LakeHandle, flow_run_id

REPO = Path(__file__).resolve().parents[2]
RETAIL = load_contract("retail_sales", BUNDLED_CONTRACTS)
MINUTE = timedelta(minutes=1)


def settings() -> Settings:
    """Training settings stated here, not taken from the developer's shell."""
    return lab_settings(Settings(holdout_periods=28, validation_periods=28, min_improvement=0.0))


@dataclass
class RecordingSource:
    """Wraps a source and records every read the replay makes."""

    inner: Any
    reads: list[tuple[str, tuple[str, ...], datetime, Any]] = field(default_factory=list)

    @property
    def plans(self) -> dict[str, pl.DataFrame]:  # known-in-advance columns only: no target to record
        return self.inner.plans

    def load(self, dataset: str, batches, as_of: datetime) -> pl.DataFrame:
        frame = self.inner.load(dataset, batches, as_of)
        time_col = self.inner.contracts[dataset].time_column
        self.reads.append((dataset, tuple(batches), as_of, frame[time_col].max() if frame.height else None))
        return frame


@dataclass
class Lab:
    trace: Trace
    source: RecordingSource
    engine: Replay
    results: list
    report: dict
    calls: list  # (adapter, the last read's as_of, its input frames), in call order


@pytest.fixture(scope="module")
def lab() -> Lab:
    """Every default policy replayed on a small irregular trace of two datasets, the adapters' inputs recorded."""
    trace, source, contracts = synthetic_trace(datasets=2, days=10, seed=11, history_days=150)
    recording = RecordingSource(source)
    calls: list = []
    train, forecast = replay.lab_train, replay.lab_forecast

    def recorded_train(data, contract, s, champion):
        calls.append(("train", recording.reads[-1], data, None))
        return train(data, contract, s, champion)

    def recorded_forecast(history, contract, model, future):
        calls.append(("forecast", recording.reads[-1], history, future))
        return forecast(history, contract, model, future)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(replay, "lab_train", recorded_train)
        mp.setattr(replay, "lab_forecast", recorded_forecast)
        engine = Replay(trace, recording, contracts, settings(), LabConfig())
        results = [engine.run_policy(p) for p in default_policies()]
        report = summarize(engine, results, source="synthetic")
    return Lab(trace, recording, engine, results, report, calls)


def by_name(report: dict) -> dict[tuple[str, str], dict]:
    return {(p["retrain"], p["forecast"]): p for p in report["policies"]}


def watermark(trace: Trace, dataset: str, moment: datetime):
    return max(a.max_time for a in trace.landed_by(dataset, moment))


# ----------------------------------------------------------------- never the future
def test_replay_never_reads_data_from_after_the_simulated_moment(lab: Lab) -> None:
    landed = {(a.dataset, a.batch): a.landed_at for a in lab.trace.arrivals}
    trained_states = len(lab.engine.fits)
    assert len(lab.source.reads) >= trained_states + sum(len(lab.trace.new_arrivals(d)) for d in lab.trace.datasets)
    for dataset, batches, as_of, max_time in lab.source.reads:
        assert all(landed[(dataset, b)] <= as_of for b in batches), (dataset, as_of)
        assert max_time <= watermark(lab.trace, dataset, as_of), (dataset, as_of, max_time)
    # and the reads did reach the newest data available: the check above is not vacuous
    assert any(max_time == watermark(lab.trace, d, as_of) for d, _, as_of, max_time in lab.source.reads[len(lab.trace.datasets):])


def test_models_and_forecasts_never_see_a_row_that_had_not_landed(lab: Lab) -> None:
    """Every frame handed to training or forecasting holds only rows of batches landed by the read's moment,
    and a forecast's future frame carries the known-in-advance columns of the forecast periods, never the target."""
    landed_at: dict[tuple, datetime] = {}
    for a in lab.trace.arrivals:
        frame = lab.source.inner.frames[(a.dataset, a.batch)]
        for row in frame.select("store_id", "item_id", "date").iter_rows():
            landed_at[(a.dataset, *row)] = a.landed_at
    kinds = {kind for kind, *_ in lab.calls}
    assert kinds == {"train", "forecast"} and len(lab.calls) >= len(lab.engine.fits) + len(lab.engine.forecasts)
    newest_seen = []
    for kind, (dataset, _, as_of, _), frame, future in lab.calls:
        rows = frame.select("store_id", "item_id", "date").iter_rows()
        latest = max(landed_at[(dataset, *r)] for r in rows)
        assert latest <= as_of, (kind, dataset, as_of, latest)
        newest_seen.append(latest == max(a.landed_at for a in lab.trace.landed_by(dataset, as_of)))
        if kind == "forecast":
            assert future is not None and "units_sold" not in future.columns
            assert set(future.columns) == {"store_id", "item_id", "date", "price", "on_promo"}
            ahead = future.select(k=(pl.col("date") - frame["date"].max()).dt.total_days())["k"]
            assert ahead.len() and ahead.min() >= 1 and ahead.max() <= RETAIL.horizon  # only the periods to forecast
    assert all(newest_seen)  # each read reached the newest data landed by then: the check is not vacuous


def test_every_published_forecast_uses_data_and_a_model_from_before_it_was_published(lab: Lab) -> None:
    for res in lab.results:
        for mode, per_dataset in res.forecasts.items():
            for d, pubs in per_dataset.items():
                assert pubs and pubs[0].trigger == "start"
                for p in pubs:
                    assert p.started_at < p.published_at
                    assert p.forecast.batches == lab.engine.state(d, p.started_at)
                    assert p.forecast.watermark == watermark(lab.trace, d, p.started_at)
                    if p.forecast.model is not None:  # the model was trained on data landed before the forecast ran
                        promo = next(x for x in res.promotions[d] if x.fit and x.fit.batches == p.forecast.model)
                        assert promo.available_at <= p.started_at
                    rows = p.forecast.frame
                    assert rows.height and (rows["date"] > p.forecast.watermark).all()


def test_a_forecast_that_reads_ahead_is_caught(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Replay(lab.trace, lab.source.inner, lab.engine.contracts, settings())
    monkeypatch.setattr(Trace, "landed_by", lambda self, dataset, moment: self.of(dataset))  # a bug: ignores time
    with pytest.raises(FutureDataError):
        engine.forecast("shop_a", lab.trace.start + timedelta(hours=1), engine.bootstrap["shop_a"])


def test_sources_refuse_batches_that_had_not_landed(lab: Lab) -> None:
    future = lab.trace.new_arrivals("shop_a")[-1]
    with pytest.raises(FutureDataError, match="landed after"):
        lab.source.inner.load("shop_a", ["history", future.batch], future.landed_at - MINUTE)


def test_a_replay_that_reads_ahead_is_caught(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Replay(lab.trace, lab.source.inner, lab.engine.contracts, settings())
    monkeypatch.setattr(Trace, "landed_by", lambda self, dataset, moment: self.of(dataset))  # a bug: ignores time
    engine.fits.clear()
    with pytest.raises(FutureDataError):
        engine.fit("shop_a", lab.trace.start + timedelta(hours=1), None)


# ----------------------------------------------------------------- train's code path
def test_the_decision_is_the_shipped_train_models_on_the_same_data_and_champion(lab: Lab) -> None:
    """A replayed run's model, scores and decision are what ``training.train_model`` gives on the rows landed by
    its start, judged against the champion it replaced."""
    from freshet.modeling import training

    res = lab.results[3]  # event-driven
    run = next(r for r in res.runs if r.outcome == "trained")
    champion = lab.engine.first_champion[run.dataset]
    fit = lab.engine.fits[(run.dataset, lab.engine.state(run.dataset, run.started_at), champion.batches if champion else None)]
    data = lab.source.inner.load(run.dataset, [a.batch for a in lab.trace.landed_by(run.dataset, run.started_at)],
                                 run.started_at)
    shipped = training.train_model(data, lab.engine.contracts[run.dataset],
                                   (champion.booster, champion.meta) if champion else None, settings())
    assert (run.promoted, run.reason) == (shipped.promote, shipped.reason)
    assert fit.scores == shipped.scores and fit.meta["transform"] == shipped.meta["transform"]
    assert run.wape == shipped.scores["model"]["wape"]


def test_runs_follow_train_one_at_a_time_and_nothing_new_costs_nothing(lab: Lab) -> None:
    latency = lab.engine.config.train_latency
    for res in lab.results:
        for d in lab.trace.datasets:
            runs = [r for r in res.runs if r.dataset == d and r.started_at is not None]
            last_state, busy_until = lab.engine.bootstrap[d].batches, lab.trace.start
            for r in runs:
                state = lab.engine.state(d, r.started_at)
                assert r.started_at == max(r.requested_at, busy_until), (res.policy.name, r)
                if r.outcome == "nothing-new":
                    assert state == last_state and r.cpu_seconds == 0
                else:
                    assert state > last_state and r.batches == len(state)
                    last_state, busy_until = state, r.started_at + latency


def test_trainings_are_memoised_across_policies_but_charged_to_each(lab: Lab) -> None:
    fits = lab.engine.fits
    charged = 0.0
    for res in lab.results:
        trained = [r for r in res.runs if r.outcome == "trained"]
        cost = sum(r.cpu_seconds for r in trained)
        for r in trained:  # each run is charged the CPU of a memoised training on its data state
            state = lab.engine.state(r.dataset, r.started_at)
            assert r.cpu_seconds in [f.cpu_seconds for k, f in fits.items() if k[:2] == (r.dataset, state)]
        for mode in (ON_LANDING, AFTER_TRAINING):
            total = by_name(lab.report)[(res.policy.name, mode)]["total"]
            published = sum(p.forecast.cpu_seconds for pubs in res.forecasts[mode].values() for p in pubs)
            assert total["train_cpu_seconds"] == pytest.approx(cost)
            assert total["cpu_seconds"] == pytest.approx(cost + published)
        charged += cost
    assert lab.engine.fit_cpu_seconds == pytest.approx(sum(f.cpu_seconds for f in fits.values()))
    assert lab.engine.fit_cpu_seconds < charged  # CPU was spent once per data state
    distinct = {(r.dataset, lab.engine.state(r.dataset, r.started_at)) for res in lab.results for r in res.runs
                if r.outcome == "trained"} | {(d, f.batches) for d, f in lab.engine.bootstrap.items()}
    assert {k[:2] for k in fits} == distinct
    assert any(r.reused for r in lab.results[3].runs)


def test_report_counts_agree_with_the_runs(lab: Lab) -> None:
    names = by_name(lab.report)
    for res in lab.results:
        for mode in (ON_LANDING, AFTER_TRAINING):
            total = names[(res.policy.name, mode)]["total"]
            assert total["trainings"] == sum(r.outcome == "trained" for r in res.runs)
            assert total["nothing_new"] == sum(r.outcome == "nothing-new" for r in res.runs)
            assert total["promotions"] == sum(r.promoted for r in res.runs)
            assert total["forecasts"] == sum(len(v) for v in res.forecasts[mode].values())
    arrivals = sum(len(lab.trace.new_arrivals(d)) for d in lab.trace.datasets)
    once = names[("once", AFTER_TRAINING)]["total"]
    assert once["trainings"] == once["train_cpu_seconds"] == 0 and once["staleness"]["not_served_by_end"] == arrivals
    # forecasts on landing: every file reaches a published forecast one forecast latency after it lands
    event = names[("event-driven", ON_LANDING)]["total"]
    assert event["staleness"]["p50_h"] == event["staleness"]["max_h"] == pytest.approx(1 / 60)
    # after training: a training starts as the file lands, and its forecast follows the model
    assert names[("event-driven", AFTER_TRAINING)]["total"]["staleness"]["p50_h"] == pytest.approx(11 / 60)
    assert names[("weekly Mon 09:00", AFTER_TRAINING)]["total"]["staleness"]["max_h"] > 5 * 24  # Tuesday waits for Monday
    for p in lab.report["policies"]:
        assert p["total"]["error"]["rows"] > 0 and p["total"]["in_hand"]["rows"] > 0, p["name"]
    # models beat seasonal naive, which is the reference row
    assert names[("event-driven", ON_LANDING)]["total"]["error"]["wape"] < names[("-", ON_LANDING)]["total"]["error"]["wape"]
    rows = table_rows(lab.report)  # grouped by retraining policy, the reference last
    shown = {(p.name, m) for p, m in default_combinations()}
    assert [(r["retraining"], r["forecasts"]) for r in rows] == (
        [(p.name, m) for p in default_policies() for m in (ON_LANDING, AFTER_TRAINING) if (p.name, m) in shown]
        + [(NAIVE, ON_LANDING)])
    assert len(lab.report["policies"]) == 2 * len(default_policies()) + 1  # every combination is in the report


def test_in_hand_takes_the_latest_forecast_issued_before_each_period() -> None:
    from freshet.lab.replay import Forecast, Published

    c = RETAIL
    t0 = datetime(2025, 1, 10, tzinfo=timezone.utc)

    def pub(at: datetime, days: list[int], value: float) -> Published:
        frame = pl.DataFrame({"store_id": [1] * len(days), "item_id": [1] * len(days),
                              "date": [date(2025, 1, 10) + timedelta(days=k) for k in days], "forecast": [value] * len(days)},
                             schema_overrides={"store_id": pl.Int32, "item_id": pl.Int32})
        return Published("d", "landing", at, at, Forecast("d", frozenset(), None, None, frame, 0, 0.0))

    actuals = pl.DataFrame({"store_id": [1] * 4, "item_id": [1] * 4, "date": [date(2025, 1, 10) + timedelta(days=k) for k in range(4)],
                            "units_sold": [10.0] * 4}, schema_overrides={"store_id": pl.Int32, "item_id": pl.Int32})
    early = pub(t0 - timedelta(hours=2), [0, 1, 2], 8.0)
    later = pub(t0 + timedelta(hours=6), [1, 2, 3], 11.0)  # issued during day 0: too late for day 0
    actual, forecast, covered, total = in_hand([early, later], actuals, c, date(2025, 1, 9))
    assert (covered, total) == (4, 4)
    assert forecast.tolist() == [8.0, 11.0, 11.0, 11.0] and actual.tolist() == [10.0] * 4
    assert in_hand([later], actuals, c, date(2025, 1, 9))[2:] == (3, 4)


def test_lab_forecast_is_the_shipped_forecast_frame_and_refuses_a_future_with_the_target(lab: Lab) -> None:
    from freshet.modeling import forecast

    d = "shop_a"
    moment = lab.trace.new_arrivals(d)[3].landed_at
    _, history = lab.engine.read(d, moment)
    model = lab.engine.first_champion[d] or lab.engine.bootstrap[d]
    plan = lab.engine.plan(d, replay._horizon_rows(history, RETAIL))
    out, skipped = lab_forecast(history, RETAIL, model, plan)
    want, want_skipped = forecast.forecast_frame(history, RETAIL, model.booster, model.meta, plan)
    assert out.equals(want) and skipped.equals(want_skipped)
    series = history.select("store_id", "item_id").unique().height
    assert out.height == (series - skipped.height) * RETAIL.horizon and out.height >= RETAIL.horizon
    assert (out["date"] > history["date"].max()).all() and set(out["method"]) == {"model"}
    naive, _ = lab_forecast(history, RETAIL, None, plan)
    assert set(naive["method"]) == {"seasonal_naive"}
    with pytest.raises(ValueError, match="carries the target"):
        lab_forecast(history, RETAIL, model, lab.engine.actuals(d))


def test_seed_spread_reports_median_range_and_rankings() -> None:
    def report(seed: int, wapes: dict[str, float]) -> dict:
        return {"source": f"seed {seed}", "policies": [
            {"name": n, "shown": True, "total": {"staleness": {"p50_h": 1.0}, "error": {"wape": w}, "cpu_seconds": 10.0,
                                                 "trainings": 3, "promotions": 1}} for n, w in wapes.items()]}
    spread = seed_spread([report(1, {"a": 0.3, "b": 0.4}), report(2, {"a": 0.5, "b": 0.2}), report(3, {"a": 0.1, "b": 0.2})])
    assert spread["combinations"]["a"]["wape"] == {"median": 0.3, "min": 0.1, "max": 0.5, "values": [0.3, 0.5, 0.1]}
    assert spread["wape_rank"] == {"seed 1": ["a", "b"], "seed 2": ["b", "a"], "seed 3": ["a", "b"]}


# ----------------------------------------------------------------- hand-made trace: a burst
@pytest.fixture(scope="module")
def burst() -> tuple[Trace, FrameSource]:
    """120 days of history, then three one-day files landing a minute apart."""
    frame = generate_retail_sales(seed=5, stores=2, items=2, days=123)
    start = datetime(2024, 5, 1, tzinfo=timezone.utc)
    cut = date(2024, 1, 1) + timedelta(days=120)
    parts = {"history": (start, frame.filter(pl.col("date") < cut))}
    for k in range(3):
        day = cut + timedelta(days=k)
        parts[f"b{k}"] = (start + timedelta(hours=1) + k * MINUTE, frame.filter(pl.col("date") == day))
    arrivals = tuple(Arrival("retail_sales", b, t, f.height, f["date"].min(), f["date"].max()) for b, (t, f) in parts.items())
    trace = Trace(arrivals, start, start + timedelta(days=1))
    return trace, FrameSource({("retail_sales", b): f for b, (_, f) in parts.items()}, trace, {"retail_sales": RETAIL})


def test_a_burst_under_event_driven_queues_and_collapses_like_train(burst) -> None:
    trace, source = burst
    engine = Replay(trace, source, {"retail_sales": RETAIL}, settings(), LabConfig(train_latency=10 * MINUTE))
    runs = engine.run_policy(EventDriven()).runs
    t0 = trace.start + timedelta(hours=1)
    assert [(r.outcome, r.started_at - t0, r.batches) for r in runs] == [
        ("trained", timedelta(0), 2),  # the first file's event starts a run at once
        ("trained", 10 * MINUTE, 4),  # the second waits for the slot, then sees both later files
        ("nothing-new", 20 * MINUTE, 0),  # the third finds its data already trained on
    ]
    (debounced,) = engine.run_policy(Debounced(quiet=30 * MINUTE, max_wait=timedelta(hours=2))).runs
    assert (debounced.started_at, debounced.batches) == (t0 + 32 * MINUTE, 4)


def test_too_little_history_is_a_lab_error(burst) -> None:
    trace, source = burst
    short = Trace(tuple(a for a in trace.arrivals if a.batch != "history")
                  + (Arrival("retail_sales", "history", trace.start, 10, date(2024, 4, 20), date(2024, 4, 29)),),
                  trace.start, trace.end)
    tiny = FrameSource({**source.frames, ("retail_sales", "history"): source.frames[("retail_sales", "history")].tail(40)},
                       short, {"retail_sales": RETAIL})
    with pytest.raises(LabError, match="not enough history"):
        Replay(short, tiny, {"retail_sales": RETAIL}, settings())


# ----------------------------------------------------------------- the lake's own history
def test_lake_trace_replays_the_manifest(lake_env: LakeHandle) -> None:
    frame = generate_retail_sales(seed=9, stores=2, items=2, days=134)
    first = datetime(2025, 6, 2, 6, tzinfo=timezone.utc)
    cut = date(2024, 1, 1) + timedelta(days=120)
    pieces = [("history.csv", frame.filter(pl.col("date") < cut), first)]
    pieces += [(f"week{k}.csv", frame.filter((pl.col("date") >= cut + timedelta(days=7 * k))
                                             & (pl.col("date") < cut + timedelta(days=7 * k + 7))),
                first + timedelta(days=2 + 3 * k)) for k in range(2)]
    lake = lake_env.lake
    for name, part, landed in pieces:
        uri = lake_env.land(part, name)
        os.utime(lake.path("landing", "retail_sales", name), (landed.timestamp(), landed.timestamp()))
        assert admit_file(lake, RETAIL, uri).ok
    now = first + timedelta(days=10)
    trace, source, contracts = lake_trace(lake, BUNDLED_CONTRACTS, now=now)
    assert (trace.start, trace.end, trace.datasets) == (first, now, ("retail_sales",))
    assert [(a.landed_at, a.rows, a.max_time) for a in trace.of("retail_sales")] == [
        (landed, part.height, part["date"].max()) for _, part, landed in pieces]
    engine = Replay(trace, source, contracts, settings())
    runs = engine.run_policy(EventDriven()).runs
    assert [(r.outcome, r.started_at, r.batches) for r in runs] == [
        ("trained", first + timedelta(days=2), 2), ("trained", first + timedelta(days=5), 3)]
    monday = datetime(2025, 6, 2, 9, tzinfo=timezone.utc)  # three hours after the history landed
    assert [(r.outcome, r.started_at, r.batches) for r in engine.run_policy(Weekly()).runs] == [
        ("nothing-new", monday, 0), ("trained", monday + timedelta(days=7), 3)]


def test_an_empty_lake_is_a_lab_error(lake_env: LakeHandle) -> None:
    with pytest.raises(LabError, match="no manifest entries"):
        lake_trace(lake_env.lake, BUNDLED_CONTRACTS)


# ----------------------------------------------------------------- outputs, CLI, flow, deployment
def test_outputs_are_a_json_report_and_a_png_chart(lab: Lab, tmp_path: Path) -> None:
    path, chart = write_outputs(dict(lab.report), tmp_path / "out")
    saved = json.loads(path.read_text())
    assert [p["name"] for p in saved["policies"]] == [f"{p.name} / forecast {m}" for p in default_policies()
                                                      for m in (ON_LANDING, AFTER_TRAINING)] + [NAIVE]
    assert saved["chart"] == str(chart.resolve())
    png = chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (990, 720)  # 11 x 8 inches at 90 dpi
    assert len(saved["curves"]["times"]) == 10 * 24 + 1  # hourly over 10 days, both ends


def test_format_table_aligns_numbers_right() -> None:
    assert format_table([{"policy": "a", "n": "1"}, {"policy": "long name", "n": "100"}]) == (
        "| policy    |   n |\n"
        "|-----------|----:|\n"
        "| a         |   1 |\n"
        "| long name | 100 |"
    )


def test_cli_prints_the_table_and_writes_the_report(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from freshet.ops.cli import main

    assert main(["policies", "--datasets", "1", "--days", "4", "--seed", "2", "--threshold-hours", "12",
                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "[4/7] event-driven:" in out and "| event-driven" in out and "| on landing" in out
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["config"]["threshold_hours"] == 12 and list(report["trace"]["datasets"]) == ["shop_a"]
    assert (tmp_path / "chart.png").stat().st_size > 10_000


def test_cli_from_an_empty_lake_explains(lake_env: LakeHandle, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from freshet.ops.cli import main

    assert main(["policies", "--from-lake", "--out", str(tmp_path)]) == 1
    assert "land and ingest data first" in capsys.readouterr().err


def test_flow_publishes_a_table_and_a_markdown_report_with_the_chart(prefect_api, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.policies import policies

    state = policies(datasets=1, days=4, seed=3, out=str(tmp_path), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert Path(result["report"]).exists() and Path(result["chart"]).exists()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id(state)])))
    by_key = {a.key: a for a in found}
    table = by_key["freshet-policies"].data
    table = json.loads(table) if isinstance(table, str) else table
    shown = {(p.name, m) for p, m in default_combinations()}
    assert [(row["retraining"], row["forecasts"]) for row in table] == (
        [(p.name, m) for p in default_policies() for m in (ON_LANDING, AFTER_TRAINING) if (p.name, m) in shown]
        + [(NAIVE, ON_LANDING)])
    markdown = by_key["freshet-policies-report"].data
    assert "![staleness and error over time](data:image/png;base64,iVBORw0KGgo" in markdown
    assert "| event-driven" in markdown and "### shop_a" in markdown


def test_the_policies_deployment_points_at_the_flow_with_described_parameters() -> None:
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "policies"]
    flow = load_flow_from_entrypoint(str(REPO / dep["entrypoint"]))
    assert flow.name == "policies"
    props = flow.parameters.model_dump()["properties"]
    assert set(dep["parameters"]) == set(props)
    for name, schema in props.items():
        assert schema.get("description"), f"parameter {name} has no description"
        assert schema["default"] == dep["parameters"][name]


# ----------------------------------------------------------------- a folder of files
def write_daily_files(folder: Path, days: int = 130, last: int = 6) -> pl.DataFrame:
    """A history file, then one CSV per day for the last ``last`` days (2 stores x 2 items)."""
    frame = generate_retail_sales(seed=4, stores=2, items=2, days=days)
    folder.mkdir()
    cut = frame["date"].max() - timedelta(days=last - 1)
    frame.filter(pl.col("date") < cut).write_csv(folder / "history.csv")
    for day in frame.filter(pl.col("date") >= cut)["date"].unique().sort():
        frame.filter(pl.col("date") == day).write_csv(folder / f"{day}.csv")
    return frame


def test_dir_trace_lands_each_file_when_its_data_is_complete_plus_a_delay(tmp_path: Path) -> None:
    frame = write_daily_files(tmp_path / "files")
    contract = REPO / "src/freshet/data/bundled_contracts/retail_sales.toml"
    trace, source, contracts = dir_trace(tmp_path / "files", contract, days=4, delay=timedelta(hours=2))
    newest = frame["date"].max()
    day = lambda d: datetime(d.year, d.month, d.day, tzinfo=timezone.utc)  # noqa: E731
    assert [(a.batch, a.landed_at) for a in trace.of("retail_sales")][-2:] == [
        (f"{newest - timedelta(days=1)}.csv", day(newest) + timedelta(hours=2)),
        (f"{newest}.csv", day(newest) + timedelta(days=1, hours=2))]
    assert trace.end == day(newest) + timedelta(days=2, hours=2) and trace.start == trace.end - timedelta(days=4)
    assert len(trace.new_arrivals("retail_sales")) == 3 and [a.batch for a in trace.history("retail_sales")][0] == "history.csv"
    assert source.load("retail_sales", ["history.csv"], trace.start).height == frame.filter(
        pl.col("date") < newest - timedelta(days=5)).height
    # landing times from a CSV instead; a file it names that is not there, or a bad header, is refused
    (tmp_path / "times.csv").write_text("file,landed_at\n" + "".join(
        f"{p.name},2025-01-{k + 1:02d}T08:00:00\n" for k, p in enumerate(sorted((tmp_path / "files").iterdir()))))
    trace, _, _ = dir_trace(tmp_path / "files", contract, days=3, landed_at=tmp_path / "times.csv")
    assert trace.end == datetime(2025, 1, 8, 8, tzinfo=timezone.utc) and len(trace.new_arrivals("retail_sales")) == 2
    (tmp_path / "files" / "odd.csv").write_text("date,store_id\n2024-01-01,1\n")
    with pytest.raises(LabError, match="odd.csv.*'item_id' is required"):
        dir_trace(tmp_path / "files", contract)


def test_cli_replays_a_folder_with_its_contract(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from freshet.ops.cli import main

    write_daily_files(tmp_path / "files", last=3)
    # price and promotion as observed: the folder holds no plan of their future values
    contract = tmp_path / "retail_sales.toml"
    contract.write_text((REPO / "src/freshet/data/bundled_contracts/retail_sales.toml").read_text()
                        .replace('known = ["price", "on_promo"]\nobserved = []', 'known = []\nobserved = ["price", "on_promo"]'))
    assert main(["policies", "--from-dir", str(tmp_path / "files"), "--contract", str(contract), "--days", "3",
                 "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "| event-driven" in out and "| on landing" in out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["source"].startswith("folder ") and report["trace"]["datasets"]["retail_sales"]["arrivals"] == 2
    event = next(p for p in report["policies"] if p["name"] == "event-driven / forecast on landing")
    assert event["total"]["staleness"]["p50_h"] == pytest.approx(1 / 60)
    assert main(["policies", "--from-dir", str(tmp_path / "files"), "--out", str(tmp_path / "out")]) == 2
