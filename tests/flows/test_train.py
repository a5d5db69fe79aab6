"""The ``train`` flow under the session's Prefect test server, on a local lake and on S3 (moto).

Assertions are on what a user sees afterwards: the registry (model.ubj + meta.json),
the champion pointer, the manifest and quarantine, events, and the run's artifacts.
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np
import polars as pl
import pytest
import xgboost as xgb

from tests.conftest import DATASET, SMALL, LakeHandle, flow_run_id, run_events, seed_for
from freshet import events
from freshet.modeling import registry
from freshet.modeling import features as F
from freshet.modeling import model as M
from freshet.modeling import training as T
from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales, split_into_batches
from freshet.data.ingestion import admit_file, load_curated
from freshet.settings import BUNDLED_CONTRACTS, get_settings
from flows.train import train

RETAIL = load_contract(DATASET, BUNDLED_CONTRACTS)


@pytest.fixture
def sales(request: pytest.FixtureRequest) -> pl.DataFrame:
    """Training-sized data unique to the test (event ids derive from content; the server is shared)."""
    return generate_retail_sales(seed=seed_for(request), **SMALL)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def admit(handle: LakeHandle, frame: pl.DataFrame, name: str) -> str:
    uri = handle.land(frame, name)
    assert admit_file(handle.lake, RETAIL, uri).status == "admitted"
    return uri


def models(handle: LakeHandle) -> list[dict]:
    return registry.list_models(handle.lake, DATASET)


def champion_version(handle: LakeHandle) -> str | None:
    lake = handle.lake
    return lake.read_json(lake.champion_path(DATASET))["version"] if lake.exists(lake.champion_path(DATASET)) else None


def task_names(run_id: str) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))
    return sorted(r.name.rsplit("-", 1)[0] for r in runs)


def run_artifact(run_id: str, key: str, kind: str):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterKey

    flt = ArtifactFilter(key=ArtifactFilterKey(any_=[key]), flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
    with get_client(sync_client=True) as client:
        (artifact,) = client.read_artifacts(artifact_filter=flt)
    assert artifact.type == kind
    return artifact.data


def metrics_artifact(run_id: str) -> list[dict]:
    data = run_artifact(run_id, "freshet-retail-sales-metrics", "table")
    return json.loads(data) if isinstance(data, str) else data


def retrain(handle: LakeHandle, meta: dict) -> T.TrainingResult:
    """Train again from the lake on the model's lineage, exactly as the flow trained it (same seed)."""
    data = load_curated(handle.lake, [{"content_hash": e["content_hash"]} for e in meta["lineage"]], RETAIL).collect()
    return T.train_model(data, RETAIL, None, get_settings())


