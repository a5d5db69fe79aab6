"""The accuracy benchmark with another unit for the interval's residuals (issue 18's pizza cell).

    .venv/bin/python benchmarks/interval_scale.py --scale point --split dev --method freshet --dataset pizza

Runs ``benchmarks/accuracy.py`` (every other argument is passed on) with
``freshet.modeling.intervals.SCALE_MODE`` set: ``sqrt`` is the shipped unit (the square root of the forecast,
the forecast at least a tenth of the series' level), a count-shaped unit, so a large series' p10 can rise above 0
while a small, zero-heavy series' stays at 0; ``point`` is that floored forecast itself (shipped before), ``level``
the series' level alone. Points are unchanged: only the p10-p90 column can move. A measurement for choosing on
the development windows, not a setting.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    from freshet.modeling import intervals

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=intervals.SCALE_MODES, required=True)
    args, rest = parser.parse_known_args(argv)
    intervals.SCALE_MODE = args.scale
    import accuracy

    return accuracy.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
