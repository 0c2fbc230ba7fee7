"""Pipeline configuration: one Dagster resource, defaulted from environment variables.

Every field can be set with its environment variable (read when the definitions load) or
overridden per run in the Dagster launchpad under `resources: pipeline: config:`. The definitions bind
the resource through `checked_at_launch`, so an invalid config is a config error when a run is launched.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum, StrEnum
from pathlib import Path

from dagster import ConfigurableResource, DagsterInvalidConfigError, ResourceDefinition
from pydantic import Field

from flink_jobs.output import jvm_heap_problem, parallelism_problem
from flink_jobs.window_job import DEFAULT_JVM_HEAP, DEFAULT_PARALLELISM
from orchestration.dagster_compat import resource_definition
from warehouse import windows
from warehouse.advice import parse_targets
from warehouse.store import DEFAULT_MEMORY_LIMIT, memory_limit_problem, warehouse_path_problem
from warehouse.thresholds import Method
from warehouse.time_outliers import DEFAULT_CONFIRM_ROWS, DEFAULT_MAX_TIME_JUMP_MS
from warehouse.timestamps import validate_timezone
from warehouse.windows import WindowSpec

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SOURCE_CSV = REPO_ROOT / "data" / "sample_transactions.csv"
DEFAULT_WAREHOUSE = REPO_ROOT / "data" / "warehouse.duckdb"

# field -> environment variable
ENV_VARS: dict[str, str] = {
    "source_csv": "TXN_SOURCE_CSV",
    "warehouse": "TXN_WAREHOUSE",
    "source_timezone": "TXN_SOURCE_TIMEZONE",
    "key_column": "TXN_KEY_COLUMN",
    "replay_mode": "TXN_REPLAY_MODE",
    "window_kind": "TXN_WINDOW_KIND",
    "window_size_ms": "TXN_WINDOW_SIZE_MS",
    "window_slide_ms": "TXN_WINDOW_SLIDE_MS",
    "session_gap_ms": "TXN_SESSION_GAP_MS",
    "out_of_orderness_ms": "TXN_OUT_OF_ORDERNESS_MS",
    "allowed_lateness_ms": "TXN_ALLOWED_LATENESS_MS",
    "flink_parallelism": "TXN_FLINK_PARALLELISM",
    "flink_jobmanager": "TXN_FLINK_JOBMANAGER",
    "aggregates": "TXN_AGGREGATE",
    "anomaly_min_windows": "TXN_ANOMALY_MIN_WINDOWS",
    "anomaly_z": "TXN_ANOMALY_Z",
    "max_rejected_ratio": "TXN_MAX_REJECTED_RATIO",
    "max_late_ratio": "TXN_MAX_LATE_RATIO",
    "max_time_jump_ms": "TXN_MAX_TIME_JUMP_MS",
    "time_jump_confirm_rows": "TXN_TIME_JUMP_CONFIRM_ROWS",
    "duckdb_memory_limit": "TXN_DUCKDB_MEMORY_LIMIT",
    "flink_jvm_heap": "TXN_FLINK_JVM_HEAP",
    "advice_targets": "TXN_ADVICE_TARGETS",
    "alert_webhook_url": "TXN_ALERT_WEBHOOK_URL",
    "alert_max_items": "TXN_ALERT_MAX_ITEMS",
}
# Variables that no longer select anything: setting one stops the definitions from loading.
RETIRED_ENV_VARS = {
    "TXN_FLINK_ENGINE": "TXN_FLINK_ENGINE is no longer used: the one Flink job runs Flink's own window "
    "operator with exact DECIMAL aggregates, and your own AggregateFunction is plugged in with "
    "TXN_AGGREGATE=package.module:ClassName; unset TXN_FLINK_ENGINE",
}
_COLUMN_NAME = re.compile(r"^[^\x00-\x1f\",]{1,128}$")


class WindowKind(StrEnum):
    """The window kinds (TXN_WINDOW_KIND): an enum in the run config, so the launchpad flags a typo before launch."""

    tumbling = "tumbling"
    sliding = "sliding"
    session = "session"


class ReplayMode(StrEnum):
    """How a warehouse's files are replayed (TXN_REPLAY_MODE; docs/stream-mode.md): `file`, each file on its
    own (a fresh watermark, every window fired at its end); `stream`, the files as one event-time stream
    carried in Flink's state from run to run."""

    file = "file"
    stream = "stream"


