"""``freshet status`` and ``freshet forecast``: what the lake holds per dataset, and its latest forecast.

Each command builds its output in small functions (``status_row``,
``forecast_header``) so a new line or column is one place to add. Reads freshet's
settings (the lake, the contracts folder); with the local stack running, its lake.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer

from freshet.ops.cli.api import use_stack_api
from freshet.ops.cli.errors import CliError
from freshet.settings import get_settings

STATUS_COLUMNS = ("dataset", "files", "rows", "last landing", "watermark", "champion", "WAPE / baseline",
                  "live WAPE (7 d)", "drift", "untrained files", "forecast", "last training")
STATUS_NUMBERS = ("files", "rows", "untrained files")


def dataset_status(lake, name: str, now: datetime) -> dict:
    """One dataset's landings, champion, last training and latest forecast, as ``status --json`` prints it."""
    from freshet.data.ingestion import read_manifest
    from freshet.modeling import live, publish, registry

    entries = read_manifest(lake, name)
    scores = live.latest(lake, name)
    models = registry.list_models(lake, name)
    champ = registry.champion(lake, name)
    latest = publish.read_latest(lake, name)
    last_landing = max((e["landed_at"] for e in entries), default=None)
    return {
        "dataset": name,
        "files": len(entries),
        "rows": sum(e["rows"] for e in entries),
        "last_landing": last_landing,
        "staleness_hours": round((now - datetime.fromisoformat(last_landing)).total_seconds() / 3600, 2) if last_landing else None,
        "watermark": max((e["max_time"] for e in entries), default=None),
        "champion": champ and {"version": champ["version"], "watermark": champ["data_watermark"],
                               "wape": champ["metrics"]["model"]["wape"], "baseline_wape": champ["metrics"]["baseline"]["wape"]},
        "files_not_in_any_model": len(registry.uncovered(entries, models)),
        "last_training": models and {"version": models[-1]["version"], "promoted": models[-1]["decision"]["promote"],
                                     "reason": models[-1]["decision"]["reason"], "at": models[-1]["trained_at"]},
        "forecast": latest and {
            "uri": latest["uri"], "method": latest["method"], "model_version": latest["model_version"],
            "watermark": latest["watermark"], "issued_at": latest["issued_at"], "rows": latest["rows"],
            "age_hours": round((now - datetime.fromisoformat(latest["issued_at"])).total_seconds() / 3600, 2),
            "missing_series": latest.get("missing_series", 0), "coverage": latest.get("coverage") or {}},
        "live": scores and live_status(scores[0]),
    }


def live_status(summary: dict) -> dict:
    """The newest scores in brief: the champion's live WAPE over the drift window against its backtest, the verdict."""
    d = summary["drift"]
    return {"wape": d["live_wape"], "backtest_wape": d["backtest_wape"], "model": d["champion"], "rows": d["rows"],
            "window": [d["window_start"], d["window_end"]], "degraded": d["degraded"], "verdict": summary["drift_text"],
            "all_models_wape": summary["overall"]["wape"], "scored_rows": summary["overall"]["rows"],
            "uri": summary["uri"]}


def status_row(r: dict) -> list[str]:
    """The table's cells for one dataset's status (``STATUS_COLUMNS``)."""
    c, t = r["champion"], r["last_training"]
    landing = "never" if not r["last_landing"] else f"{r['staleness_hours']} h ago"
    return [r["dataset"], str(r["files"]), str(r["rows"]), landing, r["watermark"] or "-",
            c["version"] if c else "none", f"{c['wape']:.3f} / {c['baseline_wape']:.3f}" if c else "-",
            *_live_cells(r["live"]), str(r["files_not_in_any_model"]), _forecast_cell(r["forecast"]),
            f"{'promoted' if t['promoted'] else 'not promoted'}: {t['reason']}" if t else "never"]


def _live_cells(live: dict | None) -> list[str]:
    """``live WAPE (7 d)`` and ``drift``: the champion's live WAPE vs its backtest, and the verdict."""
    if not live:
        return ["not scored yet", "-"]
    if live["wape"] is None:
        return [f"{live['all_models_wape']:.3f} (no champion forecast)", "-"]
    change = live["wape"] / live["backtest_wape"] - 1 if live["backtest_wape"] else float("nan")
    return [f"{live['wape']:.3f} vs backtest {live['backtest_wape']:.3f}",
            f"{'DEGRADED' if live['degraded'] else 'ok'} ({100 * change:+.0f}%)"]


def _forecast_cell(f: dict | None) -> str:
    if not f:
        return "none"
    from freshet.modeling.forecast import format_coverage

    by = "seasonal naive" if f["method"] == "seasonal_naive" else f["model_version"]
    how = f"; {format_coverage(f['coverage'])}" if f.get("coverage") else ""
    return f"{f['age_hours']} h old, data to {f['watermark']}, {by}{how}"


def contract_names(contracts_dir: Path) -> list[str]:
    """The datasets with a contract; an error saying what to do when the folder is missing or holds none."""
    from freshet.data.contracts import list_datasets

    names = list_datasets(contracts_dir)
    if not names:
        why = "holds no <dataset>.toml contracts" if contracts_dir.is_dir() else "does not exist"
        raise CliError(f"the contracts folder {contracts_dir} {why}: point FRESHET_CONTRACTS_DIR at a folder of "
                       "<dataset>.toml contracts, or unset it to use the bundled ones")
    return names


