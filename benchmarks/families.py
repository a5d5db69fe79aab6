"""Model families on development windows: WAPE of XGBoost, the statistical family, the ensemble and the chosen one.

For each real data set of ``benchmarks/accuracy.py``, only the short windows of its development
split (``accuracy_data.plan(..., "dev")``: strictly before the final, reported windows, which are
never looked at here). Per window: ``train_model`` on the history up to the origin (default settings,
so the families compete on its own backtest), then ``forecast_frame`` of the window once per
family (the same trained model, its meta's ``family`` switched), scored on the window's actuals.
Bikeshare's measured weather is declared ``observed`` (a user does not have tomorrow's measured
weather); ``taylor_4w`` is taylor with only the 4 weeks before each origin (short, strongly seasonal).

    nice -n 10 .venv/bin/python benchmarks/families.py [bikeshare taylor taylor_4w]
"""

from __future__ import annotations

import statistics
import sys
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402
from accuracy_data import DATASETS, inputs, plan, upto  # noqa: E402

from freshet import tables  # noqa: E402
from freshet.modeling import families as FAM  # noqa: E402
from freshet.modeling.forecast import forecast_frame  # noqa: E402
from freshet.modeling.training import train_model  # noqa: E402
from freshet.settings import Settings  # noqa: E402


def main(names: list[str]) -> int:
    rows = []
    for name in names:
        ds = DATASETS[name.removesuffix("_4w")]  # bikeshare's contract declares the measured weather observed
        contract, frame = ds.contract(), ds.load()
        p = plan(frame[contract.time_column].max(), contract, ds, "dev")  # the accuracy benchmark's dev windows
        frame, dev = upto(frame, contract, p.end), p.short
        got: dict[str, list] = {}
        chosen, stats_s, train_s = [], [], []
        for w in dev:
            history, future, actual = inputs(frame, contract, w)
            if name.endswith("_4w"):
                history = history.filter(pl.col(contract.time_column) > w.origin - timedelta(weeks=4))
            start = time.perf_counter()
            result = train_model(history, contract, None, Settings())
            train_s.append(time.perf_counter() - start)
            fams = result.meta["families"]
            stats_s.append(sum(c["seconds"] for c in fams["candidates"] if c["family"] == FAM.STATS))
            chosen.append(fams["chosen"]["family"])
            best_stats = min((c for c in fams["candidates"] if c["family"] == FAM.STATS), key=lambda c: c["wape"],
                             default=None)
            variants = {"xgboost": FAM.XGBOOST, "chosen": result.meta["family"]}
            if best_stats:
                variants |= {"stats": FAM.STATS, "ensemble": FAM.ENSEMBLE}
            for label, fam in variants.items():
                meta = {**result.meta, "family": fam,
                        "recipe": FAM.recipe(fam, best_stats["model"] if best_stats else None, contract)}
                fc, _ = forecast_frame(history, contract, result.booster, meta, future=future)
                j = actual.join(fc, on=[*contract.series_keys, contract.time_column], how="left")
                got.setdefault(label, []).append((j[contract.target].to_numpy(), np.clip(j["forecast"].to_numpy(), 0, None)))
            A.say(f"{name} {w.origin}: chosen {result.meta['family']}, train {train_s[-1]:.1f} s (stats {stats_s[-1]:.1f} s)")
        wape = {k: A.wape(np.concatenate([a for a, _ in v]), np.concatenate([f for _, f in v])) for k, v in got.items()}
        rows.append([name, str(len(dev)), *(f"{wape[k]:.4f}" if k in wape else "n/a" for k in ("xgboost", "stats", "ensemble", "chosen")),
                     ", ".join(f"{k} {chosen.count(k)}" for k in sorted(set(chosen))),
                     f"{statistics.median(train_s):.1f}", f"{statistics.median(stats_s):.1f}"])
    print(tables.render(tables.table(["data set", "dev windows", "xgboost", "stats", "ensemble", "chosen", "chosen family",
                                      "train s (median)", "of which stats s"], rows)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or ["bikeshare", "taylor", "taylor_4w"]))
