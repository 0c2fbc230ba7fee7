"""Dagster definitions: `dagster dev -w workspace.yaml` or `dagster asset materialize -m orchestration`."""

from __future__ import annotations

from dagster import Definitions, PipesSubprocessClient, in_process_executor

from orchestration.assets import anomaly_thresholds, ingest_transactions, replay_event_time_windows
from orchestration.automation import (
    daily_replay,
    freshness_checks,
    freshness_checks_sensor,
    incoming_csv_sensor,
    pipeline_failure_summary,
    replay_transactions_job,
)
from orchestration.settings import REPO_ROOT, PipelineSettings

defs = Definitions(
    assets=[ingest_transactions, replay_event_time_windows, anomaly_thresholds],
    asset_checks=freshness_checks,
    jobs=[replay_transactions_job],
    schedules=[daily_replay],
    sensors=[incoming_csv_sensor, pipeline_failure_summary, freshness_checks_sensor],
    executor=in_process_executor,
    resources={
        "pipeline": PipelineSettings.from_env(),
        "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
    },
)
