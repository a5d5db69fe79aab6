"""How a forecast range's residuals are scaled, chosen on development windows, reported on later ones.

    .venv/bin/python benchmarks/intervals.py            # both scalings on every real data set (a few minutes)

``freshet.modeling.intervals.SCALE_MODE`` decides the unit of a row's residual: ``level`` (the
series' mean |target| over the two seasons before the origin: one width for every hour of a day)
or ``point`` (the forecast itself, at least a tenth of that level: wider where more is expected).
For each real data set of ``benchmarks/accuracy.py``, freshet runs on its rolling-origin windows
under each mode; the first half of the windows (the older ones) is the development set the choice
is made on, the second half the final set that is reported. Printed: the nominal-80% interval's
coverage (p10-p90) on each half, and the WAPE (the point forecast does not depend on the mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402

from freshet.modeling import intervals as I  # noqa: E402

REAL = ("bikeshare", "taylor")


def halves(result: dict) -> tuple[float, float]:
    cov, rows = np.array(result["window_p10_p90_coverage"]), np.array(result["window_rows"])
    half = len(cov) // 2
    pooled = lambda c, r: float((c * r).sum() / r.sum())  # noqa: E731
    return pooled(cov[:half], rows[:half]), pooled(cov[half:], rows[half:])


def main(datasets: list[str]) -> int:
    rows = []
    for name in datasets:
        ds = A.DATASETS[name]
        contract, frame = ds.contract(), ds.load()
        for mode in ("level", "point"):
            I.SCALE_MODE = mode
            out = A.backtest(ds, frame, contract, ["freshet"], ds.windows)["methods"]["freshet"]
            dev, final = halves(out)
            rows.append((name, mode, dev, final, out["wape"], len(out["window_rows"])))
            A.say(f"{name} {mode}: development {100 * dev:.1f}%, final {100 * final:.1f}%")
    print("\n| data set | scale | windows (dev + final) | p10-p90 coverage, development | p10-p90 coverage, final | WAPE |")
    print("|---|---|---|---|---|---|")
    for name, mode, dev, final, wape, n in rows:
        print(f"| {name} | {mode} | {n // 2} + {n - n // 2} | {100 * dev:.1f}% | {100 * final:.1f}% | {wape:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or [*REAL, "retail_sales"]))
