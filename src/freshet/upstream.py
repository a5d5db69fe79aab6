"""Checks that the third-party internals freshet patches or imports are the code it was written for.

freshet reaches into three private places: aiosqlite's cursor and Prefect's SQLite
transaction mode (``freshet.ops.prefect_server``), ``prefect.flow_engine``'s process
start (``freshet.ops.serve``) and Prefect's private concurrency exception
(``freshet.locks``). Each :class:`Expectation` names the objects a patch depends on and
the SHA-256 of their source in the versions it was checked with; :func:`verify` raises
:class:`UpstreamChanged` with advice (which package, which version was checked, what to
do) before anything is patched, instead of a patch that silently stops working after an
upgrade. A new version whose code is unchanged passes: the source, not the version
number, is compared.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
from dataclasses import dataclass
from importlib import metadata
from typing import Any


class UpstreamChanged(RuntimeError):
    """Code freshet patches or relies on is not the code it was written for."""


@dataclass(frozen=True)
class Expectation:
    what: str               # the patch, in a few words
    package: str            # the distribution whose code is patched
    checked: str            # the versions whose source the hashes come from
    sources: dict[str, str]  # "module:qualname" -> SHA-256 of ``inspect.getsource`` of it
    advice: str             # what to do when it changed


def source_digest(obj: Any) -> str:
    """SHA-256 of an object's source (functions unwrapped), or "" when it has none."""
    try:
        return hashlib.sha256(inspect.getsource(inspect.unwrap(obj)).encode()).hexdigest()
    except (OSError, TypeError):
        return ""


def installed(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def resolve(target: str) -> Any | None:
    """The object named ``module:qualname``, or None when the module or the attribute is gone."""
    module, _, qualname = target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        return None
    return obj


def verify(expect: Expectation, objects: dict[str, Any] | None = None) -> None:
    """Raise ``UpstreamChanged`` unless every object in ``expect.sources`` exists with the expected source.

    ``objects`` (name -> object) replaces the installed ones: tests check the check with fakes.
    """
    if objects is None:
        objects = {name: resolve(name) for name in expect.sources}
    missing = [name for name in expect.sources if objects.get(name) is None]
    changed = [name for name, digest in expect.sources.items()
               if name not in missing and source_digest(objects[name]) != digest]
    if not (missing or changed):
        return
    found = "; ".join([*(f"{n} is gone" for n in missing), *(f"{n} has changed" for n in changed)])
    raise UpstreamChanged(
        f"{expect.what}: {found} in {expect.package} {installed(expect.package)}; freshet's patch was checked "
        f"with {expect.package} {expect.checked} only. {expect.advice}"
    )
