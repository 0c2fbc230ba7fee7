"""A real standalone Flink session cluster on loopback, started from the apache-flink wheel.

For tests and local development of the remote path (`--jobmanager` / TXN_FLINK_JOBMANAGER):

    with StandaloneCluster(workdir, slots=4) as cluster:
        ...  # python -m flink_jobs.window_average ... --jobmanager {cluster.address}

    python -m flink_jobs.cluster --workdir /tmp/flink --rest-port 8081   # foreground, Ctrl-C stops

One JobManager (standalonesession) and one TaskManager run as `jobmanager.sh start-foreground` /
`taskmanager.sh start-foreground` from `pyflink/bin`, each in its own process session so that
stopping it also stops anything it spawned. Everything they write (config, logs, pid files, blobs,
temp files) goes under `workdir`; nothing is written into the venv. Every endpoint binds to
127.0.0.1. The TaskManager's `lib/` is the wheel's `lib/` plus `opt/flink-python*.jar` (symlinks
under `workdir/lib`): with the Python runtime loaded per job from the job's jars, the second
thread-mode (pemja) job on a TaskManager fails on Java 17 (`NoSuchFieldException:
loadedLibraryNames`), so PyFlink clusters keep flink-python in lib/.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyflink

from flink_jobs.environment import fetch_rest_json

PYFLINK_HOME = Path(pyflink.__file__).resolve().parent
LOOPBACK = "127.0.0.1"


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nothing listens on right now (the usual small race applies)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flatten(value, name + "."))
        else:
            flat[name] = value
    return flat


def _yaml_scalar(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid double-quoted YAML scalar


class ClusterError(RuntimeError):
    pass


class StandaloneCluster:
    def __init__(
        self,
        workdir: str | os.PathLike[str],
        *,
        slots: int = 4,
        rest_port: int | None = None,
        rpc_port: int | None = None,
        taskmanager_memory: str = "2048m",
        jobmanager_memory: str = "1024m",
        extra_config: dict[str, object] | None = None,
    ):
        self.workdir = Path(workdir).resolve()
        self.slots = slots
        self.rest_port = rest_port or free_port()
        self.rpc_port = rpc_port or free_port()
        self.taskmanager_memory = taskmanager_memory
        self.jobmanager_memory = jobmanager_memory
        self.extra_config = dict(extra_config or {})
        self.processes: dict[str, subprocess.Popen] = {}
        self._outputs: list = []

    # --- layout -----------------------------------------------------------------------------

    @property
    def address(self) -> str:
        """`host:port` of the REST endpoint, as `--jobmanager` / TXN_FLINK_JOBMANAGER expect."""
        return f"{LOOPBACK}:{self.rest_port}"

    @property
    def conf_dir(self) -> Path:
        return self.workdir / "conf"

    @property
    def log_dir(self) -> Path:
        return self.workdir / "log"

    def configuration(self) -> dict[str, object]:
        wheel = PYFLINK_HOME / "conf" / "config.yaml"
        from ruamel.yaml import YAML  # a dependency of apache-flink

        base = _flatten(YAML(typ="safe").load(wheel.read_text(encoding="utf-8")) or {})
        config = {key: value for key, value in base.items() if key.startswith("env.java.")}  # JDK 17 flags
        config.update(
            {
                "jobmanager.bind-host": LOOPBACK,
                "jobmanager.rpc.address": LOOPBACK,
                "jobmanager.rpc.port": self.rpc_port,
                "jobmanager.memory.process.size": self.jobmanager_memory,
                "jobmanager.execution.failover-strategy": "region",
                "rest.address": LOOPBACK,
                "rest.bind-address": LOOPBACK,
                "rest.port": self.rest_port,
                "taskmanager.bind-host": LOOPBACK,
                "taskmanager.host": LOOPBACK,
                "taskmanager.numberOfTaskSlots": self.slots,
                "taskmanager.memory.process.size": self.taskmanager_memory,
                "parallelism.default": 1,
                "blob.storage.directory": str(self.workdir / "blobs"),
                "io.tmp.dirs": str(self.workdir / "tmp"),
                "web.tmpdir": str(self.workdir / "web"),
            }
        )
        config.update(self.extra_config)
        return config

    def _prepare(self) -> dict[str, str]:
        for sub in ("log", "pid", "blobs", "tmp", "web", "lib"):
            (self.workdir / sub).mkdir(parents=True, exist_ok=True)
        self.conf_dir.mkdir(parents=True, exist_ok=True)
        for source in (PYFLINK_HOME / "conf").iterdir():  # log4j/logback files etc.
            if source.is_file() and source.name != "config.yaml":
                (self.conf_dir / source.name).write_bytes(source.read_bytes())
        lines = [f"{key}: {_yaml_scalar(value)}" for key, value in self.configuration().items()]
        (self.conf_dir / "config.yaml").write_text("\n".join(lines) + "\n", encoding="utf-8")
        (self.conf_dir / "masters").write_text(f"{LOOPBACK}:{self.rest_port}\n")
        (self.conf_dir / "workers").write_text(f"{LOOPBACK}\n")
        lib = self.workdir / "lib"
        jars = sorted((PYFLINK_HOME / "lib").glob("*.jar")) + sorted((PYFLINK_HOME / "opt").glob("flink-python*.jar"))
        for jar in jars:
            link = lib / jar.name
            if not link.exists():
                link.symlink_to(jar)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLINK_", "PYFLINK_", "_FLINK"))}
        env.pop("SUBMIT_ARGS", None)
        env.update(
            FLINK_CONF_DIR=str(self.conf_dir),
            FLINK_LOG_DIR=str(self.log_dir),
            FLINK_PID_DIR=str(self.workdir / "pid"),
            FLINK_LIB_DIR=str(lib),
        )
        return env

    # --- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> StandaloneCluster:
        """Start the JobManager and TaskManager; return once all slots are registered."""
        env = self._prepare()
        try:
            for name, script in (("jobmanager", "jobmanager.sh"), ("taskmanager", "taskmanager.sh")):
                output = open(self.log_dir / f"{name}.console", "wb")
                self._outputs.append(output)
                self.processes[name] = subprocess.Popen(
                    ["bash", str(PYFLINK_HOME / "bin" / script), "start-foreground"],
                    env=env,
                    cwd=self.workdir,
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: stop() ends it and its children
                )
            self.wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_until_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    raise ClusterError(f"the {name} exited with {process.returncode}:\n{self.log_tail(name)}")
            try:
                last = fetch_rest_json(self.address, "/overview", timeout=2)
                if last.get("slots-total", 0) >= self.slots:
                    return last
            except (OSError, ValueError) as error:
                last = error
            time.sleep(0.25)
        raise ClusterError(
            f"Flink cluster at {self.address} not ready after {timeout:g} s (last: {last}):\n"
            + "\n".join(self.log_tail(name) for name in self.processes)
        )

    def stop(self, timeout: float = 30.0) -> None:
        """Stop both processes (SIGTERM to their process groups, SIGKILL after `timeout`)."""
        for process in self.processes.values():
            self._signal(process, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for process in self.processes.values():
            try:
                process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(process, signal.SIGKILL)
                process.wait(10)
        for process in self.processes.values():  # children left in the group (e.g. Python workers)
            self._signal(process, signal.SIGKILL)
        for output in self._outputs:
            output.close()
        self._outputs.clear()

    @staticmethod
    def _signal(process: subprocess.Popen, sig: int) -> None:
        try:
            os.killpg(process.pid, sig)  # the group led by the process we started
        except (ProcessLookupError, PermissionError):
            pass

    def log_tail(self, name: str, lines: int = 40) -> str:
        path = self.log_dir / f"{name}.console"
        if not path.exists():
            return f"({path} missing)"
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
        return f"--- {path} ---\n" + "\n".join(text)

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path, help="config, logs and temp files go here")
    parser.add_argument("--rest-port", type=int, default=8081)
    parser.add_argument("--slots", type=int, default=4)
    args = parser.parse_args(argv)
    cluster = StandaloneCluster(args.workdir, slots=args.slots, rest_port=args.rest_port)
    started = time.monotonic()
    with cluster:
        print(f"Flink cluster ready in {time.monotonic() - started:.1f} s: --jobmanager {cluster.address} "
              f"(web UI http://{cluster.address}, logs {cluster.log_dir}); Ctrl-C stops it", flush=True)  # fmt: skip
        try:
            while all(p.poll() is None for p in cluster.processes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
