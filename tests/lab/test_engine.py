"""The replay engine: no data from the future, train's code path, memoised cost, train's one-run-at-a-time."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from freshet.data.generate import generate_retail_sales
from freshet.lab.engine import LabConfig, Replay, _horizon_rows, lab_forecast
from freshet.lab.policies import AFTER_TRAINING, ON_LANDING, Arrival, Debounced, EventDriven, Trace
from freshet.lab.traces import FrameSource, FutureDataError, LabError

from tests.lab.conftest import MINUTE, RETAIL, Lab, by_name, settings, watermark


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


def test_a_replay_that_reads_ahead_is_caught(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Replay(lab.trace, lab.source.inner, lab.engine.contracts, settings())
    monkeypatch.setattr(Trace, "landed_by", lambda self, dataset, moment: self.of(dataset))  # a bug: ignores time
    engine.fits.clear()
    with pytest.raises(FutureDataError):
        engine.fit("shop_a", lab.trace.start + timedelta(hours=1), None)


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
    # every score but the model families' seconds (a timing) is the same
    timeless = lambda s: {**s, "families": {**s["families"], "candidates": [  # noqa: E731
        {k: v for k, v in c.items() if k != "seconds"} for c in s["families"]["candidates"]]}}
    assert timeless(fit.scores) == timeless(shipped.scores) and fit.meta["transform"] == shipped.meta["transform"]
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


def test_lab_forecast_is_the_shipped_forecast_frame_and_refuses_a_future_with_the_target(lab: Lab) -> None:
    from freshet.modeling import forecast

    d = "shop_a"
    moment = lab.trace.new_arrivals(d)[3].landed_at
    _, history = lab.engine.read(d, moment)
    model = lab.engine.first_champion[d] or lab.engine.bootstrap[d]
    plan = lab.engine.plan(d, _horizon_rows(history, RETAIL))
    out, skipped = lab_forecast(history, RETAIL, model, plan)
    want, want_skipped = forecast.forecast_frame(history, RETAIL, model.booster, model.meta, plan)
    assert out.equals(want) and skipped.equals(want_skipped)
    series = history.select("store_id", "item_id").unique().height
    assert out.height == (series - skipped.height) * RETAIL.horizon and out.height >= RETAIL.horizon
    assert (out["date"] > history["date"].max()).all()
    # the model, every input present, on every row the plan covers; a row the plan lacks (a gap in the data)
    # takes the ladder's next rung, as the contract's on_missing_future says
    keys = ["store_id", "item_id", "date"]
    assert set(out.join(plan, on=keys, how="semi")["method"]) == {"model"}
    assert "model" not in set(out.join(plan, on=keys, how="anti")["method"])
    naive, _ = lab_forecast(history, RETAIL, None, plan)
    assert set(naive["method"]) == {"seasonal_naive"}
    with pytest.raises(ValueError, match="carries the target"):
        lab_forecast(history, RETAIL, model, lab.engine.actuals(d))


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


def _shifted_replay(factor: float, tolerance: float):
    """One dataset whose target is multiplied by ``factor`` in every batch after the trace's fourth day."""
    import dataclasses

    from freshet.lab.policies import EventDriven, OnDrift
    from freshet.lab.traces import synthetic_trace

    trace, source, contracts = synthetic_trace(datasets=1, days=10, seed=5, history_days=150)
    [d] = trace.datasets
    contracts = {d: dataclasses.replace(contracts[d], drift_tolerance=tolerance)}
    target = contracts[d].target
    shift = trace.start + timedelta(days=4)
    late = {a.batch for a in trace.new_arrivals(d) if a.landed_at > shift}
    source.frames = {k: (f.with_columns(pl.col(target) * factor) if k[1] in late else f) for k, f in source.frames.items()}
    engine = Replay(trace, source, contracts, settings(), LabConfig())
    return trace, shift, {p.name: engine.run_policy(p) for p in (OnDrift(), EventDriven())}


def test_on_drift_retrains_only_after_the_champions_live_accuracy_drops_past_the_tolerance() -> None:
    trace, shift, runs = _shifted_replay(factor=3.0, tolerance=0.5)
    trained = [r for r in runs["on drift"].runs if r.outcome == "trained"]
    # demand triples: the champion's live WAPE blows past its backtest, and only then does the policy train
    assert trained and all(r.requested_at > shift for r in trained)
    assert {r.requested_at for r in trained} <= {a.landed_at for a in trace.new_arrivals(trace.datasets[0])}
    assert len(trained) < len([r for r in runs["event-driven"].runs if r.outcome == "trained"])


def test_on_drift_never_trains_while_the_champion_stays_within_tolerance() -> None:
    _, _, runs = _shifted_replay(factor=1.0, tolerance=0.5)
    assert runs["on drift"].runs == [] and runs["event-driven"].runs
