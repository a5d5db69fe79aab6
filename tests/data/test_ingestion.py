"""Admission faults and re-admission: I/O failures (scratch disk, memory, S3) are retried and never
quarantine a file; a quarantined file is requeued after a fix (``freshet requeue``: tests/ops/cli/test_data.py)."""

from __future__ import annotations

import json
import subprocess
import sys

import polars as pl
import pytest

from tests.conftest import DATASET, LakeHandle
from freshet.data import ingestion as I
from freshet.data.contracts import Contract, load_contract
from freshet.data.lake import Lake, StorageError
from freshet.settings import BUNDLED_CONTRACTS

RETAIL = load_contract(DATASET, BUNDLED_CONTRACTS)


def negative_row(frame: pl.DataFrame) -> bytes:
    """A CSV with one row below the target's minimum: the checked (string) path validates it."""
    return frame.with_columns(pl.when(pl.int_range(pl.len()) == 1).then(-3.0).otherwise(pl.col("units_sold"))
                              .alias("units_sold")).write_csv().encode()


def quarantine_dirs(handle: LakeHandle) -> list[str]:
    return handle.listing("quarantine", DATASET)


# ----------------------------------------------------------------- I/O faults: retried, never quarantined
# The scratch disk refuses writes for real: the child process's file-size limit (RLIMIT_FSIZE, SIGXFSZ ignored)
# lets the staged copy of the landing file through but not the checked parquet, so polars fails with
# "File too large (os error 27)", as it does on a full disk.
DISK_FULL = """
import json, resource, signal, sys
from freshet.data.contracts import load_contract
from freshet.data.ingestion import admit_file
from freshet.data.lake import Lake, StorageError
from freshet.settings import BUNDLED_CONTRACTS
lake = Lake(sys.argv[1], retries=2, retry_base_delay=0.01)
contract = load_contract("retail_sales", BUNDLED_CONTRACTS)
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[3]), resource.RLIM_INFINITY))
try:
    a = admit_file(lake, contract, sys.argv[2])
    print(json.dumps({"status": a.status, "reasons": a.reasons}))
except StorageError as exc:
    print(json.dumps({"error": str(exc)}))
"""


