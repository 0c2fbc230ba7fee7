"""Runs against a real session cluster clean up after themselves (issue 15).

Everything is real: a loopback Flink cluster (flink_jobs.cluster), `dagster asset materialize` and a
`dagster-webserver` with a real instance, the window job through Dagster Pipes. The tests drive the
job only through the Dagster CLI and the asset, never by its module name.

The input is 2M generated rows, ingested once per module into a seed warehouse (`INGEST`); each
test copies it and runs the rest of the pipeline (`AFTER_INGEST`), so a run reaches its Flink job
after a few seconds and the job is still running (several seconds of work) when it is stopped.
Every process a test starts carries a marker in its environment, so the leftovers of a run (its
Pipes subprocess, its gateway JVM) are found even after they were re-parented.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import pytest

from flink_jobs.cluster import StandaloneCluster, free_port
from flink_jobs.environment import fetch_rest_json
from tests.conftest import REPO_ROOT, SAMPLE
from warehouse import synthetic

pytestmark = pytest.mark.flink

DAGSTER = Path(sys.executable).parent / "dagster"
WEBSERVER = Path(sys.executable).parent / "dagster-webserver"
INGEST = "key:transactions or key:rejected_rows"
AFTER_INGEST = "not key:transactions and not key:rejected_rows"
ROWS = 2_000_000
CANCELED_WITHIN_S = 10.0  # the bound, from the stop to CANCELED on the cluster's REST API
RUNNING_TIMEOUT_S = 300.0


# --- fixtures -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """JobManager + TaskManager on 127.0.0.1 with 2 slots (TXN_FLINK_PARALLELISM's default)."""
    cluster = StandaloneCluster(tmp_path_factory.mktemp("flink-cluster"), slots=2)
    cluster.start(timeout=240)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def seed(tmp_path_factory) -> tuple[Path, Path]:
    """(source CSV, published warehouse holding its 2M ingested transactions)."""
    folder = tmp_path_factory.mktemp("seed")
    source = folder / "transactions_2m.csv"
    synthetic.write_transactions_csv(source, rows=ROWS, keys=200, seed=15)
    warehouse = folder / "warehouse.duckdb"
    env = {**os.environ, "TXN_SOURCE_CSV": str(source), "TXN_WAREHOUSE": str(warehouse)}
    done = subprocess.run([str(DAGSTER), "asset", "materialize", "-m", "orchestration", "--select", INGEST],
                          cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return source, warehouse


def copy_seed(seed, folder: Path) -> tuple[Path, Path]:
    source, warehouse = seed
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(warehouse, folder / "warehouse.duckdb")
    return source, folder / "warehouse.duckdb"


# --- helpers ------------------------------------------------------------------------------------


def processes_with(marker: str) -> list[tuple[int, str]]:
    """(pid, command line) of live processes whose environment holds `marker`."""
    found = []
    needle = marker.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if needle not in (entry / "environ").read_bytes():
                continue
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if state != "Z":
            found.append((int(entry.name), cmdline))
    return found


def job_processes(marker: str) -> list[tuple[int, str]]:
    """The run's Flink client side: the job's Python process and its gateway JVM."""
    return [(pid, cmd) for pid, cmd in processes_with(marker) if "flink_jobs." in cmd or cmd.startswith("java")]


def wait_for_no_job_processes(marker: str, timeout: float = 20.0) -> list[tuple[int, str]]:
    deadline = time.monotonic() + timeout
    while (left := job_processes(marker)) and time.monotonic() < deadline:
        time.sleep(0.3)
    return left


def kill_marked(marker: str) -> None:
    for pid, _ in processes_with(marker):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cluster_jobs(cluster: StandaloneCluster) -> dict[str, str]:
    return {job["jid"]: job["state"] for job in fetch_rest_json(cluster.address, "/jobs/overview")["jobs"]}


def wait_for_new_running_job(cluster, before: set[str], alive, log: Path) -> str:
    deadline = time.monotonic() + RUNNING_TIMEOUT_S
    while time.monotonic() < deadline:
        running = [jid for jid, state in cluster_jobs(cluster).items() if state == "RUNNING" and jid not in before]
        if running:
            return running[0]
        assert alive(), f"the run ended before its Flink job ran:\n{log.read_text(errors='replace')[-4000:]}"
        time.sleep(0.1)
    raise AssertionError(f"no Flink job running after {RUNNING_TIMEOUT_S:g} s:\n{log.read_text()[-4000:]}")


def wait_for_job_state(cluster, job_id: str, states: set[str], timeout: float) -> tuple[str, float]:
    started = time.monotonic()
    state = None
    while time.monotonic() - started < timeout:
        state = fetch_rest_json(cluster.address, f"/jobs/{job_id}")["state"]
        if state in states:
            break
        time.sleep(0.1)
    return state, time.monotonic() - started


def cancel_on_cluster(cluster, job_id: str) -> None:
    """Test cleanup: a job the test left running must not hold the shared cluster's slots."""
    request = urllib.request.Request(f"http://{cluster.address}/jobs/{job_id}?mode=cancel", method="PATCH")
    try:
        urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=5).close()
    except OSError:
        pass
    wait_for_job_state(cluster, job_id, {"CANCELED", "FAILED", "FINISHED"}, 30)


class CliRun:
    """`dagster asset materialize -m orchestration --select ...` in its own session, output in a file,
    with its own DAGSTER_HOME (the steps' captured stdout/stderr land in its compute logs)."""

    def __init__(self, folder: Path, source: Path, warehouse: Path, jobmanager: str | None, select: str,
                 prefix: tuple[str, ...] = ()):  # fmt: skip
        self.marker = f"TXN_TEST_RUN_MARKER=cli-{uuid.uuid4().hex}"
        self.log = folder / "dagster.log"
        self.home = folder / "dagster_home"
        self.home.mkdir()
        env = {**os.environ, "TXN_SOURCE_CSV": str(source), "TXN_WAREHOUSE": str(warehouse)}
        env["DAGSTER_HOME"] = str(self.home)
        env["TXN_FLINK_JOBMANAGER"] = jobmanager or ""
        env[self.marker.split("=")[0]] = self.marker.split("=")[1]
        command = [*prefix, str(DAGSTER), "asset", "materialize", "-m", "orchestration", "--select", select]
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip

    def alive(self) -> bool:
        return self.process.poll() is None

    def text(self) -> str:
        return self.log.read_text(errors="replace")

    def compute_logs(self) -> str:
        """What the steps' processes (and the Pipes subprocess, which inherits them) wrote to stdout/stderr."""
        files = sorted(self.home.glob("storage/*/compute_logs/*.err")) + sorted(
            self.home.glob("storage/*/compute_logs/*.out")
        )
        return "\n".join(path.read_text(errors="replace") for path in files)

    def close(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait()
        kill_marked(self.marker)


# --- SIGTERM / SIGKILL of the CLI run -----------------------------------------------------------


def test_sigterm_to_the_dagster_cli_cancels_the_job_on_the_cluster(tmp_path, cluster, seed):
    source, warehouse = copy_seed(seed, tmp_path / "w")
    published = warehouse.read_bytes()
    before = set(cluster_jobs(cluster))
    run = CliRun(tmp_path, source, warehouse, cluster.address, AFTER_INGEST)
    job_id = None
    try:
        job_id = wait_for_new_running_job(cluster, before, run.alive, run.log)
        run.process.send_signal(signal.SIGTERM)
        state, after_s = wait_for_job_state(cluster, job_id, {"CANCELED"}, CANCELED_WITHIN_S)
        assert state == "CANCELED", f"job {job_id} is {state} {after_s:.1f} s after SIGTERM:\n{run.text()[-3000:]}"
        assert run.process.wait(30) != 0
        assert f"cancelled Flink job {job_id} on http://{cluster.address}" in run.text()
        assert not wait_for_no_job_processes(run.marker), "the run left Flink client processes behind"
        assert warehouse.read_bytes() == published, "a stopped run must leave the published warehouse as it was"
    finally:
        run.close()
        if job_id:
            cancel_on_cluster(cluster, job_id)


def test_a_killed_orchestrator_cancels_the_job(tmp_path, cluster, seed):
    """The step's process dies while the job runs (here SIGKILL, which no handler sees): the job's
    process notices that its parent is gone and cancels the job."""
    source, warehouse = copy_seed(seed, tmp_path / "w")
    before = set(cluster_jobs(cluster))
    run = CliRun(tmp_path, source, warehouse, cluster.address, AFTER_INGEST)
    job_id = None
    try:
        job_id = wait_for_new_running_job(cluster, before, run.alive, run.log)
        run.process.send_signal(signal.SIGKILL)
        run.process.wait()
        state, after_s = wait_for_job_state(cluster, job_id, {"CANCELED"}, CANCELED_WITHIN_S)
        assert state == "CANCELED", f"job {job_id} is {state} {after_s:.1f} s after the kill:\n{run.text()[-3000:]}"
        assert not wait_for_no_job_processes(run.marker)
        # its Dagster log reader died with it: the line goes to the step's stderr (the run's compute logs)
        line = rf"The process that started this job \(pid \d+\) is gone: cancelled Flink job {job_id}"
        assert re.search(line, run.compute_logs()), run.compute_logs()[-3000:]
    finally:
        run.close()
        if job_id:
            cancel_on_cluster(cluster, job_id)


def test_sigterm_to_a_local_run_leaves_no_process_and_the_results_intact(tmp_path, seed):
    """Without a cluster the job runs in the client's mini-cluster: a stop ends it with the process."""
    source, warehouse = copy_seed(seed, tmp_path / "w")
    published = warehouse.read_bytes()
    run = CliRun(tmp_path, source, warehouse, None, AFTER_INGEST)
    try:
        deadline = time.monotonic() + RUNNING_TIMEOUT_S
        while "Flink job running for" not in run.text() and "Job has been submitted" not in run.text():
            assert run.alive() and time.monotonic() < deadline, run.text()[-3000:]
            if any(cmd.startswith("java") for _, cmd in job_processes(run.marker)):
                break  # the mini-cluster's JVM is up: the job is being planned or runs
            time.sleep(0.2)
        time.sleep(3)  # into the job
        run.process.send_signal(signal.SIGTERM)
        assert run.process.wait(30) != 0
        assert not wait_for_no_job_processes(run.marker), "a stopped local run left processes behind"
        assert warehouse.read_bytes() == published
    finally:
        run.close()


# --- the cluster cannot read the staged input ----------------------------------------------------


def _private_mount_prefix(folder: Path) -> tuple[str, ...] | None:
    """A command prefix that runs the rest in a mount namespace where `folder` is a fresh tmpfs,
    so files written there exist for that process tree only (as on a client host whose staging
    folder the cluster does not share). None if this machine does not allow it."""
    script = 'mount -t tmpfs tmpfs "$0" && exec "$@"'
    for unshare in (["unshare", "-m", "--propagation", "private"], ["unshare", "-r", "-m", "--propagation", "private"]):
        probe = subprocess.run([*unshare, "sh", "-c", script, str(folder), "true"], capture_output=True, timeout=30)
        if probe.returncode == 0:
            return (*unshare, "sh", "-c", script, str(folder))
    return None


def test_a_cluster_that_cannot_read_the_staged_input_fails_with_one_sentence(tmp_path, cluster):
    client_only = tmp_path / "client-only"
    client_only.mkdir()
    prefix = _private_mount_prefix(client_only)
    if prefix is None:
        pytest.skip("needs a private mount namespace (unshare -m) to hide the staging folder from the cluster")
    before = set(cluster_jobs(cluster))
    run = CliRun(tmp_path, SAMPLE, client_only / "warehouse.duckdb", cluster.address, "*", prefix=prefix)
    try:
        assert run.process.wait(300) != 0
        text = run.text()
        match = re.search(r"The Flink cluster at (\S+) cannot read (\S+) \(job ([0-9a-f]{32}) failed with "
                          r"FileNotFoundException\): its JobManager and TaskManagers must see the run's staging "
                          r"folder \(next to the warehouse\)", text)  # fmt: skip
        assert match, text[-4000:]
        assert match.group(1) == f"http://{cluster.address}"
        assert match.group(2).startswith(str(client_only) + "/"), "the sentence names the staged input"
        assert not Path(match.group(2)).exists(), "the staged input exists only in the client's namespace"
        job_id = match.group(3)
        assert job_id not in before and cluster_jobs(cluster)[job_id] in {"FAILED", "CANCELED"}
        assert f"failed ({match.group(0)}" in text, "the step's Failure quotes the job's sentence"
        assert "ClusterCannotReadInput" not in text, "a sentence, not a traceback"
    finally:
        run.close()


# --- a cancel that cannot reach the cluster ------------------------------------------------------


def test_a_cancel_the_cluster_does_not_answer_is_reported_with_the_job_id(tmp_path, cluster, seed):
    source, warehouse = copy_seed(seed, tmp_path / "w")
    before = set(cluster_jobs(cluster))
    run = CliRun(tmp_path, source, warehouse, cluster.address, AFTER_INGEST)
    jobmanager = cluster.processes["jobmanager"].pid
    job_id = None
    try:
        job_id = wait_for_new_running_job(cluster, before, run.alive, run.log)
        # RUNNING shows before the client has the submission's answer: stop the JobManager only after
        # that (a stop during the submission is held until the job id is known, see flink_jobs.cancellation)
        deadline = time.monotonic() + 60
        while f"Job has been submitted with JobID {job_id}" not in run.text() + run.compute_logs():
            assert time.monotonic() < deadline and run.alive(), run.text()[-3000:]
            time.sleep(0.1)
        time.sleep(0.5)
        os.killpg(jobmanager, signal.SIGSTOP)  # the cluster is there, but does not answer
        try:
            stopped = time.monotonic()
            run.process.send_signal(signal.SIGTERM)
            run.process.wait(40)  # Pipes gives the job process 20 s; the cancel is bounded well below that
            exited_after = time.monotonic() - stopped
        finally:
            os.killpg(jobmanager, signal.SIGCONT)
        line = next((ln for ln in run.text().splitlines() if "could not cancel Flink job" in ln), None)
        assert line, run.text()[-3000:]
        assert f"could not cancel Flink job {job_id} on http://{cluster.address}" in line
        assert f"curl -X PATCH 'http://{cluster.address}/jobs/{job_id}?mode=cancel'" in line
        assert exited_after < 40
        assert not wait_for_no_job_processes(run.marker)
    finally:
        run.close()
        if job_id:
            cancel_on_cluster(cluster, job_id)


# --- Dagster's own run termination (the UI's Terminate button) ------------------------------------


class Webserver:
    """`dagster-webserver -m orchestration` on a free loopback port with a fresh instance. Its
    dagster.yaml uses the DefaultRunCoordinator, so a run starts without the daemon; termination
    takes the path of the UI's Terminate button either way (run_launcher.terminate -> the code
    server's CancelExecution -> SIGINT to the run worker -> Pipes sends SIGINT to the job)."""

    def __init__(self, folder: Path, env: dict[str, str]):
        self.home = folder / "dagster_home"
        self.home.mkdir(parents=True)
        (self.home / "dagster.yaml").write_text(
            "run_coordinator:\n  module: dagster._core.run_coordinator\n  class: DefaultRunCoordinator\ntelemetry:\n  enabled: false\n"
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = folder / "webserver.log"
        with open(self.log, "wb") as output:
            self.process = subprocess.Popen(
                [str(WEBSERVER), "-m", "orchestration", "-h", "127.0.0.1", "-p", str(self.port)],
                cwd=REPO_ROOT, env={**os.environ, **env, "DAGSTER_HOME": str(self.home)},
                stdout=output, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip

    def wait_until_up(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text(errors="replace")[-3000:]
            try:
                if self.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }"):
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise AssertionError(f"dagster-webserver not up:\n{self.log.read_text(errors='replace')[-3000:]}")

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        body = json.dumps({"query": query, "variables": variables or {}}).encode()
        request = urllib.request.Request(f"{self.url}/graphql", body, {"Content-Type": "application/json"})
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(request, timeout=30) as answer:
            return json.load(answer)["data"]

    def run_status(self, run_id: str) -> str:
        answer = self.graphql("query($runId: ID!) { runOrError(runId: $runId) { ... on Run { status } } }",
                              {"runId": run_id})  # fmt: skip
        return answer["runOrError"].get("status", "?")

    def messages(self, run_id: str) -> list[str]:
        query = """query($runId: ID!) { logsForRun(runId: $runId) { ... on EventConnection {
                   events { ... on MessageEvent { message } } } } }"""
        events = self.graphql(query, {"runId": run_id})["logsForRun"]["events"]
        return [event.get("message") or "" for event in events]

    def close(self) -> None:
        for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            try:
                os.killpg(self.process.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.process.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue


@pytest.mark.filterwarnings("ignore::DeprecationWarning:gql.*")
def test_terminating_the_run_in_dagster_cancels_the_job_on_the_cluster(tmp_path, cluster, seed):
    from dagster_graphql import DagsterGraphQLClient

    source, warehouse = copy_seed(seed, tmp_path / "w")
    marker = f"ui-{uuid.uuid4().hex}"
    env = {"TXN_SOURCE_CSV": str(source), "TXN_WAREHOUSE": str(warehouse), "TXN_FLINK_JOBMANAGER": cluster.address,
           "TXN_TEST_RUN_MARKER": marker}  # fmt: skip
    server = Webserver(tmp_path, env)
    job_id = None
    try:
        server.wait_until_up()
        client = DagsterGraphQLClient("127.0.0.1", port_number=server.port)
        nodes = server.graphql("{ assetNodes { assetKey { path } } }")["assetNodes"]
        selection = [node["assetKey"]["path"] for node in nodes]
        selection = [path for path in selection if path not in (["transactions"], ["rejected_rows"])]  # AFTER_INGEST
        before = set(cluster_jobs(cluster))
        run_id = client.submit_job_execution("__ASSET_JOB", asset_selection=selection)

        def run_alive() -> bool:
            return server.run_status(run_id) in ("QUEUED", "NOT_STARTED", "STARTING", "STARTED")

        job_id = wait_for_new_running_job(cluster, before, run_alive, server.log)
        client.terminate_run(run_id)  # what the UI's Terminate button sends
        state, after_s = wait_for_job_state(cluster, job_id, {"CANCELED"}, CANCELED_WITHIN_S)
        assert state == "CANCELED", f"job {job_id} is {state} {after_s:.1f} s after the termination"
        deadline = time.monotonic() + 60
        while (status := server.run_status(run_id)) != "CANCELED" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert status == "CANCELED"
        messages = server.messages(run_id)
        assert any(f"cancelled Flink job {job_id} on http://{cluster.address}" in m for m in messages), messages[-20:]
        assert not wait_for_no_job_processes(marker), "the terminated run left Flink client processes behind"
    finally:
        server.close()
        kill_marked(marker)
        if job_id:
            cancel_on_cluster(cluster, job_id)


# --- stream mode on a cluster ---------------------------------------------------------------------


def test_stream_mode_on_a_cluster_equals_one_local_replay_of_the_whole(tmp_path, cluster):
    """Savepoints written and restored by a real cluster (with its checkpoints on), the marker files
    written by its TaskManager: the sample cut in two equals one local file-mode replay of the sample."""
    from tests.orchestration.test_pipeline import failure_messages, run_pipeline
    from tests.orchestration.test_stream_mode import cut, tables

    first, second = cut(SAMPLE, tmp_path / "in", [6000])
    assert run_pipeline(SAMPLE, tmp_path / "whole.duckdb").success
    warehouse = tmp_path / "stream.duckdb"
    for path in (first, second):
        result = run_pipeline(path, warehouse, replay_mode="stream", flink_jobmanager=cluster.address)
        assert result.success, failure_messages(result)
    expected, actual = tables(tmp_path / "whole.duckdb"), tables(warehouse)
    assert actual["windows"] == expected["windows"] and actual["late"] == expected["late"]
    assert actual["provisional"] > 0 and len(actual["stream"]) == 2
