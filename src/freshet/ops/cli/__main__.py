"""``python -m freshet.ops.cli``: the command line, as the local stack starts ``freshet serve``."""

from freshet.ops.cli.app import main

raise SystemExit(main())
