"""Live accuracy on the lake: score the published forecasts the landed actuals can judge, once per state.

``score_lake`` works on the scoring span: the trailing ``span`` of data time (the
``scoring_span`` setting, passed in) ending at the newest landed period, at least the
contract's ``drift_window`` plus its horizon. It opens only the published forecasts whose
periods can fall in the span (chosen from the listing by the watermark stamped in their
names: older files are never opened, so the work per landing does not grow with history;
a file that cannot be read is named in an ``UnreadableForecast`` error, and nothing is
written), reads only the actuals in the span, and scores them with ``modeling.scoring``.
Scores live at ``scores/<dataset>/<watermark>-<key>.parquet`` with a sidecar
``<watermark>-<key>.json`` (summary, span and drift verdict) written last as the commit
point; ``key`` is derived from the manifest's data, the span's bounds, the forecasts scored,
the champion and the contract, so re-landing or re-scoring the same state names the same
file and its events keep the same ids. Reads no settings (the lake and span are passed in).
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from datetime import datetime, timedelta
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


def span_bounds(entries: list[dict], contract: Contract, span: timedelta) -> tuple[datetime, datetime]:
    """The scoring span ``(start, end]``: ``span`` (at least ``drift_window`` + horizon periods) up to the newest
    landed period."""
    end = datetime.fromisoformat(max(str(e["max_time"]) for e in entries))
    return end - max(span, contract.period * (contract.drift_window_periods + contract.horizon)), end


def read_published(lake: Lake, dataset: str, after: str) -> pl.DataFrame | None:
    """The rows, with their ``forecast_id``, of the published forecasts whose watermark stamp (``publish.stamp``,
    the start of the file name) is later than ``after`` (None before the first); the others are never opened."""
    pointers = [p for p in lake.list(lake.forecasts_dir(dataset), suffix=".json")
                if not p.endswith(publish.LATEST) and p.rsplit("/", 1)[-1].split("-", 1)[0] > after]
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


def _key(entries: list[dict], bounds: tuple[datetime, datetime], forecast_ids: list[str], champion: str | None,
         contract: Contract) -> str:
    data = registry.data_fingerprint([e["content_hash"] for e in entries])
    span = "..".join(b.isoformat() for b in bounds)
    parts = f"{data}|{span}|{','.join(sorted(set(forecast_ids)))}|{champion}|{contract.fingerprint}"
    return hashlib.sha256(parts.encode()).hexdigest()[:16]


def _as_time(at: datetime, contract: Contract) -> str:
    return at.isoformat(sep=" ") if contract.is_datetime else at.date().isoformat()


def score_lake(lake: Lake, contract: Contract, span: timedelta, models: list[dict] | None = None) -> Scored | None:
    """Score the published forecasts against the admitted actuals of the scoring span (``span_bounds``); None before
    any forecast or any actual it covers. Writes the scores unless this exact state was scored before (then ``new``
    is False)."""
    dataset, t = contract.name, contract.time_column
    entries = read_manifest(lake, dataset)
    if not entries:
        return None
    start, end = span_bounds(entries, contract, span)
    # a forecast covers the horizon after its watermark: one issued a horizon or more before the span has no period in it
    forecasts = read_published(lake, dataset, publish.stamp(start - contract.period * contract.horizon))
    if forecasts is None:
        return None
    since = max(start, datetime.fromisoformat(str(forecasts["data_watermark"].min())))
    judged = [e for e in entries if datetime.fromisoformat(str(e["max_time"])) > since]  # files with periods to score
    if not judged:
        return None
    champ = registry.champion(lake, dataset)
    key = _key(entries, (start, end), forecasts["forecast_id"].to_list(), champ and champ["version"], contract)
    watermark = max(str(e["max_time"]) for e in entries)
    path = lake.path("scores", dataset, publish.stamped_name(watermark, key))
    sidecar = path.removesuffix(".parquet") + ".json"
    if lake.exists(sidecar):
        return Scored(pl.read_parquet(io.BytesIO(lake.read_bytes(path))), lake.read_json(sidecar), path, False)
    in_span = pl.lit(start if contract.is_datetime else start.date())
    actuals = load_curated(lake, judged, contract).filter(pl.col(t) > in_span).collect()
    rows, unforecast = S.score(actuals, forecasts, contract)
    if not rows.height:
        return None
    models = registry.list_models(lake, dataset) if models is None else models
    backtest = {m["version"]: m["metrics"]["model"]["wape"] for m in models}
    verdict = S.drift(rows, contract, champ and champ["version"], backtest.get(champ["version"]) if champ else None)
    summary = {
        "dataset": dataset, "key": key, "path": path, "uri": lake.uri(path), "watermark": watermark,
        "scored_at": datetime.now().astimezone().isoformat(), "unforecast_rows": unforecast,
        "span": {"start": _as_time(start, contract), "end": _as_time(end, contract),
                 "days": (end - start) / timedelta(days=1)},
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


def span_text(summary: dict[str, Any]) -> str:
    """``the scoring span 2025-06-01 .. 2025-06-29 (28 days)``, what a summary's figures pool (its span setting)."""
    s = summary.get("span")
    if s is None:  # scored before the span existed
        return "every period scored"
    return f"the scoring span {s['start']} .. {s['end']} ({s['days']:g} days; FRESHET_SCORING_SPAN)"


def live_wape_line(summary: dict[str, Any]) -> str:
    """``live WAPE 0.231 on 84 rows (model V: backtest 0.207)`` for the summary's models."""
    parts = [f"{m['model_version']}: live {m['wape']:.3f} vs backtest "
             + (f"{m['backtest_wape']:.3f}" if m.get("backtest_wape") is not None else "n/a (seasonal naive)")
             + f" on {m['rows']} rows" for m in summary["by_model"]]
    return "; ".join(parts)


def chart_png(over_time: pl.DataFrame, time_column: str, backtest: dict[str, float], promotions: list[tuple[Any, str]],
              title: str) -> bytes:
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
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper left")
    return publish.png_bytes(fig)
