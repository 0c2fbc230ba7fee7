"""Run-scoped staging and atomic publication of the DuckDB warehouse.

A run never writes the published file in place. Its first step copies the published warehouse to a
staging file named after the run; every step of the run writes there; the run's last step publishes
it with one atomic `os.replace`. So:

* a run that fails at any point leaves the last good results untouched (the staging file is simply
  discarded by a later run);
* readers never see a mix of two runs: a connection opened before the publish keeps reading the
  old file (Linux keeps the replaced inode alive), a connection opened after sees the new one;
* a read-only DuckDB session (CLI, notebook, BI tool) on the published file never blocks a run,
  because the pipeline never needs a write lock on that file.

Users should connect read-only: `duckdb -readonly data/warehouse.duckdb`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb

from warehouse import schema

_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")


class WarehouseStore:
    def __init__(self, path: str | os.PathLike[str]):
        self.path = Path(path).expanduser().resolve()
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"warehouse path {self.path} is a directory, expected a DuckDB file")
        self.staging_dir = self.path.parent / ".staging" / self.path.name

    # --- paths -----------------------------------------------------------------------------
    # Each warehouse file has its own staging folder, so two warehouses in one directory never
    # see (or clean up) each other's runs.
    def _checked(self, run_id: str) -> str:
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"invalid run id {run_id!r}")
        return run_id

    def staging_path(self, run_id: str) -> Path:
        return self.staging_dir / f"{self._checked(run_id)}.duckdb"

    def run_dir(self, run_id: str) -> Path:
        """A scratch folder for the run's intermediate files (Flink input and output)."""
        return self.staging_dir / f"{self._checked(run_id)}.files"

    def staged_run_ids(self) -> set[str]:
        if not self.staging_dir.is_dir():
            return set()
        ids = set()
        for entry in self.staging_dir.iterdir():
            for suffix in (".duckdb.partial", ".duckdb.wal", ".duckdb", ".files"):
                if entry.name.endswith(suffix):
                    ids.add(entry.name[: -len(suffix)])
                    break
        return ids

    # --- staging ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise copy-from-published and publish between processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.parent / f".{self.path.name}.lock", "a+") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _ensure_staging(self, run_id: str) -> Path:
        staging = self.staging_path(run_id)
        if staging.exists():
            return staging
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        partial = staging.with_name(staging.name + ".partial")
        with self._lock():
            if self.path.exists():
                shutil.copyfile(self.path, partial)
            else:
                duckdb.connect(str(partial)).close()
            os.replace(partial, staging)
        return staging

    @contextlib.contextmanager
    def connect_staging(self, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to this run's staging copy (created on first use)."""
        staging = self._ensure_staging(run_id)
        con = duckdb.connect(str(staging))
        try:
            con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ values print and cast in UTC
            schema.create_tables(con)
            yield con
        finally:
            con.close()

    def publish(self, run_id: str) -> Path:
        """Atomically make this run's staging copy the published warehouse."""
        staging = self.staging_path(run_id)
        if not staging.exists():
            raise FileNotFoundError(f"run {run_id} has no staged warehouse at {staging}")
        # Fold any WAL into the file so that the published file is self-contained.
        con = duckdb.connect(str(staging))
        con.execute("CHECKPOINT")
        con.close()
        with open(staging, "rb") as handle:
            os.fsync(handle.fileno())
        with self._lock():
            os.replace(staging, self.path)
            # A WAL beside the published file would belong to the replaced file: never replay it.
            stale_wal = self.path.with_name(self.path.name + ".wal")
            if stale_wal.exists():
                stale_wal.unlink()
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        self.discard(run_id)
        return self.path

    def discard(self, run_id: str) -> None:
        """Remove everything a run staged (its warehouse copy and scratch files)."""
        staging = self.staging_path(run_id)
        for path in (staging, staging.with_name(staging.name + ".wal"), staging.with_name(staging.name + ".partial")):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def discard_all_except(self, keep: Iterable[str]) -> list[str]:
        """Remove the leftovers of runs that are no longer in progress; returns the run ids removed."""
        keep = set(keep)
        removed = []
        for run_id in sorted(self.staged_run_ids() - keep):
            if _RUN_ID.fullmatch(run_id):
                self.discard(run_id)
                removed.append(run_id)
        return removed

    # --- reading ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def connect_published(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-only connection to the published warehouse."""
        if not self.path.exists():
            raise FileNotFoundError(f"no warehouse at {self.path} yet: materialize the assets first")
        con = duckdb.connect(str(self.path), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")
            yield con
        finally:
            con.close()
