"""The policy lab's report (Prefect-free): the tables a person reads, the chart, the files written.

``table_rows`` turns a report (``freshet.lab.metrics.summarize``) into one row per
shown combination; ``format_report`` and ``format_spread`` print them as Markdown
tables (the terminal and the ``policies`` flow's artifact alike), ``render_chart``
draws staleness and error over time, and ``write_outputs`` writes ``report.json``
and ``chart.png``. Reads no settings.
"""

from __future__ import annotations

import base64
import io
import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from freshet import tables
from freshet.lab.engine import LabConfig
from freshet.lab.metrics import NAIVE
from freshet.lab.policies import AFTER_TRAINING


def format_spread(spread: dict[str, Any]) -> str:
    """A table of the shown combinations over seeds: median [min .. max]."""
    def cell(v: dict | None, fmt: str) -> str:
        return "-" if v is None else f"{format(v['median'], fmt)} [{format(v['min'], fmt)} .. {format(v['max'], fmt)}]"

    rows = [{"policy": name, "served p50 (h)": cell(e["served_p50_h"], ".2f"), "WAPE": cell(e["wape"], ".4f"),
             "CPU s": cell(e["cpu_seconds"], ".0f"), "trainings": cell(e["trainings"], ".0f"),
             "promoted": cell(e["promotions"], ".0f")}
            for name, e in spread["combinations"].items() if e["shown"]]
    ranks = "\n".join(f"  {src}: " + " < ".join(names) for src, names in spread["wape_rank"].items())
    return format_table(rows) + "\n\nWAPE ranking per seed (best first):\n" + ranks


# ------------------------------------------------------------------ output
def _f(value: float | None, fmt: str) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)


def fmt_duration(hours: float | None) -> str:
    """Minutes under two hours, hours under two days, then days: '1 min', '9.4 h', '4.0 d'."""
    if hours is None:
        return "-"
    if hours < 2:
        return f"{hours * 60:.0f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} d"


TABLE_COLUMNS = ("retraining", "forecasts", "trainings", "promoted", "published", "CPU s", "served p50", "served p95",
                 "served max", "model p50", "WAPE", "in-hand WAPE", "covered %")


def table_rows(report: dict[str, Any], dataset: str | None = None, everything: bool = False) -> list[dict[str, str]]:
    """One row per shown combination (``everything``: every one), all datasets or one, for a terminal or an artifact."""
    rows = []
    for p in report["policies"]:
        if not (everything or p["shown"]):
            continue
        m = p["total"] if dataset is None else p["datasets"][dataset]
        s, ms = m["staleness"], m["model_staleness"]
        cells = [p["retrain"] if p["retrain"] != "-" else p["name"], p["forecast"], str(m["trainings"]),
                 str(m["promotions"]), str(m["forecasts"]), _f(m["cpu_seconds"], ".1f"),
                 fmt_duration(s["p50_h"]), fmt_duration(s["p95_h"]),
                 fmt_duration(s["max_h"]) + ("+" if s["not_served_by_end"] else ""),
                 fmt_duration(ms["p50_h"]),
                 _f(m["error"]["wape"], ".4f"), _f(m["in_hand"]["wape"], ".4f"),
                 _f(None if m["in_hand"]["covered"] is None else 100 * m["in_hand"]["covered"], ".0f")]
        rows.append(dict(zip(TABLE_COLUMNS, cells)))
    return rows


def format_table(rows: list[dict[str, str]]) -> str:
    """Rows of text cells as a Markdown-shaped table (``freshet.tables``): the first two columns left-aligned,
    numbers right-aligned."""
    cols = list(rows[0])
    return tables.render(tables.table(cols, [[r[c] for c in cols] for r in rows], right=cols[2 if len(cols) > 2 else 1:]))


