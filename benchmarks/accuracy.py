"""Forecast accuracy against a peer, on the same rolling-origin windows of real data.

    .venv/bin/python benchmarks/accuracy.py                      # every data set and method, prints the table
    .venv/bin/python benchmarks/accuracy.py --dataset taylor --method freshet --method seasonal_naive
    .venv/bin/python benchmarks/run.py --only accuracy           # the same, inside the benchmark runner

Methods (each a function ``fn(history, future, contract) -> frame of keys, time, forecast``):

- ``freshet``: freshet's own training and forecast path (``freshet_forecast``: the one place
  that calls the library; switch it there when the library's API changes).
- ``mlforecast``: Nixtla's mlforecast with XGBoost as its learner, configured as its
  documentation teaches (target lags, rolling lag transforms, date features, the same
  exogenous columns as dynamic features, recursive forecasting with ``predict(h, X_df=...)``).
- ``mstl``: statsforecast's MSTL (seasons 24 and 168 for hourly data, 7 for daily), the
  statistical reference; it uses no exogenous column.
- ``seasonal_naive``: the target one whole season (at or beyond the horizon) back, the
  lag freshet's promotion decision compares with.

Windows: ``n`` windows of ``horizon`` periods, the newest ending at the newest row, their
origins ``spacing`` periods apart (Bikeshare: 12 a week apart; taylor: 8 two days apart; retail:
8 two weeks apart; see ``DATASETS``). For a
window with origin ``o`` a method is given ``history`` = every row with time <= o (target
included) and ``future`` = the rows in (o, o + horizon] WITHOUT the target column (time,
keys and the exogenous columns, which the contracts declare known at forecast time). It
never sees a target after its origin (``tests/benchmarks/test_accuracy.py`` checks it).
Scores pool every window's rows: WAPE = sum |error| / sum |actual|, MAE = mean |error|.
Forecasts are clipped at 0 (every target here is a non-negative count or load).

Data sets (real ones ship inside packages on PyPI; nothing is downloaded at run time):

- ``bikeshare``: ISLP's ``ISLP/data/Bikeshare.csv`` (package ``ISLP``), hourly bike rentals in
  Washington DC, 2011; weather category (String), working-day and holiday flags (0/1),
  temperature, humidity and a wind speed full of zeros. 8,645 hourly rows (115 hours missing).
- ``taylor``: pmdarima's ``pmdarima.datasets.load_taylor`` (file ``pmdarima/datasets/taylor.py``),
  half-hourly electricity demand of England and Wales, 5 June - 27 August 2000, averaged to
  hourly MW: 2,016 rows, one series, no exogenous column, a strong weekly pattern.
- ``retail_sales``: freshet's generated data (``freshet.data.generate``), 40 series x 730 days.

Contracts: ``benchmarks/contracts/<name>.toml`` (retail_sales uses the bundled one).
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))
# XGBoost's OpenMP threads spin while waiting: on a busy shared machine a fit gets many times
# slower (tests/conftest.py does the same). Every method here shares the setting.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from freshet import tables  # noqa: E402
from freshet.data.contracts import Contract, parse_contract  # noqa: E402

HERE = Path(__file__).resolve().parent
QUANTILE_COLUMNS = ("p10", "p50", "p90")  # a method that returns p10 and p90 gets its 80% interval scored
CONTRACTS = HERE / "contracts"
FORECAST = "forecast"


def say(msg: str) -> None:
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ====================================================================== data sets
def bikeshare_csv() -> Path:
    """The CSV inside the installed ISLP package (found without importing ISLP)."""
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("ISLP is not installed: `pip install --no-deps ISLP` (make bench does it)")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / "Bikeshare.csv"


def load_bikeshare() -> pl.DataFrame:
    """ISLP's Bikeshare as the ``bikeshare`` contract's curated frame (one row per observed hour of 2011)."""
    raw = pl.read_csv(bikeshare_csv(), schema_overrides={"hr": pl.Int64, "weathersit": pl.String})
    start = datetime(2011, 1, 1)
    return raw.select(
        (pl.lit(start) + pl.duration(days=pl.col("day") - 1, hours=pl.col("hr"))).cast(pl.Datetime("us")).alias("time"),
        pl.lit("washington_dc").alias("city"),
        pl.col("bikers").cast(pl.Float64),
        pl.col("weathersit").cast(pl.String),
        pl.col("workingday").cast(pl.Int8),
        pl.col("holiday").cast(pl.Int8),
        pl.col("temp").cast(pl.Float64),
        pl.col("hum").cast(pl.Float64),
        pl.col("windspeed").cast(pl.Float64),
    ).sort("time")


def load_taylor() -> pl.DataFrame:
    """pmdarima's half-hourly ``taylor`` demand, averaged to hourly MW, from Monday 5 June 2000 00:00."""
    from pmdarima.datasets import load_taylor as _load

    half_hourly = np.asarray(_load(as_series=False), dtype=np.float64)
    hourly = half_hourly.reshape(-1, 2).mean(axis=1)
    start = datetime(2000, 6, 5)
    return pl.DataFrame({
        "time": pl.datetime_range(start, start + timedelta(hours=len(hourly) - 1), "1h", eager=True).cast(pl.Datetime("us")),
        "grid": "england_wales",
        "demand_mw": hourly,
    })


