"""Ingestion: what ends up in the lake (curated rows, manifest, quarantine) and in Prefect (states, events).

``admit_file`` (Prefect-free) is checked rule by rule; the ``ingest`` flow runs
under the session's Prefect test server, on a local lake and on S3 (moto).
"""

from __future__ import annotations

import hashlib
import io
import json
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from tests.conftest import DATASET, LakeHandle, flow_run_id, run_events, seed_for
from freshet import events
from freshet.data.contracts import load_contract
from freshet.data.generate import generate_retail_sales, split_into_batches
from flows.ingest import ingest
from freshet.data.ingestion import UriRejected, admit_file, inspect_file, landing_path, load_curated
from freshet.settings import BUNDLED_CONTRACTS
from freshet.data.validation import VIOLATION

RETAIL = load_contract(DATASET, BUNDLED_CONTRACTS)
KEY = ["date", "store_id", "item_id"]


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def as_text(df: pl.DataFrame) -> pl.DataFrame:
    return df.with_columns(pl.all().cast(pl.String))


def set_cell(df: pl.DataFrame, row: int, column: str, value: str) -> pl.DataFrame:
    text = as_text(df)
    return text.with_columns(
        pl.when(pl.int_range(pl.len()) == row).then(pl.lit(value)).otherwise(pl.col(column)).alias(column)
    )


def csv_bytes(df: pl.DataFrame) -> bytes:
    return df.write_csv().encode()


def curated(handle: LakeHandle) -> pl.DataFrame:
    return load_curated(handle.lake, handle.manifest(), RETAIL).collect().sort(KEY)


def on_lakes(cases: list, s3_ids: set[str]) -> list:
    """Every case on a local lake, the ``s3_ids`` ones on S3 too (the rule logic is storage-free)."""
    out = [pytest.param("local", *c.values, id=f"local-{c.id}") for c in cases]
    out += [pytest.param("s3", *c.values, id=f"s3-{c.id}", marks=pytest.mark.s3) for c in cases if c.id in s3_ids]
    return out


@pytest.fixture
def lake_of(request: pytest.FixtureRequest):
    """``lake_of(kind)``: the local or S3 lake fixture, for tables parametrized by kind."""
    return lambda kind: request.getfixturevalue("lake_env" if kind == "local" else "s3_lake")


# ----------------------------------------------------------------- admit_file, rule by rule
BAD_ROW = 3
ROW_RULES = [
    pytest.param("units_sold", "many", "units_sold", "dtype", id="dtype"),
    pytest.param("on_promo", "perhaps", "on_promo", "dtype", id="dtype-bool"),
    pytest.param("price", "", "price", "non_null", id="non_null"),
    pytest.param("units_sold", "-4", "units_sold", "min", id="min"),
    pytest.param("units_sold", "250000", "units_sold", "max", id="max"),
    pytest.param("price", "20000", "price", "max", id="max-price"),
    pytest.param("date", "2099-01-01", "date", "future", id="future"),
]


@pytest.mark.parametrize(("kind", "column", "value", "bad_column", "rule"), on_lakes(ROW_RULES, {"min"}))
def test_a_bad_row_is_quarantined_with_its_reason_and_the_rest_admitted(
    lake_of, tiny_sales: pl.DataFrame, kind: str, column: str, value: str, bad_column: str, rule: str
) -> None:
    any_lake = lake_of(kind)
    text = set_cell(tiny_sales, BAD_ROW, column, value)
    body = csv_bytes(text)
    uri = any_lake.land(body, "partly-bad.csv")
    result = admit_file(any_lake.lake, RETAIL, uri)

    sha = sha256(body)
    assert (result.status, result.content_hash, result.rows_rejected) == ("partial", sha, 1)
    reason = any_lake.read_json("quarantine", DATASET, sha, "reason.json")
    assert reason["file"] == uri and reason["content_hash"] == sha and reason["dataset"] == DATASET
    assert (reason["rows_admitted"], reason["rows_rejected"], reason["whole_file"]) == (tiny_sales.height - 1, 1, False)
    assert reason["reasons"] == [
        {"column": bad_column, "rule": rule, "rows": 1, "examples": [text.row(BAD_ROW, named=True)]}
    ]
    rows = any_lake.read_parquet("quarantine", DATASET, sha, "rows.parquet")
    assert_frame_equal(rows, text[BAD_ROW].with_columns(pl.lit(f"{bad_column}:{rule}").alias(VIOLATION)))

    # the other rows are curated, typed, and counted in the manifest
    (entry,) = any_lake.manifest()
    assert entry["rows"] == tiny_sales.height - 1 and entry["rows_quarantined"] == 1
    assert entry["quarantine"] == any_lake.uri("quarantine", DATASET, sha)
    expected = tiny_sales.filter(pl.int_range(pl.len()) != BAD_ROW).sort(KEY)
    assert_frame_equal(curated(any_lake), expected)


