"""The ``policies`` flow: its artifacts (a table and a Markdown report with the chart), and its deployment."""

from __future__ import annotations

import json
from pathlib import Path

from freshet.lab.metrics import NAIVE
from freshet.lab.policies import AFTER_TRAINING, ON_LANDING, default_combinations, default_policies

from tests.conftest import flow_run_id

REPO = Path(__file__).resolve().parents[2]


def test_flow_publishes_a_table_and_a_markdown_report_with_the_chart(prefect_api, tmp_path: Path) -> None:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.policies import policies

    state = policies(datasets=1, days=4, seed=3, out=str(tmp_path), return_state=True)
    assert state.is_completed(), state.message
    result = state.result()
    assert Path(result["report"]).exists() and Path(result["chart"]).exists()
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(
            flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id(state)])))
    by_key = {a.key: a for a in found}
    table = by_key["freshet-policies"].data
    table = json.loads(table) if isinstance(table, str) else table
    shown = {(p.name, m) for p, m in default_combinations()}
    assert [(row["retraining"], row["forecasts"]) for row in table] == (
        [(p.name, m) for p in default_policies() for m in (ON_LANDING, AFTER_TRAINING) if (p.name, m) in shown]
        + [(NAIVE, ON_LANDING)])
    markdown = by_key["freshet-policies-report"].data
    assert "![staleness and error over time](data:image/png;base64,iVBORw0KGgo" in markdown
    assert "| event-driven" in markdown and "### shop_a" in markdown


def test_the_policies_deployment_points_at_the_flow_with_described_parameters() -> None:
    import yaml
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((REPO / "deployments" / "prefect.yaml").read_text())
    (dep,) = [d for d in spec["deployments"] if d["name"] == "policies"]
    flow = load_flow_from_entrypoint(str(REPO / dep["entrypoint"]))
    assert flow.name == "policies"
    props = flow.parameters.model_dump()["properties"]
    assert set(dep["parameters"]) == set(props)
    for name, schema in props.items():
        assert schema.get("description"), f"parameter {name} has no description"
        assert schema["default"] == dep["parameters"][name]
