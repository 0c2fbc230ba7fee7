"""Tests for the pipeline configuration resource (orchestration.settings)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from dagster import DagsterInstance, DagsterInvalidConfigError

from orchestration.definitions import build_definitions
from orchestration.settings import (
    AUTOMATION_ENV_VARS,
    ENV_VARS,
    REPO_ROOT,
    RETIRED_ENV_VARS,
    AutomationSettings,
    PipelineSettings,
    WindowKind,
    checked_at_launch,
    refuse_config_problems,
    with_launchpad_keys,
)
from warehouse import windows
from warehouse.windows import WindowSpec, WindowSpecError


def full_env(tmp_path: Path) -> dict[str, str]:
    """Every variable, each with a value other than its default (the window variables together are
    not a valid spec: a session gap does not go with sliding windows; see valid_env)."""
    return {
        "TXN_SOURCE_CSV": str(tmp_path / "in" / "txns.csv"),
        "TXN_WAREHOUSE": str(tmp_path / "out" / "wh.duckdb"),
        "TXN_SOURCE_TIMEZONE": "Europe/Berlin",
        "TXN_KEY_COLUMN": "account_id",
        "TXN_REPLAY_MODE": "stream",
        "TXN_WINDOW_KIND": "sliding",
        "TXN_WINDOW_SIZE_MS": "60000",
        "TXN_WINDOW_SLIDE_MS": "20000",
        "TXN_SESSION_GAP_MS": "30000",
        "TXN_OUT_OF_ORDERNESS_MS": "250",
        "TXN_ALLOWED_LATENESS_MS": "1500",
        "TXN_FLINK_PARALLELISM": "4",
        "TXN_FLINK_JOBMANAGER": "flink-jm:8081",
        "TXN_AGGREGATE": "flink_jobs.aggregates.median:MedianAmount",
        "TXN_ANOMALY_MIN_WINDOWS": "7",
        "TXN_ANOMALY_Z": "2.75",
        "TXN_MAX_REJECTED_RATIO": "0.2",
        "TXN_MAX_LATE_RATIO": "0.3",
        "TXN_MAX_TIME_JUMP_MS": "3600000",
        "TXN_TIME_JUMP_CONFIRM_ROWS": "4",
        "TXN_DUCKDB_MEMORY_LIMIT": "512MB",
        "TXN_FLINK_JVM_HEAP": "768m",
        "TXN_ADVICE_TARGETS": "0.1,0.001",
        "TXN_ALERT_WEBHOOK_URL": "https://alerts.example.com/hook",
        "TXN_ALERT_MAX_ITEMS": "7",
    }


def valid_env(tmp_path: Path) -> dict[str, str]:
    env = full_env(tmp_path)
    del env["TXN_SESSION_GAP_MS"]
    return env


def valid_settings(tmp_path: Path, **overrides: object) -> PipelineSettings:
    values: dict[str, object] = {
        "source_csv": str(tmp_path / "txns.csv"),
        "warehouse": str(tmp_path / "wh.duckdb"),
        "source_timezone": "UTC",
        "key_column": "transaction_id",
        "window_kind": "tumbling",
        "window_size_ms": 5000,
        "out_of_orderness_ms": 1000,
        "allowed_lateness_ms": 0,
        "flink_parallelism": 2,
        "flink_jobmanager": "",
        "anomaly_min_windows": 5,
        "anomaly_z": 3.5,
    }
    values.update(overrides)
    return PipelineSettings(**values)


def mentions(problem: str, var: str) -> bool:
    """The sentence names the variable (as a whole word: TXN_WINDOW_SIZE_MS is not TXN_WINDOW_SIZE)."""
    return re.search(rf"(?<![A-Z_]){re.escape(var)}(?![A-Z_])", problem) is not None


# --------------------------------------------------------------------------- #
# from_env
# --------------------------------------------------------------------------- #
def test_env_vars_cover_every_field() -> None:
    assert set(ENV_VARS) == set(PipelineSettings.model_fields)
    assert len(set(ENV_VARS.values())) == len(ENV_VARS)
    assert all(var.startswith("TXN_") for var in ENV_VARS.values())
    assert not set(RETIRED_ENV_VARS) & set(ENV_VARS.values())


def test_window_variables_are_the_window_specs() -> None:
    fields = {"kind": "window_kind", "size_ms": "window_size_ms", "slide_ms": "window_slide_ms",
              "gap_ms": "session_gap_ms", "out_of_orderness_ms": "out_of_orderness_ms",
              "allowed_lateness_ms": "allowed_lateness_ms"}  # fmt: skip
    assert set(fields) == set(windows.ENV_VARS)
    for name, var in windows.ENV_VARS.items():
        assert ENV_VARS[fields[name]] == var


def test_from_env_reads_every_variable(tmp_path: Path) -> None:
    env = full_env(tmp_path)
    assert set(env) == set(ENV_VARS.values())  # this test sets every variable

    settings = PipelineSettings.from_env(env)

    assert settings.source_csv == str(tmp_path / "in" / "txns.csv")
    assert settings.warehouse == str(tmp_path / "out" / "wh.duckdb")
    assert settings.source_timezone == "Europe/Berlin"
    assert settings.key_column == "account_id"
    assert settings.window_kind == "sliding"
    assert settings.replay_mode == "stream"
    assert settings.window_size_ms == 60000 and type(settings.window_size_ms) is int
    assert settings.window_slide_ms == 20000 and type(settings.window_slide_ms) is int
    assert settings.session_gap_ms == 30000 and type(settings.session_gap_ms) is int
    assert settings.out_of_orderness_ms == 250 and type(settings.out_of_orderness_ms) is int
    assert settings.allowed_lateness_ms == 1500 and type(settings.allowed_lateness_ms) is int
    assert settings.flink_parallelism == 4 and type(settings.flink_parallelism) is int
    assert settings.flink_jobmanager == "flink-jm:8081"
    assert settings.aggregates == "flink_jobs.aggregates.median:MedianAmount"
    assert settings.anomaly_min_windows == 7 and type(settings.anomaly_min_windows) is int
    assert settings.anomaly_z == 2.75 and type(settings.anomaly_z) is float
    assert settings.max_rejected_ratio == 0.2 and settings.max_late_ratio == 0.3
    assert settings.duckdb_memory_limit == "512MB" and settings.flink_jvm_heap == "768m"
    assert settings.advice_targets == "0.1,0.001"
    assert settings.max_time_jump_ms == 3_600_000 and settings.time_jump_confirm_rows == 4
    assert settings.alert_webhook_url == "https://alerts.example.com/hook" and settings.alert_max_items == 7
    # every value differs from its default, so each was really read
    defaults = PipelineSettings()
    for field in ENV_VARS:
        assert getattr(settings, field) != getattr(defaults, field), field
    assert settings.as_metadata() == {field: getattr(settings, field) for field in ENV_VARS}


def test_from_env_parses_integral_z_and_strips_whitespace() -> None:
    settings = PipelineSettings.from_env(
        {
            "TXN_ANOMALY_Z": " 4 ",
            "TXN_WINDOW_SIZE_MS": "\t10000\n",
            "TXN_KEY_COLUMN": "  key  ",
            "TXN_WINDOW_KIND": " session ",
        }  # fmt: skip
    )
    assert settings.anomaly_z == 4.0 and type(settings.anomaly_z) is float
    assert settings.window_size_ms == 10000
    assert settings.key_column == "key"
    assert settings.window_kind == "session"


def test_from_env_accepts_negative_numbers_for_problems_to_report() -> None:
    settings = PipelineSettings.from_env({"TXN_WINDOW_SIZE_MS": "-5", "TXN_ANOMALY_Z": "-1.5"})
    assert settings.window_size_ms == -5
    assert settings.anomaly_z == -1.5
    assert any(mentions(p, "TXN_WINDOW_SIZE_MS") for p in settings.problems())


@pytest.mark.parametrize("blank", ["", "   ", "\t\n"])
def test_empty_variables_keep_defaults(blank: str) -> None:
    defaults = PipelineSettings()
    settings = PipelineSettings.from_env({var: blank for var in [*ENV_VARS.values(), *RETIRED_ENV_VARS]})
    for field in ENV_VARS:
        assert getattr(settings, field) == getattr(defaults, field), field


def test_from_env_with_empty_mapping_ignores_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TXN_WINDOW_SIZE_MS", "123")
    monkeypatch.setenv("TXN_FLINK_ENGINE", "datastream")
    settings = PipelineSettings.from_env({})
    assert settings.window_size_ms == PipelineSettings().window_size_ms
    assert settings.window_spec() == WindowSpec()


def test_from_env_without_mapping_reads_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in [*ENV_VARS.values(), *RETIRED_ENV_VARS]:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TXN_WINDOW_SIZE_MS", "123")
    monkeypatch.setenv("TXN_SOURCE_TIMEZONE", "Asia/Tokyo")
    settings = PipelineSettings.from_env()
    assert settings.window_size_ms == 123
    assert settings.source_timezone == "Asia/Tokyo"


def test_retired_flink_engine_variable_stops_loading() -> None:
    with pytest.raises(ValueError) as raised:
        PipelineSettings.from_env({"TXN_FLINK_ENGINE": "datastream", "TXN_WINDOW_SIZE_MS": "1000"})
    message = str(raised.value)
    assert message.startswith("TXN_FLINK_ENGINE is no longer used")
    assert "unset TXN_FLINK_ENGINE" in message and "TXN_AGGREGATE=package.module:ClassName" in message
    with pytest.raises(ValueError, match="TXN_FLINK_ENGINE is no longer used"):
        PipelineSettings.from_env({"TXN_FLINK_ENGINE": "sql"})


def test_retired_flink_engine_variable_stops_the_definitions_from_loading() -> None:
    import subprocess
    import sys

    env = {**os.environ, "TXN_FLINK_ENGINE": "datastream"}
    done = subprocess.run([sys.executable, "-c", "import orchestration.definitions"], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode != 0
    assert "TXN_FLINK_ENGINE is no longer used" in done.stderr


def test_relative_paths_become_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = PipelineSettings.from_env({"TXN_SOURCE_CSV": "in/txns.csv", "TXN_WAREHOUSE": "./out/../wh.duckdb"})
    cwd = os.getcwd()
    assert os.path.isabs(settings.source_csv) and os.path.isabs(settings.warehouse)
    assert settings.source_csv == os.path.join(cwd, "in", "txns.csv")
    assert settings.warehouse == os.path.join(cwd, "wh.duckdb")
    assert settings.source_path == (tmp_path / "in" / "txns.csv").resolve()
    assert settings.warehouse_path == (tmp_path / "wh.duckdb").resolve()


def test_home_relative_paths_are_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    settings = PipelineSettings.from_env({"TXN_WAREHOUSE": "~/wh.duckdb"})
    assert settings.warehouse == os.path.join(str(tmp_path), "wh.duckdb")


def test_default_paths_are_absolute() -> None:
    settings = PipelineSettings.from_env({})
    assert os.path.isabs(settings.source_csv)
    assert os.path.isabs(settings.warehouse)


@pytest.mark.parametrize(
    "var, raw",
    [
        ("TXN_WINDOW_SIZE_MS", "5s"),
        ("TXN_WINDOW_SIZE_MS", "5000.0"),
        ("TXN_WINDOW_SLIDE_MS", "1.5"),
        ("TXN_SESSION_GAP_MS", "1m"),
        ("TXN_OUT_OF_ORDERNESS_MS", "1e3"),
        ("TXN_ALLOWED_LATENESS_MS", "zero"),
        ("TXN_FLINK_PARALLELISM", "2.5"),
        ("TXN_ANOMALY_MIN_WINDOWS", "five"),
        ("TXN_ANOMALY_Z", "high"),
        ("TXN_ANOMALY_Z", "3,5"),
        ("TXN_ALERT_MAX_ITEMS", "many"),
    ],
)
def test_unparsable_number_raises_naming_the_variable(var: str, raw: str) -> None:
    with pytest.raises(ValueError, match=var) as excinfo:
        PipelineSettings.from_env({var: raw})
    assert repr(raw) in str(excinfo.value)


# --------------------------------------------------------------------------- #
# problems
# --------------------------------------------------------------------------- #
def test_valid_settings_have_no_problems(tmp_path: Path) -> None:
    assert valid_settings(tmp_path).problems() == []
    assert (
        valid_settings(
            tmp_path,
            source_timezone="America/New_York",
            key_column="account id",
            flink_jobmanager="127.0.0.1:8081",
            out_of_orderness_ms=0,
            allowed_lateness_ms=10_000,
            flink_parallelism=1,
            anomaly_min_windows=1,
        ).problems()
        == []
    )
    assert valid_settings(tmp_path, window_kind="sliding", window_size_ms=10_000, window_slide_ms=2500).problems() == []
    assert valid_settings(tmp_path, window_kind="session", window_size_ms=0, session_gap_ms=30_000).problems() == []
    assert valid_settings(tmp_path, window_kind="session", window_size_ms=0).problems() == []


def test_valid_env_has_no_problems(tmp_path: Path) -> None:
    assert PipelineSettings.from_env(valid_env(tmp_path)).problems() == []


def test_existing_warehouse_file_is_not_a_problem(tmp_path: Path) -> None:
    (tmp_path / "wh.duckdb").write_bytes(b"")
    assert valid_settings(tmp_path).problems() == []


@pytest.mark.parametrize(
    "overrides, var",
    [
        ({"window_size_ms": -5000}, "TXN_WINDOW_SIZE_MS"),
        ({"window_kind": "session", "window_size_ms": 5000}, "TXN_WINDOW_SIZE_MS"),
        ({"window_kind": "sliding"}, "TXN_WINDOW_SLIDE_MS"),
        ({"window_slide_ms": 1000}, "TXN_WINDOW_SLIDE_MS"),
        ({"window_kind": "sliding", "window_slide_ms": 6000}, "TXN_WINDOW_SLIDE_MS"),
        ({"session_gap_ms": 3000}, "TXN_SESSION_GAP_MS"),
        ({"window_kind": "session", "window_size_ms": 0, "session_gap_ms": -1}, "TXN_SESSION_GAP_MS"),
        ({"out_of_orderness_ms": -1}, "TXN_OUT_OF_ORDERNESS_MS"),
        ({"allowed_lateness_ms": -1}, "TXN_ALLOWED_LATENESS_MS"),
        ({"flink_parallelism": 0}, "TXN_FLINK_PARALLELISM"),
        ({"flink_parallelism": -2}, "TXN_FLINK_PARALLELISM"),
        ({"anomaly_min_windows": 0}, "TXN_ANOMALY_MIN_WINDOWS"),
        ({"anomaly_z": 0.0}, "TXN_ANOMALY_Z"),
        ({"anomaly_z": float("inf")}, "TXN_ANOMALY_Z"),
        ({"anomaly_z": -1.0}, "TXN_ANOMALY_Z"),
        ({"anomaly_z": float("nan")}, "TXN_ANOMALY_Z"),
        ({"source_timezone": "Mars/Olympus"}, "TXN_SOURCE_TIMEZONE"),
        ({"source_timezone": ""}, "TXN_SOURCE_TIMEZONE"),
        ({"source_timezone": "../etc/passwd"}, "TXN_SOURCE_TIMEZONE"),
        ({"key_column": ""}, "TXN_KEY_COLUMN"),
        ({"key_column": "   "}, "TXN_KEY_COLUMN"),
        ({"key_column": "a,b"}, "TXN_KEY_COLUMN"),
        ({"key_column": 'say "hi"'}, "TXN_KEY_COLUMN"),
        ({"key_column": "tab\tbed"}, "TXN_KEY_COLUMN"),
        ({"key_column": "x" * 129}, "TXN_KEY_COLUMN"),
        ({"flink_jobmanager": "localhost"}, "TXN_FLINK_JOBMANAGER"),
        ({"flink_jobmanager": "host:99999"}, "TXN_FLINK_JOBMANAGER"),
        ({"flink_jobmanager": "host:0"}, "TXN_FLINK_JOBMANAGER"),
        ({"flink_jobmanager": ":8081"}, "TXN_FLINK_JOBMANAGER"),
        ({"flink_jobmanager": "host:http"}, "TXN_FLINK_JOBMANAGER"),
        ({"duckdb_memory_limit": "lots"}, "TXN_DUCKDB_MEMORY_LIMIT"),
        ({"duckdb_memory_limit": "2GB'; DROP TABLE transactions; --"}, "TXN_DUCKDB_MEMORY_LIMIT"),
        ({"duckdb_memory_limit": "-1GB"}, "TXN_DUCKDB_MEMORY_LIMIT"),
        ({"flink_jvm_heap": "1gb"}, "TXN_FLINK_JVM_HEAP"),
        ({"flink_jvm_heap": "0m"}, "TXN_FLINK_JVM_HEAP"),
        ({"flink_jvm_heap": "1g -Dfoo=bar"}, "TXN_FLINK_JVM_HEAP"),
        ({"advice_targets": "0.5,2"}, "TXN_ADVICE_TARGETS"),
        ({"alert_max_items": 0}, "TXN_ALERT_MAX_ITEMS"),
        ({"max_time_jump_ms": -1}, "TXN_MAX_TIME_JUMP_MS"),
        ({"time_jump_confirm_rows": 0}, "TXN_TIME_JUMP_CONFIRM_ROWS"),
        ({"alert_webhook_url": "ftp://alerts.example.com/hook"}, "TXN_ALERT_WEBHOOK_URL"),
        ({"aggregates": "no_such_package.aggregates:Median"}, "TXN_AGGREGATE"),
    ],
)
def test_each_invalid_setting_is_one_problem_naming_its_variable(
    tmp_path: Path, overrides: dict[str, object], var: str
) -> None:
    problems = valid_settings(tmp_path, **overrides).problems()
    assert len(problems) == 1, problems
    assert mentions(problems[0], var), problems


@pytest.mark.parametrize(
    "overrides",
    [
        {"window_kind": "sliding", "window_size_ms": 1000, "window_slide_ms": 2000},
        {"window_kind": "session", "window_size_ms": 5000, "window_slide_ms": 5},
        {"window_slide_ms": 1000, "session_gap_ms": 1000, "allowed_lateness_ms": -3},
    ],
)
def test_window_problems_are_the_window_specs_sentences(tmp_path: Path, overrides: dict[str, object]) -> None:
    settings = valid_settings(tmp_path, **overrides)
    spec_problems = settings.window_spec(validate=False).problems()
    assert spec_problems and settings.problems() == spec_problems
    for problem in spec_problems:
        assert any(mentions(problem, var) for var in windows.ENV_VARS.values()), problem


def test_an_unknown_window_kind_is_refused_by_the_config_itself() -> None:
    # an Enum in the run config: Dagster flags a typo in the launchpad before launch, and the environment
    # variable fails when the definitions load, naming the variable and the kinds
    with pytest.raises(
        ValueError, match=r"TXN_WINDOW_KIND='hopping' is not a window kind: use one of tumbling, sliding, session"
    ):
        PipelineSettings.from_env({"TXN_WINDOW_KIND": "hopping"})
    with pytest.raises(ValueError, match="window_kind"):
        PipelineSettings(window_kind="hopping")
    assert PipelineSettings.from_env({"TXN_WINDOW_KIND": "sliding"}).window_kind is WindowKind.sliding


def test_unset_window_lengths_are_empty_not_zero() -> None:
    defaults = PipelineSettings()
    assert (defaults.window_size_ms, defaults.window_slide_ms, defaults.session_gap_ms) == (None, None, None)
    assert defaults.window_spec() == WindowSpec()  # empty = the kind's default (5000 ms tumbling)


def test_a_problem_names_the_launchpad_key_beside_the_variable(tmp_path: Path) -> None:
    [problem] = valid_settings(tmp_path, window_kind="sliding", window_slide_ms=6000).problems()
    assert with_launchpad_keys(problem) == f"{problem} [launchpad: window_size_ms, window_slide_ms]"


def test_timezone_problem_names_the_zone(tmp_path: Path) -> None:
    [problem] = valid_settings(tmp_path, source_timezone="Mars/Olympus").problems()
    assert "Mars/Olympus" in problem
    assert "TXN_SOURCE_TIMEZONE" in problem


def test_warehouse_directory_is_a_problem(tmp_path: Path) -> None:
    problems = valid_settings(tmp_path, warehouse=str(tmp_path)).problems()
    assert len(problems) == 1, problems
    assert "TXN_WAREHOUSE" in problems[0]
    assert "directory" in problems[0]


def test_every_invalid_setting_is_reported_at_once(tmp_path: Path) -> None:
    settings = valid_settings(
        tmp_path,
        warehouse=str(tmp_path),
        source_timezone="Mars/Olympus",
        key_column="a,b",
        window_size_ms=-1,
        window_slide_ms=5,
        session_gap_ms=5,
        out_of_orderness_ms=-1,
        allowed_lateness_ms=-1,
        flink_parallelism=0,
        flink_jobmanager="host:99999",
        anomaly_min_windows=0,
        anomaly_z=0.0,
        max_rejected_ratio=2.0,
        max_late_ratio=-1.0,
        duckdb_memory_limit="much",
        flink_jvm_heap="big",
        advice_targets="none",
        alert_webhook_url="ftp://example.com",
        alert_max_items=0,
        aggregates="no_such_package.aggregates:Median",
        max_time_jump_ms=-1,
        time_jump_confirm_rows=0,
    )
    problems = settings.problems()
    # every variable but the source (any path), the replay mode (an enum) and the kind (valid here, so that the other window
    # parameters are judged)
    expected_vars = {
        var for field, var in ENV_VARS.items() if field not in ("source_csv", "window_kind", "replay_mode")
    }
    assert len(problems) == len(expected_vars), problems
    for var in expected_vars:
        assert sum(mentions(p, var) for p in problems) == 1, (var, problems)


# --------------------------------------------------------------------------- #
# checked_at_launch: a config problem is a config error before the run exists
# --------------------------------------------------------------------------- #
SLIDE_LARGER_THAN_SIZE = {"window_kind": "sliding", "window_size_ms": 1000, "window_slide_ms": 5000}


def launch_jobs(settings: PipelineSettings):
    """The real definitions' jobs: the implicit asset job (the UI's Materialize, `dagster asset materialize`)
    and replay_transactions (the launchpad, the schedule and the sensor)."""
    defs = build_definitions(AutomationSettings(), settings)
    return [defs.resolve_implicit_global_asset_job_def(), defs.resolve_job_def("replay_transactions")]


def assert_refused_before_any_run(job, instance: DagsterInstance, run_config: dict, expected: list[str]) -> str:
    with pytest.raises(DagsterInvalidConfigError) as refused:
        job.execute_in_process(run_config=run_config, instance=instance)
    message = str(refused.value)
    for text in expected:
        assert text in message, message
    assert instance.get_runs() == [], "a run was created: its steps could start"
    return message


@pytest.mark.parametrize("job_index", [0, 1], ids=["asset_job", "replay_transactions"])
def test_a_cross_field_problem_in_the_run_config_is_a_config_error_before_any_run(
    tmp_path: Path, job_index: int
) -> None:
    settings = valid_settings(tmp_path)  # valid: the launchpad's run config brings the problem
    job = launch_jobs(settings)[job_index]
    config = {**settings.as_metadata(), **SLIDE_LARGER_THAN_SIZE}
    with DagsterInstance.ephemeral() as instance:
        message = assert_refused_before_any_run(
            job,
            instance,
            {"resources": {"pipeline": {"config": config}}},
            ["TXN_WINDOW_SLIDE_MS (5000) must not exceed TXN_WINDOW_SIZE_MS (1000)",
             "[launchpad: window_size_ms, window_slide_ms]", "resources: pipeline: config:"],
        )  # fmt: skip
    assert len(message.splitlines()) == 2, message  # what to fix where, then the problem's one sentence
    assert not settings.warehouse_path.exists()


def test_a_problem_of_the_environment_is_refused_at_launch_too(tmp_path: Path) -> None:
    # TXN_WINDOW_SLIDE_MS=1000 with tumbling windows and TXN_ALERT_MAX_ITEMS=0: no run config at all
    settings = valid_settings(tmp_path, window_slide_ms=1000, alert_max_items=0)
    with DagsterInstance.ephemeral() as instance:
        for job in launch_jobs(settings):
            assert_refused_before_any_run(
                job, instance, {}, ["TXN_WINDOW_SLIDE_MS applies to sliding windows only",
                                    "[launchpad: window_kind, window_slide_ms]",
                                    "TXN_ALERT_MAX_ITEMS must be >= 1", "[launchpad: alert_max_items]"],
            )  # fmt: skip


def test_a_valid_run_config_is_launched_unchanged(tmp_path: Path) -> None:
    settings = valid_settings(tmp_path)
    config = {**settings.as_metadata(), "window_kind": "sliding", "window_size_ms": 10_000, "window_slide_ms": 2500}
    assert refuse_config_problems(config) is config
    with DagsterInstance.ephemeral() as instance:
        for job in launch_jobs(settings):  # the run exists (NOT_STARTED): its plan was made with this config
            run = instance.create_run_for_job(job, run_config={"resources": {"pipeline": {"config": config}}})
            assert run.run_config["resources"]["pipeline"]["config"] == config
        assert len(instance.get_runs()) == 2


def test_the_checked_resource_keeps_the_settings_schema_and_values(tmp_path: Path) -> None:
    # the launchpad scaffolds the same keys, defaulted to the environment's values
    settings = valid_settings(tmp_path, window_kind="sliding", window_slide_ms=2500)
    checked = checked_at_launch(settings)
    scaffold = checked.config_schema.default_value
    assert set(checked.config_schema.config_type.fields) == set(ENV_VARS)
    assert scaffold["window_kind"] == "sliding" and scaffold["window_slide_ms"] == 2500
    assert scaffold["warehouse"] == settings.warehouse


# --------------------------------------------------------------------------- #
# window_spec
# --------------------------------------------------------------------------- #
def test_defaults_come_from_the_window_spec() -> None:
    defaults = PipelineSettings()
    assert defaults.window_kind == windows.DEFAULT_KIND
    assert defaults.out_of_orderness_ms == windows.DEFAULT_OUT_OF_ORDERNESS_MS
    assert defaults.allowed_lateness_ms == windows.DEFAULT_ALLOWED_LATENESS_MS
    assert (defaults.window_size_ms, defaults.window_slide_ms, defaults.session_gap_ms) == (
        None,
        None,
        None,
    )  # empty = default
    assert defaults.window_spec() == WindowSpec() == WindowSpec.of("tumbling", size_ms=5000)


def test_window_spec_carries_the_window_settings(tmp_path: Path) -> None:
    settings = valid_settings(tmp_path, window_kind="sliding", window_size_ms=60_000, window_slide_ms=15_000,
                              out_of_orderness_ms=750, allowed_lateness_ms=2_000)  # fmt: skip
    assert settings.window_spec() == WindowSpec(kind="sliding", size_ms=60_000, slide_ms=15_000, gap_ms=0,
                                                out_of_orderness_ms=750, allowed_lateness_ms=2_000)  # fmt: skip


def test_session_spec_defaults_to_the_labs_gap(tmp_path: Path) -> None:
    spec = valid_settings(tmp_path, window_kind="session", window_size_ms=0).window_spec()
    assert (spec.kind, spec.size_ms, spec.gap_ms) == ("session", 0, 60_000)
    spec = PipelineSettings.from_env({"TXN_WINDOW_KIND": "session", "TXN_SESSION_GAP_MS": "3000"}).window_spec()
    assert (spec.kind, spec.gap_ms) == ("session", 3000)


def test_window_spec_from_env(tmp_path: Path) -> None:
    spec = PipelineSettings.from_env(valid_env(tmp_path)).window_spec()
    assert spec == WindowSpec(kind="sliding", size_ms=60000, slide_ms=20000, gap_ms=0, out_of_orderness_ms=250,
                              allowed_lateness_ms=1500)  # fmt: skip


def test_window_spec_rejects_an_invalid_window_naming_the_variable(tmp_path: Path) -> None:
    settings = PipelineSettings.from_env(full_env(tmp_path))  # a session gap on sliding windows
    with pytest.raises(WindowSpecError, match="TXN_SESSION_GAP_MS applies to session windows only"):
        settings.window_spec()
    unvalidated = settings.window_spec(validate=False)
    assert unvalidated.gap_ms == 30_000 and unvalidated.problems() == settings.problems()


@pytest.mark.parametrize("field", ["max_rejected_ratio", "max_late_ratio"])
@pytest.mark.parametrize("value", [-0.1, 1.5, float("nan")])
def test_ratio_limits_must_be_between_0_and_1(tmp_path: Path, field: str, value: float) -> None:
    problems = valid_settings(tmp_path, **{field: value}).problems()
    assert len(problems) == 1 and ENV_VARS[field] in problems[0]


# --------------------------------------------------------------------------- #
# incoming-folder sensor requests (no daemon; see tests/browser for the real one)
# --------------------------------------------------------------------------- #
def test_incoming_run_requests_one_per_file_version(tmp_path: Path) -> None:
    import os
    import time

    from orchestration.automation import SOURCE_FILE_TAG, WAREHOUSE_TAG, incoming_run_requests

    settings = PipelineSettings.from_env({"TXN_WAREHOUSE": str(tmp_path / "wh.duckdb"), "TXN_WINDOW_SIZE_MS": "60000"})
    assert incoming_run_requests(tmp_path / "missing", time.time(), settings) == []
    a, b = tmp_path / "a.csv", tmp_path / "b.CSV"
    a.write_text("transaction_id,timestamp,amount\n")
    b.write_text("transaction_id,timestamp,amount\ntx,2024-01-01 00:00:00,1\n")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / ".hidden.csv").write_text("ignored")
    os.utime(a, (1_000, 1_000))
    os.utime(b, (2_000, 2_000))
    now = time.time()
    requests = incoming_run_requests(tmp_path, now, settings)
    assert [r.tags[SOURCE_FILE_TAG] for r in requests] == [str(a), str(b)]  # oldest first
    assert {r.tags[WAREHOUSE_TAG] for r in requests} == {str(settings.warehouse_path)}  # and the warehouse
    config = requests[0].run_config["resources"]["pipeline"]["config"]
    # every setting is passed, so the run keeps the configured warehouse and window size
    assert config["source_csv"] == str(a) and config["warehouse"] == str(tmp_path / "wh.duckdb")
    assert config["window_size_ms"] == 60000 and set(config) == set(ENV_VARS)
    # the same file version gives the same run key; a changed one a new key
    assert [r.run_key for r in incoming_run_requests(tmp_path, now, settings)] == [r.run_key for r in requests]
    a.write_text("transaction_id,timestamp,amount\ntx,2024-01-01 00:00:00,2\n")
    os.utime(a, (3_000, 3_000))
    again = incoming_run_requests(tmp_path, now, settings)
    assert [r.tags[SOURCE_FILE_TAG] for r in again] == [str(b), str(a)]
    assert again[1].run_key != requests[0].run_key and again[0].run_key == requests[1].run_key
    # a file modified within the settle time may still be being written
    os.utime(a, (now, now))
    assert [r.tags[SOURCE_FILE_TAG] for r in incoming_run_requests(tmp_path, now + 0.5, settings, settle_s=2)] == [
        str(b)
    ]


def test_incoming_sensor_uses_the_settings_it_was_built_with(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is read where the definitions are built, never when the sensor is evaluated."""
    from dagster import build_sensor_context

    from orchestration.automation import build_automation

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    (incoming / "day.csv").write_text("transaction_id,timestamp,amount\n")
    os.utime(incoming / "day.csv", (1_000, 1_000))
    built_with = PipelineSettings.from_env({"TXN_WAREHOUSE": str(tmp_path / "built.duckdb")})
    automation = build_automation(AutomationSettings.from_env({"TXN_INCOMING_DIR": str(incoming)}), built_with)
    monkeypatch.setenv("TXN_WAREHOUSE", str(tmp_path / "changed_later.duckdb"))
    sensor = next(s for s in automation.sensors if s.name == "incoming_csv_sensor")
    requests = sensor.evaluate_tick(build_sensor_context()).run_requests
    assert len(requests) == 1
    assert requests[0].run_config["resources"]["pipeline"]["config"]["warehouse"] == str(tmp_path / "built.duckdb")


