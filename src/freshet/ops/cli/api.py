"""Which Prefect API the commands talk to: PREFECT_API_URL, else the local stack ``freshet up`` recorded.

Reads ``PREFECT_API_URL`` (as Prefect resolves it) and the stack's state under
``FRESHET_STACK_DIR``; when the local stack is used, its lake (``FRESHET_LAKE_URL``)
comes with it unless set.
"""

from __future__ import annotations

import os

from freshet.ops.cli.errors import CliError
from freshet.settings import get_settings


def require_api(url: str | None) -> str:
    """The Prefect API to talk to, checked to answer; a one-line error saying what to do if not."""
    from freshet.ops.stack import healthy

    if not url:
        raise CliError("no Prefect server to talk to: start the local one with `freshet up`, "
                       "or set PREFECT_API_URL (and PREFECT_API_AUTH_STRING or PREFECT_API_KEY)")
    if "api.prefect.cloud" not in url and not healthy(url, timeout=5):
        raise CliError(f"cannot reach the Prefect API at {url}: start the server (`freshet up` for the local one) "
                       "or fix PREFECT_API_URL")
    return url


def api_url() -> str | None:
    """PREFECT_API_URL as Prefect resolves it (environment, profile), else the local stack's."""
    from prefect.settings import PREFECT_API_URL

    return use_stack_api() or PREFECT_API_URL.value()


def use_stack_api() -> str | None:
    """Point Prefect clients at the local stack unless PREFECT_API_URL is already set."""
    from freshet.ops.stack import Stack

    stack = Stack(get_settings())
    if not os.environ.get("PREFECT_API_URL") and not stack.running():
        from freshet.ops.scale import ScaleStack

        stack = ScaleStack(get_settings()) if ScaleStack(get_settings()).running() else stack
    url = os.environ.get("PREFECT_API_URL") or (stack.api_url() if stack.running() else None)
    if url and not os.environ.get("PREFECT_API_URL"):
        os.environ["PREFECT_API_URL"] = url
        lake = stack.state().get("worker_env", {}).get("FRESHET_LAKE_URL")
        if lake and "FRESHET_LAKE_URL" not in os.environ:
            os.environ["FRESHET_LAKE_URL"] = lake
    return url
