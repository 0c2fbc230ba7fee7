"""A real standalone Flink session cluster on loopback, started from the apache-flink wheel.

For tests and local development of the remote path (`--jobmanager` / TXN_FLINK_JOBMANAGER):

    with StandaloneCluster(workdir, slots=4) as cluster:
        ...  # TXN_FLINK_JOBMANAGER={cluster.address} dagster asset materialize ...

    python -m flink_jobs.cluster --workdir /tmp/flink --rest-port 8081   # foreground; Ctrl-C, SIGTERM, SIGHUP stop it
    python -m flink_jobs.cluster --workdir .flink-cluster --background   # `make cluster-up`: returns once ready
    python -m flink_jobs.cluster --workdir .flink-cluster --stop         # `make cluster-down`

Contract: one JobManager and one TaskManager from `pyflink/bin`, each in its own process session; every endpoint
binds to 127.0.0.1 and everything they write goes under `workdir`, nothing into the venv. Nothing outlives the
launcher: a signal stops both JVMs, a watchdog stops them if the launcher is killed, and `--stop` also stops JVMs a
killed launcher left. A TaskManager that exits is restarted. The TaskManager's lib/ holds flink-python (pemja on
Java 17 needs it). How and why: docs/cluster.md ("A standalone session cluster on this machine").
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
STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP, signal.SIGINT)
WATCHDOG_GRACE_S = 10.0  # SIGTERM -> SIGKILL, when the watchdog stops the JVMs of a dead launcher
LAUNCHER_STOP_TIMEOUT_S = 15.0  # the CLI's SIGTERM -> SIGKILL for its JVMs (a JVM needs 1-3 s here)
HEARTBEAT_INTERVAL_MS = 2000
HEARTBEAT_TIMEOUT_MS = 20000
HEARTBEAT_RPC_FAILURES = 2
# A TaskManager that exits is restarted, as Kubernetes restarts a pod, at most this many times in
# TASKMANAGER_RESTART_WINDOW_S (one that keeps dying is not helped by more: the launcher then stops).
TASKMANAGER_RESTARTS = 5
TASKMANAGER_RESTART_WINDOW_S = 600.0

# Run as `python -I -S -c WATCHDOG`, stdin the read end of the launcher's pipe (see the docstring).
WATCHDOG = r"""
import os, signal, sys, time
for sig in (signal.SIGINT, signal.SIGHUP):
    signal.signal(sig, signal.SIG_IGN)
groups, stopped = [], False
for line in sys.stdin:
    line = line.strip()
    if line == "stopped":
        stopped = True
    elif line.isdigit():
        groups.append(int(line))
def alive(group):
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    try:  # the JVM leads its group; once it is a zombie (its parent, the launcher, is gone) it is done
        with open("/proc/%d/stat" % group) as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True
