"""Shared helpers for the benchmarks: statistics, measured child processes, cached data, machine facts.

Every timed piece of work that also reports memory runs in a fresh child process
(``benchmarks/child.py``), so one measurement's allocations never inflate the next
one's peak. A child reports its peak RSS (``ru_maxrss``) and its RSS when the work
started (after imports and setup), so "peak memory" below always means the peak
*above* that baseline. The parent samples the child's RSS and stops it at a guard
(``MEMORY_GUARD``) so a benchmark can never take the machine down.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "benchmarks"
RESULTS = BENCH / "results"
CACHE = RESULTS / "cache"
GiB = 1 << 30


def fmt_bytes(x: float | None) -> str:
    """A byte count for a table: GiB from half a GiB up, MiB below; "n/a" when unknown."""
    return "n/a" if x is None else (f"{x / GiB:.2f} GiB" if x >= GiB / 2 else f"{x / (1 << 20):.0f} MiB")


def burst_valid(bu: dict) -> bool:
    """Whether a burst result measured anything: both net CPU figures positive (a negative one means the idle rate
    taken before it included other work)."""
    return min(bu["burst"]["worker_cpu_net_s"], bu["single"]["worker_cpu_net_s"]) > 0


# moto accepts any credentials; never real ones.
FAKE_AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}
# Stop a child whose resident memory passes this (the machine has 24 GiB and is shared).
MEMORY_GUARD = int(float(os.environ.get("FRESHET_BENCH_MEMORY_GUARD_GIB", "14")) * GiB)


def median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def percentile(xs: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (q in 0..100), as numpy's default."""
    xs = sorted(x for x in xs if x is not None)
    if not xs:
        return None
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", flush=True)


class ChildFailed(RuntimeError):
    """A measured child process failed, or was stopped at the memory or time guard."""


def run_child(job: str, args: dict[str, Any], timeout: float = 1800, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run ``child.py JOB ARGS`` in a fresh process; return its JSON result (peak RSS included).

    Raises ``ChildFailed`` with the reason when the child fails or hits a guard.
    """
    import psutil

    cmd = [sys.executable, str(BENCH / "child.py"), job, json.dumps(args)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})}, cwd=REPO)
    ps = psutil.Process(proc.pid)
    start = time.monotonic()
    peak_sampled = 0
    reason = None
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss
        except psutil.Error:
            rss = 0
        peak_sampled = max(peak_sampled, rss)
        if rss > MEMORY_GUARD:
            reason = f"stopped at the memory guard: RSS {rss / GiB:.1f} GiB > {MEMORY_GUARD / GiB:.0f} GiB"
        elif time.monotonic() - start > timeout:
            reason = f"stopped at the time guard ({timeout:.0f} s)"
        if reason:
            proc.kill()  # our own child, by its Popen handle
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    if reason:
        raise ChildFailed(f"{job}: {reason} (peak sampled {peak_sampled / GiB:.1f} GiB)")
    if proc.returncode != 0:
        tail = "\n".join(err.strip().splitlines()[-12:])
        raise ChildFailed(f"{job} exited {proc.returncode}:\n{tail}")
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if not lines:
        raise ChildFailed(f"{job}: no result line in its output:\n{out[-2000:]}\n{err[-2000:]}")
    return json.loads(lines[-1])


def repeat_child(job: str, args: dict[str, Any], repeats: int, **kw: Any) -> list[dict[str, Any]]:
    return [run_child(job, args, **kw) for _ in range(repeats)]


def machine() -> dict[str, Any]:
    """The facts BENCHMARKS.md states about the machine a run happened on."""
    import importlib.metadata as md

    def version(name: str) -> str | None:
        try:
            return md.version(name)
        except md.PackageNotFoundError:
            return None

    mem_total = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_total = round(int(line.split()[1]) / (1 << 20), 1)
    except OSError:
        pass
    cpu = None
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), None)
    except OSError:
        pass
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "memory_gib": mem_total,
        "os": platform.platform(),
        "python": platform.python_version(),
        "versions": {n: version(n) for n in ("prefect", "polars", "xgboost", "numpy", "pandas", "pyarrow",
                                              "s3fs", "moto", "freshet")},
    }


def load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def commit() -> str:
    """The checkout's commit (short hash and subject), "+ local changes" when the tree differs from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], capture_output=True, text=True, timeout=10,
                              cwd=Path(__file__).resolve().parent).stdout.strip()

    try:
        head = git("log", "-1", "--format=%h \"%s\"")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return ""
    return head + (" + local changes" if dirty else "")


def uptime_line() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


# --------------------------------------------------------------------- data
def shape_for(rows: int, days: int = 730) -> dict[str, int]:
    """generate_retail_sales arguments giving about ``rows`` rows (2% of days are missing)."""
    series = max(1, round(rows / (days * 0.98)))
    items = 40 if series <= 4000 else 100
    stores = max(1, round(series / items))
    return {"stores": stores, "items": min(items, series), "days": days}


def cached_data(kind: str, rows: int) -> dict[str, Any]:
    """A cached landing CSV (``kind='csv'``) or curated parquet (``'parquet'``) of about ``rows`` rows.

    Made once in a child process and kept under benchmarks/results/cache/.
    """
    CACHE.mkdir(parents=True, exist_ok=True)
    shape = shape_for(rows)
    name = f"retail-{shape['stores']}x{shape['items']}x{shape['days']}.{kind}"
    path = CACHE / name
    meta_path = path.with_suffix(path.suffix + ".json")
    if not (path.exists() and meta_path.exists()):
        say(f"making {name} (about {rows:,} rows)")
        run_child("data.make", {"kind": kind, "path": str(path), **shape}, timeout=1800)
    meta = json.loads(meta_path.read_text())
    return {"path": str(path), **meta}
