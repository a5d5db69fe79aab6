"""Write ISLP's Bikeshare (hourly, 2011) as one CSV per day, for ``freshet policies --from-dir``.

    pip install --no-deps ISLP        # the data ships inside the package: ISLP/data/Bikeshare.csv
    python docs/lab/bikeshare_files.py /tmp/bikeshare
    freshet policies --from-dir /tmp/bikeshare --contract docs/lab/bikeshare.toml

Each file holds one day's hours (the data set skips a few hours); the lab lands it at
the next midnight plus ``--landing-delay-hours`` (1 h by default).
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import datetime
from pathlib import Path

import polars as pl


def bikeshare_csv() -> Path:
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("ISLP is not installed: pip install --no-deps ISLP")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "Bikeshare.csv"


def load(csv: Path) -> pl.DataFrame:
    raw = pl.read_csv(csv, schema_overrides={"hr": pl.Int64, "weathersit": pl.String})
    return raw.select(
        (pl.lit(datetime(2011, 1, 1)) + pl.duration(days=pl.col("day") - 1, hours=pl.col("hr"))).cast(pl.Datetime("us")).alias("time"),
        pl.lit("washington_dc").alias("city"), pl.col("bikers").cast(pl.Float64), pl.col("weathersit"), pl.col("workingday").cast(pl.Int8),
        pl.col("holiday").cast(pl.Int8), pl.col("temp").cast(pl.Float64), pl.col("hum").cast(pl.Float64),
        pl.col("windspeed").cast(pl.Float64),
    ).sort("time")


def write_daily(frame: pl.DataFrame, out: str) -> None:
    """One CSV per day of the ``time`` column, named ``<day>.csv``, in folder ``out``."""
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    for (day,), part in frame.group_by(pl.col("time").dt.date(), maintain_order=True):
        part.write_csv(folder / f"{day}.csv", datetime_format="%Y-%m-%dT%H:%M:%S")
    print(f"wrote {frame['time'].dt.date().n_unique()} files, {frame.height} rows, to {folder}")


def main(out: str, csv: str | None = None) -> None:
    write_daily(load(Path(csv) if csv else bikeshare_csv()), out)


if __name__ == "__main__":
    main(*sys.argv[1:3])
