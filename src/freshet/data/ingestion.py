"""Admitting landing files into the lake: stage, hash, validate, curate, record.

Prefect-free; ``flows/ingest.py`` and ``flows/train.py`` call ``admit_file``, so
everything that reaches training went through the same validation. The manifest
entry is written last and is the commit point: a crash before it leaves no
visible trace, and a re-run redoes the same work under the same names.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TypeVar

import numpy as np
import polars as pl

from freshet.data.contracts import Contract
from freshet.data.lake import Lake, StorageError
from freshet.data.validation import (
    ROW,
    VIOLATION,
    check_header,
    duplicate_label,
    duplicate_rows,
    invalid_rows,
    key_hashes,
    mark_rows,
    reader_dtypes,
    summarize_violations,
    typed_with_breaks,
    typed_with_violations,
    valid_rows,
)

FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
T = TypeVar("T")


class UriRejected(ValueError):
    """A URI is outside the lake's landing area or otherwise not acceptable; nothing was read."""


@dataclass
class Admission:
    """What happened to one landing file."""

    uri: str
    status: str  # admitted | partial | duplicate | rejected
    entry: dict[str, Any] | None = None
    content_hash: str | None = None
    reasons: list[dict[str, Any]] = field(default_factory=list)
    quarantine: str | None = None
    rows_rejected: int = 0

    @property
    def ok(self) -> bool:
        return self.status in ("admitted", "duplicate")

    def message(self) -> str:
        """One line a person can act on."""
        if self.status == "duplicate":
            return f"{self.uri}: already admitted (content {self.content_hash[:12]}), nothing to do"
        if self.status == "admitted":
            return f"{self.uri}: admitted {self.entry['rows']} rows ({self.entry['min_time']} .. {self.entry['max_time']})"
        what = "; ".join(
            (f"column {r['column']!r} broke rule {r['rule']!r} in {r['rows']} row(s)" if r["rows"]
             else f"rule {r['rule']!r} on column {r['column']!r}")
            + (f" ({r['detail']})" if r.get("detail") else "")
            for r in self.reasons
        )
        kept = f"admitted {self.entry['rows']} valid rows, quarantined {self.rows_rejected} row(s)" if self.entry else (
            f"quarantined the whole file ({self.rows_rejected} bad row(s))" if self.rows_rejected else "quarantined the whole file")
        return (
            f"{self.uri}: {kept}: {what}. Details: {self.quarantine}/reason.json; "
            "fix the file (or the contract) and land it again."
        )


def landing_path(lake: Lake, uri: str) -> str:
    """The lake path of a landing URI; refuse anything outside ``<lake>/landing/`` without I/O."""
    if not isinstance(uri, str) or not uri or len(uri) > 2048 or "\x00" in uri:
        raise UriRejected(f"invalid URI {str(uri)[:80]!r}")
    path = lake.contains(uri)
    landing = lake.path("landing")
    if path is None or not (path + "/").startswith(landing.rstrip("/") + "/"):
        raise UriRejected(f"{uri!r} is outside the lake's landing area {lake.uri(landing)}/; refusing to read it")
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in FORMATS:
        raise UriRejected(f"{uri!r}: unsupported file type {suffix or '(none)'!r}; use .csv or .parquet")
    return path


def stage(lake: Lake, path: str, workdir: str) -> tuple[str, str, int, str]:
    """Stream a landing file to local scratch, hashing on the way: (local, sha256, bytes, landed_at)."""
    digest = hashlib.sha256()
    local = os.path.join(workdir, "source" + os.path.splitext(path)[1].lower())
    size = lake.download(path, local, on_chunk=digest.update)
    info = lake.info(path)
    mtime = info.get("mtime") or info.get("LastModified") or info.get("created")
    if isinstance(mtime, (int, float)):
        landed = datetime.fromtimestamp(mtime, timezone.utc)
    elif isinstance(mtime, datetime):
        landed = mtime.astimezone(timezone.utc)
    else:
        landed = datetime.now(timezone.utc)
    return local, digest.hexdigest(), size, landed.isoformat()


def _scan_as_strings(local: str) -> pl.LazyFrame:
    if local.endswith(".csv"):
        return pl.scan_csv(local, infer_schema=False, encoding="utf8")
    lf = pl.scan_parquet(local)
    return lf.with_columns(pl.all().cast(pl.String))


CHUNK_ROWS = 500_000


