"""The job on a real standalone Flink cluster (`--jobmanager host:port`), not the mini-cluster."""

from __future__ import annotations

import http.server
import random
import subprocess
import sys
import threading
import time

import pytest

from flink_jobs.cluster import StandaloneCluster, free_port
from flink_jobs.environment import REPO_ROOT, fetch_rest_json, remote_submit_args
from tests.conftest import read_job_output, run_flink_job, write_staged_input
from warehouse.replay import ReplayConfig, replay

LAB_MS = 1715421600000  # 2024-05-11 10:00:00 UTC


@pytest.fixture(scope="module")
def flink_cluster(tmp_path_factory):
    """A JobManager + TaskManager (4 slots) on 127.0.0.1, free ports, everything under a temp dir."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("flink-cluster"), slots=4)
    cluster.start(timeout=180)  # stops what it started if it does not come up
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def staged_events():
    """A few hundred disordered events over 4 keys, with late events under the default config."""
    rng = random.Random(5)
    events, ts = [], LAB_MS
    for row in range(1, 401):
        ts += rng.randint(0, 400)
        delay = rng.choice([0, 0, 0, 200, 900, 2500, 8000])
        events.append((row, f"tx{rng.randint(1, 4)}", ts - delay, round(rng.uniform(1, 500), 2)))
    return events


@pytest.fixture(scope="module")
def local_result(tmp_path_factory, staged_events):
    """(staged file, windows, late, figures) of the same job on the local mini-cluster."""
    folder = tmp_path_factory.mktemp("local-run")
    staged = write_staged_input(folder / "in.csv", staged_events)
    figures = run_flink_job(staged, folder / "out", parallelism=2)
    windows, late = read_job_output(folder / "out")
    assert len(late) > 0 and len(windows) > 0, "the input must exercise windows and lateness"
    return staged, windows, late, figures


def cluster_jobs(cluster: StandaloneCluster) -> dict[str, dict]:
    return {job["jid"]: job for job in fetch_rest_json(cluster.address, "/jobs/overview")["jobs"]}


@pytest.mark.flink
def test_job_on_the_cluster_gives_the_local_windows_and_late_events(tmp_path, flink_cluster, local_result, staged_events):
    staged, local_windows, local_late, local_figures = local_result
    figures = run_flink_job(staged, tmp_path / "out", parallelism=4, jobmanager=flink_cluster.address)
    windows, late = read_job_output(tmp_path / "out")
    assert windows.equals(local_windows) and late.equals(local_late)
    reference = replay(staged_events, ReplayConfig())
    assert [tuple(r) for r in windows.itertuples(index=False)] == sorted(reference.windows)
    assert [tuple(r) for r in late.itertuples(index=False)] == reference.late
    assert (figures["windows"], figures["late_events"]) == (local_figures["windows"], local_figures["late_events"])
    # it ran on the cluster, and only there: the cluster knows this job and not the local one
    jobs = cluster_jobs(flink_cluster)
    assert figures["flink_job_id"] in jobs and local_figures["flink_job_id"] not in jobs


@pytest.mark.flink
def test_cluster_rest_api_lists_the_finished_job(tmp_path, flink_cluster, local_result):
    """Also a second job on the same TaskManager, which needs flink-python in the cluster's lib/."""
    staged, local_windows, local_late, _ = local_result
    before = set(cluster_jobs(flink_cluster))
    figures = run_flink_job(staged, tmp_path / "out", parallelism=1, jobmanager=flink_cluster.address)
    jobs = cluster_jobs(flink_cluster)
    job = jobs[figures["flink_job_id"]]
    assert figures["flink_job_id"] not in before
    assert job["state"] == "FINISHED" and job["name"] == "window average: in.csv"
    assert job["tasks"]["failed"] == 0 and job["tasks"]["finished"] == job["tasks"]["total"] > 0
    detail = fetch_rest_json(flink_cluster.address, f"/jobs/{figures['flink_job_id']}")
    assert {vertex["parallelism"] for vertex in detail["vertices"]} == {1}
    windows, late = read_job_output(tmp_path / "out")
    assert windows.equals(local_windows) and late.equals(local_late)


def run_job_expecting_failure(tmp_path, jobmanager: str, bound_s: float = 60.0):
    staged = write_staged_input(tmp_path / "in.csv", [(1, "tx1", LAB_MS, 100.0)])
    command = [sys.executable, "-m", "flink_jobs.window_average", "--input", str(staged),
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
    assert "JobManagerUnreachable" in last_line and f"Flink jobmanager {address} is unreachable" in last_line
    assert "Connection refused" in last_line
    assert elapsed < 30, f"took {elapsed:.1f} s"
    assert not (tmp_path / "out").exists()


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
