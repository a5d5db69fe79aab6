"""Progress while a command works: plain lines into a pipe or a log, a bar under the lines on a terminal."""

from __future__ import annotations

import pytest

from freshet.ops.cli.output import steps


def _work() -> None:
    with steps(2, "working", log_status=True) as progress:
        for k in range(2):
            progress.now(f"step {k}")
            progress.advance()
            progress.say(f"done {k}")


def test_progress_is_lines_in_a_pipe_and_a_bar_on_a_terminal(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    _work()
    assert capsys.readouterr().out == "step 0\ndone 0\nstep 1\ndone 1\n"
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich takes stdout for a terminal
    _work()
    out = capsys.readouterr().out
    assert "done 0" in out and "done 1" in out and "2/2" in out  # the lines, and the bar counting the steps
    assert "step 1\n" not in out, "on a terminal the step under way is the bar's text, not a line"