# --------------------------------------------------------------------------- #
# AutomationSettings (read once when the definitions load)
# --------------------------------------------------------------------------- #
AUTOMATION_ENV = {
    "TXN_FRESHNESS_WARN_MINUTES": "30",
    "TXN_FRESHNESS_FAIL_MINUTES": "45",
    "TXN_SCHEDULE_CRON": "15 2 * * 1-5",
    "TXN_SCHEDULE_TIMEZONE": "Asia/Seoul",
    "TXN_INCOMING_DIR": "~/drop",
    "TXN_INCOMING_INTERVAL_S": "5",
    "TXN_INCOMING_SETTLE_S": "0.5",
}


def test_automation_settings_defaults_and_every_variable() -> None:
    defaults = AutomationSettings.from_env({})
    assert (defaults.freshness_warn_minutes, defaults.freshness_fail_minutes) == (24 * 60, 26 * 60)
    assert (defaults.schedule_cron, defaults.schedule_timezone) == ("0 6 * * *", "UTC")
    assert defaults.incoming_dir == REPO_ROOT / "data" / "incoming"
    assert (defaults.incoming_interval_s, defaults.incoming_settle_s) == (15, 2.0)
    assert set(AUTOMATION_ENV) == set(AUTOMATION_ENV_VARS.values())
    settings = AutomationSettings.from_env(AUTOMATION_ENV)
    assert (settings.freshness_warn_minutes, settings.freshness_fail_minutes) == (30, 45)
    assert (settings.schedule_cron, settings.schedule_timezone) == ("15 2 * * 1-5", "Asia/Seoul")
    assert settings.incoming_dir == Path(os.path.expanduser("~/drop"))
    assert (settings.incoming_interval_s, settings.incoming_settle_s) == (5, 0.5)
    for field in AUTOMATION_ENV_VARS:
        assert getattr(settings, field) != getattr(defaults, field), field


