"""The accuracy benchmark with another unit for the interval's residuals (issue 18's pizza cell).

    .venv/bin/python benchmarks/interval_scale.py --scale sqrt --split dev --method freshet --dataset pizza

Runs ``benchmarks/accuracy.py`` (every other argument is passed on) with ``freshet.modeling.intervals.row_scale``
replaced: ``point`` is the shipped unit (the forecast, at least a tenth of the series' level); ``sqrt`` is its
square root, a count-shaped unit (a Poisson count's spread grows with the square root of its mean), so a large
series' p10 can rise above 0 while a small, zero-heavy series' stays at 0. Points are unchanged: only the
p10-p90 column can move. A measurement for choosing on the development windows, not a shipped setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["point", "sqrt"], required=True)
    args, rest = parser.parse_known_args(argv)
    from freshet.modeling import intervals

    shipped = intervals.row_scale
    if args.scale == "sqrt":
        intervals.row_scale = lambda point, level: np.sqrt(shipped(point, level))
    import accuracy

    return accuracy.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
