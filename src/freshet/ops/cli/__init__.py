"""The ``freshet`` command line (typer), one module per job.

``app`` holds the commands and ``main()`` (the console script ``freshet``);
``errors`` the errors a person can fix and their one-line wording; ``api`` which
Prefect API the commands talk to; ``output`` progress lines and bars. The commands:
``data`` (generate, emit, requeue), ``stack`` (up, serve, down, deploy), ``demo``, ``status``
(status, forecast) and ``policies``. Help comes from each command's docstring.
"""

from freshet.ops.cli.app import main

__all__ = ["main"]
