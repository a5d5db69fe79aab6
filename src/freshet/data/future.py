"""Future values of known-in-advance exogenous columns: their own landing area, validated like actuals.

Files land under ``<lake>/future/landing/<dataset>/`` and are admitted by the same code as
actuals (``admit_file``) into ``<lake>/future/{curated,manifest,quarantine}/<dataset>/``,
against the dataset's contract without its target column. Rows may lie any distance in
the future (that is the point), so the future-time rule is relaxed to ``MAX_LOOKAHEAD_HOURS``.
"""

from __future__ import annotations

import dataclasses

from freshet.data.contracts import Contract
from freshet.data.lake import Lake

AREA = "future"
MAX_LOOKAHEAD_HOURS = 24 * 366 * 5


def future_lake(lake: Lake) -> Lake:
    """The lake view whose ``landing/``, ``curated/``, ``manifest/`` and ``quarantine/`` hold future values."""
    return lake.area(AREA)


def future_contract(contract: Contract) -> Contract:
    """The contract without its target: what a future-values file must satisfy.

    The target's non-null requirement moves to the time column (already required), so
    ``required_non_null`` and the value rules apply to the remaining columns only.
    """
    y = contract.target
    return dataclasses.replace(
        contract,
        columns={c: d for c, d in contract.columns.items() if c != y},
        target=contract.time_column,
        rules={c: r for c, r in contract.rules.items() if c != y},
    )
