"""One measured job in a fresh process: ``python benchmarks/child.py JOB 'JSON ARGS'``.

Prints one JSON line: the job's own result plus ``rss_base`` (RSS when the measured
work started, after imports and setup), ``maxrss`` (peak RSS of the process) and
``peak_above_base``, all in bytes, and the CPU seconds spent after the base mark.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout, for flows/

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def current_rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Meter:
    """Marks where the measured work starts (after imports and untimed setup)."""

    def __init__(self) -> None:
        self.rss_base = current_rss()
        self.cpu_base = time.process_time()
        self.max_stage_peak = 0

    def base(self) -> None:
        self.rss_base = current_rss()
        self.cpu_base = time.process_time()

    def rss(self) -> int:
        return current_rss()

    def stage_peak(self) -> int | None:
        """Peak RSS since the previous call (VmHWM, then reset through /proc/self/clear_refs)."""
        try:
            with open("/proc/self/status") as fh:
                hwm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmHWM:"))
            # resetting VmHWM also resets what getrusage reports as ru_maxrss: keep the max here
            self.max_stage_peak = max(self.max_stage_peak, hwm)
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return hwm
        except (OSError, StopIteration):
            return None


def main() -> None:
    job, args = sys.argv[1], json.loads(sys.argv[2])
    group, name = job.split(".", 1)
    module = __import__({"data": "data", "ingest": "ingestion", "train": "training", "scale": "training"}[group])
    fn = getattr(module, f"job_{group}_{name}")
    meter = Meter()
    result = fn(args, meter)
    maxrss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, meter.max_stage_peak)
    result.update({
        "rss_base": meter.rss_base,
        "maxrss": maxrss,
        "peak_above_base": max(0, maxrss - meter.rss_base),
        "cpu_seconds": round(time.process_time() - meter.cpu_base, 3),
    })
    print(json.dumps(result, default=str), flush=True)


if __name__ == "__main__":
    main()