def status(
    as_json: Annotated[bool, typer.Option("--json", help="print the status as JSON, one object per dataset")] = False,
) -> int:
    """per dataset: landings, champion, staleness, last training, forecast age and watermark"""
    from freshet import tables
    from freshet.data.lake import Lake

    use_stack_api()
    settings = get_settings()
    lake = Lake.from_settings(settings)
    now = datetime.now(timezone.utc)
    rows = [dataset_status(lake, n, now) for n in contract_names(settings.contracts_dir)]
    if as_json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"lake {settings.lake_url}\n")
    tables.show(tables.table(STATUS_COLUMNS, [status_row(r) for r in rows], right=STATUS_NUMBERS))
    return 0


def forecast_by(latest: dict) -> str:
    """Who made a published forecast: a model version, or seasonal naive while there is no champion."""
    return "seasonal naive (no champion yet)" if latest["method"] == "seasonal_naive" else f"model {latest['model_version']}"


def coverage_line(latest: dict) -> str:
    """How the forecast's series x periods were made: ``coverage model 91.7%, seasonal_naive 8.3%``."""
    from freshet.modeling.forecast import format_coverage

    shares = latest.get("coverage")
    return f"coverage {format_coverage(shares)}" if shares else "coverage not recorded (published by an older freshet)"


def forecast_header(dataset: str, latest: dict) -> list[str]:
    """The lines printed above a published forecast: what made it, on which data, when, how, and where it is."""
    return [f"{dataset}: {latest['rows']} rows by {forecast_by(latest)}, data to {latest['watermark']}, "
            f"issued {latest['issued_at']}", coverage_line(latest), latest["uri"]]


def write_frame(frame, out: Path) -> None:
    """Write ``frame`` as CSV or parquet by ``out``'s suffix; anything else is a usage error."""
    if out.suffix.lower() in (".parquet", ".pq"):
        frame.write_parquet(out)
    elif out.suffix.lower() == ".csv":
        frame.write_csv(out)
    else:
        raise CliError(f"--out must end in .csv or .parquet, not {out.name!r}", code=2)


def scores(
    dataset: Annotated[str, typer.Option(help="the dataset")],
    out: Annotated[Optional[Path], typer.Option(help="a .csv or .parquet file to write the scored rows to")] = None,
    rows: Annotated[int, typer.Option(help="worst series to print")] = 10,
) -> int:
    """print the live accuracy of a dataset's published forecasts (by model, horizon step, worst series), or write the scored rows"""
    from freshet import tables
    from freshet.data.contracts import check_dataset_name, load_contract
    from freshet.data.lake import Lake
    from freshet.modeling import live
    from freshet.modeling import scoring as S

    use_stack_api()
    dataset = check_dataset_name(dataset)
    settings = get_settings()
    lake = Lake.from_settings(settings)
    found = live.latest(lake, dataset)
    if found is None:
        raise CliError(f"no scores for {dataset} yet in {lake.url}: forecasts are scored when the actuals of the "
                       "periods they cover land (ingest)")
    summary, scored = found
    print(f"{dataset}: {summary['overall']['rows']} series x periods scored in {live.span_text(summary)} "
          f"({summary['unforecast_rows']} landed rows of it no forecast covered, ignored)\n{summary['drift_text']}\n"
          f"{summary['uri']}")
    if out:
        write_frame(scored, out)
        print(f"wrote {out}")
        return 0
    fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
    tables.show(tables.table(("model", "rows", "live WAPE", "backtest WAPE", "MAE", "bias", "coverage"), [
        [m["model_version"], str(m["rows"]), fmt(m["wape"]), fmt(m.get("backtest_wape")), fmt(m["mae"]),
         fmt(m["bias"]), fmt(m["coverage"])] for m in summary["by_model"]], right=("rows",)))
    tables.show(tables.table(("horizon step", "rows", "WAPE", "MAE", "bias"), [
        [str(m["step"]), str(m["rows"]), fmt(m["wape"]), fmt(m["mae"]), fmt(m["bias"])] for m in summary["by_step"]],
        right=("horizon step", "rows")))
    contract = load_contract(dataset, settings.contracts_dir)
    worst = S.worst_series(scored, contract, rows)
    keys = list(contract.series_keys)
    tables.show(tables.table((*keys, "rows", "WAPE", "MAE", "bias"), [
        [*(str(r[k]) for k in keys), str(r["rows"]), fmt(r["wape"]), fmt(r["mae"]), fmt(r["bias"])]
        for r in worst.to_dicts()], right=("rows",)))
    return 0


def forecast(
    dataset: Annotated[str, typer.Option(help="the dataset")],
    out: Annotated[Optional[Path], typer.Option(help="a .csv or .parquet file to write instead of printing")] = None,
    rows: Annotated[int, typer.Option(help="rows to print")] = 20,
) -> int:
    """print the latest published forecast of a dataset, or write it (CSV or parquet)"""
    from freshet.data.contracts import check_dataset_name
    from freshet.data.lake import Lake
    from freshet.modeling import publish

    use_stack_api()
    dataset = check_dataset_name(dataset)
    lake = Lake.from_settings(get_settings())
    latest = publish.read_latest(lake, dataset)
    if latest is None:
        raise CliError(f"no forecast published for {dataset} yet in {lake.url}; it is published when data lands "
                       "or a model is promoted (or run the 'forecast' deployment)")
    frame = publish.read_forecast(lake, latest)
    header = "\n".join(forecast_header(dataset, latest))
    if out:
        write_frame(frame, out)
        print(f"{header}\nwrote {out}")
        return 0
    import polars as pl

    with pl.Config(tbl_rows=rows, tbl_cols=-1):
        print(header)
        print(frame)
    return 0