# ----------------------------------------------------------------- first training
def test_first_training_promotes_and_registers_a_complete_model(prefect_api, any_lake: LakeHandle, sales) -> None:
    uri = admit(any_lake, sales, "history.csv")
    started = time.time()
    state = train(dataset=DATASET, return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    run_id = flow_run_id(state)
    assert (out["status"], out["promoted"], out["files"], out["rows"]) == ("trained", True, 1, sales.height)

    version = out["version"]
    assert any_lake.listing("models", DATASET) == sorted([version, "champion.json"])
    assert sorted(any_lake.listing("models", DATASET, version)) == ["meta.json", "model.ubj"]
    assert champion_version(any_lake) == version
    meta = any_lake.read_json("models", DATASET, version, "meta.json")
    assert registry.champion(any_lake.lake, DATASET) == meta

    # lineage names the admitted file
    (entry,) = any_lake.manifest()
    (item,) = meta["lineage"]
    assert (item["uri"], item["content_hash"], item["rows"]) == (uri, entry["content_hash"], sales.height)
    assert (item["min_time"], item["max_time"]) == (str(sales["date"].min()), str(sales["date"].max()))
    assert meta["new_files"] == [entry["content_hash"]]
    assert meta["fingerprint"] == registry.data_fingerprint([entry["content_hash"]])
    assert meta["data_watermark"] == str(sales["date"].max())
    rows = meta["rows"]
    assert rows["total"] == sales.height and rows["train"] + rows["valid"] + rows["holdout"] == sales.height

    # metrics: the model beats the seasonal-naive baseline on every backtest window pooled, and
    # the registered file is the serving refit of the model that was scored
    model, baseline = meta["metrics"]["model"], meta["metrics"]["baseline"]
    assert meta["metrics"]["champion"] is None and meta["champion_version"] is None
    assert model["wape"] < 0.85 * baseline["wape"]
    assert model["rows"] == baseline["rows"] > 0
    assert meta["decision"]["promote"] is True and "first model" in meta["decision"]["reason"]
    again = retrain(any_lake, meta)
    assert again.scores["model"]["wape"] == pytest.approx(model["wape"], rel=1e-6)
    assert [w["window"] for w in meta["backtest"]["windows"]] == [3, 2, 1, 0]
    assert all(w["model"]["rows"] > 0 for w in meta["backtest"]["windows"])
    assert meta["transform"] in ("none", "seasonal_difference", "level_scale") and meta["objective"] == "squared_error"
    # the served model continued the scored one on every row it never trained on, up to the newest
    assert meta["evaluation"]["refit"] == "continue" and meta["rows"]["refit"] == rows["valid"] + rows["holdout"]
    assert meta["rounds"] > meta["evaluation"]["best_iteration"] + 1
    assert meta["timings"]["refit_seconds"] > 0 and meta["timings"]["fit_chosen_seconds"] > 0
    served = registry.load_booster(any_lake.lake, DATASET, version)
    assert served.num_boosted_rounds() == meta["rounds"] == again.booster.num_boosted_rounds()

    # reproducibility facts
    assert set(meta["versions"]) >= {"freshet", "xgboost", "polars", "prefect", "python"}
    assert meta["versions"]["xgboost"] == xgb.__version__
    assert set(meta["timings"]) >= {"load", "features", "fit", "evaluate", "refit", "register"}
    assert all(v >= 0 for v in meta["timings"].values())
    assert 0 < meta["timings"]["fit"] < time.time() - started
    assert meta["features"] == F.feature_columns(RETAIL, F.FeatureSpec.from_json(meta["feature_spec"]))
    assert meta["params"]["tree_method"] == "hist" and 0 <= meta["best_iteration"] < meta["rounds"]
    assert meta["flow_run_id"] == run_id and meta["contract"] == RETAIL.fingerprint

    # the run published its holdout metrics as a table artifact
    table = {row["model"]: row for row in metrics_artifact(run_id)}
    assert table["model"]["version"] == version and table["model"]["wape"] == f"{model['wape']:.4f}"
    assert table["baseline"]["wape"] == f"{baseline['wape']:.4f}" and table["champion"]["wape"] == "n/a"

    # prediction intervals: cross-fitted coverage and pinball loss, pooled and per window, in meta and the report
    iv = meta["intervals"]
    assert iv["quantiles"] == [0.1, 0.5, 0.9] and model["rows"] < iv["table"]["rows"] <= model["rows"] + rows["valid"]
    assert 0.5 < iv["coverage"]["p10-p90"]["empirical"] <= 1.0 and iv["pinball_scaled"] > 0
    assert all(w["intervals"]["coverage"]["p10-p90"]["nominal"] == 0.8 for w in meta["backtest"]["windows"])
    report = run_artifact(run_id, "freshet-retail-sales-report", "markdown")
    pooled = f"{100 * iv['coverage']['p10-p90']['empirical']:.0f}% (nominal 80%)"
    assert "**Prediction intervals** (quantiles p10, p50, p90)" in report and f"Pooled: coverage p10-p90 {pooled}" in report

    # and announced the model
    (promoted,) = run_events(run_id, events.MODEL_PROMOTED)
    assert promoted.resource.id == "freshet.dataset.retail_sales"
    assert promoted.payload["version"] == version and promoted.payload["decision"]["promote"] is True
    assert promoted.payload["freshness_lag_seconds"] >= 0


def test_a_second_run_without_new_data_is_nothing_new(prefect_api, lake_env: LakeHandle, sales) -> None:
    admit(lake_env, sales, "history.csv")
    first = train()
    assert first["status"] == "trained"
    before = lake_env.listing("models", DATASET)

    started = time.monotonic()
    state = train(return_state=True)
    elapsed = time.monotonic() - started
    out = state.result()
    assert out == {"dataset": DATASET, "status": "nothing-new", "version": first["version"]}
    assert lake_env.listing("models", DATASET) == before
    assert champion_version(lake_env) == first["version"]
    assert "fit" not in task_names(flow_run_id(state))  # decided from the manifest, without training
    assert elapsed < 15, f"a no-op run took {elapsed:.1f} s"


def test_a_model_that_does_not_beat_the_champion_is_registered_but_not_promoted(
    prefect_api, any_lake: LakeHandle, sales, monkeypatch
) -> None:
    history, week = split_into_batches(sales, 2, batch_days=7)
    admit(any_lake, history, "history.csv")
    first = train()
    assert first["promoted"]

    week_uri = admit(any_lake, week, "week.csv")
    monkeypatch.setenv("FRESHET_MIN_IMPROVEMENT", "0.99")  # must be 99% better than the champion: impossible
    state = train(return_state=True)
    out = state.result()
    assert (out["status"], out["promoted"], out["files"]) == ("trained", False, 2)

    assert [m["version"] for m in models(any_lake)] == [first["version"], out["version"]]
    assert champion_version(any_lake) == first["version"]
    meta = any_lake.read_json("models", DATASET, out["version"], "meta.json")
    assert meta["decision"]["promote"] is False and "does not beat the champion" in meta["decision"]["reason"]
    assert meta["champion_version"] == first["version"]
    # the champion was scored on the backtest rows it never trained on (the new week), like for like
    champ, mine = meta["metrics"]["champion"], meta["metrics"]["model_on_champion_rows"]
    assert 0 < champ["rows"] == mine["rows"] < meta["metrics"]["model"]["rows"]
    assert {i["uri"] for i in meta["lineage"]} == {any_lake.uri("landing", DATASET, "history.csv"), week_uri}
    week_sha = next(e["content_hash"] for e in any_lake.manifest() if e["uri"] == week_uri)
    assert meta["new_files"] == [week_sha]
    (rejected,) = run_events(flow_run_id(state), events.MODEL_REJECTED)
    assert rejected.payload["version"] == out["version"]

    # the rejected model covers this data: the next run does not retrain it again
    again = train()
    assert again == {"dataset": DATASET, "status": "nothing-new", "version": out["version"]}
    assert champion_version(any_lake) == first["version"]


def test_a_champion_that_cannot_be_scored_keeps_its_place_and_the_rejection_says_why(
    prefect_api, lake_env: LakeHandle, sales
) -> None:
    history, week = split_into_batches(sales, 2, batch_days=7)
    admit(lake_env, history, "history.csv")
    first = train()
    assert first["promoted"]
    # the champion was registered by a freshet older than feature specs: it cannot be scored
    old = lake_env.read_json("models", DATASET, first["version"], "meta.json")
    del old["feature_spec"]
    lake_env.lake.write_json(lake_env.lake.path("models", DATASET, first["version"], "meta.json"), old)

    admit(lake_env, week, "week.csv")
    state = train(return_state=True)
    out = state.result()
    assert (out["status"], out["promoted"]) == ("trained", False)
    assert out["metrics"]["model"]["wape"] < out["metrics"]["baseline"]["wape"]  # enough for the gate that failed open
    assert champion_version(lake_env) == first["version"]
    assert [m["version"] for m in models(lake_env)] == [first["version"], out["version"]]  # registered
    why = f"not promoted: champion {first['version']} predates feature specs"
    meta = lake_env.read_json("models", DATASET, out["version"], "meta.json")
    assert meta["decision"] == {"promote": False, "reason": out["reason"]} and out["reason"].startswith(why)
    (rejected,) = run_events(flow_run_id(state), events.MODEL_REJECTED)
    assert rejected.payload["version"] == out["version"] and rejected.payload["decision"]["reason"] == out["reason"]


def test_the_debounce_reads_each_manifest_entry_once_however_often_it_polls(
    prefect_api, lake_env: LakeHandle, sales, monkeypatch
) -> None:
    from prefect import flow

    from flows.train import gather
    from freshet.data.lake import Lake

    monkeypatch.setenv("FRESHET_TRIGGER_THROTTLE_SECONDS", "0")
    monkeypatch.setenv("FRESHET_DEBOUNCE_QUIET_SECONDS", "2")
    history, week, more = split_into_batches(sales, 3, batch_days=7)
    admit(lake_env, history, "history.csv")
    admit(lake_env, week, "week.csv")
    manifest_dir = lake_env.lake.manifest_dir(DATASET)
    reads, polls = [], []
    read_many, listing = Lake.read_json_many, Lake.list

    def counting_reads(self, paths):  # the real reads, counted
        reads.extend(p for p in paths if p.startswith(manifest_dir + "/") and "/aliases/" not in p)
        return read_many(self, paths)

    def counting_lists(self, path, suffix=""):
        if path == manifest_dir:
            polls.append(len(reads))
            if len(polls) == 3:  # a file lands while the run waits for quiet
                admit(lake_env, more, "more.csv")
        return listing(self, path, suffix)

    monkeypatch.setattr(Lake, "read_json_many", counting_reads)
    monkeypatch.setattr(Lake, "list", counting_lists)

    @flow
    def debounce() -> list[dict]:
        return gather(RETAIL, get_settings(), get_settings().debounce_quiet_seconds)

    entries = debounce()
    assert len(entries) == 3 and len(polls) >= 6, polls  # one poll per 0.5 s, 2 s of quiet after the third
    # the first poll read the two entries, the third the new one; every other poll only listed
    assert sorted(reads) == sorted(lake_env.lake.manifest_path(DATASET, e["content_hash"]) for e in entries)
    assert polls[:4] == [0, 2, 2, 3] and set(polls[4:]) == {3}


def test_an_event_started_run_trains_at_once_and_looks_again_when_the_throttle_window_ends(
    prefect_api, lake_env: LakeHandle, sales, monkeypatch
) -> None:
    """The first training does not wait for the trigger's throttle window; a file landing inside the window
    (Prefect drops its event) is still trained by the same run, after the window has passed."""
    import flows.train as train_flow
    from freshet.data.lake import Lake

    monkeypatch.setenv("FRESHET_TRIGGER_THROTTLE_SECONDS", "12")
    monkeypatch.setenv("FRESHET_DEBOUNCE_QUIET_SECONDS", "0")
    history, week = split_into_batches(sales, 2, batch_days=7)
    admit(lake_env, history, "history.csv")
    windows, trainings, polls_after_first = [], [], []
    window_end, train_once, listing = train_flow.throttle_window_end, train_flow.train_once, Lake.list

    def recorded_window_end(throttle, event_at):
        windows.append(window_end(throttle, event_at))
        return windows[-1]

    def recorded_train_once(contract, entries, settings, event_id):
        trainings.append((time.monotonic(), len(entries)))
        return train_once(contract, entries, settings, event_id)

    def landing_while_the_run_waits(self, path, suffix=""):
        if trainings and path == lake_env.lake.manifest_dir(DATASET):
            polls_after_first.append(path)
            if len(polls_after_first) == 3:  # the run found nothing new and waits for the window to end
                lake_env.land(week, "week.csv")  # landed, never announced: its event was dropped
        return listing(self, path, suffix)

    monkeypatch.setattr(train_flow, "throttle_window_end", recorded_window_end)
    monkeypatch.setattr(train_flow, "train_once", recorded_train_once)
    monkeypatch.setattr(Lake, "list", landing_while_the_run_waits)
    out = train(event_id="an-event-id")
    assert out["status"] == "trained" and out["files"] == 2 and out["rounds"] == 2, out
    (end,) = windows
    assert [n for _, n in trainings] == [1, 2]
    assert trainings[0][0] < end <= trainings[1][0], "trained at once, then once more after the window"
    assert [len(m["lineage"]) for m in models(lake_env)] == [1, 2]


# ----------------------------------------------------------------- event-started runs
def test_named_landing_files_are_validated_first_and_bad_rows_never_trained_on(
    prefect_api, lake_env: LakeHandle, sales, monkeypatch
) -> None:
    # an event-started run; no burst to wait out in this test
    monkeypatch.setenv("FRESHET_TRIGGER_THROTTLE_SECONDS", "0")
    monkeypatch.setenv("FRESHET_DEBOUNCE_QUIET_SECONDS", "0")
    history, week = split_into_batches(sales, 2, batch_days=7)
    history_uri = lake_env.land(history, "history.csv")
    bad_rows = pl.int_range(pl.len()) < 5
    week_text = week.with_columns(pl.all().cast(pl.String)).with_columns(
        pl.when(bad_rows).then(pl.lit("1e9")).otherwise(pl.col("units_sold")).alias("units_sold")
    )
    week_body = week_text.write_csv().encode()
    week_uri = lake_env.land(week_body, "week.csv")
    broken_body = week.drop("price").write_csv().encode()
    broken_uri = lake_env.land(broken_body, "broken.csv")

    out = train(uris=[history_uri, week_uri, broken_uri], event_id="0b7e2a4c-0000-4000-8000-000000000001")

    assert out["status"] == "trained" and out["rows"] == sales.height - 5
    assert sorted(e["uri"] for e in lake_env.manifest()) == sorted([history_uri, week_uri])
    meta = lake_env.read_json("models", DATASET, out["version"], "meta.json")
    assert sorted(i["uri"] for i in meta["lineage"]) == sorted([history_uri, week_uri])
    assert meta["rows"]["total"] == sales.height - 5
    assert meta["event_id"] == "0b7e2a4c-0000-4000-8000-000000000001"
    # the bad rows and the broken file are in quarantine with their reasons
    week_reason = lake_env.read_json("quarantine", DATASET, sha256(week_body), "reason.json")
    assert [(r["column"], r["rule"], r["rows"]) for r in week_reason["reasons"]] == [("units_sold", "max", 5)]
    broken_reason = lake_env.read_json("quarantine", DATASET, sha256(broken_body), "reason.json")
    assert [(r["column"], r["rule"]) for r in broken_reason["reasons"]] == [("price", "missing_column")]
    # and none of them reached the training data
    data = load_curated(lake_env.lake, lake_env.manifest(), RETAIL).collect()
    assert data.height == sales.height - 5 and data["units_sold"].max() <= 100000


def test_named_files_already_in_the_manifest_are_not_admitted_again(prefect_api, lake_env: LakeHandle, sales) -> None:
    uri = admit(lake_env, sales, "history.csv")
    before = lake_env.manifest()
    out = train(uris=[uri])
    assert out["status"] == "trained"
    assert lake_env.manifest() == before  # same entry, same admitted_at


def test_a_uri_outside_the_landing_area_fails_the_run_before_anything_happens(
    prefect_api, lake_env: LakeHandle, sales, tmp_path
) -> None:
    admit(lake_env, sales, "history.csv")
    outside = tmp_path / "elsewhere.csv"
    sales.write_csv(outside)
    state = train(uris=[str(outside)], event_id="evil", return_state=True)
    assert state.is_failed()
    assert "refusing event evil" in state.message and "landing area" in state.message
    assert lake_env.listing("models") == []
    assert len(lake_env.manifest()) == 1


def test_an_empty_lake_has_nothing_to_train(prefect_api, lake_env: LakeHandle) -> None:
    assert train() == {"dataset": DATASET, "status": "no-data"}
    assert lake_env.listing("models") == []


def test_too_little_history_fails_with_advice(prefect_api, lake_env: LakeHandle, request) -> None:
    admit(lake_env, generate_retail_sales(seed=seed_for(request), stores=1, items=2, days=40), "short.csv")
    state = train(return_state=True)
    assert state.is_failed()
    assert "not enough history" in state.message and "FRESHET_HOLDOUT_PERIODS" in state.message
    assert lake_env.listing("models") == []


def test_registered_model_predicts_like_the_trained_one(lake_env: LakeHandle) -> None:
    """Registry round trip without Prefect: native format in, identical predictions out."""
    cols = ["a"]
    frame = pl.DataFrame({"a": np.arange(50, dtype=float), "y": np.arange(50, dtype=float) * 2})
    dtrain = xgb.DMatrix(frame[cols].to_numpy(), label=frame["y"].to_numpy(), feature_names=cols)
    booster = xgb.train({"objective": "reg:squarederror", "seed": 0}, dtrain, num_boost_round=5)
    lake = lake_env.lake
    registry.register(lake, DATASET, "v1", booster, {"version": "v1", "fingerprint": "f"})
    with pytest.raises(ValueError, match="not a complete registered model"):
        registry.promote(lake, DATASET, "v2")
    registry.promote(lake, DATASET, "v1")
    assert registry.champion(lake, DATASET) == {"version": "v1", "fingerprint": "f"}
    loaded = registry.load_booster(lake, DATASET, "v1")
    np.testing.assert_array_equal(M.predict(loaded, frame, cols), M.predict(booster, frame, cols))
    assert not any(p.endswith(".pkl") or p.endswith(".pickle") for p in lake_env.listing("models", DATASET, "v1"))


def test_no_task_hashes_its_inputs() -> None:
    """Prefect's default cache policy pickles every input to hash it: whole frames, per task call."""
    from prefect.cache_policies import NO_CACHE
    from prefect.tasks import Task

    import flows.ingest as ingest_module
    import flows.train as train_module

    tasks = [t for m in (train_module, ingest_module) for t in vars(m).values() if isinstance(t, Task)]
    # the training steps become tasks as they run (training.Steps with the flow's wrap)
    tasks += [train_module._as_task(name, train_module.load_data) for name in train_module.TASK_NAMES]
    assert len(tasks) >= 10
    assert [t.name for t in tasks if t.cache_policy is not NO_CACHE] == []


# ----------------------------------------------------------------- every dtype as an input
BIKES_CONTRACT = """\
name = "bikes"
time_column = "ts"
frequency = "1h"
series_keys = ["station"]
target = "rides"
known = ["weather", "workday", "holiday"]
observed = ["wind"]
horizon = 24
objective = "squared_error"

[columns]
ts = "Datetime"
station = "String"
rides = "Float64"
weather = "String"
workday = "Boolean"
holiday = "Int8"
wind = "Float64"
"""


def test_string_boolean_and_zero_heavy_exogenous_columns_train_through_the_flow(
    prefect_api, lake_env: LakeHandle, tmp_path, monkeypatch
) -> None:
    from tests.modeling.test_training import bikes

    contracts = tmp_path / "contracts"
    contracts.mkdir()
    (contracts / "bikes.toml").write_text(BIKES_CONTRACT, encoding="utf-8")
    monkeypatch.setenv("FRESHET_CONTRACTS_DIR", str(contracts))
    bikes_contract = load_contract("bikes", contracts)
    data = bikes(days=30)
    assert (data["wind"] == 0).mean() > 0.5 and (data["holiday"] == 0).all()  # numeric columns full of zeros
    uri = lake_env.land(data, "bikes.csv", dataset="bikes")
    assert admit_file(lake_env.lake, bikes_contract, uri).status == "admitted"

    state = train(dataset="bikes", return_state=True)
    assert state.is_completed(), state.message
    out = state.result()
    assert (out["status"], out["promoted"], out["rows"]) == ("trained", True, data.height)
    meta = lake_env.read_json("models", "bikes", out["version"], "meta.json")
    assert meta["feature_spec"]["categories"]["weather"] == ["clear", "mist", "rain"]
    assert "wind_lag_24" in meta["features"] and "wind" not in meta["features"]
    assert meta["metrics"]["model"]["wape"] < meta["metrics"]["baseline"]["wape"]
    assert len(meta["backtest"]["windows"]) == 4
