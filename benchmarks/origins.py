"""Origin-relative features, training origins and the serving refit, chosen on development windows.

    .venv/bin/python benchmarks/origins.py                         # every variant on every data set
    .venv/bin/python benchmarks/origins.py --variant stack2 --dataset taylor
    PYTHONPATH=/path/to/older/checkout/src .venv/bin/python benchmarks/origins.py --variant shipped  # an older library

For each data set of ``benchmarks/accuracy.py`` freshet runs on its rolling-origin windows under
each variant (a module setting of the library switched here, as ``benchmarks/intervals.py``
does); the older half of the windows is the development set choices are made on, the newer half
is printed for information only. Bikeshare's measured weather is declared ``observed`` here (a
user does not know tomorrow's measured weather; the shipped contract declares it known).

Variants: ``shipped`` (the library as it is), ``stack2`` / ``stack4`` / ``stackall`` (training rows
repeated with 2, 4 or every origin), ``full_refit`` (the serving model refit on every row instead
of continued from the evaluated one), ``no_refit`` (the evaluated model served as it is),
``continue_all_refit`` (continued on every row), ``origin_lag0`` (only the target at the origin
among the origin lags), ``spreadN`` (every N-th window of the training span validates too, for
early stopping over every season). Figures: BENCHMARKS.md (issue 21).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402

from freshet.data.contracts import Contract  # noqa: E402

WEATHER = ("weathersit", "temp", "hum", "windspeed")


def honest(name: str, contract: Contract) -> Contract:
    """The contract as a user would declare it: measured weather is observed, not known."""
    if name != "bikeshare":
        return contract
    known = tuple(c for c in contract.exogenous if c not in WEATHER)
    return Contract(**{**contract.__dict__, "exogenous": known, "observed": (*contract.observed, *WEATHER)})


def apply(variant: str) -> None:
    """Switch the library's module settings to ``variant`` (``shipped``: leave them)."""
    if variant == "shipped":
        return
    from freshet.modeling import origins as O
    from freshet.modeling import training as T

    stacks = {"stack2": 2, "stack4": 4, "stackall": 10_000}
    if variant in stacks:
        O.TRAIN_STEPS_PER_ROW = stacks[variant]
    elif variant in ("full_refit", "no_refit", "continue_all_refit"):
        T.REFIT = variant.removesuffix("_refit")
    elif variant == "origin_lag0":
        O.ORIGIN_LAGS = (0,)
    elif variant.startswith("spread"):
        O.VALIDATION_EVERY = int(variant.removeprefix("spread"))
    else:
        raise SystemExit(f"unknown variant {variant!r}")


def actual_sums(ds: A.DataSet, frame, contract: Contract) -> np.ndarray:
    """Sum of |actual| of each window: the weights that pool per-window WAPEs into the WAPE of their rows."""
    wins = A.windows(frame, contract, ds.windows, ds.spacing)
    return np.array([float(A.split(frame, contract, w)[2][contract.target].abs().sum()) for w in wins])


def halves(result: dict, weights: np.ndarray) -> dict:
    """WAPE and p10-p90 coverage of the older (development) and newer (final) half of the windows."""
    w, rows = np.array(result["window_wape"]), np.array(result["window_rows"])
    cov = np.array(result["window_p10_p90_coverage"] or [np.nan] * len(w))
    half = len(w) // 2
    pool = lambda x, r: float((x * r).sum() / r.sum())  # noqa: E731
    return {"dev_wape": pool(w[:half], weights[:half]), "final_wape": pool(w[half:], weights[half:]),
            "dev_cover": pool(cov[:half], rows[:half]), "final_cover": pool(cov[half:], rows[half:]),
            "seconds": result["seconds_median"], "window_wape": result["window_wape"],
            "window_p10_p90_coverage": result["window_p10_p90_coverage"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="shipped")
    parser.add_argument("--dataset", action="append", choices=list(A.DATASETS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    apply(args.variant)
    out = {}
    for name in args.dataset or list(A.DATASETS):
        ds = A.DATASETS[name]
        contract, frame = honest(name, ds.contract()), ds.load()
        got = A.backtest(ds, frame, contract, ["freshet", "seasonal_naive"], ds.windows)["methods"]
        weights = actual_sums(ds, frame, contract)
        out[name] = {m: halves(r, weights) for m, r in got.items()}
        f = out[name]["freshet"]
        print(f"| {name} | {args.variant} | {f['dev_wape']:.4f} | {100 * f['dev_cover']:.1f}% | "
              f"{f['final_wape']:.4f} | {100 * f['final_cover']:.1f}% | "
              f"{out[name]['seasonal_naive']['dev_wape']:.4f} | {f['seconds']:.1f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
