"""Write a large valid retail_sales CSV in chunks (bounded memory): large_csv.py PATH ROWS."""

import sys
from datetime import date

import polars as pl

path, total = sys.argv[1], int(sys.argv[2])
days, chunk = 1000, 2_000_000
with open(path, "wb") as out:
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        i = pl.int_range(start, start + n, eager=True).alias("i")
        frame = pl.DataFrame(i).select(
            (pl.lit(date(2020, 1, 1)) + pl.duration(days=pl.col("i") % days)).alias("date"),
            ((pl.col("i") // days) // 1000).cast(pl.Int32).alias("store_id"),
            ((pl.col("i") // days) % 1000).cast(pl.Int32).alias("item_id"),
            ((pl.col("i") * 7919) % 97).cast(pl.Float64).alias("units_sold"),
            (((pl.col("i") * 31) % 1900) / 100 + 1).alias("price"),
            ((pl.col("i") % 11) == 0).alias("on_promo"),
        )
        frame.write_csv(out, include_header=start == 0)
