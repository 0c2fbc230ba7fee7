"""Tests for flink_jobs.environment with a real JVM: the gateway's class-data sharing archive, and what
the environment leaves out (no table environment, no loopback server for Python workers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flink_jobs import environment

REPO = Path(__file__).resolve().parents[2]
CHILD_TIMEOUT_S = 300  # a safety net against a hung child, not a timing assertion

# Starts the local gateway with the archive kept in argv[1], reports whether the JVM maps the
# archive, and hands the archive it writes (if any) to the rename-on-exit watcher.
GATEWAY_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    from flink_jobs import environment

    environment.CDS_DIR = Path(sys.argv[1])
    environment.create_environment(1)
    (pid,) = environment.child_java_pids()
    maps = Path(f"/proc/{pid}/maps").read_text()
    print("mapped" if str(environment.class_data_archive()) in maps else "not mapped", flush=True)
    environment.finish_class_data_archive()
    """
)


def run_child(script: str, *args: str, without: str) -> str:
    """stdout of `python -c script args` in the repository, without the variable `without`; it must succeed."""
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=CHILD_TIMEOUT_S,
        env={k: v for k, v in os.environ.items() if k != without},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def cds_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setattr(environment, "CDS_DIR", tmp_path)
    monkeypatch.setattr(environment, "_archive_being_written", None)
    return tmp_path


def test_without_an_archive_the_jvm_writes_one_to_a_name_of_its_own(cds_dir: Path) -> None:
    flags = environment.class_data_sharing_args()
    archive = environment.class_data_archive()
    assert archive.parent == cds_dir and not archive.exists()
    partial = cds_dir / f".{archive.name}.{os.getpid()}.partial"
    assert f"-XX:ArchiveClassesAtExit={partial}" in flags.split()
    assert "-Xlog:cds=off,cds+dynamic=off" in flags.split()


def test_with_an_archive_the_jvm_maps_it(cds_dir: Path) -> None:
    archive = environment.class_data_archive()
    archive.write_bytes(b"archive")
    assert f"-XX:SharedArchiveFile={archive}" in environment.class_data_sharing_args().split()


def test_the_archive_is_named_by_the_java_binary_and_the_jars(cds_dir: Path, monkeypatch, tmp_path: Path) -> None:
    default = environment.class_data_archive()
    other_java = tmp_path / "jdk" / "bin" / "java"
    other_java.parent.mkdir(parents=True)
    other_java.write_text("#!/bin/sh\n")
    other_java.chmod(0o755)
    monkeypatch.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    assert environment.class_data_archive() != default


def test_no_archive_where_its_path_has_whitespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(environment, "CDS_DIR", tmp_path / "My Projects")
    monkeypatch.setattr(environment, "_archive_being_written", None)
    assert environment.class_data_sharing_args() == ""  # pyflink splits JVM_ARGS on whitespace


def test_partial_archives_of_dead_runs_are_removed_after_ten_minutes(cds_dir: Path) -> None:
    archive = environment.class_data_archive()
    dead = cds_dir / f".{archive.name}.999999999.partial"
    recent = cds_dir / f".{archive.name}.999999998.partial"
    alive = cds_dir / f".{archive.name}.{os.getppid()}.partial"
    for path in (dead, recent, alive):
        path.write_bytes(b"half")
    old = time.time() - 601
    os.utime(dead, (old, old))
    os.utime(alive, (old, old))
    environment.class_data_sharing_args()
    assert not dead.exists()
    assert recent.exists() and alive.exists()


def test_the_first_gateway_writes_the_archive_and_the_next_one_maps_it(tmp_path: Path) -> None:
    def start_gateway() -> str:
        return run_child(GATEWAY_SCRIPT, str(tmp_path), without="JVM_ARGS")

    assert start_gateway() == "not mapped"
    deadline = time.monotonic() + CHILD_TIMEOUT_S
    while not list(tmp_path.glob("flink-cds-*.jsa")) and time.monotonic() < deadline:
        time.sleep(0.2)  # the JVM writes it as it exits, after the script
    (archive,) = tmp_path.glob("flink-cds-*.jsa")
    assert archive.stat().st_size > 1_000_000
    assert not list(tmp_path.glob(".*.partial"))
    assert start_gateway() == "mapped"


# Builds the job's environment and reports what it started: PyFlink's loopback server for process-mode
# Python workers would set python.loopback-server.address and import Beam. The window job needs
# neither (Python runs in thread mode inside the JVM).
LEAN_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from pyflink.util.java_utils import get_j_env_configuration

    from flink_jobs import environment

    env, url = environment.create_environment(1)
    conf = get_j_env_configuration(env._j_stream_execution_environment)
    print(json.dumps({
        "loopback": conf.containsKey("python.loopback-server.address"),
        "beam_imported": "apache_beam" in sys.modules,
        "execution_mode": conf.getString("python.execution-mode", ""),
        "url": url,
    }))
    """
)


def test_the_environment_starts_no_loopback_server_for_python_workers() -> None:
    report = json.loads(run_child(LEAN_SCRIPT, without="_python_worker_execution_mode").splitlines()[-1])
    assert report["loopback"] is False
    assert report["beam_imported"] is False
    assert report["execution_mode"] == "thread"  # custom aggregates run in the JVM, so no worker needs it
    assert report["url"].startswith("http://127.0.0.1:")
