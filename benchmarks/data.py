"""Benchmark data: synthetic ``retail_sales`` of a given size, as a landing CSV or curated parquet."""

from __future__ import annotations

import json
import os
from datetime import date
from pathlib import Path


def job_data_make(args: dict, meter) -> dict:
    """Write the file once; a JSON sidecar records its rows and bytes."""
    from freshet.data.generate import generate_retail_sales

    frame = generate_retail_sales(seed=11, stores=args["stores"], items=args["items"], days=args["days"],
                                  start=date(2023, 1, 1))
    path = Path(args["path"])
    tmp = path.with_name(f".{path.name}.tmp")
    if args["kind"] == "csv":
        frame.write_csv(tmp)
    else:
        frame.write_parquet(tmp)
    os.replace(tmp, path)
    meta = {"rows": frame.height, "bytes": path.stat().st_size, "series": args["stores"] * args["items"],
            "days": args["days"], "min_time": str(frame["date"].min()), "max_time": str(frame["date"].max())}
    path.with_suffix(path.suffix + ".json").write_text(json.dumps(meta))
    return meta