def with_launchpad_keys(problem: str) -> str:
    """A problem sentence naming each variable's launchpad key (resources.pipeline.config.<key>) beside it."""
    keys = [field for field, var in ENV_VARS.items() if re.search(rf"(?<![A-Z_]){var}(?![A-Z_])", problem)]
    return f"{problem} [launchpad: {', '.join(keys)}]" if keys else problem


class PipelineSettings(ConfigurableResource):
    source_csv: str = Field(default=str(DEFAULT_SOURCE_CSV), description="Input CSV (TXN_SOURCE_CSV).")
    warehouse: str = Field(default=str(DEFAULT_WAREHOUSE), description="DuckDB file (TXN_WAREHOUSE).")
    source_timezone: str = Field(
        default="UTC", description="IANA zone for timestamps without an offset (TXN_SOURCE_TIMEZONE)."
    )
    key_column: str = Field(default="transaction_id", description="Column windows are keyed by (TXN_KEY_COLUMN).")
    replay_mode: ReplayMode = Field(
        default=ReplayMode.file,
        description="file: each file replayed on its own; stream: the warehouse's files as one event-time stream, "
        "Flink's state carried from run to run (TXN_REPLAY_MODE).",
    )
    window_kind: WindowKind = Field(
        default=WindowKind(windows.DEFAULT_KIND), description="tumbling, sliding or session (TXN_WINDOW_KIND)."
    )
    window_size_ms: int | None = Field(
        default=None,
        description=f"Window size in ms, tumbling and sliding; empty = {windows.DEFAULT_SIZE_MS} (TXN_WINDOW_SIZE_MS).",
    )
    window_slide_ms: int | None = Field(
        default=None, description="Slide in ms, sliding windows only; empty = not set (TXN_WINDOW_SLIDE_MS)."
    )
    session_gap_ms: int | None = Field(
        default=None,
        description=f"Session gap in ms, session windows only; empty = {windows.DEFAULT_SESSION_GAP_MS} "
        "(TXN_SESSION_GAP_MS).",
    )
    out_of_orderness_ms: int = Field(
        default=windows.DEFAULT_OUT_OF_ORDERNESS_MS,
        description="Bounded out-of-orderness of the watermark in ms (TXN_OUT_OF_ORDERNESS_MS).",
    )
    allowed_lateness_ms: int = Field(
        default=windows.DEFAULT_ALLOWED_LATENESS_MS, description="Allowed lateness in ms (TXN_ALLOWED_LATENESS_MS)."
    )
    flink_parallelism: int = Field(
        default=DEFAULT_PARALLELISM, description="Flink parallelism (TXN_FLINK_PARALLELISM)."
    )
    flink_jobmanager: str = Field(
        default="", description="host:port of a Flink cluster; empty = local mini-cluster (TXN_FLINK_JOBMANAGER)."
    )
    aggregates: str = Field(
        default="",
        description="Your own AggregateFunction(s): package.module:ClassName, comma-separated (TXN_AGGREGATE).",
    )
    anomaly_min_windows: int = Field(
        default=30, description="Windows a key needs before it gets a threshold (TXN_ANOMALY_MIN_WINDOWS)."
    )
    anomaly_z: float = Field(
        default=3.5, description="Modified z-score above which a window is anomalous (TXN_ANOMALY_Z)."
    )
    max_rejected_ratio: float = Field(
        default=0.01,
        description="Rejected rows / data rows above which the rejected-row check warns (TXN_MAX_REJECTED_RATIO).",
    )
    max_late_ratio: float = Field(
        default=0.02,
        description="Late events / transactions above which the late-event check warns (TXN_MAX_LATE_RATIO).",
    )
    max_time_jump_ms: int = Field(
        default=DEFAULT_MAX_TIME_JUMP_MS,
        description="A row more than this many ms ahead of the stream, unconfirmed by the rows after it, is "
        "quarantined to rejected_rows before it can move the watermark; 0 = off (TXN_MAX_TIME_JUMP_MS).",
    )
    time_jump_confirm_rows: int = Field(
        default=DEFAULT_CONFIRM_ROWS,
        description="A jump is real when this many of the twice as many rows after it are at its time "
        "(TXN_TIME_JUMP_CONFIRM_ROWS).",
    )

    duckdb_memory_limit: str = Field(
        default=DEFAULT_MEMORY_LIMIT,
        description="DuckDB memory limit of the pipeline's connections; larger work spills to disk "
        "(TXN_DUCKDB_MEMORY_LIMIT).",
    )
    flink_jvm_heap: str = Field(
        default=DEFAULT_JVM_HEAP,
        description="Max heap (-Xmx) of the local Flink mini-cluster JVM (TXN_FLINK_JVM_HEAP).",
    )
    advice_targets: str = Field(
        default="0.05,0.01,0.001,0",
        description="Late-event ratios the watermark advice finds the smallest bound for (TXN_ADVICE_TARGETS).",
    )
    alert_webhook_url: str = Field(
        default="",
        description="http(s) URL that gets one JSON POST per run with new anomalies (TXN_ALERT_WEBHOOK_URL).",
    )
    alert_max_items: int = Field(
        default=100, description="Most anomalies listed in one alert, largest score first (TXN_ALERT_MAX_ITEMS)."
    )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> PipelineSettings:
        """Settings from TXN_* variables; unset or empty variables keep the defaults."""
        environ = os.environ if environ is None else environ
        for var, message in RETIRED_ENV_VARS.items():
            if environ.get(var, "").strip():
                raise ValueError(message)
        values: dict[str, object] = {}
        for field, var in ENV_VARS.items():
            raw = environ.get(var, "").strip()
            if not raw:
                continue
            annotation = cls.model_fields[field].annotation
            if annotation == int | None:
                annotation = int
            try:
                values[field] = annotation(raw) if annotation in (int, float, WindowKind, ReplayMode) else raw
            except ValueError:
                if annotation is ReplayMode:
                    raise ValueError(f"{var}={raw!r} is not a replay mode: use file or stream") from None
                if annotation is WindowKind:
                    raise ValueError(
                        f"{var}={raw!r} is not a window kind: use one of {', '.join(k.value for k in WindowKind)}"
                    ) from None
                raise ValueError(f"{var}={raw!r} is not a valid {annotation.__name__}") from None
        for path_field in ("source_csv", "warehouse"):
            if path_field in values:
                values[path_field] = os.path.abspath(os.path.expanduser(str(values[path_field])))
        return cls(**values)

    def window_spec(self, validate: bool = True) -> WindowSpec:
        """The window spec (validated: raises WindowSpecError; `problems()` lists the same)."""
        spec = WindowSpec.unvalidated(
            WindowKind(self.window_kind).value,
            size_ms=self.window_size_ms,
            slide_ms=self.window_slide_ms,
            gap_ms=self.session_gap_ms,
            out_of_orderness_ms=self.out_of_orderness_ms,
            allowed_lateness_ms=self.allowed_lateness_ms,
        )
        return spec.validate() if validate else spec

    def problems(self) -> list[str]:
        """Every invalid setting, each as one sentence naming the env var ([] when all are valid)."""
        found = []
        found.extend(self.window_spec(validate=False).problems())
        if (
            problem := parallelism_problem(self.flink_parallelism, "Flink parallelism (TXN_FLINK_PARALLELISM)")
        ) is not None:
            found.append(problem)
        found.extend(
            Method(z=self.anomaly_z, min_windows=self.anomaly_min_windows).problems(
                {"z": "anomaly z (TXN_ANOMALY_Z)", "min_windows": "anomaly min windows (TXN_ANOMALY_MIN_WINDOWS)"}
            )
        )
        for field, var in (("max_rejected_ratio", "TXN_MAX_REJECTED_RATIO"), ("max_late_ratio", "TXN_MAX_LATE_RATIO")):
            value = getattr(self, field)
            if not (math.isfinite(value) and 0 <= value <= 1):
                found.append(f"{field.replace('_', ' ')} must be a number from 0 to 1 ({var}), got {value}")
        if self.max_time_jump_ms < 0:
            found.append(f"TXN_MAX_TIME_JUMP_MS must be >= 0 (0 switches the rule off), got {self.max_time_jump_ms}")
        if self.time_jump_confirm_rows < 1:
            found.append(f"TXN_TIME_JUMP_CONFIRM_ROWS must be >= 1, got {self.time_jump_confirm_rows}")
        try:
            parse_targets(self.advice_targets)
        except ValueError as error:
            found.append(str(error))
        if (
            problem := memory_limit_problem(self.duckdb_memory_limit, "DuckDB memory limit (TXN_DUCKDB_MEMORY_LIMIT)")
        ) is not None:
            found.append(problem)
        if (problem := jvm_heap_problem(self.flink_jvm_heap, "Flink JVM heap (TXN_FLINK_JVM_HEAP)")) is not None:
            found.append(problem)
        try:
            validate_timezone(self.source_timezone)
        except ValueError as error:
            found.append(f"{error} (TXN_SOURCE_TIMEZONE)")
        if not _COLUMN_NAME.match(self.key_column.strip()):
            found.append(f"key column name {self.key_column!r} is not a usable CSV column name (TXN_KEY_COLUMN)")
        if self.alert_max_items < 1:
            found.append(f"TXN_ALERT_MAX_ITEMS must be >= 1, got {self.alert_max_items}")
        from warehouse.alerts import url_problem  # the sentence never repeats the URL (credentials)

        if (webhook_problem := url_problem(self.alert_webhook_url)) is not None:
            found.append(webhook_problem)
        if self.flink_jobmanager:
            from flink_jobs.environment import parse_jobmanager

            try:
                parse_jobmanager(self.flink_jobmanager)
            except ValueError as error:
                found.append(f"{error} (TXN_FLINK_JOBMANAGER)")
        if self.aggregates.strip():
            from flink_jobs.custom_aggregates import load_aggregates  # imports the user's module(s)

            try:
                load_aggregates(self.aggregates)
            except ValueError as error:
                found.append(str(error))
        if Path(self.warehouse).is_dir():
            found.append(f"warehouse path {self.warehouse} is a directory, expected a DuckDB file (TXN_WAREHOUSE)")
        elif (problem := warehouse_path_problem(self.warehouse, "warehouse path (TXN_WAREHOUSE)")) is not None:
            found.append(problem)
        return found

    @property
    def source_path(self) -> Path:
        return Path(self.source_csv).expanduser().resolve()

    @property
    def warehouse_path(self) -> Path:
        return Path(self.warehouse).expanduser().resolve()

    def as_metadata(self) -> dict[str, object]:
        """Every setting as plain values (the window kind as its name): a valid run config and JSON."""
        return {
            field: value.value if isinstance(value, Enum) else value
            for field, value in ((field, getattr(self, field)) for field in ENV_VARS)
        }


