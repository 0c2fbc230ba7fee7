"""Dagster definitions: `dagster dev -w workspace.yaml` or `dagster asset materialize -m orchestration`.

The environment is read here and nowhere else at load time: `PipelineSettings.from_env()` (the
`pipeline` resource, overridable per run) and `AutomationSettings.from_env()` (freshness, schedule
and sensors, fixed for the life of the code location). The `pipeline` resource is bound through
`checked_at_launch`: a run whose pipeline config has a problem is refused when it is launched.
"""

from __future__ import annotations

from dagster import AssetsDefinition, Definitions, PipesSubprocessClient, in_process_executor

from orchestration.advice_assets import watermark_advice
from orchestration.anomaly_assets import anomalies, anomaly_thresholds
from orchestration.assets import WINDOW_ASSETS, ingest_transactions, replay_event_time_windows
from orchestration.automation import build_automation, window_freshness_policy
from orchestration.settings import REPO_ROOT, AutomationSettings, PipelineSettings, checked_at_launch
from orchestration.write_audit_publish import require_pipeline_tables

# Every table asset, in the order a full run writes them.
PIPELINE_ASSETS: list[AssetsDefinition] = [
    ingest_transactions,
    watermark_advice,
    replay_event_time_windows,
    anomaly_thresholds,
    anomalies,
]


def build_definitions(automation_settings: AutomationSettings, pipeline: PipelineSettings) -> Definitions:
    require_pipeline_tables(PIPELINE_ASSETS)  # each table has its place in the write-audit-publish order
    automation = build_automation(automation_settings, pipeline)
    policy = window_freshness_policy(automation_settings)
    assets = [
        definition.map_asset_specs(
            lambda spec: (
                spec.replace_attributes(freshness_policy=policy) if spec.key.to_user_string() in WINDOW_ASSETS else spec
            )
        )
        for definition in PIPELINE_ASSETS
    ]
    return Definitions(
        assets=assets,
        asset_checks=automation.asset_checks,
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
        executor=in_process_executor,
        resources={
            "pipeline": checked_at_launch(pipeline),
            "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
        },
    )


defs = build_definitions(AutomationSettings.from_env(), PipelineSettings.from_env())