def load_retail() -> pl.DataFrame:
    from freshet.data.generate import generate_retail_sales

    return generate_retail_sales(seed=7, stores=4, items=10, days=730)


def retail_contract() -> Contract:
    import freshet.data as data_pkg

    return parse_contract(Path(data_pkg.__file__).parent / "bundled_contracts" / "retail_sales.toml")


@dataclass
class DataSet:
    name: str
    contract: Callable[[], Contract]
    load: Callable[[], pl.DataFrame]
    source: str
    windows: int = 4  # rolling origins over the newest data, each ``horizon`` periods long
    mstl_seasons: tuple[int, ...] = (24, 168)
    spacing: int | None = None  # periods between origins (None: the horizon, consecutive windows)


DATASETS: dict[str, DataSet] = {
    "bikeshare": DataSet("bikeshare", lambda: parse_contract(CONTRACTS / "bikeshare.toml"), load_bikeshare,
                         "ISLP: ISLP/data/Bikeshare.csv", windows=12, spacing=168),
    "taylor": DataSet("taylor", lambda: parse_contract(CONTRACTS / "taylor.toml"), load_taylor,
                      "pmdarima: pmdarima/datasets/taylor.py (load_taylor)", windows=8, spacing=48),
    "retail_sales": DataSet("retail_sales", retail_contract, load_retail,
                            "generated: freshet.data.generate.generate_retail_sales", windows=8, mstl_seasons=(7,),
                            spacing=14),
}


def write_landing(frame: pl.DataFrame, contract: Contract, folder: Path, every: str = "1d") -> list[Path]:
    """The frame as landing CSV files, one per ``every`` (a polars duration), as a user would land them."""
    folder.mkdir(parents=True, exist_ok=True)
    t = contract.time_column
    out = []
    keyed = frame.with_columns(pl.col(t).dt.truncate(every).alias("__part"))
    for (part,), chunk in keyed.partition_by("__part", as_dict=True, maintain_order=True).items():
        path = folder / f"{contract.name}-{part:%Y%m%dT%H%M}.csv"
        chunk.drop("__part").write_csv(path)
        out.append(path)
    return out


# ====================================================================== windows
def period(contract: Contract) -> timedelta:
    return contract.period  # a timedelta (the contract's frequency is a duration)


def seasonal_lag(contract: Contract) -> int:
    return contract.season_length * math.ceil(contract.horizon / contract.season_length)


@dataclass(frozen=True)
class Window:
    origin: Any  # the newest time a method may see the target of
    end: Any     # the newest time scored: origin + horizon periods


def windows(frame: pl.DataFrame, contract: Contract, n: int, spacing: int | None = None) -> list[Window]:
    """``n`` windows of ``horizon`` periods, the newest ending at the newest row, oldest first.

    Origins are ``spacing`` periods apart (default: the horizon, so the windows are consecutive).
    Spread origins (a week apart over a quarter) score more kinds of days than the last few
    consecutive ones, which on a data set ending on 31 December are all holidays.
    """
    newest = frame[contract.time_column].max()
    p = period(contract)
    span = p * contract.horizon
    gap = p * (spacing or contract.horizon)
    return [Window(newest - span - gap * k, newest - gap * k) for k in range(n - 1, -1, -1)]