def test_automation_settings_report_every_bad_variable_at_once() -> None:
    bad = {
        "TXN_FRESHNESS_WARN_MINUTES": "0",
        "TXN_FRESHNESS_FAIL_MINUTES": "soon",
        "TXN_SCHEDULE_TIMEZONE": "Mars/Olympus",
        "TXN_INCOMING_INTERVAL_S": "1.5",
        "TXN_INCOMING_SETTLE_S": "-1",
    }
    with pytest.raises(ValueError) as raised:
        AutomationSettings.from_env(bad)
    message = str(raised.value)
    for var, raw in bad.items():
        assert f"{var}={raw!r}" in message, (var, message)
    assert message.count("\n") == len(bad) - 1  # one line per problem
    with pytest.raises(ValueError, match="TXN_SCHEDULE_CRON"):
        AutomationSettings.from_env({"TXN_SCHEDULE_CRON": "every day"})


def test_a_warehouse_path_with_pattern_characters_is_one_problem(tmp_path: Path) -> None:
    problems = PipelineSettings(warehouse=str(tmp_path / "data[1]" / "warehouse.duckdb")).problems()
    assert [p for p in problems if "TXN_WAREHOUSE" in p] == [
        f"warehouse path (TXN_WAREHOUSE) {tmp_path / 'data[1]' / 'warehouse.duckdb'} contains * ? or [, which "
        "DuckDB reads as a file pattern; choose a path without them"
    ]


def test_the_sensor_says_why_it_skips_a_missing_or_empty_folder(tmp_path: Path) -> None:
    from orchestration.automation import incoming_skip_reason

    missing = tmp_path / "incoming"
    reason = incoming_skip_reason(missing, 2.0)
    assert f"{missing} does not exist" in reason and f"mkdir -p {missing}" in reason and "TXN_INCOMING_DIR" in reason
    missing.mkdir()
    assert incoming_skip_reason(missing, 2.0) == f"no new *.csv or *.csv.gz file in {missing} unchanged for 2 s"