if not stopped:
    for sig, grace in ((signal.SIGTERM, float(sys.argv[1])), (signal.SIGKILL, 0.0)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(alive(g) for g in groups):
            time.sleep(0.2)
"""


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


def exit_reason(returncode: int) -> str:
    """Why a JVM (started through its bash script) ended, in words."""
    if returncode < 0 or returncode > 128:
        number = -returncode if returncode < 0 else returncode - 128
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = f"signal {number}"
        hint = " (killed: by the OOM killer, a user or a tool)" if name == "SIGKILL" else ""
        return f"ended by {name}{hint}"
    return f"exited with code {returncode}"


class _Stop(BaseException):
    """A stop signal in the launcher (BaseException: library `except Exception` must not swallow it)."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


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
        watchdog: bool = True,
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
        self.watchdog = watchdog
        self._watchdog: subprocess.Popen | None = None
        self._watchdog_pipe = None  # our (write) end; EOF tells the watchdog that we are gone
        self._env: dict[str, str] = {}

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
                # A TaskManager that dies is noticed within seconds: its heartbeat RPCs fail at once
                # (connection refused) and HEARTBEAT_RPC_FAILURES of them in a row mark it lost; the
                # timeout only matters for one that hangs. Flink's defaults (10 s, 50 s) left the job
                # waiting on a dead TaskManager for up to a minute.
                "heartbeat.interval": HEARTBEAT_INTERVAL_MS,
                "heartbeat.timeout": HEARTBEAT_TIMEOUT_MS,
                "heartbeat.rpc-failure-threshold": HEARTBEAT_RPC_FAILURES,
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

    def _start_watchdog(self) -> None:
        read_end, write_end = os.pipe()  # not inheritable: only the watchdog gets the read end
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", WATCHDOG, str(WATCHDOG_GRACE_S)],
                stdin=read_end,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C to the launcher's terminal must not end it first
            )
        finally:
            os.close(read_end)
        self._watchdog_pipe = os.fdopen(write_end, "w", buffering=1)

    def _tell_watchdog(self, line: str) -> None:
        if self._watchdog_pipe is not None:
            try:
                self._watchdog_pipe.write(line + "\n")
            except OSError:  # the watchdog is gone: nothing to tell
                pass

    def _close_watchdog(self) -> None:
        self._tell_watchdog("stopped")
        if self._watchdog_pipe is not None:
            try:
                self._watchdog_pipe.close()
            except OSError:
                pass
            self._watchdog_pipe = None
        if self._watchdog is not None:
            try:
                self._watchdog.wait(5)
            except subprocess.TimeoutExpired:
                self._watchdog.kill()
            self._watchdog = None

    @property
    def process_groups(self) -> list[int]:
        """The process groups of the JobManager and TaskManager (each leads its own)."""
        return [process.pid for process in self.processes.values()]

    def start(self, timeout: float = 120.0) -> StandaloneCluster:
        """Start the JobManager and TaskManager; return once all slots are registered."""
        self._env = self._prepare()
        try:
            if self.watchdog:
                self._start_watchdog()
            for name in ("jobmanager", "taskmanager"):
                self._spawn(name, mode="wb")
            self.wait_until_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _spawn(self, name: str, mode: str = "ab") -> subprocess.Popen:
        output = open(self.log_dir / f"{name}.console", mode)
        self._outputs.append(output)
        self.processes[name] = subprocess.Popen(
            ["bash", str(PYFLINK_HOME / "bin" / f"{name}.sh"), "start-foreground"],
            env=self._env,
            cwd=self.workdir,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stop() ends it and its children
        )
        self._tell_watchdog(str(self.processes[name].pid))
        return self.processes[name]

    def restart_taskmanager(self) -> str:
        """Start a new TaskManager in place of one that exited (the JobManager keeps running, and
        its jobs restart on the new one's slots); returns why the old one ended."""
        old = self.processes["taskmanager"]
        if old.poll() is None:
            raise ClusterError("the TaskManager is still running")
        reason = exit_reason(old.returncode)
        self._signal(old, signal.SIGKILL)  # anything its group left (Python workers)
        self._spawn("taskmanager")
        return reason

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
        self._close_watchdog()

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


# --- command line ---------------------------------------------------------------------------


def _state_files(workdir: Path) -> tuple[Path, Path, Path]:
    """(launcher.pid, cluster.json, launcher.log) of a `--background` cluster in `workdir`."""
    return workdir / "launcher.pid", workdir / "cluster.json", workdir / "launcher.log"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not running (our own child, not reaped yet)
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except OSError:
        return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _our_groups(workdir: Path, groups: list[int]) -> list[int]:
    """The recorded JVM groups still led by a JVM of this workdir (its log path is on the command line)."""
    return [group for group in groups if _alive(group) and str(workdir / "log") in _cmdline(group)]


def _read_state(workdir: Path) -> dict | None:
    pid_file, state_file, _ = _state_files(workdir)
    state: dict = {}
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    try:
        state.setdefault("pid", int(pid_file.read_text(encoding="ascii").strip()))
    except (OSError, ValueError):
        pass
    return state or None