def config_error(problems: list[str], config: Mapping[str, object]) -> DagsterInvalidConfigError:
    """Dagster's config error for these problems: one line each, the sentence naming the variable and its key."""
    lines = "".join(f"\n    {with_launchpad_keys(problem)}" for problem in problems)
    return DagsterInvalidConfigError(
        "Invalid config of resource pipeline, so no step ran and nothing was written; fix the environment "
        f"variable, or the [launchpad] key under resources: pipeline: config:{lines}",
        [],  # no per-field errors: a problem can involve two fields (a slide larger than the size)
        config,
    )


def refuse_config_problems(config: Mapping[str, object]) -> Mapping[str, object]:
    """The `pipeline` resource's config unchanged, or a DagsterInvalidConfigError with every `problems()`."""
    problems = PipelineSettings(**config).problems()
    if problems:
        raise config_error(problems, config)
    return config


def checked_at_launch(pipeline: PipelineSettings) -> ResourceDefinition:
    """`pipeline` as the definitions' `pipeline` resource: same schema and TXN_* defaults, config checked at launch.

    Dagster applies a resource's config mapping (`configured`) when it resolves a run's config to plan the run
    (`ResolvedRunConfig.build`), before the run exists: in the code server when the launchpad or a Materialize
    button launches, in the daemon for schedule and sensor runs, in `dagster asset materialize` and `materialize()`.
    Mapping the config to itself through `problems()` makes what the per-field schema cannot express (a slide
    larger than the size) a config error like a window kind typo: no run is created and no step starts. A
    DagsterError passes Dagster's user-code boundary unwrapped. (Pydantic validators would run only when the
    resource is built, inside the first step.)
    """
    definition = resource_definition(pipeline)
    return definition.configured(
        refuse_config_problems,
        config_schema=definition.config_field,
        description="Pipeline settings (TXN_* variables, overridable per run), checked when a run is launched.",
    )


