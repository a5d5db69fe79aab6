"""The lake: atomic publication, path containment, retries, and the same API on S3 (moto)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from freshet.data.lake import Lake, StorageError
from freshet.settings import get_settings

from tests.conftest import LakeHandle


# ----------------------------------------------------------------- atomic publication
def test_concurrent_readers_only_ever_see_complete_files(tmp_path: Path) -> None:
    """A reader listing while a writer publishes never sees a temporary name or a short file.

    A race, so it can only catch what it happens to observe: a writer streaming
    straight into the final name in chunks is caught in practice on every run.
    """
    lake = Lake(str(tmp_path / "lake"))
    folder = lake.path("curated", "ds")
    size, count = 2 << 20, 30
    seen: set[str] = set()
    problems: list[str] = []
    done = threading.Event()

    def reader() -> None:
        # re-check only files not yet seen complete, so each pass is short and a
        # file caught mid-write would be read while it is still being written
        while not done.is_set():
            for path in lake.list(folder):
                name = path.rsplit("/", 1)[-1]
                if name in seen:
                    continue
                seen.add(name)
                if not name.startswith("part-") or ".tmp" in name:
                    problems.append(f"temporary name visible: {name}")
                data = lake.read_bytes(path)
                if len(data) != size or data[-1:] != b"\x01":
                    problems.append(f"{name}: saw {len(data)} of {size} bytes")

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(count):
            lake.write_bytes(f"{folder}/part-{i:02d}.parquet", b"\x00" * (size - 1) + b"\x01")
    finally:
        done.set()
        thread.join(timeout=60)
    assert problems == []
    assert seen, "the reader never observed a file; the check proved nothing"
    assert sorted(os.listdir(folder)) == [f"part-{i:02d}.parquet" for i in range(count)]


def test_hidden_temporaries_are_never_listed(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    folder = lake.path("manifest", "ds")
    lake.write_json(f"{folder}/a.json", {"a": 1})
    Path(folder, ".b.json.tmp-123").write_text("{")  # a publication in progress (or crashed)
    assert lake.list(folder) == [f"{folder}/a.json"]
    assert lake.list(folder, suffix=".json") == [f"{folder}/a.json"]


def test_a_failed_publication_publishes_nothing_and_leaves_no_temporary(tmp_path: Path, monkeypatch) -> None:
    lake = Lake(str(tmp_path / "lake"))
    folder = lake.path("manifest", "ds")
    lake.write_json(f"{folder}/old.json", {"v": 1})

    def broken_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_rename)
    with pytest.raises(OSError, match="No space left"):
        lake.write_json(f"{folder}/new.json", {"v": 2})
    monkeypatch.undo()
    assert lake.list(folder) == [f"{folder}/old.json"]
    assert sorted(os.listdir(folder)) == ["old.json"]


def test_staged_publishes_only_on_clean_exit(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    target = lake.path("models", "ds", "v1", "model.ubj")
    with pytest.raises(RuntimeError):
        with lake.staged(target) as local:
            Path(local).write_bytes(b"half a model")
            raise RuntimeError("training crashed")
    assert not lake.exists(target)
    assert not os.path.exists(local)  # the scratch file is cleaned up too
    with lake.staged(target) as local:
        Path(local).write_bytes(b"a model")
        assert not lake.exists(target)  # not visible before the block ends
    assert lake.read_bytes(target) == b"a model"
    assert not os.path.exists(local)


def test_overwrite_replaces_the_whole_object(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    pointer = lake.path("models", "ds", "champion.json")
    lake.write_json(pointer, {"version": "a" * 100})
    lake.write_json(pointer, {"version": "b"})
    assert lake.read_json(pointer) == {"version": "b"}


# ----------------------------------------------------------------- containment
@pytest.fixture
def local_lake(tmp_path: Path) -> Lake:
    (tmp_path / "lake" / "landing" / "ds").mkdir(parents=True)
    (tmp_path / "lake-evil").mkdir()
    return Lake(str(tmp_path / "lake"))


@pytest.mark.parametrize(
    ("relative", "inside"),
    [
        ("lake/landing/ds/a.csv", True),
        ("lake/landing/ds/../ds/a.csv", True),
        ("lake/x", True),
        ("lake", False),  # the root itself is not a file in the lake
        ("lake/", False),
        ("lake/..", False),
        ("lake/landing/../../etc/passwd", False),
        ("lake/landing/ds/../../../lake-evil/a.csv", False),
        ("lake-evil/a.csv", False),  # shares a prefix with the root, but is outside
        ("elsewhere.csv", False),
    ],
)
def test_contains_local(local_lake: Lake, tmp_path: Path, relative: str, inside: bool) -> None:
    uri = f"{tmp_path}/{relative}"
    found = local_lake.contains(uri)
    assert (found is not None) is inside
    if inside:
        assert found == os.path.realpath(uri)
        assert local_lake.contains(f"file://{uri}") == found


@pytest.mark.parametrize("uri", ["s3://bucket/lake/landing/a.csv", "http://host/lake/a.csv", "/etc/passwd"])
def test_contains_local_refuses_other_schemes_and_absolute_paths(local_lake: Lake, uri: str) -> None:
    assert local_lake.contains(uri) is None


def test_contains_follows_symlinks_out_of_the_lake(local_lake: Lake, tmp_path: Path) -> None:
    secret = tmp_path / "secret.csv"
    secret.write_text("password\n")
    link = Path(local_lake.root) / "landing" / "ds" / "innocent.csv"
    link.symlink_to(secret)
    assert local_lake.contains(str(link)) is None


@pytest.mark.parametrize(
    ("uri", "inside"),
    [
        ("s3://bucket/lake/landing/ds/a.csv", True),
        ("s3://bucket/lake/landing/ds/../ds/a.csv", True),
        ("s3://bucket/lake", False),
        ("s3://bucket/lake/../other/a.csv", False),
        ("s3://bucket/lake/landing/../../secrets/a.csv", False),
        ("s3://bucket/lake-evil/a.csv", False),
        ("s3://other-bucket/lake/landing/ds/a.csv", False),
        ("gs://bucket/lake/landing/ds/a.csv", False),
        ("/bucket/lake/landing/ds/a.csv", False),
    ],
)
def test_contains_s3_without_io(uri: str, inside: bool) -> None:
    from s3fs import S3FileSystem

    # an unreachable endpoint: containment must be decided without any request
    fs = S3FileSystem(endpoint_url="http://127.0.0.1:9", key="k", secret="s", skip_instance_cache=True)
    lake = Lake("s3://bucket/lake", fs=fs)
    assert (lake.contains(uri) is not None) is inside


# ----------------------------------------------------------------- retries
def test_transient_errors_are_retried_then_succeed(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), retries=3, retry_base_delay=0.001)
    calls = []

    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionError("connection reset")
        return "ok"

    assert lake.call("read x", flaky) == "ok"
    assert len(calls) == 3


def test_permanent_errors_fail_at_once(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), retries=5, retry_base_delay=10)  # a retry would take 10 s
    calls = []

    def missing() -> None:
        calls.append(1)
        raise FileNotFoundError("no such key")

    def denied() -> None:
        calls.append(1)
        raise OSError("AccessDenied: not yours")

    with pytest.raises(FileNotFoundError):
        lake.call("read x", missing)
    with pytest.raises(StorageError, match="after 1 attempt"):
        lake.call("read x", denied)
    assert len(calls) == 2


def test_retries_give_up_with_a_storage_error_that_hides_secrets(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path), storage_options={"auto_mkdir": True}, retries=2, retry_base_delay=0.001)
    lake._secrets = ["hunter2"]
    calls = []

    def down() -> None:
        calls.append(1)
        raise TimeoutError("timed out talking to http://user:hunter2@s3")

    with pytest.raises(StorageError) as err:
        lake.call("write y", down)
    assert len(calls) == 3
    assert "write y failed after 3 attempt(s)" in str(err.value)
    assert "hunter2" not in str(err.value) and "***" in str(err.value)


def test_a_missing_file_reads_as_file_not_found(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path))
    with pytest.raises(FileNotFoundError):
        lake.read_bytes(lake.path("nope.json"))
    assert lake.list(lake.path("no", "such", "folder")) == []


# ----------------------------------------------------------------- settings and S3
def test_from_settings_makes_a_local_lake(lake_env: LakeHandle) -> None:
    lake = Lake.from_settings(get_settings())
    assert lake.is_local and lake.root == lake_env.url
    assert os.path.isdir(lake_env.url)
    assert lake.uri(lake.path("a")) == f"{lake_env.url}/a"


@pytest.mark.s3
def test_s3_round_trip(s3_lake: LakeHandle, moto_server: str, tmp_path: Path) -> None:
    lake = s3_lake.lake
    assert not lake.is_local
    assert lake.storage_options["endpoint_url"] == moto_server
    folder = lake.path("manifest", "ds")
    lake.write_json(f"{folder}/b.json", {"n": 2})
    lake.write_json(f"{folder}/a.json", {"n": 1})
    lake.write_bytes(lake.path("landing", "ds", "x.csv"), b"a,b\n1,2\n")
    assert lake.list(folder) == [f"{folder}/a.json", f"{folder}/b.json"]
    assert lake.read_json_many(lake.list(folder, suffix=".json")) == [{"n": 1}, {"n": 2}]
    assert lake.exists(f"{folder}/a.json") and not lake.exists(f"{folder}/c.json")
    assert lake.uri(f"{folder}/a.json") == "s3://freshet-test/lake/manifest/ds/a.json"

    local = tmp_path / "x.csv"
    chunks: list[bytes] = []
    assert lake.download(lake.path("landing", "ds", "x.csv"), str(local), on_chunk=chunks.append) == 8
    assert local.read_bytes() == b"a,b\n1,2\n" == b"".join(chunks)
    assert lake.info(lake.path("landing", "ds", "x.csv"))["size"] == 8

    lake.copy_into(lake.path("landing", "ds", "x.csv"), lake.path("quarantine", "ds", "h", "original.csv"))
    assert lake.read_bytes(lake.path("quarantine", "ds", "h", "original.csv")) == b"a,b\n1,2\n"
    lake.delete(f"{folder}/a.json")
    assert lake.list(folder) == [f"{folder}/b.json"]
    with pytest.raises(FileNotFoundError):
        lake.read_bytes(f"{folder}/a.json")


@pytest.mark.s3
def test_s3_state_is_reset_between_tests(s3_lake: LakeHandle) -> None:
    # test_s3_round_trip wrote here; a fresh bucket must be empty
    assert s3_lake.listing("manifest", "ds") == []
    assert s3_lake.listing() == []


@pytest.mark.s3
def test_s3_missing_bucket_is_a_permanent_error(s3_lake: LakeHandle, monkeypatch, lake_backoffs) -> None:
    monkeypatch.setenv("FRESHET_LAKE_URL", "s3://no-such-bucket/lake")
    lake = Lake.from_settings(get_settings())
    with pytest.raises((FileNotFoundError, StorageError)):
        lake.write_bytes(lake.path("a.json"), b"{}")
    assert lake_backoffs == [], "a missing bucket was retried with backoff"


def test_an_s3_endpoint_that_is_down_is_retried_then_fails_as_a_storage_error(lake_backoffs) -> None:
    from freshet.ops.stack import free_port

    # a real outage: nothing listens on the endpoint's port (botocore's own retries turned off to keep it short)
    lake = Lake("s3://bucket/lake", {"endpoint_url": f"http://127.0.0.1:{free_port()}", "key": "AKIAFAKE", "secret": "fake-secret",
                                     "skip_instance_cache": True, "config_kwargs": {"retries": {"max_attempts": 1}}},
                retries=2, retry_base_delay=0.01)
    with pytest.raises(StorageError, match=r"read .*/lake/landing/a.csv failed after 3 attempt\(s\): "
                                           r"EndpointConnectionError: Could not connect"):
        lake.read_bytes(lake.path("landing", "a.csv"))
    assert lake_backoffs == [0.01, 0.02], "two waits, doubling, between the three attempts"
