"""Live accuracy on the lake: score every published forecast the landed actuals can judge, once per state.

``score_lake`` reads every published forecast of a dataset (a file that cannot be read
is named in an ``UnreadableForecast`` error, and nothing is written), the actuals that
fall after the first forecast's watermark, and scores them with ``modeling.scoring``.
Scores live at ``scores/<dataset>/<watermark>-<key>.parquet`` with a sidecar
``<watermark>-<key>.json`` (summary and drift verdict) written last as the commit point;
``key`` is derived from the manifest's data, the forecasts scored, the champion and the
contract, so re-landing or re-scoring the same state names the same file and its
events keep the same ids. Reads no settings (the lake is passed in).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import polars as pl

from freshet.data.contracts import Contract
from freshet.data.ingestion import load_curated, read_manifest
from freshet.data.lake import Lake
from freshet.modeling import publish, registry
from freshet.modeling import scoring as S


class UnreadableForecast(RuntimeError):
    """A published forecast file could not be read: nothing was scored."""


@dataclass
class Scored:
    """One scoring pass: the scored rows, their summary document, and whether this pass wrote them."""

    rows: pl.DataFrame
    summary: dict[str, Any]
    path: str
    new: bool


def scores_dir(lake: Lake, dataset: str) -> str:
    return lake.path("scores", dataset)


def read_published(lake: Lake, dataset: str) -> pl.DataFrame | None:
    """Every published forecast's rows with its ``forecast_id`` (None before the first)."""
    pointers = [p for p in lake.list(lake.forecasts_dir(dataset), suffix=".json") if not p.endswith(publish.LATEST)]
    frames = []
    for path in pointers:
        named = path
        try:
            pointer = lake.read_json(path)
            named = pointer["path"]
            frame = pl.read_parquet(io.BytesIO(lake.read_bytes(named)))
        except (OSError, ValueError, KeyError, pl.exceptions.PolarsError) as exc:
            raise UnreadableForecast(f"{dataset}: the published forecast {named} cannot be read "
                                     f"({type(exc).__name__}: {exc}); nothing was scored. Restore or remove it (with "
                                     f"its pointer {path}), then ingest again") from exc
        frames.append(frame.with_columns(pl.lit(pointer["forecast_id"]).alias("forecast_id"),
                                         pl.col("data_watermark").cast(pl.String)))
    return pl.concat(frames, how="diagonal_relaxed") if frames else None


def _key(entries: list[dict], forecast_ids: list[str], champion: str | None, contract: Contract) -> str:
    data = registry.data_fingerprint([e["content_hash"] for e in entries])
    parts = f"{data}|{','.join(sorted(set(forecast_ids)))}|{champion}|{contract.fingerprint}"
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def score_lake(lake: Lake, contract: Contract, models: list[dict] | None = None) -> Scored | None:
    """Score every published forecast against the admitted actuals; None before any forecast or any actual it
    covers. Writes the scores unless this exact state was scored before (then ``new`` is False)."""
    dataset, t = contract.name, contract.time_column
    forecasts = read_published(lake, dataset)
    entries = read_manifest(lake, dataset)
    if forecasts is None or not entries:
        return None
    first = str(forecasts["data_watermark"].min())
    judged = [e for e in entries if str(e["max_time"]) > first]  # only files with periods a forecast could cover
    if not judged:
        return None
    champ = registry.champion(lake, dataset)
    key = _key(entries, forecasts["forecast_id"].to_list(), champ and champ["version"], contract)
    watermark = max(str(e["max_time"]) for e in entries)
    path = lake.path("scores", dataset, publish.stamped_name(watermark, key))
    sidecar = path.removesuffix(".parquet") + ".json"
    if lake.exists(sidecar):
        return Scored(pl.read_parquet(io.BytesIO(lake.read_bytes(path))), lake.read_json(sidecar), path, False)
    actuals = load_curated(lake, judged, contract).collect()
    rows, unforecast = S.score(actuals, forecasts, contract)
    if not rows.height:
        return None
    models = registry.list_models(lake, dataset) if models is None else models
    backtest = {m["version"]: m["metrics"]["model"]["wape"] for m in models}
    verdict = S.drift(rows, contract, champ and champ["version"], backtest.get(champ["version"]) if champ else None)
    summary = {
        "dataset": dataset, "key": key, "path": path, "uri": lake.uri(path), "watermark": watermark,
        "scored_at": datetime.now().astimezone().isoformat(), "unforecast_rows": unforecast,
        "overall": S.summarize(rows).to_dicts()[0],
        "by_model": [r | {"backtest_wape": backtest.get(r["model_version"])}
                     for r in S.summarize(rows, ["model_version"]).to_dicts()],
        "by_step": S.summarize(rows, ["step"]).to_dicts(),
        "drift": verdict.as_dict(), "drift_text": verdict.describe(),
    }
    with lake.staged(path) as local:
        rows.write_parquet(local)
    return Scored(rows, summary, path, True)


def commit(lake: Lake, scored: Scored) -> None:
    """Write the sidecar: the scoring pass is complete (its events are out)."""
    lake.write_json(scored.path.removesuffix(".parquet") + ".json", scored.summary)


def latest(lake: Lake, dataset: str) -> tuple[dict[str, Any], pl.DataFrame] | None:
    """The newest committed scores of a dataset: its summary and scored rows (None before the first)."""
    sidecars = lake.list(scores_dir(lake, dataset), suffix=".json")
    if not sidecars:
        return None
    summaries = sorted(lake.read_json_many(sidecars), key=lambda s: (s["watermark"], s["scored_at"]))
    newest = summaries[-1]
    return newest, pl.read_parquet(io.BytesIO(lake.read_bytes(newest["path"])))


def live_wape_line(summary: dict[str, Any]) -> str:
    """``live WAPE 0.231 on 84 rows (model V: backtest 0.207)`` for the summary's models."""
    parts = [f"{m['model_version']}: live {m['wape']:.3f} vs backtest "
             + (f"{m['backtest_wape']:.3f}" if m.get("backtest_wape") is not None else "n/a (seasonal naive)")
             + f" on {m['rows']} rows" for m in summary["by_model"]]
    return "; ".join(parts)


def chart_png(over_time: pl.DataFrame, time_column: str, backtest: dict[str, float], promotions: list[tuple[Any, str]]) -> bytes:
    """Live WAPE over time against the backtest WAPE of the model that made the forecasts, promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 3.2))
    times = over_time[time_column].to_list()
    ax.plot(times, over_time["wape"].to_list(), color="#d62728", marker=".", label="live WAPE (trailing window)")
    ax.step(times, [backtest.get(v) for v in over_time["model_version"].to_list()], where="post", color="#1f77b4",
            linestyle="--", label="backtest WAPE of the model in hand")
    for at, version in promotions:
        ax.axvline(at, color="#2ca02c", alpha=0.6)
        ax.annotate(f"promoted {version[:15]}", (at, ax.get_ylim()[1]), fontsize=7, rotation=90, va="top", ha="right")
    ax.set_ylabel("WAPE")
    ax.legend(fontsize=8, loc="upper left")
    return publish.png_bytes(fig)
