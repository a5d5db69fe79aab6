"""``freshet status`` and ``freshet forecast``: what the lake holds per dataset (JSON, a table), its latest forecast."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from freshet.ops.cli import main

from tests.conftest import DATASET, LakeHandle


def test_status_reports_landings_and_the_champion(lake_env: LakeHandle, tiny_sales, capsys) -> None:
    from freshet.data.ingestion import admit_file
    from freshet.data.contracts import load_contract
    from freshet.settings import get_settings

    admit_file(lake_env.lake, load_contract(DATASET, get_settings().contracts_dir), lake_env.land(tiny_sales, "s.csv"))
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["dataset"] == DATASET and row["files"] == 1 and row["rows"] == tiny_sales.height
    assert row["champion"] is None and row["files_not_in_any_model"] == 1
    assert row["watermark"] == str(tiny_sales["date"].max())


def test_status_reads_as_a_table(lake_env: LakeHandle, tiny_sales, capsys) -> None:
    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import admit_file
    from freshet.settings import get_settings

    admit_file(lake_env.lake, load_contract(DATASET, get_settings().contracts_dir), lake_env.land(tiny_sales, "t.csv"))
    assert main(["status"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("| dataset "))
    cells = lambda line: [c.strip() for c in line.strip("|").split("|")]  # noqa: E731
    assert cells(lines[header])[:3] == ["dataset", "files", "rows"] and "champion" in cells(lines[header])
    assert set(lines[header + 1]) == {"|", "-", ":"}  # the rule under the header; numbers right-aligned
    row = cells(lines[header + 2])
    assert row[:3] == [DATASET, "1", str(tiny_sales.height)]
    assert row[5] == "none" and row[-1] == "never"
    assert len(lines) == header + 3, "one row per dataset"


def _publish_seasonal_naive(lake_env: LakeHandle, frame: pl.DataFrame) -> dict:
    """A published forecast as the forecast flow writes it (file, description, latest.json)."""
    from datetime import datetime, timezone

    from freshet.data.contracts import load_contract
    from freshet.modeling import publish
    from freshet.modeling import forecast as FC
    from freshet.settings import get_settings

    lake = lake_env.lake
    contract = load_contract(DATASET, get_settings().contracts_dir)
    out, skipped = FC.forecast_frame(frame, contract, None, None)
    watermark = str(frame["date"].max())
    path = publish.forecast_path(lake, DATASET, watermark, "abc123")
    issued = datetime.now(timezone.utc)
    publish.write_forecast(lake, path, out.with_columns(pl.lit("seasonal_naive").alias("model_version"),
                                                        pl.lit(watermark).alias("data_watermark"),
                                                        pl.lit(issued).alias("issued_at")))
    pointer = {"forecast_id": "abc123", "path": path, "uri": lake.uri(path), "model_version": "seasonal_naive",
               "method": "seasonal_naive", "watermark": watermark, "issued_at": issued.isoformat(), "rows": out.height,
               "coverage": FC.coverage(out, skipped, contract)}
    lake.write_json(path.removesuffix(".parquet") + ".json", pointer)
    lake.write_json(publish.latest_path(lake, DATASET), pointer)
    return pointer


def test_forecast_prints_or_writes_the_latest_forecast_and_status_shows_its_age(
        lake_env: LakeHandle, tiny_sales, tmp_path: Path, capsys) -> None:
    assert main(["forecast", "--dataset", DATASET]) == 1
    assert "no forecast published" in capsys.readouterr().err
    pointer = _publish_seasonal_naive(lake_env, tiny_sales)
    assert main(["forecast", "--dataset", DATASET]) == 0
    printed = capsys.readouterr().out
    assert pointer["uri"] in printed and "seasonal naive (no champion yet)" in printed
    assert "coverage seasonal_naive 100.0%" in printed
    for name in ("f.csv", "f.parquet"):
        assert main(["forecast", "--dataset", DATASET, "--out", str(tmp_path / name)]) == 0
        back = pl.read_csv(tmp_path / name) if name.endswith(".csv") else pl.read_parquet(tmp_path / name)
        assert back.height == pointer["rows"] == 2 * 7 and set(back["method"]) == {"seasonal_naive"}
    assert main(["forecast", "--dataset", DATASET, "--out", str(tmp_path / "f.txt")]) == 2
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["forecast"]["watermark"] == pointer["watermark"] and row["forecast"]["uri"] == pointer["uri"]
    assert 0 <= row["forecast"]["age_hours"] < 1
    assert row["forecast"]["coverage"]["seasonal_naive"] == 1.0 and row["forecast"]["coverage"]["not_forecast"] == 0.0
    assert main(["status"]) == 0
    assert "seasonal_naive 100.0%" in capsys.readouterr().out


def test_scores_and_status_show_the_live_accuracy_of_the_published_forecast(
        lake_env: LakeHandle, tiny_sales, tmp_path: Path, capsys) -> None:
    from datetime import timedelta

    from freshet.data.contracts import load_contract
    from freshet.data.ingestion import admit_file
    from freshet.modeling import live
    from freshet.settings import get_settings

    contract = load_contract(DATASET, get_settings().contracts_dir)
    cut = tiny_sales["date"].max() - timedelta(days=7)
    assert admit_file(lake_env.lake, contract, lake_env.land(tiny_sales.filter(pl.col("date") <= cut), "h.csv")).ok
    assert main(["scores", "--dataset", DATASET]) == 1
    assert "no scores for retail_sales yet" in capsys.readouterr().err
    _publish_seasonal_naive(lake_env, tiny_sales.filter(pl.col("date") <= cut))
    assert admit_file(lake_env.lake, contract, lake_env.land(tiny_sales.filter(pl.col("date") > cut), "w.csv")).ok
    scored = live.score_lake(lake_env.lake, contract, get_settings().scoring_span)
    live.commit(lake_env.lake, scored)
    assert main(["scores", "--dataset", DATASET]) == 0
    printed = capsys.readouterr().out
    assert "14 series x periods scored" in printed and "| seasonal_naive " in printed and "horizon step" in printed
    assert f"{scored.summary['overall']['wape']:.3f}" in printed
    assert main(["scores", "--dataset", DATASET, "--out", str(tmp_path / "s.parquet")]) == 0
    back = pl.read_parquet(tmp_path / "s.parquet")
    assert back.height == 14 and set(back["step"]) == set(range(1, 8))
    capsys.readouterr()
    assert main(["status", "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    # no champion made a scored forecast: no drift verdict, the pooled live WAPE instead
    assert row["live"]["degraded"] is False and row["live"]["wape"] is None
    assert row["live"]["all_models_wape"] == scored.summary["overall"]["wape"] and row["live"]["scored_rows"] == 14
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "live WAPE (7 d)" in out and f"{scored.summary['overall']['wape']:.3f} (no champion forecast)" in out
