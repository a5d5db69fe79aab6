"""Write pmdarima's taylor (hourly electricity demand, summer 2000) as one CSV per day, for ``freshet policies --from-dir``.

    pip install pmdarima              # the data ships inside the package: pmdarima/datasets/taylor.py
    python docs/lab/taylor_files.py /tmp/taylor
    freshet policies --from-dir /tmp/taylor --contract docs/lab/taylor.toml --days 28

The half-hourly demand is averaged to hourly MW (as in ``benchmarks/accuracy.py``); each file
holds one day's hours, landed at the next midnight plus ``--landing-delay-hours`` (1 h by default).
"""

from __future__ import annotations

import sys
from datetime import datetime, timedelta

import numpy as np
import polars as pl
from bikeshare_files import write_daily  # this folder is on sys.path when the script runs


def load() -> pl.DataFrame:
    try:
        from pmdarima.datasets import load_taylor
    except ImportError:
        raise SystemExit("pmdarima is not installed: pip install pmdarima (or `make bench` once)") from None
    hourly = np.asarray(load_taylor(as_series=False), dtype=np.float64).reshape(-1, 2).mean(axis=1)
    start = datetime(2000, 6, 5)
    times = pl.datetime_range(start, start + timedelta(hours=len(hourly) - 1), "1h", eager=True)
    return pl.DataFrame({"time": times.cast(pl.Datetime("us")), "grid": "england_wales", "demand_mw": hourly})


def main(out: str) -> None:
    write_daily(load(), out)


if __name__ == "__main__":
    main(sys.argv[1])
