"""The window job survives a TaskManager lost mid-job, and a restore gives an undisturbed run's output.

Everything is real: a session cluster started by the project's launcher (`python -m flink_jobs.cluster`),
the job through its CLI (as the asset runs it), SIGKILL to the TaskManager JVM, Flink's own
checkpoints and savepoints. A run's output is compared line for line (as a multiset, so a window
or late event written twice or not at all fails) and as loaded tables with an undisturbed run.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from flink_jobs.cluster import free_port
from flink_jobs.environment import fetch_rest_json
from flink_jobs.output import output_files
from flink_jobs.window_job import RESTART_ATTEMPTS
from tests.conftest import REPO_ROOT, job_late, job_windows, transactions_db
from tests.flink_jobs.disorder import disordered_events
from warehouse import flink_output
from warehouse.windows import WindowSpec

pytestmark = pytest.mark.flink

JOB_MODULE = "flink_jobs.window_job"
ROWS = 1_500_000  # seconds of work even on a quiet machine: the kill lands after a checkpoint, before the end
CHECKPOINT_INTERVAL_MS = 500  # the first checkpoint completes early in the job
CUSTOM = "tests.flink_jobs.custom_aggregate_examples:WeightedSum"
SPECS = {
    "tumbling": WindowSpec.of("tumbling", size_ms=5000, out_of_orderness_ms=1000, allowed_lateness_ms=700),
    "session": WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=500),
}
READY_TIMEOUT_S = 240.0


def output_lines(output: Path) -> dict[str, collections.Counter]:
    """Every line of the job's finished part files, per output folder (windows, late, custom)."""
    return {
        name: collections.Counter(
            line for path in output_files(output / name) for line in path.read_text().splitlines()
        )
        for name in ("windows", "late", "custom")
    }


def loaded_tables(con, output: Path, spec: WindowSpec) -> tuple[list, list]:
    con.execute("DELETE FROM window_averages")
    con.execute("DELETE FROM late_events")
    flink_output.load_output(con, output, "input.csv", spec)
    return job_windows(con), job_late(con)


def job_command(staged: Path, output: Path, spec: WindowSpec, jobmanager: str | None, *extra: str) -> list[str]:
    command = [sys.executable, "-m", JOB_MODULE, "--input", str(staged), "--output", str(output),
               "--parallelism", "2", "--checkpoint-interval-ms", str(CHECKPOINT_INTERVAL_MS), *spec.job_arguments(),
               *extra]  # fmt: skip
    return command + (["--jobmanager", jobmanager] if jobmanager else [])


def running_job(address: str, known: set[str], timeout: float = 120.0) -> str:
    """The id of the one job on the cluster that is not in `known`, once it runs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for job in fetch_rest_json(address, "/jobs/overview")["jobs"]:
            if job["jid"] not in known and job["state"] == "RUNNING":
                return job["jid"]
        time.sleep(0.1)
    raise AssertionError(f"no new job running on {address} after {timeout:g} s")


def completed_checkpoints(address: str, job_id: str) -> int:
    try:
        return int(fetch_rest_json(address, f"/jobs/{job_id}/checkpoints")["counts"]["completed"])
    except (OSError, ValueError, KeyError):
        return 0


def wait_for_checkpoint(address: str, job_id: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while completed_checkpoints(address, job_id) < 1:
        assert time.monotonic() < deadline, f"no checkpoint of job {job_id} completed within {timeout:g} s"
        time.sleep(0.05)


def finished_state(address: str, job_id: str, timeout: float = 15.0) -> str:
    """The job's state once the REST API shows it ended (its job details are cached for a few seconds)."""
    deadline = time.monotonic() + timeout
    while (state := fetch_rest_json(address, f"/jobs/{job_id}")["state"]) == "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    return state


def source_rows_read(address: str, job_id: str) -> int:
    vertices = fetch_rest_json(address, f"/jobs/{job_id}")["vertices"]
    return max(int(v["metrics"]["write-records"]) for v in vertices if v["name"].startswith("Source"))


