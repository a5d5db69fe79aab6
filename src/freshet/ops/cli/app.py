"""The ``freshet`` commands on typer, and ``main()``: the one place an expected error becomes one line.

Settings come from ``FRESHET_*`` environment variables (see ``freshet.settings``);
``up`` records the local stack's API URL so later commands find it. Errors a person
can fix (``errors.expected_errors``: bad arguments, an unknown dataset, a broken
contract, a refused URI, no stack, an unreachable server, ...) are raised as they
are and printed by ``main()`` as one line ``freshet: error: ...`` with a non-zero
exit code; ``--debug`` (anywhere on the line) shows the traceback instead. Anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

# typer vendors click and does not export click's UsageError (bad arguments, an unknown command); the
# tests of the one-line usage errors (tests/ops/cli/test_app.py) fail if it moves
from typer._click.exceptions import UsageError

from freshet.ops.cli import data, demo, policies, stack, status
from freshet.ops.cli.errors import CliError, expected_errors, one_line

app = typer.Typer(name="freshet", add_completion=False, pretty_exceptions_enable=False)


@app.callback()
def freshet(
    debug: Annotated[bool, typer.Option(
        "--debug", help="show the full traceback of an error (anywhere on the line)")] = False,
) -> None:
    """Event-driven retraining for Prefect."""
    # declared for --help and the parser; main() reads --debug before parsing, so usage errors obey it too


for command in (data.generate, data.emit, data.requeue, stack.up, stack.serve, stack.down, stack.deploy, demo.demo,
                status.status, status.forecast, status.scores, policies.policies):
    app.command()(command)


def main(argv: list[str] | None = None) -> int:
    """Run one command; an expected error is one line on stderr and a non-zero exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = (["--debug"] if debug else []) + [a for a in argv if a != "--debug"]
    try:
        code = typer.main.get_command(app).main(args=argv, prog_name="freshet", standalone_mode=False)
    except UsageError as exc:
        if debug:
            raise
        where = exc.ctx.command_path if exc.ctx else "freshet"
        print(f"freshet: error: {' '.join(exc.format_message().split())} (see `{where} --help`)", file=sys.stderr)
        return 2
    except Exception as exc:
        if debug or not isinstance(exc, expected_errors()):
            raise
        print(f"freshet: error: {one_line(exc)}", file=sys.stderr)
        return exc.code if isinstance(exc, CliError) else 1
    if code == 130:  # typer turns Ctrl-C into exit code 130
        print("freshet: interrupted", file=sys.stderr)
    return code or 0
