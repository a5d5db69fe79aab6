"""What the commands print while they work: progress lines, and a rich progress bar under them on a terminal.

The lines go to stdout as they always did (a pipe, a file or a CI log gets exactly
those); on a terminal a progress bar with the step under way and the elapsed time
stays under them and disappears at the end (tables: ``freshet.tables``). Reads
no settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn


class Steps:
    """Progress through a known number of steps: ``say`` prints a line, ``now`` names the step under way,
    ``advance`` counts one step done."""

    def __init__(self, console: Console, bar: Progress | None, task: TaskID | None, log_status: bool) -> None:
        self.console, self.bar, self.task, self.log_status = console, bar, task, log_status

    def say(self, message: str) -> None:
        self.console.print(message, soft_wrap=True)

    def now(self, message: str) -> None:
        """On a terminal the bar shows ``message``; elsewhere it is a line if ``log_status``, else nothing."""
        if self.bar is not None:
            self.bar.update(self.task, description=message)
        elif self.log_status:
            self.say(message)

    def advance(self) -> None:
        if self.bar is not None:
            self.bar.advance(self.task)


@contextmanager
def steps(total: int, what: str, *, log_status: bool = False) -> Iterator[Steps]:
    """A progress bar of ``total`` steps on a terminal, none elsewhere. ``log_status``: off a terminal, print
    what ``now`` says as lines (a long wait then still shows signs of life in a log)."""
    console = Console(markup=False, emoji=False, highlight=False)  # stdout as it is when printing
    if not console.is_terminal:
        yield Steps(console, None, None, log_status)
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), console=console, transient=True) as bar:
        yield Steps(console, bar, bar.add_task(what, total=total), log_status)
