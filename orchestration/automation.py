"""Schedules, sensors and freshness checks of the pipeline.

`daily_replay` (STOPPED by default) replays TXN_SOURCE_CSV; `incoming_csv_sensor` requests one run per
new or changed `*.csv` or `*.csv.gz` file in TXN_INCOMING_DIR, replaying it into the warehouse;
`pipeline_failure_summary` logs one line per failed run; `window_freshness_checks` (evaluated by
`freshness_checks_sensor`) fail when the window assets are older than TXN_FRESHNESS_FAIL_MINUTES.
Under `make dev` runs never race on the warehouse: the instance's run queue admits one at a time
(orchestration/dagster.yaml, copied into DAGSTER_HOME).

Nothing here reads the environment, at import or when a sensor is evaluated:
`build_automation(settings, pipeline)` builds all of it from the `AutomationSettings` and the
`PipelineSettings` that orchestration/definitions.py reads once, where the definitions are built.
Sensor requests carry those same pipeline settings. How to use them: docs/automation-and-ui.md.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from dagster import (
    AssetKey,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    FreshnessPolicy,
    RunFailureSensorContext,
    RunRequest,
    ScheduleDefinition,
    SensorEvaluationContext,
    SkipReason,
    build_last_update_freshness_checks,
    build_sensor_for_freshness_checks,
    define_asset_job,
    run_failure_sensor,
    sensor,
)

from orchestration.dagster_compat import named_asset_checks
from orchestration.settings import AutomationSettings, PipelineSettings

SOURCE_FILE_TAG = "txn/source_file"
WAREHOUSE_TAG = "txn/warehouse"


def run_tags(source_csv: str | Path, warehouse: str | Path) -> dict[str, str]:
    """The tags that say which file a run replays into which warehouse (the Runs page filters by them)."""
    return {SOURCE_FILE_TAG: str(source_csv), WAREHOUSE_TAG: str(warehouse)}


def build_replay_job():
    """The job the schedule and the sensor launch. It has no file or warehouse tags of its own: a launchpad
    run's config may name others than the configured ones. The schedule and the sensor tag their runs with
    what they replay, and a run's first step tags every run with the file and warehouse of its config."""
    return define_asset_job(
        "replay_transactions",
        selection="*",
        description="Replay the configured source CSV into the warehouse: every asset and its checks.",
    )


def file_run_key(path: Path, stat: os.stat_result | None = None) -> str:
    """Stable per file version: the same name, mtime and size never runs twice."""
    stat = stat or path.stat()
    return f"{path.name}:{stat.st_mtime_ns}:{stat.st_size}"


def replay_run_config(source_csv: Path, settings: PipelineSettings) -> dict:
    """Run config replaying one file with every other setting as configured.

    Dagster replaces the resource's whole configured value with the run config, so a run config
    with only `source_csv` would reset the warehouse and all other settings to their built-in
    defaults: every field is passed.
    """
    return {"resources": {"pipeline": {"config": {**settings.as_metadata(), "source_csv": str(source_csv)}}}}


def incoming_run_requests(
    folder: Path, now: float, settings: PipelineSettings, settle_s: float = AutomationSettings.incoming_settle_s
) -> list[RunRequest]:
    """One RunRequest per settled *.csv or *.csv.gz file in the folder, oldest first."""
    if not folder.is_dir():
        return []
    files = []
    for path in folder.iterdir():
        name = path.name.lower()
        if path.name.startswith(".") or not (name.endswith(".csv") or name.endswith(".csv.gz")):
            continue
        try:  # one stat per file: a file renamed or deleted meanwhile is simply skipped
            stat = path.stat()
        except FileNotFoundError:
            continue
        if path.is_file():
            files.append((stat, path))
    requests = []
    for stat, path in sorted(files, key=lambda item: (item[0].st_mtime_ns, item[1].name)):
        if now - stat.st_mtime < settle_s:
            continue
        requests.append(
            RunRequest(
                run_key=file_run_key(path, stat),
                run_config=replay_run_config(path.resolve(), settings),
                tags=run_tags(path.resolve(), settings.warehouse_path),
            )
        )
    return requests


def incoming_skip_reason(folder: Path, settle_s: float) -> str:
    """Why the sensor requested no run: the folder is missing (and how to make it) or holds no settled file."""
    if not folder.is_dir():
        return (
            f"{folder} does not exist, so no file can be replayed: create it (mkdir -p {folder}; `make dev` does "
            "for the default data/incoming/) or point TXN_INCOMING_DIR at an existing folder"
        )
    return f"no new *.csv or *.csv.gz file in {folder} unchanged for {settle_s:g} s"