@pytest.fixture(scope="module")
def launcher(tmp_path_factory):
    """A session cluster started by the project's launcher (foreground, as `make cluster-up` runs it):
    (address, workdir, launcher log)."""
    folder = tmp_path_factory.mktemp("launcher")
    workdir, log = folder / "cluster", folder / "launcher.log"
    command = [sys.executable, "-m", "flink_jobs.cluster", "--workdir", str(workdir),
               "--rest-port", str(free_port()), "--slots", "2"]  # fmt: skip
    with open(log, "wb") as output:
        process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not (workdir / "cluster.json").exists():
            assert process.poll() is None and time.monotonic() < deadline, log.read_text(errors="replace")[-3000:]
            time.sleep(0.3)
        address = json.loads((workdir / "cluster.json").read_text())["address"]
        yield address, workdir, log
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture(scope="module")
def staged(tmp_path_factory) -> tuple[Path, object]:
    """(staged input, DuckDB connection holding its transactions)."""
    folder = tmp_path_factory.mktemp("input")
    con = transactions_db(folder / "w.duckdb", disordered_events(ROWS, keys=40, seed=27))
    flink_output.stage_input(con, "input.csv", folder / "staged.csv")
    return folder / "staged.csv", con


def taskmanager_group(workdir: Path) -> int:
    """The TaskManager's process group (the JVM leads it), as the launcher recorded it."""
    return json.loads((workdir / "cluster.json").read_text())["groups"][1]