def _typed_fast_path(local: str, contract: Contract, now: datetime, future_tolerance_hours: float,
                     out: str) -> dict[str, Any] | None:
    """A clean CSV (the common case) in one streaming pass, its rows written to ``out``.

    Numbers are parsed by polars' multithreaded CSV reader, the other columns as the
    string path does. Returns the rows and time range, or None when a value does not
    parse, a row breaks a rule or two keys hash alike: the file then goes down the
    string path (``_check_in_chunks``), which labels every row. Memory: the reader's
    buffers and 8 bytes a row for the key hashes.
    """
    if not local.endswith(".csv"):
        return None
    lf = pl.scan_csv(local, infer_schema=False, schema_overrides=reader_dtypes(contract), encoding="utf8")
    flagged = typed_with_breaks(lf, contract, now, future_tolerance_hours)
    t = pl.col(contract.time_column)
    key = [contract.time_column, *contract.series_keys]
    try:
        _, stats, hashes = pl.collect_all([
            flagged.filter(~pl.col("__bad")).drop("__bad").sink_parquet(out, lazy=True),
            flagged.select(pl.col("__bad").sum().alias("bad"), pl.len().alias("rows"), t.min().alias("min"),
                           t.max().alias("max")),
            flagged.select(pl.struct(key).hash(seed=0).alias("h")),
        ])
    except pl.exceptions.PolarsError:  # a number the reader refuses: the string path says which
        return None
    row = stats.row(0, named=True)
    if row["bad"] or row["rows"] == 0 or hashes["h"].n_unique() != hashes.height:
        return None  # a broken rule, or keys that may repeat: the string path finds exactly which rows
    return row


def _check_in_chunks(lf: pl.LazyFrame, contract: Contract, now: datetime, future_tolerance_hours: float,
                     work: str) -> tuple[list[str], "np.ndarray"]:
    """Validate a file chunk by chunk into local parquet parts (memory bounded by the chunk).

    Duplicate keys across chunks are found afterwards from 8-byte key hashes.
    """
    parts, hashes, rows = [], [], []
    batches = lf.with_row_index(ROW).collect_batches(chunk_size=CHUNK_ROWS, maintain_order=True)
    for i, batch in enumerate(batches):
        if batch.height == 0:
            continue
        checked = typed_with_violations(batch.lazy(), contract, now, future_tolerance_hours, check_duplicates=False).collect()
        h, r = key_hashes(checked, contract)
        hashes.append(h)
        rows.append(r)
        part = os.path.join(work, f"checked-{i:05d}.parquet")
        checked.write_parquet(part)
        parts.append(part)
    if not parts:
        return [], np.empty(0, dtype=np.int64)
    return parts, duplicate_rows(np.concatenate(hashes), np.concatenate(rows))


# What a file's content can raise while it is parsed and checked (polars' parse and schema
# errors, bad UTF-8): the file is quarantined. Anything else is not the file's fault.
CONTENT_ERRORS = (pl.exceptions.PolarsError, ValueError)
# polars reports a failed read or write of the local scratch copy (disk full, file too large)
# as a ComputeError carrying the OS error: that is I/O, not content
_POLARS_IO = re.compile(r"\(os error \d+\)|underlying IO error", re.IGNORECASE)


class TransientReadError(OSError):
    """Reading or checking the staged copy failed for a reason that can pass (memory, disk)."""


def _read_staged(lake: Lake, uri: str, step: Callable[[], T]) -> T:
    """Run a step over the staged copy of ``uri``: I/O failures retried with the lake's backoff, content errors raised.

    After the retries a ``StorageError`` ends the run and nothing is quarantined: the file
    stays in landing, and the next ingest or train run admits it.
    """
    def attempt() -> T:
        try:
            return step()
        except MemoryError as exc:
            raise TransientReadError(f"out of memory ({exc or 'MemoryError'})") from exc
        except pl.exceptions.PolarsError as exc:
            if _POLARS_IO.search(str(exc)):
                raise TransientReadError(_short(exc)) from exc
            raise

    try:
        return lake.call(f"read the staged copy of {uri}", attempt)
    except StorageError as exc:
        raise StorageError(f"{exc}; {uri} was not quarantined: it stays in landing and the next ingest or "
                           "train run admits it") from None


def _file_problem(column: str, rule: str, detail: str) -> dict[str, Any]:
    return {"column": column, "rule": rule, "rows": 0, "detail": detail, "examples": []}


