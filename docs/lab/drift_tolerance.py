"""Measure the "on drift" retraining policy's drift_tolerance on a folder of daily files (the README's "Live accuracy").

For each tolerance, replays the folder's last ``--days`` days with event-driven retraining and "on drift"
(forecasts on every landing, as deployed) and prints trainings, CPU seconds and in-hand WAPE::

    python docs/lab/drift_tolerance.py /tmp/taylor docs/lab/taylor.toml --tolerances 0.1,0.25,0.5,1
"""

from __future__ import annotations

import argparse
import dataclasses
from datetime import timedelta
from pathlib import Path

from freshet.lab.engine import lab_settings
from freshet.lab.policies import EventDriven, OnDrift
from freshet.lab.run import run_lab
from freshet.lab.traces import dir_trace


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("contract", type=Path)
    ap.add_argument("--days", type=int, default=28)
    ap.add_argument("--tolerances", default="0.1,0.25,0.5,1")
    args = ap.parse_args()
    print("| tolerance | policy | trainings | CPU s | in-hand WAPE | covered % |\n|---|---|---:|---:|---:|---:|")
    for k, tol in enumerate(float(t) for t in args.tolerances.split(",")):
        trace, source, contracts = dir_trace(args.folder, args.contract, days=args.days, delay=timedelta(hours=1))
        contracts = {d: dataclasses.replace(c, drift_tolerance=tol) for d, c in contracts.items()}
        policies = [OnDrift()] if k else [EventDriven(), OnDrift()]
        report = run_lab(trace, source, contracts, policies, lab_settings())
        for p in report["policies"]:
            if p["forecast"] != "on landing" or p["retrain"] == "-":
                continue
            t = p["total"]
            covered = t["in_hand"]["covered"]
            print(f"| {tol:g} | {p['retrain']} | {t['trainings']} | {t['cpu_seconds']:.1f} | "
                  f"{t['in_hand']['wape']:.4f} | {100 * covered:.0f} |", flush=True)


if __name__ == "__main__":
    main()