def test_a_disk_that_refuses_writes_fails_the_admission_and_quarantines_nothing(lake_env: LakeHandle, tiny_sales) -> None:
    body = negative_row(tiny_sales)
    uri = lake_env.land(body, "week.csv")
    limit = len(body) + 64  # the staged copy fits; the checked parquet (footer and statistics) does not
    out = subprocess.run([sys.executable, "-c", DISK_FULL, lake_env.url, uri, str(limit)], capture_output=True,
                         text=True, timeout=300, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert "error" in report, report  # today's code quarantined the file as 'unreadable'
    assert f"read the staged copy of {uri} failed after 3 attempt(s)" in report["error"]
    assert "os error 27" in report["error"] and "was not quarantined" in report["error"]
    assert quarantine_dirs(lake_env) == [] and lake_env.manifest() == []
    assert I.unknown_landing_files(lake_env.lake, DATASET, []) == [uri]  # the next sweep picks it up
    # the disk has room again: the same file is admitted (its one bad row quarantined, as the contract says)
    result = I.admit_file(lake_env.lake, RETAIL, uri)
    assert result.status == "partial" and result.entry["rows"] == tiny_sales.height - 1


def test_a_passing_memory_error_is_retried_and_the_file_admitted(lake_env: LakeHandle, tiny_sales, monkeypatch) -> None:
    # injected: a real MemoryError cannot be provoked here (polars aborts the process when an allocation fails)
    real, calls = I._check_in_chunks, []

    def short_of_memory_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise MemoryError()
        return real(*args, **kwargs)

    monkeypatch.setattr(I, "_check_in_chunks", short_of_memory_once)
    uri = lake_env.land(negative_row(tiny_sales), "week.csv")
    lake = Lake(lake_env.url, retries=2, retry_base_delay=0.01)
    result = I.admit_file(lake, RETAIL, uri)
    assert len(calls) == 2 and result.status == "partial", result.message()
    assert {(r["column"], r["rule"]) for r in result.reasons} == {("units_sold", "min")}


def test_a_memory_error_that_persists_fails_the_admission_without_quarantine(lake_env: LakeHandle, tiny_sales,
                                                                              monkeypatch) -> None:
    def out_of_memory(*args, **kwargs):  # injected, as above
        raise MemoryError()

    monkeypatch.setattr(I, "_check_in_chunks", out_of_memory)
    uri = lake_env.land(negative_row(tiny_sales), "week.csv")
    with pytest.raises(StorageError, match=r"failed after 2 attempt\(s\): TransientReadError: out of memory"):
        I.admit_file(Lake(lake_env.url, retries=1, retry_base_delay=0.01), RETAIL, uri)
    assert quarantine_dirs(lake_env) == [] and lake_env.manifest() == []


def test_an_s3_outage_while_reading_a_landing_file_fails_the_admission_and_quarantines_nothing(
        s3_lake: LakeHandle, tiny_sales) -> None:
    from freshet.ops.stack import free_port

    uri = s3_lake.land(tiny_sales, "week.csv")
    # the same bucket through an endpoint where nothing listens: S3 is down (a real refused connection)
    down = Lake(s3_lake.url, {"endpoint_url": f"http://127.0.0.1:{free_port()}", "skip_instance_cache": True,
                              "config_kwargs": {"retries": {"max_attempts": 1}}}, retries=1, retry_base_delay=0.01)
    with pytest.raises(StorageError, match=r"failed after 2 attempt\(s\): EndpointConnectionError"):
        I.admit_file(down, RETAIL, uri)
    assert quarantine_dirs(s3_lake) == [] and s3_lake.manifest() == []
    assert I.admit_file(s3_lake.lake, RETAIL, uri).status == "admitted"  # S3 is back


# ----------------------------------------------------------------- requeue
def test_a_quarantined_file_fixed_under_its_name_is_requeued(any_lake: LakeHandle, tiny_sales) -> None:
    lake = any_lake.lake
    uri = any_lake.land(tiny_sales.drop("on_promo"), "week.csv")
    first = I.admit_file(lake, RETAIL, uri)
    assert first.status == "rejected"
    any_lake.land(tiny_sales, "week.csv")  # the fixed file, landed again under the same name
    assert I.unknown_landing_files(lake, DATASET, any_lake.manifest()) == []  # sweeps skip it for good

    result = I.requeue(lake, RETAIL, "week.csv")
    assert result.status == "admitted" and result.entry["rows"] == tiny_sales.height and result.uri == uri
    assert [e["uri"] for e in any_lake.manifest()] == [uri]
    assert I.read_quarantine(lake, DATASET) == []
    # the old record is kept for the record, out of the sweeps' way
    (kept,) = any_lake.listing("quarantine", DATASET, "requeued")
    assert kept.startswith(first.content_hash)
    reason = any_lake.read_json("quarantine", DATASET, "requeued", kept, "reason.json")
    assert reason["file"] == uri and reason["reasons"][0]["rule"] == "missing_column"
    assert sorted(any_lake.listing("quarantine", DATASET, "requeued", kept)) == ["original.csv", "reason.json"]


def test_a_file_requeued_after_a_contract_fix_is_admitted_and_one_still_broken_is_quarantined_again(
        lake_env: LakeHandle, tiny_sales) -> None:
    lake = lake_env.lake
    uri = lake_env.land(tiny_sales.with_columns(pl.lit("x").alias("notes")), "notes.csv")
    assert I.admit_file(lake, RETAIL, uri).status == "rejected"
    again = I.requeue(lake, RETAIL, "notes.csv")  # nothing fixed: quarantined again, with the reasons
    assert again.status == "rejected" and ("notes", "unexpected_column") in {(r["column"], r["rule"]) for r in again.reasons}
    assert [q["file"] for q in I.read_quarantine(lake, DATASET)] == [uri]

    relaxed = Contract(**{**RETAIL.__dict__, "extra_columns": "ignore"})
    fixed = I.requeue(lake, relaxed, uri)  # by URI this time
    assert fixed.status == "admitted" and I.read_quarantine(lake, DATASET) == []
    assert len(lake_env.listing("quarantine", DATASET, "requeued")) == 2


def test_requeue_refuses_a_file_that_is_not_quarantined_or_gone(lake_env: LakeHandle, tiny_sales) -> None:
    lake = lake_env.lake
    uri = lake_env.land(tiny_sales, "good.csv")
    assert I.admit_file(lake, RETAIL, uri).status == "admitted"
    with pytest.raises(I.RequeueError, match=r"good.csv is not quarantined for dataset 'retail_sales'.*none"):
        I.requeue(lake, RETAIL, "good.csv")
    bad = lake_env.land(b"", "empty.csv")
    assert I.admit_file(lake, RETAIL, bad).status == "rejected"
    lake.delete(lake.contains(bad))
    with pytest.raises(I.RequeueError, match="not in landing any more; land the fixed file under the same name"):
        I.requeue(lake, RETAIL, "empty.csv")
    assert [q["file"] for q in I.read_quarantine(lake, DATASET)] == [bad]  # nothing moved
