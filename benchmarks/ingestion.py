"""Ingestion throughput: CSV landing file -> validated curated parquet, on a local lake and on S3 (moto).

Three implementations of the same bytes, each in a fresh process per measurement:

- ``freshet``: ``freshet.data.ingestion.admit_file`` (stage + hash, validate, curated parquet,
  quarantine, manifest entry), exactly what the ``ingest`` flow's task runs;
- ``polars``: a bare ``pl.read_csv`` -> ``write_parquet`` (no validation at all);
- ``pandas``: the same validation rules as freshet, written with pandas (local lake only).

Memory is the peak RSS above the process's RSS when the work started, against the
size of the CSV file.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from typing import Any

from common import FAKE_AWS_ENV, ChildFailed, cached_data, median, run_child, say

DATASET = "retail_sales"
BUCKET = "freshet-bench"


# ====================================================================== child jobs
def _contract():
    from freshet.data.contracts import load_contract
    from freshet.settings import BUNDLED_CONTRACTS

    return load_contract(DATASET, BUNDLED_CONTRACTS)


def job_ingest_freshet(args: dict, meter) -> dict:
    from freshet.data.ingestion import admit_file
    from freshet.data.lake import Lake
    from freshet.settings import Settings

    settings = Settings(lake_url=args["lake_url"], s3_endpoint_url=args.get("endpoint"))
    lake = Lake.from_settings(settings)
    contract = _contract()
    landing = lake.path("landing", DATASET, "bench.csv")
    if lake.is_local:
        os.makedirs(os.path.dirname(landing), exist_ok=True)
        try:
            os.link(args["csv"], landing)
        except OSError:
            shutil.copyfile(args["csv"], landing)
    else:
        lake.fs.put_file(args["csv"], landing)
    meter.base()
    start = time.perf_counter()
    result = admit_file(lake, contract, lake.uri(landing), future_tolerance_hours=settings.future_tolerance_hours,
                        on_bad_rows=settings.on_bad_rows)
    seconds = time.perf_counter() - start
    if result.status != "admitted":
        raise RuntimeError(result.message())
    return {"seconds": seconds, "rows": result.entry["rows"]}


def job_ingest_polars(args: dict, meter) -> dict:
    import polars as pl

    if not args.get("endpoint"):
        meter.base()
        start = time.perf_counter()
        frame = pl.read_csv(args["csv"])
        frame.write_parquet(args["out"])
        return {"seconds": time.perf_counter() - start, "rows": frame.height}
    import s3fs

    fs = s3fs.S3FileSystem(endpoint_url=args["endpoint"], skip_instance_cache=True)
    src = f"{BUCKET}/bare/bench.csv"
    fs.put_file(args["csv"], src)
    meter.base()
    start = time.perf_counter()
    with fs.open(src, "rb") as fh:
        frame = pl.read_csv(fh)
    with fs.open(f"{BUCKET}/bare/bench.parquet", "wb") as fh:
        frame.write_parquet(fh)
    return {"seconds": time.perf_counter() - start, "rows": frame.height}


def job_ingest_pandas(args: dict, meter) -> dict:
    import numpy as np  # noqa: F401 - imported before the base mark, like pandas
    import pandas as pd  # noqa: F401
    import pyarrow  # noqa: F401

    contract = _contract()
    meter.base()
    start = time.perf_counter()
    good, bad = pandas_validate(args["csv"], contract, datetime.now(timezone.utc), 36.0,
                                args["out"], args["out"] + ".bad.parquet")
    return {"seconds": time.perf_counter() - start, "rows": good, "rows_bad": bad}


def pandas_validate(path: str, contract, now: datetime, future_tolerance_hours: float, good_path: str,
                    bad_path: str) -> tuple[int, int]:
    """freshet's validation rules (src/freshet/data/validation.py) written with pandas: same checks, same outputs."""
    import numpy as np
    import pandas as pd
    import polars as pl
    import pyarrow as pa
    import pyarrow.parquet as pq

    from freshet.data.validation import FALSE_STRINGS, TRUE_STRINGS

    raw = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False)
    missing = [c for c in contract.columns if c not in raw.columns]
    if missing:
        raise ValueError(f"missing columns {missing}")
    raw = raw[list(contract.columns)]
    typed: dict[str, pd.Series] = {}
    flags: dict[str, np.ndarray] = {}
    empty: dict[str, pd.Series] = {}
    arrow_types = {}
    for col, dtype in contract.columns.items():
        s = raw[col].str.strip()
        blank = s == ""
        empty[col] = blank
        text = s.where(~blank)
        if dtype == pl.Boolean():
            low = text.str.lower()
            value = pd.Series(pd.NA, index=s.index, dtype="boolean")
            value[low.isin(TRUE_STRINGS)] = True
            value[low.isin(FALSE_STRINGS)] = False
            arrow_types[col] = pa.bool_()
        elif dtype == pl.Date():
            value = pd.to_datetime(text, format="%Y-%m-%d", errors="coerce")
            arrow_types[col] = pa.date32()
        elif dtype.is_integer():
            num = pd.to_numeric(text, errors="coerce")
            value = num.where(num == np.floor(num)).astype("Int64")
            arrow_types[col] = pa.int32() if dtype == pl.Int32() else pa.int64()
        elif dtype.is_numeric():
            value = pd.to_numeric(text, errors="coerce").astype("float64")
            arrow_types[col] = pa.float64()
        else:
            value = text
            arrow_types[col] = pa.string()
        typed[col] = value
        flags[f"{col}:dtype"] = (~blank & value.isna()).to_numpy(dtype=bool)
    for col in contract.required_non_null:
        flags[f"{col}:non_null"] = empty[col].to_numpy(dtype=bool)
    for col, rule in contract.rules.items():
        v = typed[col]
        if rule.min is not None:
            flags[f"{col}:min"] = (v < rule.min).fillna(False).to_numpy(dtype=bool)
        if rule.max is not None:
            flags[f"{col}:max"] = (v > rule.max).fillna(False).to_numpy(dtype=bool)
        if rule.allowed is not None:
            flags[f"{col}:allowed"] = (v.notna() & ~v.isin(list(rule.allowed))).fillna(False).to_numpy(dtype=bool)
    limit = now.replace(tzinfo=None) + timedelta(hours=future_tolerance_hours)
    tcol = contract.time_column
    if contract.columns[tcol] == pl.Date():
        limit = pd.Timestamp(limit.date())
    flags[f"{tcol}:future"] = (typed[tcol] > limit).fillna(False).to_numpy(dtype=bool)
    key = [tcol, *contract.series_keys]
    frame = pd.DataFrame(typed)
    flags["+".join(key) + ":duplicate_key"] = frame.duplicated(subset=key, keep="first").to_numpy(dtype=bool)
    bad = np.logical_or.reduce(list(flags.values()))
    good = frame[~bad]
    schema = pa.schema([(c, arrow_types[c]) for c in contract.columns])
    pq.write_table(pa.Table.from_pandas(good, preserve_index=False).cast(schema), good_path, compression="zstd")
    if bad.any():
        rows = raw[bad].copy()
        labels = np.array(list(flags))
        matrix = np.column_stack([flags[k][bad] for k in flags])
        rows["_violation"] = [";".join(labels[m]) for m in matrix]
        rows.to_parquet(bad_path, index=False)
    return int((~bad).sum()), int(bad.sum())


