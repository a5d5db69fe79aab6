"""Tables for people: one rich table for the terminal, a log, a file and a Markdown artifact alike.

``table`` builds a rich ``Table`` in Markdown's shape (pipes, and a rule under the
header that marks right-aligned columns with ``:``), so the text a terminal shows is
also valid Markdown for a Prefect artifact. ``render`` gives that text, at its
natural width or wrapped to ``width``; ``show`` prints it, wrapped to the terminal
when there is one. Reads no settings.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Iterable, Sequence

from rich import box
from rich.console import Console
from rich.table import Table


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, right: Collection[str] = ()) -> Table:
    """A table of text cells, left-aligned but for the columns named in ``right`` (numbers)."""
    out = Table(box=box.MARKDOWN, highlight=False)
    for header in headers:
        out.add_column(header, justify="right" if header in right else "left", overflow="fold")
    for row in rows:
        out.add_row(*row)
    return out


def render(tab: Table, width: int | None = None) -> str:
    """The table's text: its natural width (no wrapping) unless ``width`` is given."""
    console = Console(file=io.StringIO(), width=width or 100_000, color_system=None, legacy_windows=False)
    console.print(tab)
    lines = [line.rstrip() for line in console.file.getvalue().splitlines() if line.strip()]
    rule = next(k for k, line in enumerate(lines) if set(line) == {"|", "-"})
    # rich draws Markdown's header rule without the marks that right-align a column
    lines[rule] = "|" + "|".join(c[:-1] + ":" if col.justify == "right" else c
                                 for c, col in zip(lines[rule].strip("|").split("|"), tab.columns)) + "|"
    return "\n".join(lines)


def show(tab: Table) -> None:
    """Print the table on stdout: wrapped to the terminal's width there, whole into a pipe or a file."""
    terminal = Console()
    print(render(tab, terminal.width if terminal.is_terminal else None), flush=True)
