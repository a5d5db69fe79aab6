"""Run freshet's benchmarks on the local stack, print a table, write JSON (and the table as markdown).

    .venv/bin/python benchmarks/run.py                 # everything (about 30 minutes on 2 cores)
    .venv/bin/python benchmarks/run.py --quick         # smaller sizes, fewer repeats (a smoke run, ~6 min)
    .venv/bin/python benchmarks/run.py --only ingestion --only training
    .venv/bin/python benchmarks/run.py --only accuracy   # forecast accuracy vs mlforecast and statsforecast's models
    .venv/bin/python benchmarks/run.py --only topologies --into benchmarks/results/latest.json
                                                       # re-run one that failed, into a full run's results

Results go to benchmarks/results/latest.json and latest.md (gitignored);
BENCHMARKS.md holds the committed table. Benchmarks are not tests: nothing here
asserts a timing, and ``make test`` runs none of it. Timings are medians of
several runs; comparisons are ratios measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # the checkout, for flows/
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

from common import GiB, RESULTS, burst_valid, commit, fmt_bytes, load_average, machine, say, uptime_line  # noqa: E402

from freshet import tables  # noqa: E402

# accuracy first: its figures are WAPE and CPU seconds, which other work on the machine does not change;
# the timings after it want the machine to themselves
NAMES = ["accuracy", "ingestion", "training", "scale", "trigger_latency", "freshness", "forecast", "burst", "topologies"]
LIVE = {"trigger_latency", "freshness", "forecast", "burst"}


def _run_offline(name: str, quick: bool) -> dict[str, Any]:
    import ingestion
    import training

    if name == "ingestion":
        return ingestion.run(quick)
    if name == "training":
        return {"overhead": training.run_overhead(quick), "sweep": training.run_sweep(quick)}
    if name == "scale":
        return training.run_scale(quick)
    if name == "topologies":  # starts and stops its own stacks, one topology at a time
        import topologies

        return topologies.run(quick)
    if name == "accuracy":
        import accuracy

        return accuracy.run("final", protocols=["short"] if quick else None)
    raise KeyError(name)


def run_all(selected: list[str], quick: bool, keep_stack: bool) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def guarded(name: str, fn: Callable[[], Any]) -> None:
        start = time.monotonic()
        try:
            results[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one failed benchmark must not hide the others
            traceback.print_exc()
            results[name] = {"error": f"{type(exc).__name__}: {exc}"}
        results[name]["elapsed_s"] = round(time.monotonic() - start, 1) if isinstance(results[name], dict) else None
        say(f"{name} done in {time.monotonic() - start:.0f} s")

    for name in [n for n in selected if n not in LIVE]:
        guarded(name, lambda name=name: _run_offline(name, quick))
    live_names = [n for n in selected if n in LIVE]
    if live_names:
        import live

        start = time.monotonic()
        try:
            with live.LiveStack(keep=keep_stack) as stack:
                results["stack_startup_s"] = round(stack.startup_s, 1)
                if "trigger_latency" in live_names:
                    guarded("trigger_latency", lambda: live.run_latency(stack, quick))
                if "freshness" in live_names:
                    guarded("freshness", lambda: live.run_freshness(stack, quick))
                if "forecast" in live_names:
                    import forecast

                    guarded("forecast", lambda: forecast.run_forecast_freshness(stack, quick))
                if "burst" in live_names:
                    guarded("burst", lambda: live.run_burst(stack, quick))
                if "trigger_latency" in live_names and "error" not in results["trigger_latency"] and not quick:
                    try:
                        results["trigger_latency"]["prefect_default_worker"] = live.run_latency_prefect_defaults(stack, quick)
                    except Exception as exc:  # noqa: BLE001
                        traceback.print_exc()
                        results["trigger_latency"]["prefect_default_worker"] = {"error": f"{type(exc).__name__}: {exc}"}
        except Exception as exc:  # noqa: BLE001 - the stack did not start
            traceback.print_exc()
            for name in live_names:
                results.setdefault(name, {"error": f"stack: {type(exc).__name__}: {exc}"})
        say(f"live benchmarks done in {time.monotonic() - start:.0f} s")
    return results


# ====================================================================== the table
def _fmt_s(x: float | None) -> str:
    return "n/a" if x is None else (f"{x:.2f} s" if x < 10 else f"{x:.0f} s")


def _row(bench: str, measure: str, measured: float | None, shown: str, target: float, target_shown: str,
         upper: bool) -> dict[str, Any]:
    ratio = None if measured is None else measured / target
    met = None if ratio is None else (ratio <= 1 if upper else ratio >= 1)
    return {"benchmark": bench, "measure": measure, "measured": shown, "target": target_shown,
            "ratio": None if ratio is None else round(ratio, 2), "met": met}


def _err(bench: str, measure: str, target: str, error: str) -> dict[str, Any]:
    return {"benchmark": bench, "measure": measure, "measured": "failed: " + error.splitlines()[0][:90],
            "target": target, "ratio": None, "met": None}


def table(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    lat = results.get("trigger_latency")
    if lat:
        if "error" in lat:
            rows.append(_err("trigger latency", "emitted -> created / running", "see targets", lat["error"]))
        else:
            s = lat["shipped"]
            n = s["events"]
            rows.append(_row("trigger latency", f"event -> train run created, p50 ({n} events)", s["created_p50"],
                             _fmt_s(s["created_p50"]), 0.5, "< 0.5 s", True))
            rows.append(_row("trigger latency", f"event -> train run Running, p50 ({n} events)", s["running_p50"],
                             _fmt_s(s["running_p50"]), 3.0, "< 3 s", True))
            rows.append(_row("trigger latency", f"event -> train run Running, p95 ({n} events)", s["running_p95"],
                             _fmt_s(s["running_p95"]), 6.0, "< 6 s", True))
            w = lat.get("within_0")
            if w and "error" not in w:
                rows.append(_row("trigger latency", f"created p50 with the trigger's within = 0 ({w['events']} events)",
                                 w["created_p50"], _fmt_s(w["created_p50"]), 0.5, "(< 0.5 s, for comparison)", True))
            d = lat.get("prefect_default_worker")
            if d and "error" not in d:
                rows.append(_row("trigger latency", f"Running p50 with Prefect's default polling ({d['events']} events)",
                                 d["running_p50"], _fmt_s(d["running_p50"]), 3.0, "(< 3 s, for comparison)", True))
    fr = results.get("freshness")
    if fr:
        if "error" in fr:
            rows.append(_err("freshness lag", "landing -> champion", "< 45 s", fr["error"]))
        else:
            st = fr["stages_median"]
            rows.append(_row("freshness lag", f"{fr['rows']:,}-row file lands -> champion promoted "
                             f"(median of {len(fr['runs'])})", fr["lag_median_s"], _fmt_s(fr["lag_median_s"]), 45.0,
                             "< 45 s", True))
            rows[-1]["note"] = ", ".join(f"{k} {v:.1f}" for k, v in st.items())
    fc = results.get("forecast")
    if fc:
        if "error" in fc:
            rows.append(_err("forecast freshness", "file lands -> forecast published", "< 30 s", fc["error"]))
        else:
            rows.append(_row("forecast freshness", f"file lands -> a forecast that uses it is published, "
                             f"{fc['rows_history']:,} rows of history (median of {len(fc['runs'])})", fc["lag_median_s"],
                             _fmt_s(fc["lag_median_s"]), 30.0, "< 30 s", True))
            rows[-1]["note"] = ", ".join(f"{k} {v:.1f}" for k, v in fc["stages_median"].items())
    ing = results.get("ingestion")
    if ing:
        if "error" in ing:
            rows.append(_err("ingestion throughput", "CSV -> curated parquet", "see targets", ing["error"]))
        else:
            for case in ing["cases"]:
                label = f"{case['rows'] / 1e6:.1f} M rows, {case['store']}"
                f = case.get("freshet", {})
                if "error" in f or not f:
                    rows.append(_err("ingestion throughput", label, "see targets", f.get("error", "missing")))
                    continue
                rows.append(_row("ingestion throughput", f"{label}: freshet vs bare polars "
                                 f"({f['rows_per_s'] / 1e6:.2f} M rows/s)", case.get("x_polars"),
                                 f"{case.get('x_polars', 0):.2f}x", 0.7, ">= 0.7x", False))
                if "x_pandas" in case:
                    rows.append(_row("ingestion throughput", f"{label}: freshet vs pandas validation",
                                     case["x_pandas"], f"{case['x_pandas']:.2f}x", 5.0, ">= 5x", False))
                rows.append(_row("ingestion throughput", f"{label}: peak memory / input "
                                 f"({fmt_bytes(f['peak_above_base'])} for {fmt_bytes(case['bytes'])})", f["peak_x_input"],
                                 f"{f['peak_x_input']:.2f}x", 3.0, "< 3x", True))
    tr = results.get("training")
    if tr:
        o = tr.get("overhead", tr)
        if "error" in o:
            rows.append(_err("training overhead", "fit vs bare", "<= 1.2x", o["error"]))
        else:
            rows.append(_row("training overhead", f"fit stage vs bare xgboost.train, {o['rows_train']:,} rows x "
                             f"{o['rounds']} rounds, median of {len(o['fit_s'])} adjacent pairs (CPU time ratio "
                             f"{o.get('x_bare_cpu', float('nan')):.2f}x; {o['rows_per_s']:,.0f} rows/s)", o["x_bare"],
                             f"{o['x_bare']:.2f}x", 1.2, "<= 1.2x", True))
            share = o["features_share_of_fit"]
            fr_st = (results.get("freshness") or {}).get("stages_median")
            if fr_st:
                share = fr_st["features"] / fr_st["fit"]
                where = "in the train flow (freshness runs)"
            else:
                where = f"this benchmark ({o['rounds']}-round fit)"
            rows.append(_row("training overhead", f"feature building / fit time, {where}", share,
                             f"{share * 100:.0f}%", 0.25, "<= 25%", True))
            if "refit_s" in o:
                refit = o["refit_s"] / o["fit_median_s"]
                rows.append({"benchmark": "training overhead",
                             "measure": f"serving refit on every row ({o['rows_refit']:,} rows, {o['rounds']} rounds, "
                                        "no early stopping) / one evaluation fit",
                             "measured": f"{refit:.2f}x ({o['refit_s']:.2f} s)", "target": "reported",
                             "ratio": None, "met": None})
    bu = results.get("burst")
    if bu:
        if "error" in bu:
            rows.append(_err("burst cost", "CPU of a burst vs one training", "<= 2.2x", bu["error"]))
        else:
            b = bu["burst"]
            rows.append(_row("burst cost", f"{b['events']} events in {b['emitted_in_s']:.0f} s: worker CPU vs one "
                             f"event's ({b['worker_cpu_net_s']:.0f} vs {bu['single']['worker_cpu_net_s']:.0f} CPU s, "
                             f"{b['trainings']} trainings)", bu["x_single"], f"{bu['x_single']:.2f}x", 2.2,
                             "<= 2.2x", True))
            if not burst_valid(bu):
                rows[-1].update({"measured": "invalid (negative net CPU)", "ratio": None, "met": None})
    topo = results.get("topologies")
    if topo and "error" in topo:
        rows.append(_err("topologies", "sqlite vs scale", "see targets", topo["error"]))
    elif topo:
        for name in ("sqlite", "sqlite+serve", "scale", "scale+serve"):
            t = topo.get(name)
            if not t:
                continue
            lat, load = t["latency"], t["load"]
            rows.append(_row(f"topology {name}", f"event -> train run created, p50 ({lat['events']} events; p95 "
                             f"{_fmt_s(lat['created_p95'])})", lat["created_p50"], _fmt_s(lat["created_p50"]), 0.5,
                             "< 0.5 s", True))
            rows.append(_row(f"topology {name}", f"event -> train run Running, p50 (p95 {_fmt_s(lat['running_p95'])})",
                             lat["running_p50"], _fmt_s(lat["running_p50"]), 3.0, "< 3 s", True))
            rows.append(_row(f"topology {name}", f"load: {load['datasets']} datasets x 3 files in bursts, 2 workers: "
                             f"lag p50 (p95 {_fmt_s(load['lag_p95'])}, max {_fmt_s(load['lag_max'])}; "
                             f"{load['trainings']} trainings, {load['runs']} runs, {load['stack_cpu_s']:.0f} CPU s, "
                             f"wall {_fmt_s(load['wall_s'])})", load["lag_p50"], _fmt_s(load["lag_p50"]), 60.0,
                             "< 60 s", True))
    sc = results.get("scale")
    if sc:
        if "error" in sc:
            rows.append(_err("scale", "1/10/30 M rows", "fits in 24 GiB", sc["error"]))
        else:
            for entry in sc["sizes"]:
                r = entry.get("shipped", {})
                label = f"{entry['rows'] / 1e6:.1f} M rows: load+features+fit ({sc['rounds']} rounds)"
                if "error" in r:
                    rows.append(_err("scale", label, "peak < 16 GiB", r["error"]))
                    if "memory guard" in r["error"]:
                        rows[-1]["met"] = False  # it passed the guard, so it needs more than it may have
                    continue
                # stage peaks reset ru_maxrss: the run's peak is the largest of them
                peak = max([r["maxrss"], *(v for k, v in r.items() if k.startswith("peak_in") and v)]) - r["rss_base"]
                rows.append(_row("scale", label + f" {_fmt_s(r['total_s'])}", peak / GiB,
                                 f"peak {fmt_bytes(peak)}", 16.0, "peak < 16 GiB", True))
    acc = results.get("accuracy")
    if acc:
        if "error" in acc:
            rows.append(_err("accuracy", "freshet vs mlforecast / seasonal naive", "see targets", acc["error"]))
        for name, d in acc.get("datasets", {}).items():
            for proto, r in d.get("protocols", {}).items():
                fr = r["models"].get("freshet", {})
                if r.get("ratio") is None:
                    rows.append(_err("accuracy", f"{name} {proto}: freshet WAPE", "<= 1.02 x best peer's",
                                     fr.get("error", "no freshet or peer score")))
                    continue
                rows.append(_row("accuracy", f"{name} {proto}: freshet WAPE vs best peer ({r['best_peer']})",
                                 fr["wape"] / 1.02, f"{fr['wape']:.4f}", r["best_peer_wape"],
                                 f"<= 1.02 x {r['best_peer_wape']:.4f}", True))
    return rows


def render(rows: list[dict[str, Any]]) -> str:
    """The headline table, Markdown-shaped (``freshet.tables``): for the terminal and for the .md file alike."""
    met = {True: "yes", False: "NO", None: "-"}
    head = ["benchmark", "measure", "measured", "target", "ratio", "met"]
    body = [[r["benchmark"], r["measure"], r["measured"], r["target"],
             "" if r["ratio"] is None else f"{r['ratio']:.2f}", met[r["met"]]] for r in rows]
    return tables.render(tables.table(head, body, right=["ratio"]))


def merge(doc: dict[str, Any], results: dict[str, Any], info: dict[str, Any]) -> dict[str, Any]:
    """A full run's results ``doc`` with some benchmarks' ``results`` re-run alone: theirs replace the run's, and
    the re-run's ``info`` (command, commit, time, load) is kept beside the run's, so the document names both."""
    doc["results"].update(results)
    doc.setdefault("reruns", []).append(info)
    doc["table"] = table(doc["results"])
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats (a smoke run)")
    parser.add_argument("--only", action="append", choices=NAMES, help="run only this benchmark (repeatable)")
    parser.add_argument("--out", type=Path, default=RESULTS / "latest.json", help="where to write the JSON results")
    parser.add_argument("--into", type=Path, help="replace these benchmarks' results in this results JSON (a full "
                        "run's) and record this run as a re-run beside it (its command, commit, time and load)")
    parser.add_argument("--keep-stack", action="store_true", help="keep the live stack's temporary folder (logs)")
    parser.add_argument("--render", type=Path, help="only rebuild the table (and its .md) from this results JSON")
    parser.add_argument("--document", type=Path, help="with --render: rewrite this file's generated part "
                        "(BENCHMARKS.md; benchmarks/report.py) from the results JSON")
    args = parser.parse_args(argv)
    if args.render:
        doc = json.loads(args.render.read_text())
        doc["table"] = table(doc["results"])
        args.render.write_text(json.dumps(doc, indent=2, default=str))
        args.render.with_suffix(".md").write_text(render(doc["table"]) + "\n")
        print(render(doc["table"]))
        if args.document:
            import report

            report.splice(args.document, report.document(doc, render(doc["table"])))
            print(f"rewrote the generated part of {args.document}")
        return 0
    selected = [n for n in NAMES if not args.only or n in args.only]
    started = time.monotonic()
    info = {"started_at": datetime.now(timezone.utc).isoformat(), "quick": args.quick, "selected": selected,
            "machine": machine(), "uptime_before": uptime_line(), "load_before": load_average(),
            "command": " ".join(["benchmarks/run.py", *(argv if argv is not None else sys.argv[1:])]), "commit": commit()}
    say(f"running {', '.join(selected)}{' (quick)' if args.quick else ''}; {info['uptime_before']}")
    results = run_all(selected, args.quick, args.keep_stack)
    info.update({"uptime_after": uptime_line(), "load_after": load_average(),
                 "elapsed_s": round(time.monotonic() - started, 1)})
    if args.into:
        doc = merge(json.loads(args.into.read_text()), results, info)
        args.out, results, rows = args.into, doc["results"], doc["table"]
    else:
        rows = table(results)
        doc = {**info, "table": rows, "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, default=str))
    args.out.with_suffix(".md").write_text(render(rows) + "\n")
    print()
    print(render(rows))
    if isinstance(results.get("accuracy"), dict) and results["accuracy"].get("datasets"):
        import accuracy

        print("\naccuracy (WAPE on the final windows; benchmarks/accuracy.py):")
        print(accuracy.render(results["accuracy"]))
        with args.out.with_suffix(".md").open("a") as fh:
            fh.write("\n" + accuracy.render(results["accuracy"]) + "\n")
    print("\nratio = measured / target (met: <= 1 for upper bounds, >= 1 for lower bounds)")
    print(f"load before: {info['uptime_before']}\nload after:  {info['uptime_after']}")
    print(f"{info['elapsed_s']:.0f} s; results in {args.out} and {args.out.with_suffix('.md')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