def _run_foreground(args: argparse.Namespace) -> int:
    """Start the cluster, stay until a stop signal (or a JVM exits), then stop both JVMs."""

    def on_signal(signum, _frame):
        for sig in STOP_SIGNALS:  # one stop is enough; the stop itself must run to its end
            signal.signal(sig, signal.SIG_IGN)
        raise _Stop(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    workdir = args.workdir.resolve()
    _, state_file, _ = _state_files(workdir)
    cluster = StandaloneCluster(workdir, slots=args.slots, rest_port=args.rest_port)
    started = time.monotonic()
    how = "stopped"
    try:
        try:
            cluster.start(timeout=args.timeout)  # stops what it started if it fails or a signal comes
        except ClusterError as error:
            print(f"The Flink cluster in {workdir} did not start: {error}", file=sys.stderr, flush=True)
            return 1
        try:
            state = {"pid": os.getpid(), "address": cluster.address, "slots": cluster.slots,
                     "groups": cluster.process_groups, "log_dir": str(cluster.log_dir)}  # fmt: skip
            state_file.write_text(json.dumps(state) + "\n", encoding="utf-8")
            print(f"Flink cluster ready in {time.monotonic() - started:.1f} s with {cluster.slots} slots: "
                  f"TXN_FLINK_JOBMANAGER={cluster.address} (web UI http://{cluster.address}, logs "
                  f"{cluster.log_dir}); Ctrl-C or SIGTERM stops it", flush=True)  # fmt: skip
            restarts: list[float] = []  # when the TaskManager was restarted, within the window
            while True:
                time.sleep(0.5)
                jobmanager, taskmanager = cluster.processes["jobmanager"], cluster.processes["taskmanager"]
                if jobmanager.poll() is not None:
                    print(f"The Flink jobmanager {exit_reason(jobmanager.returncode)}; stopping the cluster "
                          f"(log: {cluster.log_dir}).", file=sys.stderr, flush=True)  # fmt: skip
                    break
                if taskmanager.poll() is None:
                    continue
                now = time.monotonic()
                restarts = [t for t in restarts if now - t < TASKMANAGER_RESTART_WINDOW_S]
                reason = exit_reason(taskmanager.returncode)
                if len(restarts) >= TASKMANAGER_RESTARTS:
                    print(f"The Flink taskmanager {reason}, its {len(restarts) + 1}th exit within "
                          f"{TASKMANAGER_RESTART_WINDOW_S:g} s, more than the {TASKMANAGER_RESTARTS} restarts "
                          f"allowed; stopping the cluster (log: {cluster.log_dir}).", file=sys.stderr, flush=True)  # fmt: skip
                    break
                restarts.append(now)
                cluster.restart_taskmanager()
                state["groups"] = cluster.process_groups
                state_file.write_text(json.dumps(state) + "\n", encoding="utf-8")
                print(f"The Flink taskmanager {reason}; restarted it (restart {len(restarts)} of at most "
                      f"{TASKMANAGER_RESTARTS} in {TASKMANAGER_RESTART_WINDOW_S:g} s; the jobmanager keeps "
                      f"running and its jobs restart on the new taskmanager).", file=sys.stderr, flush=True)  # fmt: skip
            how = "exited"
        finally:
            cluster.stop(timeout=LAUNCHER_STOP_TIMEOUT_S)
    except _Stop as stop:
        how = f"stopped by {stop}"
    except KeyboardInterrupt:
        how = "stopped by Ctrl-C"
    finally:
        if state_file.exists():
            try:
                state = json.loads(state_file.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                state = {}
            if state.get("pid") == os.getpid():
                state_file.unlink(missing_ok=True)
                _state_files(workdir)[0].unlink(missing_ok=True)
    print(f"Flink cluster {cluster.address} {how}.", flush=True)
    return 1 if how == "exited" else 0


def _start_background(args: argparse.Namespace) -> int:
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    pid_file, state_file, log_file = _state_files(workdir)
    state = _read_state(workdir)
    launcher: subprocess.Popen | None = None
    if state and _alive(state["pid"]) and "flink_jobs.cluster" in _cmdline(state["pid"]):
        pid = state["pid"]  # already running (or starting): report it, do not start a second one
    else:
        if state:  # left by a launcher that was killed: stop what it left, then start afresh
            _stop_leftovers(workdir, state)
        command = [sys.executable, "-m", "flink_jobs.cluster", "--workdir", str(workdir),
                   "--rest-port", str(args.rest_port), "--slots", str(args.slots), "--timeout", str(args.timeout)]  # fmt: skip
        with open(log_file, "ab") as log:
            launcher = subprocess.Popen(
                command,
                cwd=Path(__file__).resolve().parents[1],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # outlives this command and its terminal (no SIGHUP, no Ctrl-C)
            )
        pid = launcher.pid
        pid_file.write_text(f"{pid}\n", encoding="ascii")
    deadline = time.monotonic() + args.timeout + 30
    while time.monotonic() < deadline:
        state = _read_state(workdir)
        if state and state.get("pid") == pid and state.get("address"):
            already = "" if launcher else f"was already running (pid {pid}) "
            print(f"Flink session cluster {already}ready with {state['slots']} slots (web UI "
                  f"http://{state['address']}, logs {state['log_dir']}; stop it with `make cluster-down`). "
                  f"Use it with:\nTXN_FLINK_JOBMANAGER={state['address']}")  # fmt: skip
            return 0
        if (launcher.poll() is not None) if launcher else not _alive(pid):
            pid_file.unlink(missing_ok=True)
            tail = log_file.read_text(encoding="utf-8", errors="replace").splitlines()[-30:]
            print(f"The Flink cluster did not start (its launcher, pid {pid}, exited); {log_file}:\n"
                  + "\n".join(tail), file=sys.stderr)  # fmt: skip
            return 1
        time.sleep(0.3)
    os.kill(pid, signal.SIGTERM)
    print(f"The Flink cluster was not ready after {args.timeout + 30:g} s; stopped it (log: {log_file}).",
          file=sys.stderr)  # fmt: skip
    return 1


def _stop_leftovers(workdir: Path, state: dict) -> list[int]:
    """Stop JVM groups recorded in `state` that still run (launcher and watchdog both killed)."""
    groups = _our_groups(workdir, list(state.get("groups") or []))
    for sig, grace in ((signal.SIGTERM, WATCHDOG_GRACE_S), (signal.SIGKILL, 5.0)):
        for group in groups:
            try:
                os.killpg(group, sig)
            except OSError:
                pass
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _our_groups(workdir, groups):
            time.sleep(0.2)
    for path in _state_files(workdir)[:2]:
        path.unlink(missing_ok=True)
    return groups


def _stop_background(args: argparse.Namespace) -> int:
    workdir = args.workdir.resolve()
    state = _read_state(workdir)
    if not state:
        print(f"No Flink cluster from {workdir} is running.")
        return 0
    pid = state["pid"]
    address = state.get("address", "?")
    if _alive(pid) and "flink_jobs.cluster" in _cmdline(pid):
        os.kill(pid, signal.SIGTERM)  # the launcher stops both JVMs and removes its files
        deadline = time.monotonic() + LAUNCHER_STOP_TIMEOUT_S + 15
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.2)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)  # its watchdog stops the JVMs; _stop_leftovers below makes sure
    left = _stop_leftovers(workdir, state)
    extra = f" (also stopped {len(left)} JVM process group(s) it had left)" if left else ""
    print(f"Stopped the Flink cluster {address} from {workdir}{extra}.")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flink_jobs.cluster", description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", required=True, type=Path, help="config, logs and temp files go here")
    parser.add_argument("--rest-port", type=int, default=8081)
    parser.add_argument("--slots", type=int, default=4, help="task slots (a job of parallelism P needs P)")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the cluster to be ready")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--background", action="store_true", help="start detached, return once ready (make cluster-up)")
    mode.add_argument(
        "--stop", action="store_true", help="stop a --background cluster of this workdir (make cluster-down)"
    )
    args = parser.parse_args(argv)
    if args.slots < 1:
        parser.error(f"--slots must be >= 1, got {args.slots}")
    if args.stop:
        return _stop_background(args)
    if args.background:
        return _start_background(args)
    return _run_foreground(args)


if __name__ == "__main__":
    sys.exit(main())