def test_a_duplicate_key_keeps_the_first_row(lake_env: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    text = as_text(tiny_sales)
    again = set_cell(tiny_sales.head(1), 0, "units_sold", "999.0")
    body = csv_bytes(pl.concat([text, again]))
    result = admit_file(lake_env.lake, RETAIL, lake_env.land(body, "dup.csv"))
    assert result.status == "partial"
    (reason,) = lake_env.read_json("quarantine", DATASET, sha256(body), "reason.json")["reasons"]
    assert (reason["column"], reason["rule"], reason["rows"]) == ("date+store_id+item_id", "duplicate_key", 1)
    assert reason["examples"][0]["units_sold"] == "999.0"
    assert_frame_equal(curated(lake_env), tiny_sales.sort(KEY))


# ----------------------------------------------------------------- the fast path for clean files
# ``_typed_fast_path`` (numbers parsed by polars' CSV reader) must decide exactly as the string
# path (``_check_in_chunks``) would, for values a typed reader may read differently.
READER_EDGES = [
    ("store_id", " 1 "), ("store_id", "+1"), ("store_id", "1.0"), ("store_id", "0x1"), ("store_id", "1e0"),
    ("store_id", "99999999999"), ("units_sold", " 3.5"), ("units_sold", "1e2"), ("units_sold", "NaN"),
    ("units_sold", "inf"), ("units_sold", "-0"), ("units_sold", "1,5"), ("units_sold", "  "), ("price", "nan"),
    ("price", ".5"), ("on_promo", "TRUE"), ("on_promo", " yes "), ("on_promo", "1"), ("date", "2024/01/05"),
    ("date", "2024-1-5"), ("date", "20240105"), ("date", " 2024-01-05 "),
]


def admission_by(path: str, monkeypatch: pytest.MonkeyPatch, handle: LakeHandle, uri: str):
    """``inspect_file`` (no writes) forced down one path: "fast" must decide, "string" is forced."""
    import freshet.data.ingestion as ingestion

    with monkeypatch.context() as m:
        if path == "string":
            m.setattr(ingestion, "_typed_fast_path", lambda *a, **k: None)
        result = inspect_file(handle.lake, RETAIL, uri, now=datetime.now(timezone.utc), future_tolerance_hours=36,
                              on_bad_rows="quarantine_rows", publish=False)
    entry = result.entry or {}
    return result.status, entry.get("rows"), entry.get("min_time"), entry.get("max_time"), result.rows_rejected, result.reasons


@pytest.mark.parametrize(("column", "value"), READER_EDGES, ids=[f"{c}={v!r}" for c, v in READER_EDGES])
def test_the_fast_path_decides_like_the_string_path(
    lake_env: LakeHandle, tiny_sales: pl.DataFrame, monkeypatch: pytest.MonkeyPatch, column: str, value: str
) -> None:
    uri = lake_env.land(csv_bytes(set_cell(tiny_sales, BAD_ROW, column, value)), "edge.csv")
    assert admission_by("fast", monkeypatch, lake_env, uri) == admission_by("string", monkeypatch, lake_env, uri)


def test_a_clean_file_takes_the_fast_path_and_a_dirty_one_the_string_path(
    lake_env: LakeHandle, tiny_sales: pl.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    import freshet.data.ingestion as ingestion

    string_path = ingestion._check_in_chunks
    calls: list[str] = []
    monkeypatch.setattr(ingestion, "_check_in_chunks", lambda *a, **k: calls.append("string") or string_path(*a, **k))
    clean = admit_file(lake_env.lake, RETAIL, lake_env.land(tiny_sales, "clean.csv"))
    assert (clean.status, calls) == ("admitted", [])
    assert_frame_equal(curated(lake_env), tiny_sales.sort(KEY))
    for name, body in (("bad-row.csv", csv_bytes(set_cell(tiny_sales, BAD_ROW, "units_sold", "-1"))),
                       ("dup.csv", csv_bytes(pl.concat([as_text(tiny_sales), as_text(tiny_sales.head(1))])))):
        calls.clear()
        assert admit_file(lake_env.lake, RETAIL, lake_env.land(body, name)).status == "partial"
        assert calls == ["string"], name


FILE_RULES = [
    pytest.param("missing", "price", "missing_column", id="missing-column"),
    pytest.param("unexpected", "comment", "unexpected_column", id="unexpected-column"),
    pytest.param("empty", "*", "empty_file", id="empty-file"),
    pytest.param("header-only", "*", "empty_file", id="header-only"),
    pytest.param("ragged", "*", "unreadable", id="ragged-csv"),
    pytest.param("not-utf8", "*", "unreadable", id="not-utf8"),
    pytest.param("not-parquet", "*", "unreadable", id="not-parquet"),
]


def file_case(kind: str, df: pl.DataFrame) -> tuple[bytes, str]:
    if kind == "missing":
        return csv_bytes(df.drop("price")), "f.csv"
    if kind == "unexpected":
        return csv_bytes(df.with_columns(pl.lit("hi").alias("comment"))), "f.csv"
    if kind == "empty":
        return b"", "f.csv"
    if kind == "header-only":
        return csv_bytes(df.head(0)), "f.csv"
    if kind == "ragged":
        return csv_bytes(df) + b"2024-02-01,1,1,3.0,2.0,false,extra,fields\n", "f.csv"
    if kind == "not-utf8":
        return csv_bytes(df).replace(b"false", b"f\xe4lse", 1), "f.csv"
    if kind == "not-parquet":
        return b"PAR1 this is not really parquet", "f.parquet"
    raise AssertionError(kind)


@pytest.mark.parametrize(("lake_kind", "kind", "bad_column", "rule"),
                         on_lakes(FILE_RULES, {"missing-column", "not-parquet"}))
def test_a_bad_file_is_quarantined_whole_with_its_reason(
    lake_of, tiny_sales: pl.DataFrame, lake_kind: str, kind: str, bad_column: str, rule: str
) -> None:
    any_lake = lake_of(lake_kind)
    body, name = file_case(kind, tiny_sales)
    uri = any_lake.land(body, name)
    result = admit_file(any_lake.lake, RETAIL, uri)

    sha = sha256(body)
    assert result.status == "rejected" and result.entry is None
    reason = any_lake.read_json("quarantine", DATASET, sha, "reason.json")
    assert reason["file"] == uri and reason["whole_file"] is True and reason["rows_admitted"] == 0
    assert [(r["column"], r["rule"]) for r in reason["reasons"]] == [(bad_column, rule)]
    assert reason["reasons"][0]["detail"]
    original = any_lake.lake.read_bytes(any_lake.lake.path("quarantine", DATASET, sha, f"original.{name.split('.')[-1]}"))
    assert original == body  # the file is kept byte for byte for whoever fixes it
    assert any_lake.manifest() == []
    assert any_lake.listing("curated", DATASET) == []
    message = result.message()
    assert uri in message and rule in message and bad_column in message


def test_a_file_with_only_bad_rows_is_rejected_whole(lake_env: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    text = as_text(tiny_sales).with_columns(pl.lit("-1").alias("units_sold"))
    body = csv_bytes(text)
    result = admit_file(lake_env.lake, RETAIL, lake_env.land(body, "all-bad.csv"))
    assert (result.status, result.rows_rejected) == ("rejected", tiny_sales.height)
    reason = lake_env.read_json("quarantine", DATASET, sha256(body), "reason.json")
    assert reason["whole_file"] and reason["rows_rejected"] == tiny_sales.height
    assert reason["reasons"][0]["rows"] == tiny_sales.height and len(reason["reasons"][0]["examples"]) == 3
    assert lake_env.read_parquet("quarantine", DATASET, sha256(body), "rows.parquet").height == tiny_sales.height
    assert lake_env.manifest() == []


def test_reject_file_policy_quarantines_a_file_for_one_bad_row(any_lake: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    body = csv_bytes(set_cell(tiny_sales, BAD_ROW, "units_sold", "-1"))
    result = admit_file(any_lake.lake, RETAIL, any_lake.land(body, "one-bad.csv"), on_bad_rows="reject_file")
    assert (result.status, result.rows_rejected) == ("rejected", 1)
    sha = sha256(body)
    reason = any_lake.read_json("quarantine", DATASET, sha, "reason.json")
    assert reason["whole_file"] and (reason["rows_admitted"], reason["rows_rejected"]) == (0, 1)
    assert any_lake.lake.read_bytes(any_lake.lake.path("quarantine", DATASET, sha, "original.csv")) == body
    assert any_lake.manifest() == [] and any_lake.listing("curated", DATASET) == []


def test_parquet_landing_files_are_admitted_like_csv(lake_env: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    result = admit_file(lake_env.lake, RETAIL, lake_env.land(tiny_sales, "batch.parquet"))
    assert result.status == "admitted"
    assert_frame_equal(curated(lake_env), tiny_sales.sort(KEY))


def test_a_later_file_correcting_earlier_rows_wins(lake_env: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    admit_file(lake_env.lake, RETAIL, lake_env.land(tiny_sales, "original.csv"))
    corrected = tiny_sales.head(5).with_columns(pl.col("units_sold") + 1000)
    assert admit_file(lake_env.lake, RETAIL, lake_env.land(corrected, "correction.csv")).status == "admitted"
    expected = pl.concat([corrected, tiny_sales.slice(5)]).sort(KEY)
    assert_frame_equal(curated(lake_env), expected)


def test_a_dry_run_writes_nothing(lake_env: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    uri = lake_env.land(set_cell(tiny_sales, 0, "price", ""), "x.csv")
    result = inspect_file(lake_env.lake, RETAIL, uri, now=datetime.now(timezone.utc), future_tolerance_hours=36,
                          on_bad_rows="quarantine_rows", publish=False)
    assert result.status == "partial" and result.reasons[0]["rule"] == "non_null"
    assert lake_env.listing() == ["landing"]


# ----------------------------------------------------------------- refusing URIs without reading
def outside_uris(handle: LakeHandle, tmp_path) -> list[str]:
    lake = handle.lake
    inside_not_landing = handle.uri("curated", DATASET, "x.csv")
    uris = [
        inside_not_landing,
        handle.uri("landing", DATASET, "..", "..", "curated", "x.csv"),
        handle.uri("landing-evil", DATASET, "x.csv"),
        handle.uri("landing", DATASET, "notes.txt"),  # inside, but not a data file
        "",
    ]
    if lake.is_local:
        outside = tmp_path / "outside.csv"
        outside.write_text("date\n")
        uris += [str(outside), f"file://{outside}", "s3://bucket/landing/retail_sales/x.csv"]
    else:
        uris += ["s3://another-bucket/lake/landing/retail_sales/x.csv", "/etc/passwd"]
    return uris


def test_uris_outside_the_landing_area_are_refused(any_lake: LakeHandle, tmp_path) -> None:
    for uri in outside_uris(any_lake, tmp_path):
        with pytest.raises(UriRejected):
            landing_path(any_lake.lake, uri)
    assert landing_path(any_lake.lake, any_lake.uri("landing", DATASET, "ok.csv"))


# ----------------------------------------------------------------- events (pure)
def test_landed_payload_and_deterministic_event_id() -> None:
    files = [
        {"uri": "s3://b/lake/landing/retail_sales/2.csv", "content_hash": "bb", "rows": 5,
         "min_time": "2024-01-08", "max_time": "2024-01-14", "landed_at": "t2", "bytes": 9},
        {"uri": "s3://b/lake/landing/retail_sales/1.csv", "content_hash": "aa", "rows": 7,
         "min_time": "2024-01-01", "max_time": "2024-01-07", "landed_at": "t1"},
    ]
    p = events.landed_payload(DATASET, files)
    assert p["dataset"] == DATASET
    assert p["uris"] == [f["uri"] for f in files] and p["content_hashes"] == ["bb", "aa"]
    assert p["rows"] == 12
    assert p["time_range"] == {"start": "2024-01-01", "end": "2024-01-14"}
    assert p["watermark"] == "2024-01-14"
    assert [set(f) for f in p["files"]] == [{"uri", "content_hash", "rows", "min_time", "max_time", "landed_at"}] * 2

    event = events.build_event(events.DATA_LANDED, DATASET, p, p["content_hashes"])
    assert event.event == "data.landed"
    assert event.resource.id == "freshet.dataset.retail_sales"
    assert event.resource["freshet.dataset"] == DATASET
    # the same content always gives the same id, whatever the order; other content another id
    assert event.id == events.event_id(events.DATA_LANDED, DATASET, ["aa", "bb"])
    assert events.build_event(events.DATA_LANDED, DATASET, p, ["aa", "bb"]).id == event.id
    assert events.event_id(events.DATA_LANDED, DATASET, ["aa"]) != event.id
    assert events.event_id(events.DATA_REJECTED, DATASET, ["aa", "bb"]) != event.id
    assert events.event_id(events.DATA_LANDED, "other", ["aa", "bb"]) != event.id


def test_an_oversized_payload_is_refused() -> None:
    with pytest.raises(ValueError, match="over the"):
        events.build_event(events.DATA_LANDED, DATASET, {"uris": ["x" * 1000] * 300}, ["k"])


# ----------------------------------------------------------------- the ingest flow
def test_ingest_flow_admits_a_file_and_announces_it(prefect_api, any_lake: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    body = csv_bytes(tiny_sales)
    uri = any_lake.land(body, "2024-01.csv")
    state = ingest(dataset=DATASET, uris=[uri], return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    assert (summary["admitted"], summary["rows_admitted"], summary["rows_quarantined"]) == (1, tiny_sales.height, 0)

    sha = sha256(body)
    assert any_lake.listing("curated", DATASET) == [f"part-{sha}.parquet"]
    assert_frame_equal(any_lake.read_parquet("curated", DATASET, f"part-{sha}.parquet").sort(KEY), tiny_sales.sort(KEY))
    (entry,) = any_lake.manifest()
    assert entry["content_hash"] == sha and entry["uri"] == uri and entry["bytes"] == len(body)
    assert entry["rows"] == tiny_sales.height and entry["rows_quarantined"] == 0
    assert (entry["min_time"], entry["max_time"]) == ("2024-01-01", "2024-01-21")
    assert entry["partition"] == any_lake.uri("curated", DATASET, f"part-{sha}.parquet")
    assert entry["contract"] == RETAIL.fingerprint
    assert any_lake.listing("quarantine") == []

    (event,) = run_events(flow_run_id(state), events.DATA_LANDED)
    assert event.id == events.event_id(events.DATA_LANDED, DATASET, [sha])
    assert event.resource.id == "freshet.dataset.retail_sales"
    assert event.resource["freshet.dataset"] == DATASET
    p = event.payload
    assert (p["dataset"], p["uris"], p["content_hashes"], p["rows"]) == (DATASET, [uri], [sha], tiny_sales.height)
    assert p["time_range"] == {"start": "2024-01-01", "end": "2024-01-21"} and p["watermark"] == "2024-01-21"


def test_ingesting_the_same_bytes_again_changes_nothing(prefect_api, any_lake: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    body = csv_bytes(tiny_sales)
    uri = any_lake.land(body, "a.csv")
    assert ingest(uris=[uri])["admitted"] == 1
    before = (any_lake.manifest(), any_lake.listing("curated", DATASET))

    again = ingest(uris=[uri])
    renamed = ingest(uris=[any_lake.land(body, "a-copy.csv")])
    assert (again["admitted"], again["duplicate"]) == (0, 1)
    assert (renamed["admitted"], renamed["duplicate"]) == (0, 1)
    assert (any_lake.manifest(), any_lake.listing("curated", DATASET)) == before
    assert len(before[0]) == 1


def test_a_partly_bad_file_fails_the_run_and_admits_its_valid_rows(
    prefect_api, any_lake: LakeHandle, tiny_sales: pl.DataFrame
) -> None:
    body = csv_bytes(set_cell(tiny_sales, BAD_ROW, "units_sold", "-7"))
    uri = any_lake.land(body, "partly-bad.csv")
    state = ingest(uris=[uri], return_state=True)

    assert state.is_failed()
    assert uri in state.message and "'units_sold'" in state.message and "'min'" in state.message
    sha = sha256(body)
    assert "reason.json" in state.message and sha in state.message
    (entry,) = any_lake.manifest()
    assert entry["rows"] == tiny_sales.height - 1
    assert_frame_equal(curated(any_lake), tiny_sales.filter(pl.int_range(pl.len()) != BAD_ROW).sort(KEY))

    run = flow_run_id(state)
    (rejected,) = run_events(run, events.DATA_REJECTED)
    assert rejected.payload["uri"] == uri and rejected.payload["content_hash"] == sha
    assert (rejected.payload["rows_rejected"], rejected.payload["rows_admitted"]) == (1, tiny_sales.height - 1)
    assert rejected.payload["reasons"] == [{"column": "units_sold", "rule": "min", "rows": 1, "detail": ""}]
    assert rejected.payload["quarantine"] == any_lake.uri("quarantine", DATASET, sha)
    (landed,) = run_events(run, events.DATA_LANDED)  # the valid rows are announced
    assert landed.payload["rows"] == tiny_sales.height - 1


def test_a_file_breaking_the_header_fails_the_run_and_admits_nothing(
    prefect_api, any_lake: LakeHandle, tiny_sales: pl.DataFrame
) -> None:
    good_uri = any_lake.land(tiny_sales.filter(pl.col("item_id") == 1), "good.csv")
    bad_uri = any_lake.land(tiny_sales.filter(pl.col("item_id") == 2).drop("price"), "no-price.csv")
    state = ingest(uris=[good_uri, bad_uri], return_state=True)
    assert state.is_failed()
    assert bad_uri in state.message and "'price'" in state.message and "'missing_column'" in state.message
    assert good_uri not in state.message
    assert [e["uri"] for e in any_lake.manifest()] == [good_uri]  # the good file still went through
    (q,) = any_lake.listing("quarantine", DATASET)
    assert any_lake.read_json("quarantine", DATASET, q, "reason.json")["file"] == bad_uri


def test_reject_file_policy_in_the_flow(prefect_api, any_lake: LakeHandle, tiny_sales: pl.DataFrame, monkeypatch) -> None:
    monkeypatch.setenv("FRESHET_ON_BAD_ROWS", "reject_file")
    body = csv_bytes(set_cell(tiny_sales, BAD_ROW, "price", "0"))
    uri = any_lake.land(body, "strict.csv")
    state = ingest(uris=[uri], return_state=True)
    assert state.is_failed() and "quarantined the whole file" in state.message and "'price'" in state.message
    assert any_lake.manifest() == [] and any_lake.listing("curated", DATASET) == []
    assert set(any_lake.listing("quarantine", DATASET, sha256(body))) == {"original.csv", "reason.json", "rows.parquet"}


def test_the_flow_refuses_outside_uris_before_reading_any_file(
    prefect_api, any_lake: LakeHandle, tiny_sales: pl.DataFrame, tmp_path
) -> None:
    good = any_lake.land(tiny_sales, "good.csv")
    for outside in outside_uris(any_lake, tmp_path)[:3]:
        state = ingest(uris=[good, outside], return_state=True)
        assert state.is_failed()
        assert "UriRejected" in state.message and "landing area" in state.message
        # not even the good file listed before it was read
        assert any_lake.manifest() == []
        assert any_lake.listing("quarantine") == [] and any_lake.listing("curated") == []


def test_ingest_without_uris_takes_every_landing_file(prefect_api, lake_env: LakeHandle, request) -> None:
    frame = generate_retail_sales(seed=seed_for(request), stores=1, items=2, days=28)
    first, second = split_into_batches(frame, 2, batch_days=7)
    uris = [lake_env.land(first, "1-history.csv"), lake_env.land(second, "2-week.parquet")]
    lake_env.land(b"ignore me", "README.txt")
    state = ingest(return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["admitted"] == 2
    assert sorted(e["uri"] for e in lake_env.manifest()) == sorted(uris)
    assert_frame_equal(curated(lake_env), frame.sort(KEY))

    (event,) = run_events(flow_run_id(state), events.DATA_LANDED)
    p = event.payload
    assert sorted(p["uris"]) == sorted(uris) and p["rows"] == frame.height and len(p["content_hashes"]) == 2
    assert p["time_range"] == {"start": str(frame["date"].min()), "end": str(frame["date"].max())}
    assert p["watermark"] == str(date(2024, 1, 28))
    assert event.id == events.event_id(events.DATA_LANDED, DATASET, [e["content_hash"] for e in lake_env.manifest()])


@pytest.mark.parametrize("dataset", ["weather", "../retail_sales", "retail_sales/../x"])
def test_unknown_or_malicious_dataset_names_fail_the_run(prefect_api, lake_env: LakeHandle, dataset: str) -> None:
    state = ingest(dataset=dataset, return_state=True)
    assert state.is_failed() and "UnknownDatasetError" in state.message
    assert lake_env.listing() == []


def test_too_many_uris_in_one_run_are_refused(prefect_api, lake_env: LakeHandle, tiny_sales, monkeypatch) -> None:
    monkeypatch.setenv("FRESHET_MAX_EVENT_URIS", "1")
    uris = [lake_env.land(tiny_sales, "a.csv"), lake_env.land(tiny_sales.head(3), "b.csv")]
    state = ingest(uris=uris, return_state=True)
    assert state.is_failed() and "at most 1" in state.message
    assert lake_env.manifest() == []


def test_a_quarantine_record_is_valid_json_a_person_can_read(lake_env: LakeHandle, tiny_sales: pl.DataFrame) -> None:
    body = csv_bytes(set_cell(tiny_sales, 1, "units_sold", "NaN"))
    admit_file(lake_env.lake, RETAIL, lake_env.land(body, "nan.csv"))
    raw = lake_env.lake.read_bytes(lake_env.lake.path("quarantine", DATASET, sha256(body), "reason.json"))
    doc = json.loads(raw)
    assert raw.startswith(b"{\n")  # indented for people
    assert doc["reasons"][0]["rule"] == "max" and doc["reasons"][0]["examples"][0]["units_sold"] == "NaN"
    assert pl.read_parquet(io.BytesIO(lake_env.lake.read_bytes(
        lake_env.lake.path("quarantine", DATASET, sha256(body), "rows.parquet"))))["units_sold"].to_list() == ["NaN"]


# --------------------------------------------------------------------- live accuracy (scores on landing)
def _events_with_id(name: str, event_id: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventIDFilter, EventNameFilter

    with get_client(sync_client=True) as client:
        return client.read_events(EventFilter(event=EventNameFilter(name=[name]), id=EventIDFilter(id=[event_id])),
                                  limit=50).events


def test_a_landing_scores_the_forecast_in_hand_once_however_often_it_is_ingested(
        prefect_api, lake_env: LakeHandle, request: pytest.FixtureRequest) -> None:
    from flows.forecast import forecast
    from freshet.modeling import live, publish

    sales = generate_retail_sales(seed=seed_for(request), stores=2, items=3, days=84, missing_rate=0.0)
    cut = sales["date"].max() - timedelta(days=7)
    history, week = sales.filter(pl.col("date") <= cut), sales.filter(pl.col("date") > cut)
    first = ingest(dataset=DATASET, uris=[lake_env.land(history, "history.csv")])
    assert first["scores"] is None  # nothing published yet
    assert forecast(dataset=DATASET)["status"] == "published"  # seasonal naive: no champion
    [pointer] = [lake_env.read_json("forecasts", DATASET, n) for n in lake_env.listing("forecasts", DATASET)
                 if n.endswith(".json") and n != publish.LATEST]

    uri = lake_env.land(week, "week.csv")
    state = ingest(dataset=DATASET, uris=[uri], return_state=True)
    scores = state.result()["scores"]
    # every series x period of the week was forecast by the one published forecast, a week ahead at most
    assert scores["overall"]["rows"] == week.height == 6 * 7 and scores["unforecast_rows"] == 0
    [by_model] = scores["by_model"]
    assert by_model["model_version"] == "seasonal_naive" and by_model["backtest_wape"] is None
    summary, rows = live.latest(lake_env.lake, DATASET)
    assert set(rows["forecast_id"]) == {pointer["forecast_id"]} and sorted(set(rows["step"])) == list(range(1, 8))
    expected = rows.select((pl.col("forecast") - pl.col("actual")).abs().sum() / pl.col("actual").abs().sum()).item()
    assert expected > 0 and scores["overall"]["wape"] == pytest.approx(expected)
    assert summary["drift"]["degraded"] is False and "no drift verdict" in summary["drift_text"]  # no champion
    [event] = run_events(flow_run_id(state), events.FORECAST_SCORED)
    assert event.payload["overall"]["wape"] == pytest.approx(expected) and event.payload["uri"] == summary["uri"]

    # the same landing again, and a plain re-ingest: the same scores, no second file, no second event
    before = sorted(lake_env.listing("scores", DATASET))
    again = ingest(dataset=DATASET, uris=[uri])
    assert again["duplicate"] == 1 and again["scores"] == scores
    assert ingest(dataset=DATASET)["scores"] == scores
    assert sorted(lake_env.listing("scores", DATASET)) == before and len(before) == 2  # parquet + summary
    assert len(_events_with_id(events.FORECAST_SCORED, str(event.id))) == 1


def test_an_unreadable_forecast_fails_the_run_naming_it_and_a_retry_scores_once(
        prefect_api, lake_env: LakeHandle, request: pytest.FixtureRequest) -> None:
    from flows.forecast import forecast
    from freshet.modeling import publish

    sales = generate_retail_sales(seed=seed_for(request), stores=2, items=2, days=70, missing_rate=0.0)
    cut = sales["date"].max() - timedelta(days=7)
    ingest(dataset=DATASET, uris=[lake_env.land(sales.filter(pl.col("date") <= cut), "history.csv")])
    forecast(dataset=DATASET)
    lake = lake_env.lake
    path = publish.read_latest(lake, DATASET)["path"]
    good = lake.read_bytes(path)
    lake.write_bytes(path, b"not parquet")
    state = ingest(dataset=DATASET, uris=[lake_env.land(sales.filter(pl.col("date") > cut), "week.csv")],
                   return_state=True)
    assert state.is_failed() and path in str(state.result(raise_on_failure=False))
    assert lake_env.listing("scores", DATASET) == []  # nothing scored
    lake.write_bytes(path, good)  # restored: the retry (the landing is already admitted) scores it, once
    retry = ingest(dataset=DATASET, return_state=True)
    assert retry.result()["scores"]["overall"]["rows"] == 4 * 7
    assert len(run_events(flow_run_id(retry), events.FORECAST_SCORED)) == 1
    assert len(lake_env.listing("scores", DATASET)) == 2
