"""The training report a person reads in the Prefect UI, rendered from a model's meta.json (pure; no I/O).

The ``train`` flow publishes these as artifacts; the functions only format.
"""

from __future__ import annotations

from typing import Any


def fmt(m: dict | None, key: str) -> str:
    """A metric to four decimals, ``n/a`` when absent (a champion that could not be scored)."""
    return "n/a" if not m or m.get(key) is None else f"{m[key]:.4f}"


def coverage_text(iv: dict | None) -> str:
    """``p10-p90 78% (nominal 80%)`` for each central interval; n/a without a cross-fitted score."""
    if not iv or not iv.get("coverage"):
        return "n/a"
    return "; ".join(f"{k} {100 * v['empirical']:.0f}% (nominal {100 * v['nominal']:.0f}%)" for k, v in iv["coverage"].items())


def metrics_rows(meta: dict[str, Any]) -> list[dict[str, str]]:
    """Pooled backtest metrics of the new model, the champion and the two baselines (seasonal naive, naive), one row each."""
    s = meta["metrics"]
    return [
        {"model": name, "version": v, "mae": fmt(s[name], "mae"), "rmse": fmt(s[name], "rmse"), "wape": fmt(s[name], "wape")}
        for name, v in (("model", meta["version"]), ("champion", meta["champion_version"] or "-"), ("baseline", "seasonal naive"),
                        ("naive", "last value at the origin"))
        if name in s
    ]


def families_text(meta: dict[str, Any]) -> str:
    """``xgboost 0.0539 (6.5 s); stats mstl 0.0342 (14.3 s) (chosen); not run: ...`` from meta.json's ``families``."""
    fam = meta.get("families")
    if not fam:
        return "n/a"
    chosen = fam["chosen"]
    parts = [f"{c['family']}{' ' + c['model'] if c['model'] else ''} {c['wape']:.4f} ({c['seconds']} s)"
             + (" (chosen)" if (c["family"], c["model"]) == (chosen["family"], chosen["model"]) else "")
             for c in fam["candidates"]]
    return "; ".join(parts) + "".join(f"; not run: {u['family']} ({u['reason']})" for u in fam["unavailable"])


def train_report(meta: dict[str, Any], freshness_lag_seconds: float | None) -> str:
    """The markdown report of one training: decision, data, rounds, timings, backtest per window, intervals."""
    rows = metrics_rows(meta)
    lag = freshness_lag_seconds
    return f"""# {meta['dataset']}: model {meta['version']}

**Decision:** {'promoted to champion' if meta['decision']['promote'] else 'not promoted'} ({meta['decision']['reason']})

| | |
|---|---|
| data range | {meta['data_range']['start']} .. {meta['data_range']['end']} |
| rows (train / valid / holdout) | {meta['rows']['train']} / {meta['rows']['valid']} / {meta['rows']['holdout']} |
| files in lineage | {len(meta['lineage'])} ({len(meta['new_files'])} new since the champion) |
| freshness lag (landing to promotion) | {f'{lag:.1f} s' if lag is not None else 'n/a'} |
| target transform / objective | {meta['transform']} / {meta['objective']} (candidates: {', '.join(f"{c['transform']} {c['validation']['wape']:.4f}" for c in meta['candidates'])}) |
| boosting rounds | evaluation {meta['evaluation']['rounds']} (best {meta['evaluation']['best_iteration']}); serving refit {meta['rounds']} on {meta['rows']['refit']} rows |
| model family (lowest backtest WAPE) | {families_text(meta)} |
| timings (s) | {', '.join(f'{k} {v}' for k, v in meta['timings'].items())} |

| backtest (pooled) | MAE | RMSE | WAPE |
|---|---|---|---|
""" + "\n".join(f"| {r['model']} ({r['version']}) | {r['mae']} | {r['rmse']} | {r['wape']} |" for r in rows) + """

| window | from | to | rows | model WAPE | champion WAPE | seasonal naive WAPE | naive WAPE | interval coverage | pinball (scaled) |
|---|---|---|---|---|---|---|---|---|---|
""" + "\n".join(f"| {w['window']} | {w['start']} | {w['end']} | {w['model']['rows']} | {fmt(w['model'], 'wape')} | "
               f"{fmt(w['champion'], 'wape')} | {fmt(w['baseline'], 'wape')} | {fmt(w.get('naive'), 'wape')} | "
               f"{coverage_text(w.get('intervals'))} | "
               f"{fmt(w.get('intervals'), 'pinball_scaled')} |" for w in meta['backtest']['windows']) + f"""

**Prediction intervals** (quantiles {', '.join(f'p{100 * q:g}' for q in (meta.get('intervals') or {}).get('quantiles', []))}):
conformal, from the backtest's residuals scaled by each series' level; each window's coverage uses only the other
windows' residuals. Pooled: coverage {coverage_text(meta.get('intervals'))}, scaled pinball loss
{fmt(meta.get('intervals'), 'pinball_scaled')}."""
