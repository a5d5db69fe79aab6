"""deployments/prefect.yaml is the one source of truth: its entrypoints import, its
trigger matches freshet's events and settings, and every flow parameter is typed,
defaulted and described for the Prefect UI's run form."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from prefect.flows import load_flow_from_entrypoint

from freshet import events
from freshet.settings import Settings

REPO = Path(__file__).resolve().parents[2]
SPEC = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
DEPLOYMENTS = {d["name"]: d for d in SPEC["deployments"]}


@pytest.mark.parametrize("name", sorted(DEPLOYMENTS))
def test_entrypoints_import_and_every_parameter_is_usable_from_the_ui(name: str, monkeypatch) -> None:
    monkeypatch.chdir(REPO)
    flow = load_flow_from_entrypoint(DEPLOYMENTS[name]["entrypoint"])
    schema = flow.parameters.model_dump()
    assert schema["properties"], f"{name} has no parameters"
    for param, spec in schema["properties"].items():
        assert spec.get("description"), f"{name}.{param} has no description"
        assert param not in schema.get("required", []), f"{name}.{param} has no default"
        assert "type" in spec or "anyOf" in spec, f"{name}.{param} has no type"


def test_the_train_trigger_matches_freshets_events_and_settings() -> None:
    trigger, degraded = DEPLOYMENTS["train"]["triggers"]
    # drift retrains a dataset on its own trigger, with the evidence as the run's reason
    assert degraded["expect"] == [events.MODEL_DEGRADED] and degraded["for_each"] == ["prefect.resource.id"]
    assert set(degraded["parameters"]) == {"dataset", "event_id", "reason"}
    assert "event.payload.reason" in degraded["parameters"]["reason"]
    assert trigger["expect"] == [events.DATA_LANDED]
    assert trigger["match"]["prefect.resource.id"] == f"{events.RESOURCE_PREFIX}*"
    assert trigger["for_each"] == ["prefect.resource.id"]
    assert set(trigger["parameters"]) == {"dataset", "uris", "event_id"}
    assert events.DATASET_LABEL in trigger["parameters"]["dataset"]
    # the flow's debounce relies on knowing the trigger's throttle window
    assert trigger["within"] == Settings().trigger_throttle_seconds


def test_a_busy_dataset_cannot_hold_deployment_slots_other_datasets_need() -> None:
    # capacity is the freshet-train-slots global limit, taken only while fitting (freshet.locks);
    # a deployment limit would also count runs that only wait for their dataset
    assert "concurrency_limit" not in DEPLOYMENTS["train"]
    assert DEPLOYMENTS["watchdog"]["schedules"][0]["interval"] > 0


def test_the_forecast_triggers_follow_promotions_and_landings_per_dataset() -> None:
    triggers = {t["expect"][0]: t for t in DEPLOYMENTS["forecast"]["triggers"]}
    assert set(triggers) == {events.MODEL_PROMOTED, events.DATA_LANDED}
    for trigger in triggers.values():
        assert trigger["match"]["prefect.resource.id"] == f"{events.RESOURCE_PREFIX}*"
        assert trigger["for_each"] == ["prefect.resource.id"]
        # the flow looks again once the throttle window has passed: it must know the window
        assert trigger["within"] == Settings().trigger_throttle_seconds
        assert events.DATASET_LABEL in trigger["parameters"]["dataset"]
    assert set(triggers[events.DATA_LANDED]["parameters"]) == {"dataset", "uris", "event_id"}
    assert DEPLOYMENTS["forecast"]["concurrency_limit"]["collision_strategy"] == "ENQUEUE"
