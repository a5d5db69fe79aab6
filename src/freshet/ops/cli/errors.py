"""The errors a person can fix, and how the command line words them: one line, with what to do.

``CliError`` is the command line's own; ``expected_errors`` lists every type that
means "the user can fix this" (bad arguments, an unknown dataset, a broken
contract, a refused URI, no stack, an unreachable server, ...), and ``one_line``
words one of them for ``freshet: error: ...``. Reads no settings.
"""

from __future__ import annotations


class CliError(Exception):
    """An expected failure, with what to do about it; ``main()`` prints it as one line."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


def expected_errors() -> tuple[type[BaseException], ...]:
    """The exception types that mean "the user can fix this", not "freshet has a bug"."""
    from pydantic import ValidationError

    from freshet.data.contracts import ContractError
    from freshet.data.ingestion import UriRejected
    from freshet.data.lake import StorageError
    from freshet.events import EmitError
    from freshet.ops.stack import StackError

    types: list[type[BaseException]] = [CliError, ContractError, UriRejected, StorageError, EmitError, StackError,
                                        ValidationError]
    try:
        from freshet.lab.traces import LabError
        types.append(LabError)
    except ImportError:  # the lab's optional imports are missing: its errors cannot occur
        pass
    return tuple(types)


def one_line(exc: BaseException) -> str:
    """The message of an expected error, on one line, with what to do where the type implies it."""
    from pydantic import ValidationError

    from freshet.data.ingestion import UriRejected
    from freshet.events import EmitError

    if isinstance(exc, ValidationError):
        err = exc.errors()[0]
        field = "_".join(str(part) for part in err["loc"]).upper()
        message = f"invalid setting FRESHET_{field}: {err['msg']} (see the settings table in README.md)"
    else:
        message = str(exc)
        if isinstance(exc, UriRejected):
            message += "; land files under <FRESHET_LAKE_URL>/landing/<dataset>/ first"
        elif isinstance(exc, EmitError):
            message += "; is PREFECT_API_URL right (or `freshet up` running)?"
    return " ".join(message.split())