def unadmitted_uris(lake: Lake, dataset: str, uris: list[str], max_uris: int, event_id: str | None = None) -> list[str]:
    """The announced URIs the manifest does not hold yet; refuses too many, or any outside the landing area.

    Runs before any file is read: an untrusted event payload is checked here.
    """
    if len(uris) > max_uris:
        raise ValueError(f"{len(uris)} URIs given; at most {max_uris} per run (FRESHET_MAX_EVENT_URIS)")
    for uri in uris:
        try:
            landing_path(lake, uri)
        except UriRejected as exc:
            raise UriRejected(f"refusing event {event_id or '-'}: {exc}") from None
    known = {e["uri"] for e in read_manifest(lake, dataset)}
    return [u for u in uris if u not in known]


def read_manifest(lake: Lake, dataset: str) -> list[dict[str, Any]]:
    """Every admitted file of a dataset, oldest admission first."""
    return ManifestReader(lake, dataset).entries()


class ManifestReader:
    """A dataset's manifest and landing-name aliases, read incrementally (for polling loops).

    Each call lists the folder once and reads only the objects it has not read before:
    manifest entries and aliases are written once and never changed (an object that
    disappears from the listing is dropped).
    """

    def __init__(self, lake: Lake, dataset: str) -> None:
        self.lake, self.dataset = lake, dataset
        self._read: dict[str, Any] = {}

    def _objects(self, folder: str) -> list[Any]:
        paths = self.lake.list(folder, suffix=".json")
        new = [p for p in paths if p not in self._read]
        self._read.update(zip(new, self.lake.read_json_many(new)))
        return [self._read[p] for p in paths]

    def entries(self) -> list[dict[str, Any]]:
        """Every admitted file of the dataset, oldest admission first."""
        entries = self._objects(self.lake.manifest_dir(self.dataset))
        return sorted(entries, key=lambda e: (e["admitted_at"], e["content_hash"]))

    def aliases(self) -> list[dict[str, Any]]:
        """Second landing names of admitted content (``{"uri", "content_hash"}``)."""
        return self._objects(self.lake.path("manifest", self.dataset, "aliases"))


def alias_path(lake: Lake, dataset: str, uri: str) -> str:
    """Where a second name for already-admitted content is recorded."""
    return lake.path("manifest", dataset, "aliases", hashlib.sha256(uri.encode()).hexdigest()[:32] + ".json")


def read_quarantine(lake: Lake, dataset: str) -> list[dict[str, Any]]:
    """Reason records of every quarantined file of a dataset."""
    dirs = lake.list(lake.path("quarantine", dataset))
    paths = [f"{d}/reason.json" for d in dirs]
    return lake.read_json_many([p for p in paths if lake.exists(p)])


def unknown_landing_files(lake: Lake, dataset: str, manifest: list[dict[str, Any]],
                          aliases: list[dict[str, Any]] | None = None) -> list[str]:
    """Landing files of a dataset that are neither admitted nor quarantined under their name.

    The safety net for announcements that never arrived (lost or throttled events):
    ``train`` and ``watchdog`` admit these through the usual validation. ``aliases``:
    already read (``ManifestReader.aliases``), or None to read them here.
    """
    if aliases is None:
        aliases = ManifestReader(lake, dataset).aliases()
    known = {e["uri"] for e in manifest} | {q["file"] for q in read_quarantine(lake, dataset)} | {a["uri"] for a in aliases}
    candidates = [lake.uri(p) for p in lake.list(lake.landing_dir(dataset)) if p.lower().endswith(tuple(FORMATS))]
    return [u for u in candidates if u not in known]


