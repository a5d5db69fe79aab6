"""``freshet policies``: the policy lab from the command line (``freshet.lab``), with a progress bar.

Replays an arrival trace (generated, the lake's manifest, or a folder of files)
through the retraining and forecasting policies, prints the tables and writes
``report.json`` and ``chart.png``. Reads freshet's settings (the lake for
``--from-lake``, holdout and promotion settings) with the lab's XGBoost budget.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Optional

import typer

from freshet.ops.cli.errors import CliError
from freshet.ops.cli.output import steps
from freshet.settings import get_settings


def _seeds(seed: int, seeds: str | None) -> list[int]:
    try:
        return [int(s) for s in (seeds or str(seed)).split(",") if s.strip()]
    except ValueError:
        raise CliError(f"--seeds takes comma-separated integers (e.g. 7,8,9), not {seeds!r}", code=2) from None


def policies(
    out: Annotated[Path, typer.Option(help="folder for report.json and chart.png")] = Path(".freshet/policies"),
    datasets: Annotated[int, typer.Option(help="synthetic datasets in the generated trace")] = 3,
    days: Annotated[int, typer.Option(help="days replayed: the generated trace's length, or the last DAYS days of "
                                      "--from-dir (what landed before is the history)")] = 56,
    seed: Annotated[int, typer.Option(help="seed of the generated trace")] = 7,
    seeds: Annotated[Optional[str], typer.Option(
        help="several seeds, comma-separated (e.g. 7,8,9): the table for the first, then each combination's "
             "median and range over all of them")] = None,
    threshold_hours: Annotated[float, typer.Option(
        help="report the share of time the published forecast lags the newest data by more than this")] = 24.0,
    from_lake: Annotated[bool, typer.Option(
        "--from-lake", help="replay the lake's manifest (FRESHET_LAKE_URL) instead of a generated trace")] = False,
    from_dir: Annotated[Optional[Path], typer.Option(
        help="replay a folder of files (csv, parquet) of one dataset, one file an arrival")] = None,
    contract: Annotated[Optional[Path], typer.Option(help="the dataset's contract file (TOML), with --from-dir")] = None,
    landing_delay_hours: Annotated[float, typer.Option(
        help="with --from-dir: a file lands this long after the end of its newest row's period")] = 1.0,
    landed_at: Annotated[Optional[Path], typer.Option(
        help="with --from-dir: a CSV with columns file,landed_at (ISO 8601, UTC if naive) giving each file's "
             "landing time instead")] = None,
) -> int:
    """compare retraining and forecasting policies on a replayed trace

    Prints the table, writes report.json and chart.png (and, with several seeds, the spread over seeds).
    """
    from freshet.lab.engine import LabConfig, lab_settings
    from freshet.lab.metrics import seed_spread
    from freshet.lab.policies import default_policies
    from freshet.lab.report import format_report, format_spread, write_outputs
    from freshet.lab.run import run_lab, run_seeds
    from freshet.lab.traces import build_trace, dir_trace, synthetic_trace

    settings = get_settings()
    config = LabConfig(threshold=timedelta(hours=threshold_hours))
    seed_list = _seeds(seed, seeds)
    if (from_dir or contract) and not (from_dir and contract):
        raise CliError("--from-dir and --contract go together", code=2)
    several = len(seed_list) > 1 and not (from_dir or from_lake)
    with steps(len(default_policies()) * (len(seed_list) if several else 1), "replaying the policies") as progress:
        def runner(engine, policy):
            progress.now(f"replaying {policy.name}")
            result = engine.run_policy(policy)
            progress.advance()
            return result

        if from_dir:
            trace, source, contracts = dir_trace(from_dir, contract, days=days,
                                                 delay=timedelta(hours=landing_delay_hours), landed_at=landed_at)
            name = f"folder {from_dir}"
            if getattr(source, "dropped_rows", 0):
                progress.say(f"{source.dropped_rows} row(s) break the contract's rules and are left out")
        elif from_lake:
            trace, source, contracts = build_trace(True, datasets, days, seed_list[0], settings)
            name = "lake"
        else:
            trace, source, contracts = synthetic_trace(datasets=datasets, days=days, seed=seed_list[0])
            name = f"synthetic seed {seed_list[0]}"
        report = run_lab(trace, source, contracts, default_policies(), lab_settings(settings), config,
                         source_name=name, progress=progress.say, runner=runner)
        spread = None
        if several:
            more = run_seeds(seed_list[1:], datasets, days, default_policies(), lab_settings(settings), config,
                             progress=progress.say, runner=runner)
            spread = seed_spread([report, *more["reports"]])
            report["seeds"] = {"seeds": seed_list, "spread": spread,
                               "reports": [{k: r[k] for k in ("source", "policies", "trace")} for r in more["reports"]]}
    path, chart = write_outputs(report, out)
    print("\n" + format_report(report))
    if spread:
        print(f"\nOver seeds {', '.join(map(str, seed_list))} (median [min .. max]):\n" + format_spread(spread))
    print(f"\nwrote {path} and {chart} in {report['runtime_seconds']:.0f} s")
    return 0
