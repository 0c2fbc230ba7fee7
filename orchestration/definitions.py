"""Dagster definitions: `dagster dev -w workspace.yaml` or `dagster asset materialize -m orchestration`."""

from __future__ import annotations

from dagster import Definitions, PipesSubprocessClient, define_asset_job

from orchestration.assets import anomaly_thresholds, ingest_transactions, replay_event_time_windows
from orchestration.settings import REPO_ROOT, PipelineSettings

replay_transactions_job = define_asset_job(
    "replay_transactions",
    selection="*",
    description="Replay the configured source CSV into the warehouse: every asset and its checks.",
)

defs = Definitions(
    assets=[ingest_transactions, replay_event_time_windows, anomaly_thresholds],
    jobs=[replay_transactions_job],
    resources={
        "pipeline": PipelineSettings.from_env(),
        "pipes_subprocess_client": PipesSubprocessClient(cwd=str(REPO_ROOT)),
    },
)
