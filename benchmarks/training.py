"""Training overhead, XGBoost settings, and how training cost grows with data (scale).

- ``overhead``: the ``train`` flow's fit stage (``freshet.modeling.model.fit``: polars -> float32
  matrix -> QuantileDMatrix -> ``xgb.train`` with early stopping) against a bare
  ``xgb.DMatrix`` + ``xgb.train`` on the same numpy matrix, same params, same rounds and
  the same validation set evaluated every round. Both run in one process, alternating.
- ``sweep``: fit time and holdout WAPE of a few settings (threads, depth, learning rate),
  to say what each shipped default buys.
- ``scale``: load + features + split + fit of 1, 10 and 30 M curated rows in a fresh
  process each, with its peak memory per stage, through the ``train`` flow's own task
  functions. The fit there is capped at a fixed number of rounds so every size does the
  same boosting work per row.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from typing import Any

from common import ChildFailed, cached_data, median, run_child, say

DATASET = "retail_sales"


# ====================================================================== child side
def _setup(args: dict):
    """A throwaway lake whose one curated partition is the cached parquet file (hard link)."""
    from freshet.data.contracts import load_contract
    from freshet.data.lake import Lake
    from freshet.settings import Settings

    settings = Settings(lake_url=args["lake"], **args.get("settings", {}))
    lake = Lake.from_settings(settings)
    contract = load_contract(DATASET, settings.contracts_dir)
    sha = "bench" + os.path.basename(args["parquet"]).split(".")[0]
    path = lake.curated_path(DATASET, sha)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if not os.path.exists(path):
        try:
            os.link(args["parquet"], path)
        except OSError:
            shutil.copyfile(args["parquet"], path)
    return settings, lake, contract, [{"content_hash": sha}]


def _prepare_shipped(args: dict, meter, marks: dict | None = None):
    """What train_once does before fit, by the flow's own step functions (flows/train.py's load, then
    ``training.prepare`` as ``training.train_model`` calls it): a lazy load plus one stats scan, then
    features and split, a slice of series at a time."""
    import flows.train as T
    from freshet.modeling import training as MT

    settings, lake, contract, entries = _setup(args)
    meter.base()
    timings: dict[str, float] = {}
    if marks is not None:
        meter.stage_peak()
    start = time.perf_counter()
    data, stats = T.load_data(contract, entries, settings)
    timings["load"] = time.perf_counter() - start
    if marks is not None:
        marks["rss_after_load"] = meter.rss()
        marks["peak_in_load"] = meter.stage_peak()
    start = time.perf_counter()
    prep = MT.prepare(data, contract, settings, stats)
    train, valid, holdout = prep.train, prep.valid, prep.backtest
    timings["features"] = time.perf_counter() - start  # spec, features and the time split, as the flow times them
    timings["spec"] = prep.spec
    if marks is not None:
        marks["rss_after_features"] = meter.rss()
        marks["peak_in_features"] = meter.stage_peak()
    return settings, contract, stats, train, valid, holdout, timings


def _wape(booster, frame, features, target) -> float:
    from freshet.modeling import model as M

    return M.metrics(frame[target].to_numpy(), M.predict(booster, frame, features))["wape"]


def job_train_overhead(args: dict, meter) -> dict:
    import polars as pl
    import xgboost as xgb

    from freshet.modeling import features as F
    from freshet.modeling import model as M

    settings, contract, stats, train, valid, holdout, timings = _prepare_shipped(args, meter)
    cols, target = F.feature_columns(contract, timings.pop("spec")), contract.target
    params = M.xgb_params(settings)
    max_rounds = args.get("max_rounds") or settings.xgb_max_rounds
    x_train, y_train = M.to_matrix(train, cols), train[target].to_numpy()
    x_valid, y_valid = M.to_matrix(valid, cols), valid[target].to_numpy()
    def shipped_fit():
        return M.fit(train, valid, cols, target, params, max_rounds, settings.xgb_early_stopping_rounds)

    def bare_fit(rounds):
        dtrain = xgb.DMatrix(x_train, label=y_train, feature_names=cols)
        dvalid = xgb.DMatrix(x_valid, label=y_valid, feature_names=cols)
        booster = xgb.train(params, dtrain, num_boost_round=rounds, evals=[(dvalid, "valid")], verbose_eval=False)
        assert booster.num_boosted_rounds() == rounds

    def measured(fn, *a):
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*a)
        return out, time.perf_counter() - wall, time.process_time() - cpu

    rounds = shipped_fit().rounds  # warm-up; fixes the rounds the bare fit gets
    # the serving refit: every row (train, validation, backtest), the evaluation's rounds, no early stopping
    everything = pl.concat([train, valid, holdout.select(train.columns)], how="vertical_relaxed")
    refit = M.fit(everything, None, cols, target, params, rounds, None)
    shipped, bare, shipped_cpu, bare_cpu = [], [], [], []
    for i in range(args["repeats"]):
        # adjacent pairs, alternating which goes first: each pair's ratio sees the same machine load
        order = ("shipped", "bare") if i % 2 == 0 else ("bare", "shipped")
        for which in order:
            if which == "shipped":
                _, w, c = measured(shipped_fit)
                shipped.append(w)
                shipped_cpu.append(c)
            else:
                _, w, c = measured(bare_fit, rounds)
                bare.append(w)
                bare_cpu.append(c)
    return {"rows_total": stats["rows"], "rows_train": train.height, "features": len(cols), "rounds": rounds,
            "max_rounds": max_rounds, "load_s": timings["load"], "features_s": timings["features"],
            "fit_s": shipped, "bare_s": bare, "fit_cpu_s": shipped_cpu,
            "bare_cpu_s": bare_cpu, "refit_s": refit.seconds, "rows_refit": everything.height,
            "nthread": params.get("nthread", "all cores")}


def job_train_sweep(args: dict, meter) -> dict:
    """Each config: a full shipped fit (early stopping), its time, rounds and holdout WAPE."""
    from freshet.modeling import features as F
    from freshet.modeling import model as M
    from freshet.settings import Settings

    base, contract, _, train, valid, holdout, timings = _prepare_shipped(args, meter)
    cols = F.feature_columns(contract, timings.pop("spec"))
    scored = holdout.filter(holdout[f"lag_{F.seasonal_lag(contract)}"].is_not_null())
    out = []
    for config in args["configs"]:
        settings = Settings(lake_url=base.lake_url, **config)
        fitted = M.fit(train, valid, cols, contract.target, M.xgb_params(settings), settings.xgb_max_rounds,
                       settings.xgb_early_stopping_rounds)
        out.append({"config": config, "fit_s": fitted.seconds, "rounds": fitted.rounds,
                    "wape": _wape(fitted.booster, scored, cols, contract.target)})
    return {"rows_train": train.height, "runs": out}


def job_scale_shipped(args: dict, meter) -> dict:
    from freshet.modeling import features as F
    from freshet.modeling import model as M

    marks: dict[str, int] = {}
    settings, contract, stats, train, valid, holdout, timings = _prepare_shipped(args, meter, marks)
    cols = F.feature_columns(contract, timings.pop("spec"))
    fitted = M.fit(train, valid, cols, contract.target, M.xgb_params(settings), args["rounds"], args["rounds"] + 1)
    timings["fit"] = fitted.seconds
    marks["peak_in_fit"] = meter.stage_peak()
    return {"rows": stats["rows"], "rows_train": train.height, "rounds": fitted.rounds, "timings": timings,
            "slices": max(1, -(-stats["rows"] // F.ROWS_PER_FEATURE_SLICE)), **marks}


# ====================================================================== parent side
def _lake() -> str:
    return tempfile.mkdtemp(prefix="freshet-bench-train-")


def run_overhead(quick: bool) -> dict[str, Any]:
    rows = 100_000 if quick else 1_000_000
    data = cached_data("parquet", rows)
    lake = _lake()
    try:
        repeats = 2 if quick else 6
        max_rounds = 30 if quick else 50
        say(f"training overhead: {data['rows']:,} rows, shipped fit vs bare xgboost.train x{repeats} "
            f"(rounds capped at {max_rounds})")
        r = run_child("train.overhead", {"parquet": data["path"], "lake": lake, "repeats": repeats,
                                         "max_rounds": max_rounds}, timeout=3600)
        fit, bare = median(r["fit_s"]), median(r["bare_s"])
        pairs = [f / b for f, b in zip(r["fit_s"], r["bare_s"])]
        cpu_pairs = [f / b for f, b in zip(r["fit_cpu_s"], r["bare_cpu_s"])]
        r.update({"fit_median_s": fit, "bare_median_s": bare, "pair_ratios": pairs, "x_bare": median(pairs),
                  "x_bare_cpu": median(cpu_pairs),
                  "features_share_of_fit": r["features_s"] / fit,
                  "rows_per_s": r["rows_train"] / fit, "row_rounds_per_s": r["rows_train"] * r["rounds"] / fit})
        return r
    finally:
        shutil.rmtree(lake, ignore_errors=True)


SWEEP = [
    {},  # shipped defaults
    {"xgb_nthread": 1},
    {"xgb_max_depth": 6},
    {"xgb_learning_rate": 0.15},
]


def run_sweep(quick: bool) -> dict[str, Any]:
    rows = 100_000 if quick else 1_000_000
    data = cached_data("parquet", rows)
    lake = _lake()
    try:
        configs = SWEEP[:2] if quick else SWEEP
        say(f"xgboost settings sweep: {data['rows']:,} rows, {len(configs)} configs (one full fit each)")
        return run_child("train.sweep", {"parquet": data["path"], "lake": lake, "configs": configs}, timeout=3600)
    finally:
        shutil.rmtree(lake, ignore_errors=True)


def run_scale(quick: bool) -> dict[str, Any]:
    sizes = [100_000, 300_000] if quick else [1_000_000, 10_000_000, 30_000_000]
    rounds = 10
    out: dict[str, Any] = {"rounds": rounds, "sizes": []}
    last: dict | None = None
    for rows in sizes:
        data = cached_data("parquet", rows)
        entry: dict[str, Any] = {"rows": data["rows"], "parquet_bytes": data["bytes"]}
        projected = last["peak_above_base"] * data["rows"] / last["rows_total"] if last else None
        lake = _lake()
        say(f"scale {data['rows']:,} rows: load, features, split, fit {rounds} rounds")
        try:
            r = run_child("scale.shipped", {"parquet": data["path"], "lake": lake, "rounds": rounds},
                          timeout=900 if not quick else 300)
            r["total_s"] = sum(r["timings"].values())
            r["rows_total"] = data["rows"]
            r["projected_peak_from_previous_size"] = projected
            entry["shipped"] = last = r
        except ChildFailed as exc:
            entry["shipped"] = {"error": str(exc), "projected_peak_from_previous_size": projected}
        finally:
            shutil.rmtree(lake, ignore_errors=True)
        out["sizes"].append(entry)
    return out
