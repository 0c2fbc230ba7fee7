"""The job on a real standalone Flink cluster (`--jobmanager host:port`), not the mini-cluster."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
import time

import pytest

from flink_jobs.cluster import StandaloneCluster, free_port
from flink_jobs.environment import REPO_ROOT, fetch_rest_json, remote_submit_args
from flink_jobs.output import FAILURE_FILE, read_failure
from tests.conftest import job_late, job_windows, transactions_db
from tests.flink_jobs.disorder import disordered_events
from warehouse import flink_output, replay
from warehouse.windows import WindowSpec

JOB_MODULE = "flink_jobs.window_job"  # the only place these tests name the job
SPEC = WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=500)
EVENTS = disordered_events(600, keys=4, seed=5)


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    """A JobManager + TaskManager (4 slots) on 127.0.0.1, free ports, everything under a temp dir."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("flink-cluster"), slots=4)
    cluster.start(timeout=180)  # stops what it started if it does not come up
    try:
        yield cluster
    finally:
        cluster.stop()


def run_job(workdir, *, parallelism: int, jobmanager: str | None = None) -> tuple[dict, list, list]:
    """Stage EVENTS, run the job as a separate process (as the asset does), load its output:
    (figures, windows, late events)."""
    workdir.mkdir(parents=True, exist_ok=True)
    con = transactions_db(workdir / "w.duckdb", EVENTS)
    staged, output = workdir / "staged.csv", workdir / "output"
    flink_output.stage_input(con, "input.csv", staged)
    command = [sys.executable, "-m", JOB_MODULE, "--input", str(staged), "--output", str(output),
               "--parallelism", str(parallelism), *SPEC.job_arguments()]  # fmt: skip
    if jobmanager:
        command += ["--jobmanager", jobmanager]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    flink_output.load_output(con, output, "input.csv", SPEC)
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    return figures, job_windows(con), job_late(con)


@pytest.fixture(scope="module")
def local_result(tmp_path_factory):
    """(figures, windows, late) of the same job on the local mini-cluster."""
    figures, windows, late = run_job(tmp_path_factory.mktemp("local-run"), parallelism=2)
    assert late and windows, "the input must exercise windows and lateness"
    return figures, windows, late


def cluster_jobs(cluster: StandaloneCluster) -> dict[str, dict]:
    return {job["jid"]: job for job in fetch_rest_json(cluster.address, "/jobs/overview")["jobs"]}


@pytest.mark.flink
def test_job_on_the_cluster_gives_the_local_windows_and_late_events(tmp_path, flink_cluster, local_result):
    local_figures, local_windows, local_late = local_result
    figures, windows, late = run_job(tmp_path, parallelism=4, jobmanager=flink_cluster.address)
    assert windows == local_windows and late == local_late
    reference = replay.replay(EVENTS, SPEC)
    assert windows == reference.windows and late == reference.late
    assert (figures["windows"], figures["late_events"]) == (local_figures["windows"], local_figures["late_events"])
    # it ran on the cluster, and only there: the cluster knows this job and not the local one
    jobs = cluster_jobs(flink_cluster)
    assert figures["flink_job_id"] in jobs and local_figures["flink_job_id"] not in jobs


@pytest.mark.flink
def test_cluster_rest_api_lists_the_finished_job(tmp_path, flink_cluster, local_result):
    """Also a second job on the same TaskManager."""
    _, local_windows, local_late = local_result
    before = set(cluster_jobs(flink_cluster))
    figures, windows, late = run_job(tmp_path, parallelism=1, jobmanager=flink_cluster.address)
    jobs = cluster_jobs(flink_cluster)
    job = jobs[figures["flink_job_id"]]
    assert figures["flink_job_id"] not in before
    assert job["state"] == "FINISHED" and job["name"] == f"{SPEC.kind} windows: staged.csv"
    assert job["tasks"]["failed"] == 0 and job["tasks"]["finished"] == job["tasks"]["total"] > 0
    detail = fetch_rest_json(flink_cluster.address, f"/jobs/{figures['flink_job_id']}")
    assert {vertex["parallelism"] for vertex in detail["vertices"]} == {1}
    assert windows == local_windows and late == local_late


def run_job_expecting_failure(tmp_path, jobmanager: str, bound_s: float = 60.0):
    staged = tmp_path / "staged.csv"
    staged.write_text("1,1715421600000,100.0000,747831\n")
    command = [sys.executable, "-m", JOB_MODULE, "--input", str(staged),
               "--output", str(tmp_path / "out"), "--jobmanager", jobmanager]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=bound_s)
    return done, time.monotonic() - started


@pytest.mark.flink
def test_unreachable_jobmanager_fails_fast_with_a_clear_message(tmp_path):
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    done, elapsed = run_job_expecting_failure(tmp_path, address)
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert last_line.startswith(f"Flink jobmanager {address} is unreachable") and "Connection refused" in last_line
    assert "Traceback" not in done.stderr, "one sentence, not a traceback"
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [FAILURE_FILE], "no job output, only the sentence"
    assert read_failure(tmp_path / "out") == last_line  # what the Dagster step puts into its Failure


@pytest.mark.flink
def test_an_address_that_is_not_a_flink_rest_api_is_rejected(tmp_path):
    class NotFlink(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b"<html>hello</html>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), NotFlink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    address = f"127.0.0.1:{server.server_address[1]}"
    try:
        done, elapsed = run_job_expecting_failure(tmp_path, address)
    finally:
        server.shutdown()
        server.server_close()
    assert done.returncode != 0
    last_line = done.stderr.strip().splitlines()[-1]
    assert f"Flink jobmanager {address} is not usable" in last_line and "not like a Flink REST API" in last_line
    assert elapsed < 30


def test_remote_submission_goes_through_the_flink_cli_with_bounded_retries():
    args = remote_submit_args("flink-jm:8081")
    assert args.startswith("remote -m flink-jm:8081 ")
    assert "rest.retry.max-attempts=3" in args and "rest.retry.delay=1s" in args
