"""Which ``on_missing_future`` to default to: the model with the input missing, or the fallback ladder.

    .venv/bin/python benchmarks/missing_future.py        # prints the table (a few minutes on 2 cores)

For each data set and short window of the accuracy benchmark's dev split (``accuracy_data.plan``), freshet trains once on the history
(``train_model``), then forecasts the window three times from the same model: with every future
value of the known columns (the reference), and with the known values of a random quarter of the
window's rows removed, under ``on_missing_future = "missing"`` (XGBoost sees them as missing) and
``"fallback"`` (those rows by seasonal naive, the newest value whole seasons back). Scored: WAPE on
the removed rows only, pooled over the windows. Data sets with columns that are truly known in
advance: Bikeshare's calendar flags (``workingday``, ``holiday``; the weather is observed, as a user
has it) and the generated retail data's price and promotion plan.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402
from accuracy_data import DATASETS, inputs, plan  # noqa: E402

from freshet.modeling.forecast import forecast_frame  # noqa: E402
from freshet.modeling.training import train_model  # noqa: E402
from freshet.settings import Settings  # noqa: E402

SHARE_REMOVED = 0.25


def retail():
    """freshet's generated retail data (price and promotion known) with its bundled contract."""
    import freshet.data as data_pkg
    from freshet.data.contracts import parse_contract
    from freshet.data.generate import generate_retail_sales

    contract = parse_contract(Path(data_pkg.__file__).parent / "bundled_contracts" / "retail_sales.toml")
    return contract, generate_retail_sales(seed=7, stores=4, items=10, days=730)


CASES = {
    "bikeshare (calendar flags known)": lambda: (DATASETS["bikeshare"].contract(), DATASETS["bikeshare"].load()),
    "pizza (category known)": lambda: (DATASETS["pizza"].contract(), DATASETS["pizza"].load()),
    "retail_sales (price, promo known)": retail,
}


def run_case(contract, frame: pl.DataFrame, seed: int = 0) -> dict[str, float]:
    """The short windows of the accuracy benchmark's dev split (``accuracy_data.plan``; generated data: 8 weeks)."""
    rng = np.random.default_rng(seed)
    keys, t, y = [*contract.series_keys], contract.time_column, contract.target
    acts, preds = [], {"complete inputs": [], "missing": [], "fallback": []}
    ds = DATASETS.get(contract.name, DATASETS["pizza"])
    for w in plan(frame[t].max(), contract, ds, "dev").short:
        history, future, actual = inputs(frame, contract, w)
        result = train_model(history, contract, None, Settings())
        removed = future.sample(fraction=SHARE_REMOVED, seed=int(rng.integers(1 << 31))).select(*keys, t)
        holed = future.join(removed, on=[*keys, t], how="anti")
        got = {}
        for name, c, fut in (("complete inputs", contract, future),
                             ("missing", dataclasses.replace(contract, on_missing_future="missing"), holed),
                             ("fallback", dataclasses.replace(contract, on_missing_future="fallback"), holed)):
            fc, _ = forecast_frame(history, c, result.booster, result.meta, future=fut)
            got[name] = (removed.join(actual, on=[*keys, t], maintain_order="left")
                         .join(fc, on=[*keys, t], how="left", maintain_order="left"))
        acts.append(got["missing"][y].to_numpy())
        for name, frame_ in got.items():
            preds[name].append(frame_["forecast"].to_numpy())
        A.say(f"window {w.origin}: {removed.height} rows without their known values; methods "
              f"{dict(got['fallback'].group_by('method').len().iter_rows())} under fallback")
    actual = np.concatenate(acts)
    return {name: A.wape(actual, np.concatenate(p)) for name, p in preds.items()} | {"rows": int(actual.size)}


def main() -> int:
    rows = []
    for name, case in CASES.items():
        out = run_case(*case())
        rows.append((name, out))
        A.say(f"{name}: {out}")
    print("\n| data set | rows scored | WAPE, complete inputs (reference) | on_missing_future = missing | = fallback |")
    print("|---|---|---|---|---|")
    for name, o in rows:
        print(f"| {name} | {o['rows']} | {o['complete inputs']:.4f} | {o['missing']:.4f} | {o['fallback']:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