# ====================================================================== parent side
class MotoServer:
    """An S3 API (moto) in its own process on 127.0.0.1, so its memory is not the measured process's."""

    def __init__(self) -> None:
        from freshet.ops.stack import free_port

        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> "MotoServer":
        self.proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import requests

        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(f"{self.endpoint}/moto-api/", timeout=2)
                break
            except requests.RequestException:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    raise RuntimeError("moto server did not start")
                time.sleep(0.3)
        return self

    def reset(self) -> None:
        """Drop every object (frees moto's memory) and recreate the bucket."""
        import boto3
        import requests

        requests.post(f"{self.endpoint}/moto-api/reset", timeout=30).raise_for_status()
        boto3.client("s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id="testing",
                     aws_secret_access_key="testing").create_bucket(Bucket=BUCKET)

    def __exit__(self, *exc: Any) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()  # the process we started, by its handle
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def _measure(impl: str, csv: str, store: str, moto: MotoServer | None, repeats: int) -> list[dict]:
    out = []
    for _ in range(repeats):
        work = tempfile.mkdtemp(prefix="freshet-bench-ingest-")
        try:
            args: dict[str, Any] = {"csv": csv, "out": os.path.join(work, "out.parquet")}
            env = None
            if store == "s3":
                moto.reset()
                args["endpoint"] = moto.endpoint
                args["lake_url"] = f"s3://{BUCKET}/lake-{uuid.uuid4().hex[:8]}"
                env = FAKE_AWS_ENV
            else:
                args["lake_url"] = os.path.join(work, "lake")
            out.append(run_child(f"ingest.{impl}", args, timeout=1800, env=env))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return out


def run(quick: bool) -> dict[str, Any]:
    sizes = [100_000] if quick else [1_000_000, 10_000_000]
    results: dict[str, Any] = {"cases": []}
    with MotoServer() as moto:
        for rows in sizes:
            data = cached_data("csv", rows)
            big = rows >= 5_000_000
            for store in ("local", "s3"):
                impls = ["freshet", "polars"] + (["pandas"] if store == "local" else [])
                case: dict[str, Any] = {"rows": data["rows"], "bytes": data["bytes"], "store": store}
                for impl in impls:
                    repeats = 2 if quick else (2 if big and (impl == "pandas" or store == "s3") else 3)
                    say(f"ingestion {store} {data['rows']:,} rows: {impl} x{repeats}")
                    try:
                        runs = _measure(impl, data["path"], store, moto, repeats)
                    except ChildFailed as exc:
                        case[impl] = {"error": str(exc)}
                        continue
                    secs = [r["seconds"] for r in runs]
                    case[impl] = {
                        "seconds": secs,
                        "median_s": median(secs),
                        "rows_per_s": data["rows"] / median(secs),
                        "peak_above_base": median([r["peak_above_base"] for r in runs]),
                        "peak_x_input": median([r["peak_above_base"] for r in runs]) / data["bytes"],
                        "maxrss": median([r["maxrss"] for r in runs]),
                    }
                f, p, pd_ = case.get("freshet", {}), case.get("polars", {}), case.get("pandas", {})
                if f.get("median_s") and p.get("median_s"):
                    case["x_polars"] = p["median_s"] / f["median_s"]
                if f.get("median_s") and pd_.get("median_s"):
                    case["x_pandas"] = pd_["median_s"] / f["median_s"]
                results["cases"].append(case)
    return results
