"""Origin-relative features, training origins and the serving refit, chosen on development windows.

    .venv/bin/python benchmarks/origins.py                         # every variant on every data set
    .venv/bin/python benchmarks/origins.py --variant stack2 --dataset taylor
    PYTHONPATH=/path/to/older/checkout/src .venv/bin/python benchmarks/origins.py --variant shipped  # an older library

For each data set of ``benchmarks/accuracy.py`` freshet and seasonal naive run on the
benchmark's development split (``accuracy.run(split="dev")``: windows strictly before the final,
reported ones) under each variant (a module setting of the library switched here, as
``benchmarks/intervals.py`` does). The benchmark's contracts declare measured weather observed.

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

sys.path.insert(0, str(Path(__file__).resolve().parent))
import accuracy as A  # noqa: E402

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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="shipped")
    parser.add_argument("--dataset", action="append", choices=list(A.DATASETS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    apply(args.variant)
    got = A.run("dev", args.dataset, None, ["freshet", "seasonal_naive"])
    print("| data set | protocol | variant | freshet dev WAPE | p10-p90 covers | seasonal naive |")
    for name, d in got["datasets"].items():
        for proto, r in d["protocols"].items():
            f, sn = r["models"].get("freshet", {}), r["models"].get("seasonal_naive", {})
            cover = f.get("coverage")
            print(f"| {name} | {proto} | {args.variant} | {f.get('wape', float('nan')):.4f} | "
                  f"{'' if cover is None else f'{100 * cover:.1f}%'} | {sn.get('wape', float('nan')):.4f} |", flush=True)
    if args.out:
        args.out.write_text(json.dumps(got, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