# Read once when the definitions load (not per run): the freshness policy, the schedule and the sensor.
AUTOMATION_ENV_VARS: dict[str, str] = {
    "freshness_warn_minutes": "TXN_FRESHNESS_WARN_MINUTES",
    "freshness_fail_minutes": "TXN_FRESHNESS_FAIL_MINUTES",
    "schedule_cron": "TXN_SCHEDULE_CRON",
    "schedule_timezone": "TXN_SCHEDULE_TIMEZONE",
    "incoming_dir": "TXN_INCOMING_DIR",
    "incoming_interval_s": "TXN_INCOMING_INTERVAL_S",
    "incoming_settle_s": "TXN_INCOMING_SETTLE_S",
}


@dataclass(frozen=True)
class AutomationSettings:
    """Freshness, schedule and file-sensor settings. The daily schedule replays the source once a
    day, so by default the window assets warn after 24 h and fail after 26 h without a run."""

    freshness_warn_minutes: int = 24 * 60
    freshness_fail_minutes: int = 26 * 60
    schedule_cron: str = "0 6 * * *"
    schedule_timezone: str = "UTC"
    incoming_dir: Path = REPO_ROOT / "data" / "incoming"
    incoming_interval_s: int = 15
    incoming_settle_s: float = 2.0  # a file must be unchanged this long before it is replayed

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> AutomationSettings:
        """Settings from the variables (unset or empty: the default); raises ValueError with one
        line per invalid variable."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        problems: list[str] = []
        for field, var in AUTOMATION_ENV_VARS.items():
            raw = environ.get(var, "").strip()
            if not raw:
                continue
            default = getattr(cls, field)
            try:
                if isinstance(default, int):
                    value = int(raw)
                    if value < 1:
                        raise ValueError
                elif isinstance(default, float):
                    value = float(raw)
                    if not (math.isfinite(value) and value >= 0):
                        raise ValueError
                elif isinstance(default, Path):
                    value = Path(os.path.abspath(os.path.expanduser(raw)))
                else:
                    value = raw
            except ValueError:
                kind = "a whole number >= 1" if isinstance(default, int) else "a number of seconds >= 0"
                problems.append(f"{var}={raw!r} must be {kind}")
                continue
            values[field] = value
        if "schedule_timezone" in values:
            try:
                validate_timezone(str(values["schedule_timezone"]))
            except ValueError as error:
                problems.append(f"TXN_SCHEDULE_TIMEZONE={values['schedule_timezone']!r}: {error}")
        if "schedule_cron" in values and len(str(values["schedule_cron"]).split()) != 5:
            problems.append(f"TXN_SCHEDULE_CRON={values['schedule_cron']!r} must be a cron string with 5 fields")
        if problems:
            raise ValueError("\n".join(problems))
        return cls(**values)
