"""The lake: one base URL, a local folder or ``s3://bucket/prefix`` (through s3fs).

Layout under the base URL::

    landing/<dataset>/...                      files as ingestion jobs drop them
    curated/<dataset>/part-<sha256>.parquet    one validated partition per admitted file
    manifest/<dataset>/<sha256>.json           one immutable entry per admitted file
    quarantine/<dataset>/<sha256>/             reason.json, rejected rows or the original file
    models/<dataset>/<version>/                model.ubj + meta.json (meta written last)
    models/<dataset>/champion.json             pointer to the champion version
    forecasts/<dataset>/<id>.parquet           published forecasts (+ latest.json, the pointer)
    scores/<dataset>/<watermark>-<key>.parquet live accuracy of the published forecasts (+ .json summary, last)
    future/landing|curated|manifest|quarantine/<dataset>/   future values of known-in-advance columns

Every object a reader can see is published atomically: local files are written
to a hidden temporary name and renamed; S3 objects appear only when their
upload completes. Manifest entries are one object each, so concurrent writers
never read-modify-write a shared object. Storage options come from settings
(endpoint) and the AWS credential chain or a Prefect Secret block, never code.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import fsspec
from fsspec.implementations.local import LocalFileSystem

T = TypeVar("T")

PERMANENT_ERRORS = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, ValueError)


class StorageError(RuntimeError):
    """A storage operation failed for good (after retries, or at once for permanent errors)."""


def _scrub(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text



def backoff(seconds: float) -> None:
    """The wait between two attempts of ``Lake.call`` (a function of its own, so a test can count retries)."""
    time.sleep(seconds)

class Lake:
    """Paths, atomic writes and retried I/O on the lake's filesystem."""

    def __init__(
        self,
        url: str,
        storage_options: dict[str, Any] | None = None,
        retries: int = 4,
        retry_base_delay: float = 0.5,
        fs: fsspec.AbstractFileSystem | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.storage_options = dict(storage_options or {})
        self.retries = retries
        self.retry_base_delay = retry_base_delay
        if fs is None:
            fs, root = fsspec.core.url_to_fs(self.url, **self.storage_options)
        else:
            root = fs._strip_protocol(self.url)
        self.fs = fs
        self.root = root.rstrip("/")
        self.is_local = isinstance(fs, LocalFileSystem)
        self._secrets = [str(v) for k, v in self.storage_options.items() if k in ("key", "secret", "token")]

    @classmethod
    def from_settings(cls, settings: Any) -> "Lake":
        """Build the lake that settings describe (credentials resolved at run time)."""
        options: dict[str, Any] = {}
        if settings.lake_url.startswith("s3://"):
            if settings.s3_endpoint_url:
                options["endpoint_url"] = settings.s3_endpoint_url
            if settings.storage_block:
                from prefect.blocks.system import Secret

                value = Secret.load(settings.storage_block).get()
                options.update(json.loads(value) if isinstance(value, str) else dict(value))
            # s3fs retries throttling itself; we retry the rest with backoff below
            options.setdefault("skip_instance_cache", True)
        elif not settings.lake_url.startswith(("file://", "memory://")) and "://" not in settings.lake_url:
            Path(settings.lake_url).mkdir(parents=True, exist_ok=True)
        return cls(settings.lake_url, options, settings.io_retries, settings.io_retry_base_delay)

    # ------------------------------------------------------------------ paths
    def path(self, *parts: str) -> str:
        return "/".join([self.root, *parts])

    def uri(self, path: str) -> str:
        """A full URI for a path on this lake's filesystem."""
        return self.fs.unstrip_protocol(path) if not self.is_local else path

    def landing_dir(self, dataset: str) -> str:
        return self.path("landing", dataset)

    def curated_path(self, dataset: str, sha: str) -> str:
        return self.path("curated", dataset, f"part-{sha}.parquet")

    def manifest_dir(self, dataset: str) -> str:
        return self.path("manifest", dataset)

    def manifest_path(self, dataset: str, sha: str) -> str:
        return self.path("manifest", dataset, f"{sha}.json")

    def quarantine_dir(self, dataset: str, sha: str) -> str:
        return self.path("quarantine", dataset, sha)

    def models_dir(self, dataset: str) -> str:
        return self.path("models", dataset)

    def champion_path(self, dataset: str) -> str:
        return self.path("models", dataset, "champion.json")

    def forecasts_dir(self, dataset: str) -> str:
        return self.path("forecasts", dataset)

    def area(self, name: str) -> "Lake":
        """The same lake rooted at a sub-folder (``future``: the landing area for future values)."""
        return Lake(f"{self.url}/{name}", self.storage_options, self.retries, self.retry_base_delay, fs=self.fs)

    def contains(self, uri: str) -> str | None:
        """The lake path of ``uri`` if it lies inside this lake, else None (no I/O)."""
        if self.is_local:
            if "://" in uri and not uri.startswith("file://"):
                return None
            candidate = os.path.realpath(uri.removeprefix("file://"))
            root = os.path.realpath(self.root)
        else:
            if not uri.startswith(self.url.split("://", 1)[0] + "://"):
                return None
            candidate = os.path.normpath(self.fs._strip_protocol(uri))
            root = os.path.normpath(self.root)
        if candidate == root or not candidate.startswith(root + "/"):
            return None
        return candidate

    # ------------------------------------------------------------------ retries
    def call(self, what: str, fn: Callable[[], T]) -> T:
        """Run one I/O call, retrying transient errors with exponential backoff."""
        delay = self.retry_base_delay
        for attempt in range(self.retries + 1):
            try:
                return fn()
            except PermissionError as exc:
                raise StorageError(_scrub(
                    f"{what} failed: access denied ({exc}); check the credentials and the bucket policy", self._secrets
                )) from None
            except PERMANENT_ERRORS:
                raise
            except _transient_errors() as exc:
                if _is_permanent(exc) or attempt == self.retries:
                    raise StorageError(
                        _scrub(f"{what} failed after {attempt + 1} attempt(s): {type(exc).__name__}: {exc}", self._secrets)
                    ) from None
                backoff(delay)
                delay *= 2
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ reads
    def exists(self, path: str) -> bool:
        return self.call(f"check {path}", lambda: self.fs.exists(path))

    def read_bytes(self, path: str) -> bytes:
        return self.call(f"read {path}", lambda: self.fs.cat_file(path))

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_bytes(path))

    def read_json_many(self, paths: list[str]) -> list[Any]:
        if not paths:
            return []
        if self.is_local:
            return [self.read_json(p) for p in paths]
        blobs = self.call(f"read {len(paths)} objects", lambda: self.fs.cat(paths, on_error="raise"))
        return [json.loads(blobs[p]) for p in paths]

    def list(self, path: str, suffix: str = "") -> list[str]:
        """Published entries directly under ``path`` (hidden temporaries excluded)."""
        def _ls() -> list[str]:
            try:
                self.fs.invalidate_cache(path)
                names = self.fs.ls(path, detail=False)
            except FileNotFoundError:
                return []
            return sorted(n for n in names if not n.rsplit("/", 1)[-1].startswith(".") and n.endswith(suffix))

        return self.call(f"list {path}", _ls)

    def info(self, path: str) -> dict[str, Any]:
        return self.call(f"stat {path}", lambda: self.fs.info(path))

    def download(self, path: str, local: str, chunk: int = 8 << 20, on_chunk: Callable[[bytes], None] | None = None) -> int:
        """Stream ``path`` into a local file in chunks; returns the byte count."""
        def _copy() -> int:
            size = 0
            with self.fs.open(path, "rb", block_size=chunk) as src, open(local, "wb") as dst:
                while block := src.read(chunk):
                    if on_chunk:
                        on_chunk(block)
                    dst.write(block)
                    size += len(block)
            return size

        return self.call(f"read {path}", _copy)

    # ------------------------------------------------------------------ writes
    def write_bytes(self, path: str, data: bytes) -> None:
        """Publish ``data`` at ``path`` atomically."""
        with self.staged(path) as local:
            Path(local).write_bytes(data)

    def write_json(self, path: str, obj: Any) -> None:
        self.write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode())

    def publish_file(self, local: str, path: str) -> None:
        """Publish a finished local file at ``path`` atomically."""
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            hidden = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.tmp-{uuid.uuid4().hex}")
            try:
                shutil.copyfile(local, hidden)
                with open(hidden, "rb") as fh:
                    os.fsync(fh.fileno())
                os.replace(hidden, path)
            except BaseException:
                # a failed copy (disk full, crash) must not leave a full-size orphan behind
                if os.path.exists(hidden):
                    os.unlink(hidden)
                raise
        else:
            # an S3 object becomes visible only when its (multipart) upload completes
            self.call(f"write {path}", lambda: self.fs.put_file(local, path))

    @contextmanager
    def staged(self, path: str) -> Iterator[str]:
        """Yield a local scratch file; on clean exit publish it at ``path`` atomically."""
        fd, local = tempfile.mkstemp(prefix="freshet-", suffix=os.path.splitext(path)[1])
        os.close(fd)
        try:
            yield local
            self.publish_file(local, path)
        finally:
            if os.path.exists(local):
                os.unlink(local)

    def copy_into(self, src: str, path: str) -> None:
        """Copy an object already in the lake to ``path`` (used for quarantine)."""
        with self.staged(path) as local:
            self.download(src, local)

    def delete(self, path: str) -> None:
        self.call(f"delete {path}", lambda: self.fs.rm(path, recursive=True))


@functools.cache
def _transient_errors() -> tuple[type[BaseException], ...]:
    """What a retry can fix: OS and network errors, and botocore's connection and HTTP-client errors.

    s3fs lets botocore's ``EndpointConnectionError`` (an S3 endpoint that is down) and
    ``ReadTimeoutError`` through once its own retries are spent; they are not ``OSError``.
    """
    try:
        from botocore.exceptions import ConnectionError as EndpointDown, HTTPClientError
    except ImportError:  # a local lake without the S3 extras
        return (OSError, ConnectionError, TimeoutError)
    return (OSError, ConnectionError, TimeoutError, EndpointDown, HTTPClientError)


def _is_permanent(exc: BaseException) -> bool:
    """Errors that no retry can fix: missing bucket, denied access, bad credentials."""
    text = f"{type(exc).__name__} {exc}"
    markers = ("NoSuchBucket", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "Forbidden", "403")
    return any(m in text for m in markers)
