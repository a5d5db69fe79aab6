"""Published forecasts on the lake: one parquet file per (model, data, future values), and a pointer.

``forecasts/<dataset>/<watermark>-<id>.parquet`` where ``id`` is derived from the model
version (or ``seasonal_naive``), the manifest's data fingerprint and the future values'
fingerprint: the same inputs always name the same file, so a duplicate event or a rerun
publishes no second file. ``forecasts/<dataset>/latest.json`` points at the newest
forecast and is replaced atomically, never moved back to an older watermark or model.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from datetime import datetime
from typing import Any

import polars as pl

from freshet.data.lake import Lake
from freshet.modeling.intervals import quantile_column

LATEST = "latest.json"


def forecast_id(model_version: str, data_fingerprint: str, future_fingerprint: str) -> str:
    """Deterministic id of a forecast from everything it depends on."""
    return hashlib.sha256(f"{model_version}|{data_fingerprint}|{future_fingerprint}".encode()).hexdigest()[:16]


def stamp(watermark: Any) -> str:
    """A watermark (ISO text or datetime) as ``YYYYMMDDTHHMMSS``: the prefix of the names below, sorting by time."""
    at = watermark if isinstance(watermark, datetime) else datetime.fromisoformat(str(watermark))
    return at.strftime("%Y%m%dT%H%M%S")


def stamped_name(watermark: str, fid: str) -> str:
    """``<stamp of the watermark>-<id>.parquet``: names sort by watermark."""
    return f"{stamp(watermark)}-{fid}.parquet"


def forecast_path(lake: Lake, dataset: str, watermark: str, fid: str) -> str:
    return lake.path("forecasts", dataset, stamped_name(watermark, fid))


def latest_path(lake: Lake, dataset: str) -> str:
    return lake.path("forecasts", dataset, LATEST)


def read_latest(lake: Lake, dataset: str) -> dict[str, Any] | None:
    """The latest forecast's pointer document, or None before the first."""
    path = latest_path(lake, dataset)
    return lake.read_json(path) if lake.exists(path) else None


def write_forecast(lake: Lake, path: str, frame: pl.DataFrame) -> None:
    """Publish the forecast parquet atomically."""
    with tempfile.TemporaryDirectory(prefix="freshet-forecast-") as work:
        local = os.path.join(work, "forecast.parquet")
        frame.write_parquet(local)
        lake.publish_file(local, path)


def newer_than(pointer: dict[str, Any], current: dict[str, Any] | None) -> bool:
    """Whether ``pointer`` should replace ``current``: a newer watermark, or the same one from a newer issue."""
    if current is None:
        return True
    return (str(pointer["watermark"]), pointer["issued_at"]) >= (str(current["watermark"]), current["issued_at"])


def read_forecast(lake: Lake, pointer: dict[str, Any]) -> pl.DataFrame:
    return pl.read_parquet(lake.read_bytes(pointer["path"]))


def chart_png(history: pl.DataFrame, forecast: pl.DataFrame, keys: list[str], time_column: str, target: str,
              series: int = 4, periods: int = 56, quantiles: tuple[float, ...] = ()) -> bytes:
    """A PNG of the newest actuals, the forecast and its band (the outermost ``quantiles``) for the first few series."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    chosen = forecast.select(keys).unique(maintain_order=True).head(series)
    fig, axes = plt.subplots(max(1, chosen.height), 1, figsize=(9, 2.2 * max(1, chosen.height)), squeeze=False)
    for ax, row in zip(axes[:, 0], chosen.iter_rows(named=True)):
        match = pl.all_horizontal(pl.col(k) == v for k, v in row.items())
        past = history.filter(match).sort(time_column).tail(periods)
        ahead = forecast.filter(match).sort(time_column)
        ax.plot(past[time_column].to_list(), past[target].to_list(), color="#444", label="actual")
        if len(quantiles) >= 2 and ahead.height:
            lo, hi = quantile_column(min(quantiles)), quantile_column(max(quantiles))
            ax.fill_between(ahead[time_column].to_list(), ahead[lo].to_list(), ahead[hi].to_list(), color="#d62728",
                            alpha=0.2, label=f"{lo}-{hi}")
        methods = ", ".join(ahead["method"].unique(maintain_order=True).to_list()) if ahead.height else "-"
        ax.plot(ahead[time_column].to_list(), ahead["forecast"].to_list(), color="#d62728", marker=".",
                label=f"forecast ({methods})")
        ax.set_title(", ".join(f"{k}={v}" for k, v in row.items()), fontsize=9)
        ax.legend(fontsize=7, loc="upper left")
    return png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A finished matplotlib figure as PNG bytes (the artifacts' charts); closes the figure."""
    import io

    import matplotlib.pyplot as plt

    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    return buf.getvalue()
