"""`python -m flink_jobs.cluster` and `make cluster-up` / `make cluster-down` leave no JVM behind.

Each test starts a real loopback cluster (JobManager + TaskManager JVMs from the wheel) and finds
its JVMs by the workdir on their command line (`-Dlog.file=<workdir>/log/...`).
"""

from __future__ import annotations

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
from tests.conftest import REPO_ROOT

pytestmark = pytest.mark.flink

GONE_WITHIN_S = 30.0  # the bound: no JobManager or TaskManager 30 s after the stop
READY_TIMEOUT_S = 240.0


def cluster_jvms(workdir: Path) -> list[int]:
    """Live (not zombie) java processes whose command line names this workdir's log folder."""
    found = []
    needle = str(Path(workdir).resolve() / "log").encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if state != "Z" and needle in cmdline and cmdline.split(b"\0")[0].endswith(b"java"):
            found.append(int(entry.name))
    return found


def wait_until_gone(workdir: Path, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while (left := cluster_jvms(workdir)) and time.monotonic() < deadline:
        time.sleep(0.5)
    return left


def kill_leftovers(workdir: Path, launcher: bool = False) -> None:
    """Test cleanup: SIGKILL the cluster's JVMs and, with `launcher`, a background launcher (launcher.pid)."""
    pid_file = workdir / "launcher.pid"
    launchers = pid_file.read_text().split() if launcher and pid_file.exists() else []
    for pid in [*cluster_jvms(workdir), *launchers]:
        try:
            os.kill(int(pid), signal.SIGKILL)
        except (ProcessLookupError, ValueError):
            pass


def wait_for_state_file(workdir: Path, launcher: subprocess.Popen, log: Path) -> dict:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        assert launcher.poll() is None, log.read_text(errors="replace")[-3000:]
        try:
            return json.loads((workdir / "cluster.json").read_text())
        except (OSError, ValueError):
            time.sleep(0.3)
    raise AssertionError(f"cluster not ready after {READY_TIMEOUT_S:g} s:\n{log.read_text(errors='replace')[-3000:]}")


def start_foreground(workdir: Path, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "flink_jobs.cluster", "--workdir", str(workdir),
               "--rest-port", str(free_port()), "--slots", "1"]  # fmt: skip
    with open(log, "wb") as output:
        return subprocess.Popen(command, cwd=REPO_ROOT, stdout=output, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def test_sigterm_to_the_launcher_stops_both_jvms(tmp_path):
    stop_signal = signal.SIGTERM  # SIGHUP and Ctrl-C take the same path (flink_jobs.cluster._run_foreground)
    workdir, log = tmp_path / "cluster", tmp_path / "launcher.log"
    launcher = start_foreground(workdir, log)
    try:
        state = wait_for_state_file(workdir, launcher, log)
        assert len(cluster_jvms(workdir)) == 2, "a JobManager and a TaskManager"
        assert fetch_rest_json(state["address"], "/overview")["slots-total"] == 1
        launcher.send_signal(stop_signal)
        stopped = time.monotonic()
        assert launcher.wait(GONE_WITHIN_S) == 0
        left = wait_until_gone(workdir, GONE_WITHIN_S - (time.monotonic() - stopped))
        assert not left, f"JVMs left {GONE_WITHIN_S:g} s after {stop_signal.name}: {left}"
        assert f"stopped by {stop_signal.name}" in log.read_text()
        assert not (workdir / "cluster.json").exists()
    finally:
        launcher.kill()
        launcher.wait()
        kill_leftovers(workdir)


def test_jvms_do_not_outlive_a_killed_launcher(tmp_path):
    """SIGKILL reaches no handler: the launcher's watchdog stops the JVMs when its pipe closes."""
    workdir, log = tmp_path / "cluster", tmp_path / "launcher.log"
    launcher = start_foreground(workdir, log)
    try:
        wait_for_state_file(workdir, launcher, log)
        assert len(cluster_jvms(workdir)) == 2
        launcher.kill()
        launcher.wait()
        left = wait_until_gone(workdir, GONE_WITHIN_S)
        assert not left, f"JVMs left {GONE_WITHIN_S:g} s after SIGKILL of the launcher: {left}"
        # the stale state of the killed launcher: --stop cleans it up and says what it stopped
        done = subprocess.run([sys.executable, "-m", "flink_jobs.cluster", "--workdir", str(workdir), "--stop"],
                              cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "Stopped the Flink cluster" in done.stdout and not (workdir / "cluster.json").exists()
    finally:
        kill_leftovers(workdir)


def make(target: str, workdir: Path, port: int, **env: str) -> subprocess.CompletedProcess:
    # -o: use the venv as it is (the target depends on `venv`, which would reinstall after a pyproject edit)
    command = ["make", "--no-print-directory", "-o", ".venv/.installed-stamp", target,
               f"FLINK_CLUSTER_DIR={workdir}", f"FLINK_REST_PORT={port}"]  # fmt: skip
    return subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=READY_TIMEOUT_S + 60,
                          env={**os.environ, **env})  # fmt: skip


def test_make_cluster_up_returns_with_the_address_and_cluster_down_stops_it(tmp_path):
    workdir, port = tmp_path / "flink-cluster", free_port()
    try:
        up = make("cluster-up", workdir, port, TXN_FLINK_PARALLELISM="3")
        assert up.returncode == 0, up.stdout + up.stderr
        assert up.stdout.strip().splitlines()[-1] == f"TXN_FLINK_JOBMANAGER=127.0.0.1:{port}"
        # it returned, and the cluster runs in the background with a slot per unit of parallelism
        assert fetch_rest_json(f"127.0.0.1:{port}", "/overview")["slots-total"] == 3
        launcher_pid = int((workdir / "launcher.pid").read_text())
        assert len(cluster_jvms(workdir)) == 2
        again = make("cluster-up", workdir, port)
        assert again.returncode == 0 and f"already running (pid {launcher_pid})" in again.stdout
        assert len(cluster_jvms(workdir)) == 2, "a second cluster-up must not start a second cluster"

        down = make("cluster-down", workdir, port)
        assert down.returncode == 0, down.stdout + down.stderr
        assert f"Stopped the Flink cluster 127.0.0.1:{port}" in down.stdout
        assert not wait_until_gone(workdir, GONE_WITHIN_S)
        assert not (workdir / "launcher.pid").exists() and not (workdir / "cluster.json").exists()
        assert "No Flink cluster" in make("cluster-down", workdir, port).stdout
    finally:
        kill_leftovers(workdir, launcher=True)


def test_a_killed_taskmanager_is_restarted_without_touching_the_jobmanager(tmp_path):
    """Like a pod under Kubernetes: the launcher starts a new TaskManager, logs why the old one ended,
    keeps the JobManager, and `--stop` still leaves no JVM."""
    workdir, port = tmp_path / "flink-cluster", free_port()
    try:
        up = make("cluster-up", workdir, port, TXN_FLINK_PARALLELISM="1")
        assert up.returncode == 0, up.stdout + up.stderr
        address = f"127.0.0.1:{port}"
        jobmanager, taskmanager = json.loads((workdir / "cluster.json").read_text())["groups"]
        before = {tm["id"] for tm in fetch_rest_json(address, "/taskmanagers")["taskmanagers"]}
        os.killpg(taskmanager, signal.SIGKILL)

        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            assert time.monotonic() < deadline, (workdir / "launcher.log").read_text(errors="replace")[-3000:]
            registered = {tm["id"] for tm in fetch_rest_json(address, "/taskmanagers")["taskmanagers"]}
            if registered - before and fetch_rest_json(address, "/overview")["slots-available"] >= 1:
                break  # a new TaskManager, whose slot jobs can use
            time.sleep(0.5)
        groups = json.loads((workdir / "cluster.json").read_text())["groups"]
        assert groups[0] == jobmanager and groups[1] != taskmanager, "same JobManager, a new TaskManager"
        assert sorted(cluster_jvms(workdir)) == sorted(groups), "the JobManager and the new TaskManager, nothing else"
        assert "The Flink taskmanager ended by SIGKILL" in (workdir / "launcher.log").read_text()

        down = make("cluster-down", workdir, port)
        assert down.returncode == 0, down.stdout + down.stderr
        assert not wait_until_gone(workdir, GONE_WITHIN_S)
    finally:
        kill_leftovers(workdir, launcher=True)