def _failed_source_file(context: RunFailureSensorContext, configured_source: str) -> str:
    run = context.dagster_run
    if SOURCE_FILE_TAG in run.tags:
        return run.tags[SOURCE_FILE_TAG]
    config = (run.run_config or {}).get("resources", {}).get("pipeline", {}).get("config", {})
    return str(config.get("source_csv") or configured_source)


def failure_summary(context: RunFailureSensorContext, configured_source: str) -> str:
    """One line: the run, its failed steps, its file (from the run, else the configured one) and why."""
    steps = [event.step_key for event in context.get_step_failure_events() if event.step_key]
    messages = [
        next(iter((event.step_failure_data.error.message or "").strip().splitlines()), "")
        for event in context.get_step_failure_events()
        if event.step_failure_data and event.step_failure_data.error
    ]
    reason = messages[0] if messages else (context.failure_event.message or "run failed")
    return (
        f"Run {context.dagster_run.run_id} ({context.dagster_run.job_name}) FAILED for file "
        f"{_failed_source_file(context, configured_source)} at step {', '.join(steps) or '-'}: {reason}"
    )


def window_freshness_checks(fail_after: timedelta):
    """Freshness checks that fail when window_averages / late_events were last updated too long ago."""
    checks = build_last_update_freshness_checks(
        assets=[AssetKey("window_averages"), AssetKey("late_events")], lower_bound_delta=fail_after
    )
    return [
        named_asset_checks(
            checks_def,
            "window_freshness_checks",
            f"Fails when window_averages or late_events were last materialized more than {fail_after} ago "
            "(TXN_FRESHNESS_FAIL_MINUTES).",
        )
        for checks_def in checks
    ]


def window_freshness_policy(settings: AutomationSettings) -> FreshnessPolicy:
    """The FreshnessPolicy of the window assets (warn is dropped when it is not below fail)."""
    warn = settings.freshness_warn_minutes
    fail = settings.freshness_fail_minutes
    return FreshnessPolicy.time_window(
        fail_window=timedelta(minutes=fail), warn_window=timedelta(minutes=warn) if warn < fail else None
    )


@dataclass(frozen=True)
class Automation:
    jobs: list
    schedules: list
    sensors: list
    asset_checks: list


def build_automation(settings: AutomationSettings, pipeline: PipelineSettings) -> Automation:
    """The schedule, the sensors and the freshness checks for these settings.

    `pipeline` is the configured `pipeline` resource: the incoming-folder sensor passes all of it in
    each run's config, and the failure summary names its source file when a run did not say its own.
    """
    replay_transactions_job = build_replay_job()
    daily_replay = ScheduleDefinition(
        name="daily_replay",
        job=replay_transactions_job,
        tags=run_tags(pipeline.source_path, pipeline.warehouse_path),
        cron_schedule=settings.schedule_cron,
        execution_timezone=settings.schedule_timezone,
        default_status=DefaultScheduleStatus.STOPPED,
        description=f"Replays the configured source CSV (TXN_SOURCE_CSV) at '{settings.schedule_cron}' "
        f"{settings.schedule_timezone}. Off by default: turn it on in the UI (Automation) or with "
        "`dagster schedule start daily_replay`.",
    )

    @sensor(
        name="incoming_csv_sensor",
        job=replay_transactions_job,
        minimum_interval_seconds=settings.incoming_interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"Replays every new or changed *.csv or *.csv.gz file in {settings.incoming_dir} "
        "(TXN_INCOMING_DIR) into the warehouse, one run per file version (run key: name + mtime + size).",
    )
    def incoming_csv_sensor(context: SensorEvaluationContext):
        import time

        requests = incoming_run_requests(settings.incoming_dir, time.time(), pipeline, settings.incoming_settle_s)
        if not requests:
            return SkipReason(incoming_skip_reason(settings.incoming_dir, settings.incoming_settle_s))
        return requests

    @run_failure_sensor(
        name="pipeline_failure_summary",
        default_status=DefaultSensorStatus.RUNNING,
        description="Logs one summary line per failed run: the run, the failed step, the file and the reason.",
    )
    def pipeline_failure_summary(context: RunFailureSensorContext) -> None:
        context.log.error(failure_summary(context, pipeline.source_csv))

    freshness_checks = window_freshness_checks(timedelta(minutes=settings.freshness_fail_minutes))
    freshness_checks_sensor = build_sensor_for_freshness_checks(
        freshness_checks=freshness_checks, default_status=DefaultSensorStatus.RUNNING, name="freshness_checks_sensor"
    )
    return Automation(
        jobs=[replay_transactions_job],
        schedules=[daily_replay],
        sensors=[incoming_csv_sensor, pipeline_failure_summary, freshness_checks_sensor],
        asset_checks=list(freshness_checks),
    )
