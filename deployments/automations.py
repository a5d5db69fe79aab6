"""Automations that prefect.yaml cannot express, created idempotently.

One staleness alarm per dataset contract: a proactive trigger that fires when no
``data.landed`` arrives for the dataset within its window (the contract's
``staleness_hours``, or ``FRESHET_STALE_AFTER_SECONDS`` for all). Its action
runs the ``watchdog`` deployment with ``reason="stale"`` (which logs the alarm,
emits ``freshet.dataset.stale`` and retrains anything stranded), plus a
notification when ``FRESHET_NOTIFY_BLOCK`` names a notification block.

Automations are upserted by name, so running this twice leaves one automation
per dataset, not two. Run it after ``prefect deploy`` (``freshet deploy`` does both)::

    python deployments/automations.py
"""

from __future__ import annotations

from datetime import timedelta

from prefect.automations import AutomationCore
from prefect.client.orchestration import get_client
from prefect.events.actions import RunDeployment, SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from freshet import events
from freshet.data.contracts import Contract, load_all
from freshet.settings import Settings, get_settings

WATCHDOG = "watchdog/watchdog"


def stale_automation_name(dataset: str) -> str:
    return f"freshet-stale-{dataset}"


def staleness_automation(contract: Contract, watchdog_id, settings: Settings, notify_block_id=None) -> AutomationCore:
    """The proactive alarm for one dataset."""
    window = settings.stale_after_seconds or contract.staleness_hours * 3600
    actions = [RunDeployment(source="selected", deployment_id=watchdog_id,
                             parameters={"dataset": contract.name, "reason": "stale"})]
    if notify_block_id:
        actions.append(SendNotification(
            block_document_id=notify_block_id,
            subject=f"freshet: {contract.name} is stale",
            body=f"No data.landed for dataset {contract.name} within {window:.0f} s. Check its ingestion job.",
        ))
    return AutomationCore(
        name=stale_automation_name(contract.name),
        description=f"No {events.DATA_LANDED} for {contract.name} within {window:.0f} s: raise the staleness alarm.",
        enabled=True,
        trigger=EventTrigger(
            posture=Posture.Proactive,
            expect={events.DATA_LANDED},
            match={"prefect.resource.id": f"{events.RESOURCE_PREFIX}{contract.name}"},
            threshold=1,
            within=timedelta(seconds=window),
        ),
        actions=actions,
    )


def upsert(client, automation: AutomationCore) -> str:
    """Create or replace the automation with this name; delete duplicates left by others."""
    existing = client.read_automations_by_name(automation.name)
    for extra in existing[1:]:
        client.delete_automation(extra.id)
    if existing:
        client.update_automation(existing[0].id, automation)
        return "updated"
    client.create_automation(automation)
    return "created"


def _notify_block_id(settings: Settings):
    if not settings.notify_block:
        return None
    from prefect.blocks.core import Block

    return Block.load(settings.notify_block)._block_document_id


def main() -> dict[str, str]:
    settings = get_settings()
    contracts = load_all(settings.contracts_dir)
    notify = _notify_block_id(settings)
    done = {}
    with get_client(sync_client=True) as client:
        watchdog = client.read_deployment_by_name(WATCHDOG)
        for contract in contracts:
            automation = staleness_automation(contract, watchdog.id, settings, notify)
            done[automation.name] = upsert(client, automation)
    for name, what in done.items():
        print(f"automation {name}: {what}")
    return done


if __name__ == "__main__":
    main()
