"""The lab's measures: report counts agree with the runs, the forecast in hand, the spread over seeds."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest

from freshet.lab.metrics import NAIVE, in_hand, seed_spread
from freshet.lab.policies import AFTER_TRAINING, ON_LANDING, default_combinations, default_policies
from freshet.lab.report import table_rows

from tests.lab.conftest import RETAIL, Lab, by_name


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
    from freshet.lab.engine import Forecast, Published

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


def test_seed_spread_reports_median_range_and_rankings() -> None:
    def report(seed: int, wapes: dict[str, float]) -> dict:
        return {"source": f"seed {seed}", "policies": [
            {"name": n, "shown": True, "total": {"staleness": {"p50_h": 1.0}, "error": {"wape": w}, "cpu_seconds": 10.0,
                                                 "trainings": 3, "promotions": 1}} for n, w in wapes.items()]}
    spread = seed_spread([report(1, {"a": 0.3, "b": 0.4}), report(2, {"a": 0.5, "b": 0.2}), report(3, {"a": 0.1, "b": 0.2})])
    assert spread["combinations"]["a"]["wape"] == {"median": 0.3, "min": 0.1, "max": 0.5, "values": [0.3, 0.5, 0.1]}
    assert spread["wape_rank"] == {"seed 1": ["a", "b"], "seed 2": ["b", "a"], "seed 3": ["a", "b"]}
