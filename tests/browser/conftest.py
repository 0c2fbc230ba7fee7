"""A real `dagster dev -w workspace.yaml` on 127.0.0.1 (free port, temporary DAGSTER_HOME) for UI tests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, SAMPLE

DAGSTER = REPO_ROOT / ".venv" / "bin" / "dagster"
ARTIFACTS = REPO_ROOT / "tmp" / "browser-artifacts"  # gitignored; screenshots land here
SENSOR_INTERVAL_S = 5


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class DagsterUI:
    url: str
    home: Path
    incoming: Path
    warehouse: Path
    log: Path

    def graphql(self, query: str, variables: dict | None = None) -> dict:
        request = urllib.request.Request(
            f"{self.url}/graphql",
            data=json.dumps({"query": query, "variables": variables or {}}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            body = json.loads(response.read())
        assert "errors" not in body, body["errors"]
        return body["data"]

    def graphql_as_the_ui(self, query: str, variables: dict | None = None) -> dict:
        """`graphql`, also reading the data of a 500 answer: the webserver sends 500 when the data holds a
        PythonError, and the UI's error link passes that data on (the launch button shows it in a dialog)."""
        try:
            return self.graphql(query, variables)
        except urllib.error.HTTPError as error:
            if error.code != 500:
                raise
            body = json.loads(error.read())
        assert "errors" not in body, body["errors"]
        return body["data"]

    def runs(self, tags: dict[str, str] | None = None) -> list[dict]:
        tag_filter = [{"key": k, "value": v} for k, v in (tags or {}).items()]
        data = self.graphql(
            "query Runs($tags: [ExecutionTag!]) { runsOrError(filter: {tags: $tags}) { ... on Runs { results {"
            " runId status jobName tags { key value } } } } }",
            {"tags": tag_filter},
        )
        return data["runsOrError"]["results"]

    def wait_for_run(self, run_id: str, timeout: float = 240) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = next(r["status"] for r in self.runs() if r["runId"] == run_id)
            if status in ("SUCCESS", "FAILURE", "CANCELED"):
                return status
            time.sleep(1)
        raise TimeoutError(f"run {run_id} did not finish in {timeout} s; see {self.log}")

    def wait_until_serving(self, process: subprocess.Popen, what: str, timeout: float = 180) -> None:
        """Wait until the webserver answers with the code location loaded; fail with the log if `process` exits."""
        deadline = time.monotonic() + timeout
        while True:
            assert process.poll() is None, f"{what} exited:\n{self.log_tail()}"
            try:
                nodes = self.graphql("{ repositoriesOrError { ... on RepositoryConnection { nodes { name } } } }")
                if nodes["repositoriesOrError"].get("nodes"):
                    return
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            assert time.monotonic() < deadline, f"{what} did not come up:\n{self.log_tail()}"
            time.sleep(1)

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="session")
def dagster_ui(tmp_path_factory) -> DagsterUI:
    base = tmp_path_factory.mktemp("dagster_ui")
    home, incoming = base / "dagster_home", base / "incoming"
    home.mkdir()
    incoming.mkdir()
    shutil.copy(REPO_ROOT / "orchestration" / "dagster.yaml", home / "dagster.yaml")  # as `make dev` does
    port = free_port()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TXN_SOURCE_CSV": str(SAMPLE),
        "TXN_WAREHOUSE": str(base / "warehouse.duckdb"),
        "TXN_INCOMING_DIR": str(incoming),
        "TXN_INCOMING_INTERVAL_S": str(SENSOR_INTERVAL_S),
        "TXN_INCOMING_SETTLE_S": "1",
        # the bundled sample has 20 windows above their thresholds at z = 3.5; a z no window reaches
        # lets the UI test expect every check to pass (no_new_anomalies is tested in tests/orchestration)
        "TXN_ANOMALY_Z": "1000",
    }
    log = base / "dagster_dev.log"
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(DAGSTER), "dev", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: teardown stops exactly this tree
        )
    ui = DagsterUI(f"http://127.0.0.1:{port}", home, incoming, base / "warehouse.duckdb", log)
    try:
        ui.wait_until_serving(process, "dagster dev")
        yield ui
    finally:
        try:
            os.killpg(process.pid, signal.SIGINT)  # dagster dev's own graceful shutdown (Ctrl-C)
            process.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # whatever of this process group is left
        except ProcessLookupError:
            pass
        process.wait(timeout=10)