def split(frame: pl.DataFrame, contract: Contract, w: Window) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """``history`` (time <= origin, target included), ``future`` (the window without the target), ``actual``."""
    t = pl.col(contract.time_column)
    history = frame.filter(t <= w.origin)
    inside = frame.filter((t > w.origin) & (t <= w.end))
    future = inside.drop(contract.target)
    actual = inside.select(*contract.series_keys, contract.time_column, contract.target)
    return history, future, actual


# ====================================================================== methods
def freshet_forecast(history: pl.DataFrame, future: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """freshet's side, as the ``train`` flow does it: ``train_model`` (feature spec fitted to the history,
    transform candidates chosen on validation, its own rolling-origin backtest, then the refit on every
    row up to the origin: the model it would serve) and ``forecast_frame`` for the window (the known
    exogenous columns' future values given, never a target after the origin). Settings are the
    defaults (FRESHET_* variables apply, as in the flow).

    The ONE function to switch when the library's training/forecast API changes.
    """
    from freshet.modeling.forecast import forecast_frame
    from freshet.modeling.training import train_model
    from freshet.settings import Settings

    # The raw rows, as production has them: no gap is filled. A missing hour is a missing lag for the
    # model; a period without a future exogenous value is forecast by the ladder and labelled
    # (forecast_frame never skips a series). The peers get the gap-filled grid they require.
    result = train_model(history, contract, None, Settings())
    fc, _skipped = forecast_frame(history, contract, result.booster, result.meta, future=future)
    bands = [c for c in fc.columns if c in QUANTILE_COLUMNS]
    return fc.select(*contract.series_keys, contract.time_column, FORECAST, *bands)


def _series_id(contract: Contract) -> pl.Expr:
    keys = list(contract.series_keys)
    if not keys:
        return pl.lit("all").alias("unique_id")
    return pl.concat_str([pl.col(k).cast(pl.String) for k in keys], separator="|").alias("unique_id")


def peer_frames(history: pl.DataFrame, future: pl.DataFrame, contract: Contract) -> tuple[pl.DataFrame, pl.DataFrame]:
    """History and future on a complete time grid per series, as Nixtla's libraries require
    (``unique_id``, ``ds``, ``y`` and the exogenous columns): a missing period's target is
    interpolated linearly within its series (then carried), its exogenous values carried
    forward. Only history targets are filled; the future grid has none."""
    t, y = contract.time_column, contract.target
    keys = list(contract.series_keys)
    exo = list(contract.exogenous)
    origin = history[t].max()
    end = future[t].max() if future.height else origin
    step = period(contract)
    both = pl.concat([history.with_columns(_series_id(contract)), future.with_columns(_series_id(contract))],
                     how="diagonal_relaxed")
    firsts = both.group_by("unique_id").agg(pl.col(t).min().alias("first"), *[pl.col(k).first() for k in keys])
    grid = firsts.select(
        "unique_id", *keys,
        pl.datetime_ranges("first", pl.lit(end), interval=step).alias(t) if contract.is_datetime
        else pl.date_ranges("first", pl.lit(end), interval=step).alias(t),
    ).explode(t)
    full = (grid.join(both.drop(keys), on=["unique_id", t], how="left").sort("unique_id", t)
            .with_columns(pl.col(exo).forward_fill().backward_fill().over("unique_id")))
    hist = full.filter(pl.col(t) <= origin).with_columns(
        pl.col(y).cast(pl.Float64).interpolate().forward_fill().backward_fill().over("unique_id"))
    fut = full.filter(pl.col(t) > origin).drop(y)
    rename = {t: "ds", y: "y"}
    return hist.rename(rename), fut.rename({t: "ds"})


def _to_pandas(frame: pl.DataFrame, contract: Contract, categories: dict[str, list[str]]):
    import pandas as pd

    pdf = frame.to_pandas()
    for c in contract.exogenous:
        dtype = contract.columns[c]
        if dtype == pl.String:
            pdf[c] = pd.Categorical(pdf[c], categories=categories[c])
        elif dtype == pl.Boolean:
            pdf[c] = pdf[c].astype("float32")
    return pdf


def _back(pdf, contract: Contract, column: str) -> pl.DataFrame:
    """A peer's pandas forecast (unique_id, ds, column) back to the contract's keys and time."""
    t = contract.time_column
    out = pl.from_pandas(pdf[["unique_id", "ds", column]]).rename({"ds": t, column: FORECAST})
    out = out.with_columns(pl.col(t).cast(pl.Datetime("us")) if contract.is_datetime else pl.col(t).cast(pl.Date),
                           pl.col(FORECAST).cast(pl.Float64))
    return out


def _with_keys(fc: pl.DataFrame, future: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    t = contract.time_column
    ids = future.select(*contract.series_keys, _series_id(contract)).unique()
    return fc.join(ids, on="unique_id", how="inner").select(*contract.series_keys, t, FORECAST)


def pandas_freq(contract: Contract):
    import pandas as pd

    return pd.tseries.frequencies.to_offset(pd.Timedelta(contract.period))


def mlforecast_config(contract: Contract) -> dict[str, Any]:
    """mlforecast's documented setup by frequency: target lags, rolling means of lags, date features."""
    from mlforecast.lag_transforms import ExpandingMean, RollingMean

    if contract.period < timedelta(days=1):
        return {"freq": pandas_freq(contract), "lags": [1, 2, 3, 24, 48, 168],
                "lag_transforms": {1: [ExpandingMean(), RollingMean(window_size=24)],
                                   24: [RollingMean(window_size=24), RollingMean(window_size=168)]},
                "date_features": ["hour", "dayofweek"]}
    return {"freq": pandas_freq(contract), "lags": [1, 7, 14, 28],
            "lag_transforms": {1: [ExpandingMean(), RollingMean(window_size=7)],
                               7: [RollingMean(window_size=7), RollingMean(window_size=28)]},
            "date_features": ["dayofweek", "month"]}


def mlforecast_forecast(history: pl.DataFrame, future: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    import xgboost as xgb
    from mlforecast import MLForecast

    hist, fut = peer_frames(history, future, contract)
    categories = {c: sorted(v for v in hist[c].unique().to_list() if v is not None)
                  for c in contract.exogenous if contract.columns[c] == pl.String}
    exo = list(contract.exogenous)
    hist_pd = _to_pandas(hist.select("unique_id", "ds", "y", *exo), contract, categories)
    fut_pd = _to_pandas(fut.select("unique_id", "ds", *exo), contract, categories)
    model = xgb.XGBRegressor(tree_method="hist", enable_categorical=True, random_state=0)
    fcst = MLForecast(models={"xgb": model}, **mlforecast_config(contract))
    fcst.fit(hist_pd, static_features=[])
    h = contract.horizon
    pred = fcst.predict(h, X_df=fut_pd if exo else None)
    return _with_keys(_back(pred, contract, "xgb"), future, contract)


def mstl_forecast(history: pl.DataFrame, future: pl.DataFrame, contract: Contract,
                  seasons: tuple[int, ...] = (24, 168)) -> pl.DataFrame:
    from statsforecast import StatsForecast
    from statsforecast.models import MSTL

    hist, _ = peer_frames(history, future, contract)
    sf = StatsForecast(models=[MSTL(season_length=list(seasons))], freq=pandas_freq(contract), n_jobs=1)
    pred = sf.forecast(df=hist.select("unique_id", "ds", "y").to_pandas(), h=contract.horizon)
    if "unique_id" not in pred.columns:
        pred = pred.reset_index()
    return _with_keys(_back(pred, contract, "MSTL"), future, contract)


def seasonal_naive_forecast(history: pl.DataFrame, future: pl.DataFrame, contract: Contract) -> pl.DataFrame:
    """The target ``seasonal_lag`` periods back (a missing period's value interpolated, as for the peers)."""
    hist, fut = peer_frames(history, future, contract)
    t = contract.time_column
    lag = period(contract) * seasonal_lag(contract)
    past = hist.select("unique_id", (pl.col("ds") + lag).alias("ds"), pl.col("y").alias(FORECAST))
    fc = fut.select("unique_id", "ds").join(past, on=["unique_id", "ds"], how="left").rename({"ds": t})
    return _with_keys(fc, future, contract)


METHODS: dict[str, Callable[..., pl.DataFrame]] = {
    "freshet": freshet_forecast,
    "mlforecast": mlforecast_forecast,
    "mstl": mstl_forecast,
    "seasonal_naive": seasonal_naive_forecast,
}


# ====================================================================== scoring
def score(actual: np.ndarray, forecast: np.ndarray) -> dict[str, float]:
    actual = np.asarray(actual, dtype=np.float64)
    if actual.size == 0:
        return {"wape": float("nan"), "mae": float("nan"), "rows": 0}
    err = np.abs(np.asarray(forecast, dtype=np.float64) - actual)
    denom = float(np.abs(actual).sum())
    return {"wape": float(err.sum() / denom) if denom else float("nan"), "mae": float(err.mean()), "rows": int(actual.size)}


def backtest(ds: DataSet, frame: pl.DataFrame, contract: Contract, methods: list[str], n_windows: int,
             method_fns: dict[str, Callable[..., pl.DataFrame]] | None = None) -> dict[str, Any]:
    """Every method on every window; pooled and per-window scores, seconds per window."""
    fns = method_fns or METHODS
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    wins = windows(frame, contract, n_windows, ds.spacing)
    out: dict[str, Any] = {"source": ds.source, "rows": frame.height,
                           "series": frame.select(keys).n_unique() if keys else 1,
                           "start": str(frame[t].min()), "end": str(frame[t].max()),
                           "horizon": contract.horizon, "season_length": contract.season_length,
                           "frequency": contract.frequency, "exogenous": list(contract.exogenous),
                           "windows": [str(w.origin) for w in wins], "methods": {}}
    for name in methods:
        fn = fns[name]
        seconds, per_window, actual_all, fc_all, inside_all = [], [], [], [], []
        missing = 0
        try:
            for w in wins:
                history, future, actual = split(frame, contract, w)
                kwargs = {"seasons": ds.mstl_seasons} if name == "mstl" else {}
                start = time.perf_counter()
                fc = fn(history, future, contract, **kwargs)
                seconds.append(time.perf_counter() - start)
                bands = [c for c in ("p10", "p90") if c in fc.columns]
                joined = actual.join(fc.select(*keys, t, FORECAST, *bands), on=[*keys, t], how="left")
                missing += joined[FORECAST].null_count()
                joined = joined.filter(pl.col(FORECAST).is_not_null())
                a = joined[y].to_numpy()
                f = np.clip(joined[FORECAST].to_numpy(), 0, None)
                per_window.append(score(a, f)["wape"])
                if len(bands) == 2:
                    inside_all.append(((joined[y] >= joined["p10"]) & (joined[y] <= joined["p90"])).to_numpy())
                actual_all.append(a)
                fc_all.append(f)
            pooled = score(np.concatenate(actual_all), np.concatenate(fc_all))
            cover = float(np.concatenate(inside_all).mean()) if inside_all else None
            out["methods"][name] = {**pooled, "missing_forecasts": missing, "seconds": seconds,
                                    "seconds_median": float(np.median(seconds)), "window_wape": per_window,
                                    "p10_p90_coverage": cover,
                                    "window_p10_p90_coverage": [float(x.mean()) for x in inside_all],
                                    "window_rows": [int(x.size) for x in actual_all]}
            say(f"{ds.name:>13} {name:>14}: WAPE {pooled['wape']:.4f}  MAE {pooled['mae']:.2f}  "
                f"{'' if cover is None else f'p10-p90 covers {100 * cover:.1f}%  '}"
                f"{np.median(seconds):.2f} s/window{f'  ({missing} rows without a forecast)' if missing else ''}")
        except Exception as exc:  # noqa: BLE001 - one method failing must not hide the others
            msg = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
            out["methods"][name] = {"error": msg}
            say(f"{ds.name:>13} {name:>14}: FAILED {msg}")
    return out


def run(quick: bool = False, datasets: list[str] | None = None, methods: list[str] | None = None,
        windows_override: int | None = None) -> dict[str, Any]:
    results: dict[str, Any] = {"datasets": {}}
    for name in datasets or list(DATASETS):
        ds = DATASETS[name]
        try:
            contract = ds.contract()
            frame = ds.load()
        except Exception as exc:  # noqa: BLE001
            results["datasets"][name] = {"error": f"loading: {type(exc).__name__}: {exc}"}
            say(f"{name}: could not load: {exc}")
            continue
        n = windows_override or (2 if quick else ds.windows)
        say(f"{name}: {frame.height:,} rows, {n} windows of {contract.horizon} periods")
        results["datasets"][name] = backtest(ds, frame, contract, methods or list(METHODS), n)
    return results


# ====================================================================== the table
def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, d in results.get("datasets", {}).items():
        if "error" in d:
            rows.append([name, "all", "failed: " + d["error"][:80], "", "", "", "", ""])
            continue
        naive = d["methods"].get("seasonal_naive", {}).get("wape")
        for m, r in d["methods"].items():
            if "error" in r:
                rows.append([name, m, "failed: " + r["error"][:100], "", "", "", "", ""])
                continue
            vs = "" if naive is None or m == "seasonal_naive" else f"{(r['wape'] / naive - 1) * 100:+.0f}%"
            cover = r.get("p10_p90_coverage")
            rows.append([name, m, f"{r['wape']:.4f}", "" if cover is None else f"{100 * cover:.1f}%", f"{r['mae']:.2f}",
                         vs, f"{r['seconds_median']:.2f}",
                         f"{r['rows']:,}" + (f" ({r['missing_forecasts']} missing)" if r["missing_forecasts"] else "")])
    return rows


HEAD = ["data set", "method", "WAPE", "p10-p90 covers (nominal 80%)", "MAE", "vs seasonal naive", "fit+forecast s / window (median)", "rows scored"]


def render(results: dict[str, Any]) -> str:
    """The accuracy table, Markdown-shaped (``freshet.tables``): for the terminal and for the .md file alike."""
    return tables.render(tables.table(HEAD, table_rows(results), right=HEAD[2:]))


def main(argv: list[str] | None = None) -> int:
    import json

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", action="append", choices=list(DATASETS))
    parser.add_argument("--method", action="append", choices=list(METHODS))
    parser.add_argument("--windows", type=int, help="rolling origins per data set (default: per data set)")
    parser.add_argument("--quick", action="store_true", help="2 windows per data set")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "accuracy.json")
    parser.add_argument("--merge", type=Path, nargs="+",
                        help="only combine these results files (a later file's methods replace an earlier's) and print")
    args = parser.parse_args(argv)
    if args.merge:
        results = {"datasets": {}, "merged_from": [str(p) for p in args.merge]}
        for p in args.merge:
            doc = json.loads(p.read_text())
            for name, d in doc["datasets"].items():
                if name in results["datasets"] and "methods" in d and "methods" in results["datasets"][name]:
                    results["datasets"][name]["methods"].update(d["methods"])
                else:
                    results["datasets"][name] = d
            results.setdefault("load", []).append({"file": str(p), "before": doc.get("load_before"),
                                                   "after": doc.get("load_after"), "elapsed_s": doc.get("elapsed_s")})
        order = list(METHODS)
        for d in results["datasets"].values():
            if "methods" in d:
                d["methods"] = {m: d["methods"][m] for m in order if m in d["methods"]}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2, default=str))
        print(render(results))
        return 0
    load_before = os.getloadavg()
    start = time.monotonic()
    results = run(args.quick, args.dataset, args.method, args.windows)
    results["elapsed_s"] = round(time.monotonic() - start, 1)
    results["load_before"] = [round(x, 2) for x in load_before]
    results["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, default=str))
    print()
    print(render(results))
    print(f"\n{results['elapsed_s']:.0f} s; load average before {results['load_before']}, after "
          f"{results['load_after']}; results in {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