@pytest.mark.parametrize(
    "kind,aggregate",
    [("tumbling", None), ("session", None), ("tumbling", CUSTOM)],
    ids=["tumbling", "session", "custom"],
)
def test_a_taskmanager_killed_mid_job_costs_nothing_but_a_restart(tmp_path, launcher, staged, kind, aggregate):
    address, workdir, log = launcher
    staged_input, con = staged
    spec = SPECS[kind]
    extra = ("--aggregate", aggregate) if aggregate else ()

    undisturbed = subprocess.run(job_command(staged_input, tmp_path / "undisturbed", spec, address, *extra),
                                 cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert undisturbed.returncode == 0, undisturbed.stderr[-4000:]

    known = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]}
    killed_group = taskmanager_group(workdir)
    with open(tmp_path / "client.log", "wb") as client_log:
        client = subprocess.Popen(job_command(staged_input, tmp_path / "killed", spec, address, *extra),
                                  cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=client_log)  # fmt: skip
    try:
        job_id = running_job(address, known)
        wait_for_checkpoint(address, job_id)
        rows_before_kill = source_rows_read(address, job_id)
        os.killpg(killed_group, signal.SIGKILL)  # the TaskManager JVM and anything it started
        stdout, _ = client.communicate(timeout=600)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, (tmp_path / "client.log").read_text(errors="replace")[-4000:]
    figures = json.loads(stdout.decode().strip().splitlines()[-1])
    assert figures["flink_job_id"] == job_id

    # the kill landed mid-job: the input was not read through, and the job restarted after it
    assert rows_before_kill < ROWS, "the job had read its whole input before the kill: use a larger file"
    assert finished_state(address, job_id) == "FINISHED"
    history = fetch_rest_json(address, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert history, "the job must have failed over after the kill"
    # the launcher brought a new TaskManager up, and kept the JobManager
    assert taskmanager_group(workdir) != killed_group
    assert "The Flink taskmanager ended by SIGKILL" in log.read_text(errors="replace")

    # exactly once: the same lines (no window or late event twice, none missing) and the same tables
    assert output_lines(tmp_path / "killed") == output_lines(tmp_path / "undisturbed")
    assert sum(output_lines(tmp_path / "killed")["late"].values()) > 0
    if aggregate:
        assert sum(output_lines(tmp_path / "killed")["custom"].values()) > 0
    assert loaded_tables(con, tmp_path / "killed", spec) == loaded_tables(con, tmp_path / "undisturbed", spec)


def test_a_failing_custom_aggregate_is_not_retried(tmp_path, launcher, staged):
    """A user's AggregateFunction that raises fails the same way after any restart: the run fails
    at its first failure with the aggregate's sentence, without spending the restarts."""
    address, _, _ = launcher
    staged_input, _ = staged
    known = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]}
    aggregate = "tests.flink_jobs.custom_aggregate_examples:RaisesInAdd"
    command = job_command(staged_input, tmp_path / "output", SPECS["tumbling"], address, "--aggregate", aggregate)
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 1
    sentence = (tmp_path / "output" / "job_failure.txt").read_text().strip()
    assert sentence.startswith(
        f"custom aggregate {aggregate} failed in the Flink job: RaisesInAdd.add raised ValueError("
    )
    assert sentence in done.stderr and "\tat " not in sentence
    (job_id,) = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]} - known
    assert finished_state(address, job_id) in ("CANCELED", "FAILED")
    failures = fetch_rest_json(address, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert len(failures) < 1 + RESTART_ATTEMPTS, f"the job was restarted {len(failures) - 1} times for user code"


# --- restore determinism -------------------------------------------------------------------------

BLOCK = 500  # rows per block: one event that raises the maximum, then BLOCK - 1 far behind it
RESTORE_SPEC = WindowSpec.of("tumbling", size_ms=5000, out_of_orderness_ms=1000, allowed_lateness_ms=700)


def behind_the_maximum(rows: int, keys: int = 16) -> list[tuple[int, str, int, str]]:
    """Events whose lateness depends on the events before them: each block starts with an event 10 s
    after the previous block's, the rest of the block lies 8 s behind it, late against the watermark
    that event set (their windows' cleanup, 4.3 s behind it, is under the watermark, 1 s behind), and
    on time against a watermark built from the block's own later events only. So after a restore in
    the middle of a block, the events up to the next block are late only if the maximum was restored."""
    events = []
    for row in range(1, rows + 1):
        block, at = divmod(row - 1, BLOCK)
        head = 1_715_421_600_000 + 10_000 * block
        time_ms = head if at == 0 else head - 8_000 + at % 1_000
        events.append((row, f"k{row % keys}", time_ms, f"{row % 997}.{row % 10_000:04d}"))
    return events


def late_only_with_the_restored_maximum(events, first_restored_row: int, spec: WindowSpec) -> list[int]:
    """Source rows at or after `first_restored_row` that are late against the watermark over all the
    events before them, and on time against one built from the restored run's own events."""
    found = []
    restored_max = None
    full_max = max(ts for row, _, ts, _ in events if row < first_restored_row)
    for row, _, ts, _ in events:
        if row < first_restored_row:
            continue
        size, lateness, bound = spec.size_ms, spec.allowed_lateness_ms, spec.out_of_orderness_ms
        cleanup = ts - ts % size + size - 1 + lateness
        late_overall = cleanup <= full_max - bound - 1
        late_fresh = restored_max is not None and cleanup <= restored_max - bound - 1
        if late_overall and not late_fresh:
            found.append(row)
        full_max = max(full_max, ts)
        restored_max = ts if restored_max is None else max(restored_max, ts)
        if row - first_restored_row > 2 * BLOCK:
            break
    return found


def stop_with_savepoint(address: str, job_id: str, target: Path, timeout: float = 120.0) -> str:
    """Stop the job with a savepoint (no drain: windows stay open in the savepoint); its location."""
    import urllib.request

    request = urllib.request.Request(
        f"http://{address}/jobs/{job_id}/stop",
        data=json.dumps({"targetDirectory": target.as_uri(), "drain": False}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=10) as answer:
        trigger = json.load(answer)["request-id"]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = fetch_rest_json(address, f"/jobs/{job_id}/savepoints/{trigger}")
        if status["status"]["id"] == "COMPLETED":
            operation = status["operation"]
            assert "location" in operation, f"stop-with-savepoint failed: {operation}"
            return operation["location"]
        time.sleep(0.2)
    raise AssertionError(f"no savepoint of job {job_id} after {timeout:g} s")


def test_a_restore_from_a_savepoint_mid_stream_gives_the_undisturbed_output(tmp_path, launcher):
    address, _, _ = launcher
    rows = 2_000_000  # 300k rows were all read before the stop on a quiet machine
    events = behind_the_maximum(rows)
    con = transactions_db(tmp_path / "w.duckdb", events)
    staged_input = tmp_path / "staged.csv"
    flink_output.stage_input(con, "input.csv", staged_input)

    undisturbed = subprocess.run(job_command(staged_input, tmp_path / "undisturbed", RESTORE_SPEC, address),
                                 cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert undisturbed.returncode == 0, undisturbed.stderr[-4000:]

    output = tmp_path / "stopped-and-restored"
    known = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]}
    client = subprocess.Popen(job_command(staged_input, output, RESTORE_SPEC, address), cwd=REPO_ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        first_job = running_job(address, known)
        wait_for_checkpoint(address, first_job)
        savepoint = stop_with_savepoint(address, first_job, tmp_path / "savepoints")
        _, stderr = client.communicate(timeout=300)
    finally:
        if client.poll() is None:
            client.kill()
            client.wait()
    assert client.returncode == 0, stderr.decode(errors="replace")[-4000:]
    assert finished_state(address, first_job) == "FINISHED"
    read_before = source_rows_read(address, first_job)
    assert 0 < read_before < rows, f"the savepoint must be taken mid-stream, it was at row {read_before} of {rows}"
    first_part = output_lines(output)
    # the windows written before the stop wait in in-progress part files, which the restored job resumes
    in_progress = [p for p in (output / "windows").rglob(".*inprogress*") if p.stat().st_size > 0]
    assert in_progress, "the stopped job must have written windows that it had not committed yet"

    known.add(first_job)
    restored = subprocess.run(job_command(staged_input, output, RESTORE_SPEC, address, "--restore-from", savepoint),
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert restored.returncode == 0, restored.stderr[-4000:]
    (second_job,) = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]} - known
    # the restored job read exactly the rest of the file, from the savepoint's position
    assert finished_state(address, second_job) == "FINISHED"
    assert source_rows_read(address, second_job) == rows - read_before, fetch_rest_json(address, f"/jobs/{second_job}")

    # windows and late events as undisturbed, each once: those committed before the stop and after the restore
    both = output_lines(output)
    expected = output_lines(tmp_path / "undisturbed")
    assert both == expected
    assert loaded_tables(con, output, RESTORE_SPEC) == loaded_tables(con, tmp_path / "undisturbed", RESTORE_SPEC)

    # among them, events late only because the restored job's watermark started where the stopped one was
    dependent = late_only_with_the_restored_maximum(events, read_before + 1, RESTORE_SPEC)
    assert dependent, f"the restore at row {read_before + 1} fell on a block's first event: no event depends on it"
    late_rows = {int(line.split(",", 1)[0]) for line in expected["late"]}
    assert set(dependent) <= late_rows
    restored_late = {int(line.split(",", 1)[0]) for line in both["late"] - first_part["late"]}
    assert set(dependent) <= restored_late, "written by the restored job"


def test_a_staged_line_that_does_not_parse_is_not_retried(tmp_path, launcher):
    """It would fail the same way after every restart: Flink is told not to restart (NonRecoverableError)."""
    address, _, _ = launcher
    staged_input = tmp_path / "staged.csv"
    staged_input.write_text("1,1715421600000,1.0000,6b30\n2,17154216O0500,2.0000,6b30\n3,1715421601000,3.0000,6b30\n")
    known = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]}
    done = subprocess.run(job_command(staged_input, tmp_path / "output", SPECS["tumbling"], address),
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode != 0
    (job_id,) = {job["jid"] for job in fetch_rest_json(address, "/jobs/overview")["jobs"]} - known
    assert finished_state(address, job_id) == "FAILED"
    failures = fetch_rest_json(address, f"/jobs/{job_id}/exceptions")["exceptionHistory"]["entries"]
    assert len(failures) == 1, "failed once, not restarted"
    assert "staged line is not source_row,event_time_ms,amount,hex_key: 2,17154216O0500" in failures[0]["stacktrace"]
