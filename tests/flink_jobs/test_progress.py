"""Progress lines of a running Flink job (rows read, elapsed, running tasks), how its failures read,
and the JVM heap cap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from flink_jobs import environment
from flink_jobs.cancellation import cancel_job
from flink_jobs.cluster import free_port
from flink_jobs.progress import cannot_read_message, describe, unreadable_path
from tests.conftest import REPO_ROOT, transactions_db
from warehouse import flink_output, synthetic

JOB_MODULE = "flink_jobs.window_job"  # the only place these tests name the job


def test_describe_names_rows_read_and_running_tasks():
    job = {
        "state": "RUNNING",
        "vertices": [
            {"name": "Source: staged_transactions[1]", "status": "FINISHED",
             "metrics": {"read-records": 0, "write-records": 20000}},
            {"name": "Source: staged_transactions[9]", "status": "RUNNING",
             "metrics": {"read-records": 0, "write-records": 12000}},
            {"name": "Sort[3] -> Calc[4] -> OverAggregate[5] -> Calc[6] -> HashAggregate[7] -> Sink: x",
             "status": "RUNNING", "metrics": {"read-records": 15000, "write-records": 0}},
            {"name": "windows sink", "status": "CREATED", "metrics": {"read-records": 0, "write-records": 0}},
        ],
    }  # fmt: skip
    line = describe(job, 12.4)
    # the input is read by two source vertices here: rows read is the furthest one, not the sum
    assert line.startswith("Flink job running for 12 s: 20,000 rows read; running: Sort[3]")
    assert "(15,000 rows in)" in line and "windows sink" not in line and "(input done)" not in line
    job["vertices"][1]["status"] = "FINISHED"
    assert "20,000 rows read (input done)" in describe(job, 13)
    # before the source's first metrics update Flink reports 0: said as such, not as "0 rows read"
    assert describe({}, 1) == "Flink job running for 1 s: starting up, no row count reported yet"


def test_describe_gives_a_percentage_an_eta_and_full_operator_names():
    name = "tumbling windows -> (windows sink: Writer -> windows sink: Committer, late events -> late sink: Writer)"
    job = {
        "state": "RUNNING",
        "vertices": [
            {"name": "Source: staged transactions", "status": "RUNNING", "metrics": {"write-records": 750_000}},
            {"name": name, "status": "RUNNING", "metrics": {"read-records": 700_000}},
        ],
    }
    line = describe(job, 30, total_rows=3_000_000)
    assert line.startswith("Flink job running for 30 s: 750,000 of 3,000,000 rows read (25%), about 1 min 30 s left")
    assert f"{name} (700,000 rows in)" in line  # the whole name, never cut off
    # the rate counts from the first report with rows: 250,000 rows in the 10 s since, 2.25M left: 90 s
    assert ", about 1 min 30 s left" in describe(job, 30, total_rows=3_000_000, first_count=(20.0, 500_000))
    # 10 s of start-up before the first count no longer stretch the estimate: 750,000 rows in 10 s
    assert ", about 30 s left" in describe(job, 30, total_rows=3_000_000, first_count=(20.0, 0))
    assert describe({}, 10, total_rows=3_000_000) == (
        "Flink job running for 10 s: starting up, no row count reported yet (input: 3,000,000 rows)"
    )


def test_start_and_finish_lines_read_as_sentences(tmp_path):
    from flink_jobs.window_job import count_lines, finished_line, starting_line
    from warehouse.windows import WindowSpec

    staged = tmp_path / "in.csv"
    staged.write_text("a\nb\nc")  # a last line without its newline counts
    assert count_lines(staged) == 3
    start = starting_line(staged, tmp_path / "out", WindowSpec(), {"parallelism": 2, "jvm_heap": "1g"})
    assert start == (
        f"Flink job starting on a local mini-cluster (parallelism 2, JVM heap 1g): {WindowSpec().describe()}; "
        f"input {staged}, output {tmp_path / 'out'}"
    )
    figures = {"wall_seconds": 12.34, "flink_net_runtime_ms": 9100, "flink_job_id": "abc", "windows": 2652,
               "late_events": 142}  # fmt: skip
    assert finished_line(figures) == (
        "Flink job finished in 12.3 s (net runtime 9.1 s, job abc): 2,652 windows, 142 late events"
    )
    assert "{" not in start + finished_line(figures)


def test_job_reports_progress_while_it_runs(tmp_path):
    # 300k rows: several seconds of running job, so that reports every 0.3 s are seen on a fast machine
    # too (with 20k rows the job ended before its first report here)
    generated = synthetic.write_transactions_csv(tmp_path / "300k.csv", **{**synthetic.TEST_SETTINGS, "rows": 300_000})
    staged = tmp_path / "in.csv"
    flink_output.stage_input(
        transactions_db(tmp_path / "w.duckdb", synthetic.read_events(generated)), "input.csv", staged
    )
    command = [sys.executable, "-m", JOB_MODULE, "--input", str(staged),
               "--output", str(tmp_path / "out"), "--progress-every-s", "0.3", "--jvm-heap", "512m"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = [line for line in done.stderr.splitlines() if line.startswith("Flink job ")]
    running = [line for line in lines if line.startswith("Flink job running for ")]
    assert running, done.stderr[-3000:]
    assert any(" rows read" in line for line in running), running
    # elapsed seconds never go backwards
    elapsed = [int(line.split("for ")[1].split(" s")[0]) for line in running]
    assert elapsed == sorted(elapsed)
    assert json.loads(done.stdout.strip().splitlines()[-1])["windows"] > 0, "and then it finished"


def test_job_rejects_a_non_positive_progress_interval(tmp_path):
    staged = tmp_path / "in.csv"
    staged.write_text("1,0,1.0000,61\n")
    command = [sys.executable, "-m", JOB_MODULE, "--input", str(staged),
               "--output", str(tmp_path / "out"), "--progress-every-s", "0"]  # fmt: skip
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "progress interval must be > 0 s" in done.stderr


# What Flink said when the cluster could not see the staged input (measured: JobManager, FileSource
# enumerator), and what Java I/O and NIO say for a file a TaskManager cannot open.
FLINK_FILE_NOT_FOUND = (
    "Caused by: org.apache.flink.util.FlinkRuntimeException: Could not enumerate file splits\n"
    "\tat org.apache.flink.connector.file.src.AbstractFileSource.createEnumerator(AbstractFileSource.java:147)\n"
    "Caused by: java.io.FileNotFoundException: File /data/.staging/w.duckdb/r1.files/flink_input.csv does not exist "
    "or the user running Flink ('root') has insufficient permissions to access it.\n"
    "\tat org.apache.flink.core.fs.local.LocalFileSystem.getFileStatus(LocalFileSystem.java:105)\n"
)


def test_unreadable_path_names_the_file_the_cluster_could_not_read():
    assert unreadable_path(FLINK_FILE_NOT_FOUND) == "/data/.staging/w.duckdb/r1.files/flink_input.csv"
    assert unreadable_path("java.io.FileNotFoundException: /srv/in.csv (Permission denied)") == "/srv/in.csv"
    assert unreadable_path("Caused by: java.nio.file.NoSuchFileException: /srv/in.csv\n\tat x") == "/srv/in.csv"
    assert unreadable_path("java.io.FileNotFoundException: File file:/srv/in.csv does not exist") == "/srv/in.csv"
    assert unreadable_path("org.apache.flink.runtime.client.JobCancellationException: Job was cancelled.") is None
    sentence = cannot_read_message("/srv/in.csv", "ab" * 16, "http://flink:8081")
    assert sentence.count(". ") == 0 and sentence.endswith(".")  # one sentence
    assert "/srv/in.csv" in sentence and "ab" * 16 in sentence and "same paths" in sentence


def test_cancel_on_a_cluster_that_is_gone_fails_within_its_bound():
    started = time.monotonic()
    state, detail = cancel_job(f"http://127.0.0.1:{free_port()}", "0" * 32, timeout_s=2.0)
    assert state == "FAILED_TO_CANCEL" and "refused" in detail.lower()
    assert time.monotonic() - started < 2.5


def test_local_gateway_heap_cap_respects_an_explicit_xmx(monkeypatch):
    from pyflink import java_gateway

    assert java_gateway._gateway is None  # no JVM in the test process: the next one would get these args
    monkeypatch.setattr(environment, "_gateway_target", None)
    monkeypatch.setattr(environment, "_archive_being_written", None)
    # setenv first so that monkeypatch restores both variables, whatever prepare_gateway writes
    monkeypatch.setenv("SUBMIT_ARGS", "local")
    monkeypatch.setenv("JVM_ARGS", "")
    sharing = environment.class_data_sharing_args().split()  # the flags of class-data sharing come after
    environment.prepare_gateway(None, "768m")
    assert os.environ["JVM_ARGS"].split() == ["-Xmx768m", *sharing]
    monkeypatch.setenv("JVM_ARGS", "-Xmx2g -Dx=1")
    environment.prepare_gateway(None, "768m")
    assert os.environ["JVM_ARGS"].split() == ["-Xmx2g", "-Dx=1", *sharing]
    monkeypatch.setenv("JVM_ARGS", "-Dx=1 -Xshare:off")  # an explicit -Xshare wins over the archive
    environment.prepare_gateway(None, None)
    assert os.environ["JVM_ARGS"] == "-Dx=1 -Xshare:off"


def test_heap_cap_test_left_no_jvm_args_behind():
    # runs after the test above: a leaked -Xmx would cap every later JVM of the suite
    assert "-Xmx768m" not in os.environ.get("JVM_ARGS", "")