def inspect_file(lake: Lake, contract: Contract, uri: str, *, now: datetime, future_tolerance_hours: float, on_bad_rows: str, publish: bool) -> Admission:
    """Validate one landing file; with ``publish`` write curated, quarantine and manifest objects."""
    path = landing_path(lake, uri)
    dataset = contract.name
    with tempfile.TemporaryDirectory(prefix="freshet-ingest-") as work:
        local, sha, size, landed_at = stage(lake, path, work)
        manifest_path = lake.manifest_path(dataset, sha)
        if lake.exists(manifest_path):
            if publish:  # remember this name, so landing sweeps need not read the file again
                lake.write_json(alias_path(lake, dataset, uri), {"uri": uri, "content_hash": sha})
            return Admission(uri, "duplicate", entry=lake.read_json(manifest_path), content_hash=sha)
        qdir = lake.quarantine_dir(dataset, sha)

        def reject(reasons: list[dict[str, Any]], n_bad: int | None = None) -> Admission:
            """Quarantine the whole file (and, when rows were checked, the bad rows with reasons)."""
            if publish:
                lake.publish_file(local, f"{qdir}/original{os.path.splitext(local)[1]}")
                if n_bad:
                    lake.publish_file(bad_local, f"{qdir}/rows.parquet")
                lake.write_json(f"{qdir}/reason.json", _reason_doc(dataset, uri, sha, reasons, 0, n_bad))
            return Admission(uri, "rejected", content_hash=sha, reasons=reasons, quarantine=lake.uri(qdir),
                             rows_rejected=n_bad or 0)

        if size == 0:
            return reject([_file_problem("*", "empty_file", "the file has no bytes")])
        try:
            lf = _scan_as_strings(local)
            header = _read_staged(lake, uri, lambda: lf.collect_schema().names())
        except CONTENT_ERRORS as exc:  # malformed CSV or parquet: the file's problem
            return reject([_file_problem("*", "unreadable", _short(exc))])
        problems = check_header(header, contract)
        if problems:
            return reject([_file_problem(p.column, p.rule, p.detail) for p in problems])

        good_local, bad_local = os.path.join(work, "good.parquet"), os.path.join(work, "bad.parquet")
        stats = _typed_fast_path(local, contract, now, future_tolerance_hours, good_local)
        n_bad, reasons = 0, []
        if stats is None:  # a value, a rule or a key needs the string path, which labels every row
            def check() -> list[str]:
                parts, duplicates = _check_in_chunks(lf, contract, now, future_tolerance_hours, work)
                if parts:
                    checked = mark_rows(pl.scan_parquet(parts), duplicates, f"{duplicate_label(contract)}:duplicate_key")
                    valid_rows(checked, contract).sink_parquet(good_local)
                    invalid_rows(checked, contract).sink_parquet(bad_local)
                return parts

            try:
                parts = _read_staged(lake, uri, check)
            except CONTENT_ERRORS as exc:  # malformed CSV, bad UTF-8, ragged rows...
                return reject([_file_problem("*", "unreadable", _short(exc))])
            if not parts:
                return reject([_file_problem("*", "empty_file", "the file has a header but no rows")])
            stats = pl.scan_parquet(good_local).select(
                pl.len().alias("rows"),
                pl.col(contract.time_column).min().alias("min"),
                pl.col(contract.time_column).max().alias("max"),
            ).collect().row(0, named=True)
            n_bad = pl.scan_parquet(bad_local).select(pl.len()).collect().item()
            if stats["rows"] == 0 and n_bad == 0:
                return reject([_file_problem("*", "empty_file", "the file has a header but no rows")])
            reasons = summarize_violations(pl.scan_parquet(bad_local))
        if n_bad and (on_bad_rows == "reject_file" or stats["rows"] == 0):
            return reject(reasons, n_bad)

        entry = {
            "dataset": dataset,
            "content_hash": sha,
            "uri": uri,
            "bytes": size,
            "rows": stats["rows"],
            "rows_quarantined": n_bad,
            "quarantine": lake.uri(qdir) if n_bad else None,
            "min_time": stats["min"].isoformat(),
            "max_time": stats["max"].isoformat(),
            "landed_at": landed_at,
            "admitted_at": datetime.now(timezone.utc).isoformat(),
            "partition": lake.uri(lake.curated_path(dataset, sha)),
            "contract": contract.fingerprint,
        }
        if publish:
            if n_bad:
                lake.publish_file(bad_local, f"{qdir}/rows.parquet")
                lake.write_json(f"{qdir}/reason.json", _reason_doc(dataset, uri, sha, reasons, stats["rows"], n_bad))
            lake.publish_file(good_local, lake.curated_path(dataset, sha))
            lake.write_json(manifest_path, entry)  # the commit point
        if n_bad:
            return Admission(uri, "partial", entry=entry, content_hash=sha, reasons=reasons,
                             quarantine=lake.uri(qdir), rows_rejected=n_bad)
        return Admission(uri, "admitted", entry=entry, content_hash=sha)


def admit_file(lake: Lake, contract: Contract, uri: str, *, now: datetime | None = None, future_tolerance_hours: float = 36.0, on_bad_rows: str = "quarantine_rows") -> Admission:
    """Validate and admit one landing file (idempotent by content hash)."""
    return inspect_file(lake, contract, uri, now=now or datetime.now(timezone.utc),
                        future_tolerance_hours=future_tolerance_hours, on_bad_rows=on_bad_rows, publish=True)


