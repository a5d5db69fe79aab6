"""The lab's report: the JSON report and PNG chart written, the Markdown-shaped table."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from freshet.lab.metrics import NAIVE
from freshet.lab.policies import AFTER_TRAINING, ON_LANDING, default_policies
from freshet.lab.report import format_table, write_outputs

from tests.lab.conftest import Lab


def test_outputs_are_a_json_report_and_a_png_chart(lab: Lab, tmp_path: Path) -> None:
    path, chart = write_outputs(dict(lab.report), tmp_path / "out")
    saved = json.loads(path.read_text())
    assert [p["name"] for p in saved["policies"]] == [f"{p.name} / forecast {m}" for p in default_policies()
                                                      for m in (ON_LANDING, AFTER_TRAINING)] + [NAIVE]
    assert saved["chart"] == str(chart.resolve())
    png = chart.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    assert struct.unpack(">II", png[16:24]) == (990, 720)  # 11 x 8 inches at 90 dpi
    assert len(saved["curves"]["times"]) == 10 * 24 + 1  # hourly over 10 days, both ends


def test_format_table_aligns_numbers_right() -> None:
    assert format_table([{"policy": "a", "n": "1"}, {"policy": "long name", "n": "100"}]) == (
        "| policy    |   n |\n"
        "|-----------|----:|\n"
        "| a         |   1 |\n"
        "| long name | 100 |"
    )
