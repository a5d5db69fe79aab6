"""How a forecast range's residuals are scaled, chosen on development windows, reported on later ones.

    .venv/bin/python benchmarks/intervals.py            # every scaling on every real data set (a few minutes)

``freshet.modeling.intervals.SCALE_MODE`` decides the unit of a row's residual: ``level`` (the
series' mean |target| over the two seasons before the origin: one width for every hour of a day),
``point`` (the forecast itself, at least a tenth of that level: wider where more is expected) or
``sqrt`` (the square root of ``point``: a count's spread).
For each real data set of ``benchmarks/accuracy.py``, freshet runs on the short (refit) windows of
both splits under each mode: the development windows the choice is made on, and the final ones,
strictly later, that are reported. Printed: the nominal-80% interval's
coverage (p10-p90) on each half, and the WAPE (the point forecast does not depend on the mode).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402
from accuracy_data import DATASETS, plan, upto  # noqa: E402

from freshet.modeling import intervals as I  # noqa: E402

REAL = ("bikeshare", "taylor", "pizza", "gasoline")


def main(datasets: list[str]) -> int:
    rows = []
    for name in datasets:
        ds = DATASETS[name]
        contract, full = ds.contract(), ds.load()
        for mode in I.SCALE_MODES:
            I.SCALE_MODE = mode
            got = {}
            for split in ("dev", "final"):
                p = plan(full[contract.time_column].max(), contract, ds, split)
                out = A.run_protocol(upto(full, contract, p.end), contract, ds, p.short, True, ["freshet"])
                got[split] = out["models"]["freshet"]
            rows.append((name, mode, got["dev"]["coverage"], got["final"]["coverage"], got["final"]["wape"]))
            A.say(f"{name} {mode}: development {100 * rows[-1][2]:.1f}%, final {100 * rows[-1][3]:.1f}%")
    print("\n| data set | scale | p10-p90 coverage, development | p10-p90 coverage, final | WAPE, final |")
    print("|---|---|---|---|---|")
    for name, mode, dev, final, wape in rows:
        print(f"| {name} | {mode} | {100 * dev:.1f}% | {100 * final:.1f}% | {wape:.4f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] or list(REAL)))