def admit_uris(lake: Lake, contract: Contract, uris: list[str], settings: Any, log: Any) -> list[str]:
    """``admit_file`` on each URI with the settings' tolerance and bad-row rule, logged; returns the problems found."""
    problems = []
    for uri in uris:
        result = admit_file(lake, contract, uri, future_tolerance_hours=settings.future_tolerance_hours,
                            on_bad_rows=settings.on_bad_rows)
        (log.info if result.ok else log.warning)(result.message())
        if not result.ok:
            problems.append(result.message())
    return problems


class RequeueError(ValueError):
    """A file cannot be requeued: it is not quarantined, or no longer in landing."""


def requeue(lake: Lake, contract: Contract, name: str, *, now: datetime | None = None,
            future_tolerance_hours: float = 36.0, on_bad_rows: str = "quarantine_rows") -> Admission:
    """Re-admit a quarantined landing file after a fix (the file landed again under its name, or the contract).

    ``name`` is the file's name under ``landing/<dataset>/`` (or its URI). Its quarantine
    records move to ``quarantine/<dataset>/requeued/<sha>-<time>/`` (kept for the record;
    sweeps no longer skip the file), then the file is validated and admitted as new: if
    it still breaks the contract it is quarantined again, with the new reasons.
    """
    dataset = contract.name
    uri = name if "/" in name else lake.uri(lake.path("landing", dataset, name))
    path = landing_path(lake, uri)
    quarantined = read_quarantine(lake, dataset)
    records = [q for q in quarantined if q["file"] == uri]
    if not records:
        known = ", ".join(sorted({q["file"].rsplit("/", 1)[-1] for q in quarantined})[:10]) or "none"
        raise RequeueError(f"{uri} is not quarantined for dataset {dataset!r}; nothing to requeue "
                           f"(quarantined files of {dataset}: {known})")
    if not lake.exists(path):
        raise RequeueError(f"{uri} is quarantined but not in landing any more; land the fixed file under the same "
                           "name, then requeue it")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    for record in records:
        source = lake.quarantine_dir(dataset, record["content_hash"])
        target = lake.path("quarantine", dataset, "requeued", f"{record['content_hash']}-{stamp}")
        # reason.json last: until it is copied, the source still holds the complete record
        objects = sorted(lake.list(source), key=lambda p: p.endswith("/reason.json"))
        for obj in objects:
            lake.copy_into(obj, f"{target}/{obj.rsplit('/', 1)[-1]}")
        lake.delete(source)
    return admit_file(lake, contract, uri, now=now, future_tolerance_hours=future_tolerance_hours,
                      on_bad_rows=on_bad_rows)


def _reason_doc(dataset: str, uri: str, sha: str, reasons: list[dict], admitted: int, rejected: int | None) -> dict:
    return {
        "dataset": dataset,
        "file": uri,
        "content_hash": sha,
        "rows_admitted": admitted,
        "rows_rejected": rejected,
        "whole_file": admitted == 0,
        "reasons": reasons,
        "at": datetime.now(timezone.utc).isoformat(),
    }


def _short(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"{type(exc).__name__}: {text[:300]}"


def load_curated(lake: Lake, entries: list[dict[str, Any]], contract: Contract) -> pl.LazyFrame:
    """The curated rows named by manifest entries; a later admission wins on duplicate keys."""
    if not entries:
        return pl.LazyFrame(schema=contract.columns)
    frames = []
    for order, entry in enumerate(entries):
        path = lake.curated_path(contract.name, entry["content_hash"])
        source = path if lake.is_local else lake.uri(path)
        frames.append(pl.scan_parquet(source, storage_options=_polars_options(lake)).with_columns(pl.lit(order).alias("__order")))
    key = [contract.time_column, *contract.series_keys]
    return (
        pl.concat(frames, how="vertical_relaxed")
        .sort("__order")
        .unique(subset=key, keep="last", maintain_order=False)
        .drop("__order")
        .sort([*contract.series_keys, contract.time_column])
    )


def _polars_options(lake: Lake) -> dict[str, str] | None:
    if lake.is_local:
        return None
    opts: dict[str, str] = {}
    so = lake.storage_options
    if so.get("endpoint_url"):
        opts["aws_endpoint_url"] = so["endpoint_url"]
        if so["endpoint_url"].startswith("http://"):
            opts["aws_allow_http"] = "true"
    for src, dst in (("key", "aws_access_key_id"), ("secret", "aws_secret_access_key"), ("token", "aws_session_token")):
        if so.get(src):
            opts[dst] = so[src]
    return opts or None


__all__ = ["Admission", "RequeueError", "UriRejected", "admit_file", "inspect_file", "landing_path", "load_curated",
           "read_manifest", "requeue", "ManifestReader", "VIOLATION"]