NOTES = ("served p50/p95/max: from a file landing to the first published forecast that uses it ('+': some files had "
         "none by the end, counted up to the end). model p50: from a file landing to the first promoted model trained "
         "on it. published: forecasts published (one identical to the previous, same data and model, is not "
         "published again). CPU s: measured process CPU of the trainings and forecasts. WAPE: every published "
         "forecast scored on the rows it forecast that have landed by the end, pooled. in-hand WAPE: each period scored "
         "with the latest forecast published before it began (what a user had in hand); covered %: share of the "
         "window's periods that had one.")


def format_report(report: dict[str, Any]) -> str:
    """The terminal summary: all datasets, then one table per dataset."""
    cfg, tr = report["config"], report["trace"]
    out = [f"Retraining and forecasting policies on {len(tr['datasets'])} dataset(s), {tr['start'][:16]} .. "
           f"{tr['end'][:16]} UTC ({report['source']} trace; a model serves {cfg['train_latency_minutes']:.0f} min "
           f"after its run starts, a forecast is published {cfg['forecast_latency_minutes']:.0f} min after its trigger)",
           "", "All datasets", format_table(table_rows(report))]
    for d, info in tr["datasets"].items():
        out += ["", f"{d}: {info['arrivals']} arrivals, {info['new_rows']} new rows on {info['history_rows']} rows of "
                    f"history" + ("" if info.get("first_model_promoted", True) else
                                  "; the first model did not beat seasonal naive"),
                format_table(table_rows(report, d))]
    out += ["", f"The table shows {sum(p['shown'] for p in report['policies'])} of {len(report['policies'])} "
                "combinations; report.json has every one.", NOTES]
    return "\n".join(out)


def render_chart(report: dict[str, Any]) -> bytes:
    """A PNG: staleness of the published forecasts and their error over time, one line per shown combination."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.dates as mdates
    import matplotlib.pyplot as plt

    curves = report["curves"]
    times = [datetime.fromisoformat(t) for t in curves["times"]]
    days = [datetime.fromisoformat(d) + timedelta(hours=12) for d in curves["days"]]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 8), sharex=True, constrained_layout=True)
    colors = plt.get_cmap("tab10").colors
    shown = [p for p in report["policies"] if p["shown"]]
    for k, p in enumerate(shown):
        name, style = p["name"], {"color": colors[k % 10], "linewidth": 1.4}
        if p["forecast"] == AFTER_TRAINING:
            style["linestyle"] = "--"
        if p["name"] == NAIVE:
            style.update(color="0.55", linestyle=":")
        top.step(times, [max(v, 0.01) for v in curves["lag_hours"][name]], where="post", label=name, **style)
        bottom.plot(days, [np.nan if v is None else v for v in curves["wape"][name]], label=name, **style)
    thr = report["config"]["threshold_hours"]
    top.axhline(thr, color="black", linestyle="--", linewidth=0.8)
    top.text(times[0], thr * 1.12, f"threshold {thr:g} h", fontsize=8)
    top.set_yscale("log")
    top.set_ylim(0.01, None)
    top.set_ylabel("hours the oldest landed file has waited\nfor a forecast that uses it (mean over datasets, log)")
    top.set_title("Staleness: how long landed data waits to reach a published forecast")
    top.legend(fontsize=7, ncol=3, loc="upper left")
    bottom.set_ylabel(f"WAPE, forecasts published in the last {LabConfig.error_window_days} days")
    bottom.set_title("Accuracy: each published forecast scored on the rows it forecast (lower is better)")
    bottom.legend(fontsize=7, ncol=3, loc="upper left")
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%b %d"))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    return buf.getvalue()


def write_outputs(report: dict[str, Any], out_dir: Path) -> tuple[Path, Path]:
    """Write ``report.json`` and ``chart.png`` next to each other; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    chart, path = out_dir / "chart.png", out_dir / "report.json"
    png = render_chart(report)
    tmp = chart.with_suffix(".png.tmp")
    tmp.write_bytes(png)
    tmp.replace(chart)
    report["chart"] = str(chart.resolve())
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(report, indent=1, default=str))
    tmp.replace(path)
    return path, chart


def chart_data_uri(chart: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(chart.read_bytes()).decode()
