"""Run-scoped staging and atomic publication of the DuckDB warehouse (write-audit-publish).

The warehouse is a small DuckDB file (the catalog) plus immutable Parquet segments (warehouse/segments.py).
A run never writes the published file in place: its first step copies the catalog to a staging file named
after the run, every step writes its own rows there, and the last step seals them into new segments and
publishes a compact copy of the catalog with one atomic ``os.replace``. So a run costs what its file costs
(staging copies the catalog, never the history); a run that fails leaves the last good results (a later
run discards its staging file, and its unpublished segments after the retention); readers never see a mix
of two runs (a connection opened before the publish keeps the old catalog, whose inode Linux keeps alive,
and its segments, kept for ``segment_retention_s`` after they stop being listed); and a read-only session
never blocks a run, because the pipeline never needs a write lock on the published file.

Overlapping runs must not lose each other's results: the staging copy records the identity of the file
it was copied from (device, inode, mtime_ns, size, or "absent") in ``<run_id>.base``, and ``publish``
compares it, under the lock, with the published file and raises :class:`ConcurrentPublishError`
(retryable) instead of overwriting it. Readers, moving a warehouse, leftovers: docs/atomic-runs.md.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

import duckdb

from warehouse import segments

_RUN_ID = re.compile(r"^[A-Za-z0-9_.-]{1,128}$")
# Every file a run leaves in the staging folder, by suffix (longest first).
_STAGED_SUFFIXES = (
    ".duckdb.catalog.wal", ".duckdb.catalog", ".duckdb.partial", ".duckdb.wal", ".duckdb", ".files", ".base.partial",
    ".base", ".lease",
)  # fmt: skip
# How long a segment that is no longer listed (replaced, or written by a run that never published)
# is kept, so that connections opened before the publish can still read their snapshot.
SEGMENT_RETENTION_S = 24 * 3600


def _listed(catalog: Path) -> set[str]:
    """The segment paths a warehouse file lists (none when there is no file)."""
    if not catalog.exists():
        return set()
    con = duckdb.connect(str(catalog), read_only=True)
    try:
        return segments.referenced_paths(con)
    finally:
        con.close()


class MissingSegmentsError(RuntimeError):
    """The warehouse lists segment files that are not there (its .segments folder was moved or deleted)."""


class SegmentWriteError(RuntimeError):
    """A run could not write its segments (the published warehouse is unchanged)."""


class ConcurrentPublishError(RuntimeError):
    """Another run published the warehouse after this run copied it; retry the run."""


def _identity(path: Path) -> list[int] | None:
    """(device, inode, mtime_ns, size) of the file at *path*, or None when there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return [st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size]


@contextlib.contextmanager
def _flocked(path: Path, operation: int) -> Iterator[None]:
    """Hold flock(`operation`) on `path` (created if missing); the kernel drops it if we die."""
    with open(path, "a+") as handle:
        fcntl.flock(handle, operation)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


DEFAULT_MEMORY_LIMIT = "2GB"  # the pipeline's TXN_DUCKDB_MEMORY_LIMIT unless set
MEMORY_LIMIT = re.compile(r"\d+(\.\d+)?\s*(KB|MB|GB|TB|KiB|MiB|GiB|TiB)", re.IGNORECASE)


def warehouse_path_problem(path: str | os.PathLike[str], name: str = "warehouse path") -> str | None:
    """Why `path` cannot hold a segmented warehouse (one sentence), or None.

    DuckDB's read_parquet treats * ? [ in a file name as a pattern, so a segment under such a folder
    could also read another folder's files."""
    text = str(Path(path).expanduser().resolve())
    if any(c in text for c in "*?["):
        return f"{name} {text} contains * ? or [, which DuckDB reads as a file pattern; choose a path without them"
    return None


def memory_limit_problem(value: str, name: str = "DuckDB memory limit") -> str | None:
    """Why `value` is not a DuckDB memory limit (one sentence), or None."""
    if MEMORY_LIMIT.fullmatch(value.strip()):
        return None
    return f"{name} must look like 2GB or 512MB, got {value!r}"


class WarehouseStore:
    def __init__(
        self,
        path: str | os.PathLike[str],
        memory_limit: str | None = None,
        segment_retention_s: float = SEGMENT_RETENTION_S,
    ):
        self.path = Path(path).expanduser().resolve()
        if memory_limit is not None and (problem := memory_limit_problem(memory_limit)) is not None:
            raise ValueError(problem)
        # DuckDB's default is 80% of RAM; a limit makes big joins/windows spill to disk instead.
        self.memory_limit = memory_limit.strip() if memory_limit else None
        if (problem := warehouse_path_problem(self.path)) is not None:
            raise ValueError(problem)
        if self.path.exists() and self.path.is_dir():
            raise ValueError(f"warehouse path {self.path} is a directory, expected a DuckDB file")
        self.staging_dir = self.path.parent / ".staging" / self.path.name
        self.segment_dir = self.path.parent / f"{self.path.name}.segments"
        # Stream mode: the Flink savepoints of the stream's state, one folder per run (see warehouse/stream.py)
        self.savepoint_dir = self.path.parent / f"{self.path.name}.savepoints"
        self.segment_retention_s = segment_retention_s

    # --- paths -----------------------------------------------------------------------------
    # Each warehouse file has its own staging folder, so two warehouses in one directory never
    # see (or clean up) each other's runs.
    def _checked(self, run_id: str) -> str:
        if not _RUN_ID.fullmatch(run_id):
            raise ValueError(f"invalid run id {run_id!r}")
        return run_id

    def staging_path(self, run_id: str) -> Path:
        return self.staging_dir / f"{self._checked(run_id)}.duckdb"

    def base_path(self, run_id: str) -> Path:
        """Identity of the published file this run's staging copy was made from (JSON)."""
        return self.staging_dir / f"{self._checked(run_id)}.base"

    def lease_path(self, run_id: str) -> Path:
        return self.staging_dir / f"{self._checked(run_id)}.lease"

    def run_dir(self, run_id: str) -> Path:
        """A scratch folder for the run's intermediate files (Flink input and output)."""
        return self.staging_dir / f"{self._checked(run_id)}.files"

    def staged_run_ids(self) -> set[str]:
        if not self.staging_dir.is_dir():
            return set()
        ids = set()
        for entry in self.staging_dir.iterdir():
            for suffix in _STAGED_SUFFIXES:
                if entry.name.endswith(suffix):
                    ids.add(entry.name[: -len(suffix)])
                    break
        return ids

    # --- liveness --------------------------------------------------------------------------
    @contextlib.contextmanager
    def run_lease(self, run_id: str) -> Iterator[None]:
        """Mark the run as alive for the duration of the block, for every process on this host.

        A shared flock on ``<run_id>.lease``: any number of step processes of the run may hold it at
        once, and the kernel drops it when a holder dies (even by SIGKILL). ``discard_all_except``
        never removes a leased run, so the cleanup of one Dagster instance cannot delete the files of
        a run that another instance (another CLI invocation, another daemon) is executing.
        """
        lease = self.lease_path(run_id)  # validates the run id before anything is created
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        with _flocked(lease, fcntl.LOCK_SH):
            yield

    def is_leased(self, run_id: str) -> bool:
        try:
            fd = os.open(self.lease_path(run_id), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    # --- staging ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """Serialise copy-from-published and publish between processes."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _flocked(self.path.parent / f".{self.path.name}.lock", fcntl.LOCK_EX):
            yield

    def _ensure_staging(self, run_id: str) -> Path:
        staging = self.staging_path(run_id)
        if staging.exists():
            return staging
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        partial = staging.with_name(staging.name + ".partial")
        base = self.base_path(run_id)
        base_partial = base.with_name(base.name + ".partial")
        with self._lock():
            identity = _identity(self.path)
            if identity is not None:
                shutil.copyfile(self.path, partial)
            else:
                duckdb.connect(str(partial)).close()
            base_partial.write_text(json.dumps({"published": identity}))
            os.replace(base_partial, base)  # before the staging copy: a staging copy always has a base
            os.replace(partial, staging)
        return staging

    def _check_unchanged(self, run_id: str) -> None:
        """Raise ConcurrentPublishError if the published file is no longer the one this run copied."""
        try:
            recorded = json.loads(self.base_path(run_id).read_text())["published"]
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            raise ConcurrentPublishError(
                f"run {run_id} cannot publish {self.path}: it has no record of the published file it "
                "started from, so publishing could overwrite another run's results; rerun it"
            ) from None
        current = _identity(self.path)
        if current != recorded:
            raise ConcurrentPublishError(
                f"run {run_id} did not publish {self.path}: another run published it after this run "
                "had copied it, and publishing would have discarded that run's results; this is "
                "retryable: rerun once the other run has finished"
            )

    @contextlib.contextmanager
    def connect_staging(self, run_id: str) -> Iterator[duckdb.DuckDBPyConnection]:
        """A read-write connection to this run's staging copy (created on first use)."""
        with self.run_lease(run_id):
            staging = self._ensure_staging(run_id)
            con = duckdb.connect(str(staging))
            try:
                con.execute("SET TimeZone = 'UTC'")  # TIMESTAMPTZ values print and cast in UTC
                if self.memory_limit:
                    con.execute(f"SET memory_limit = '{self.memory_limit}'")
                try:
                    segments.prepare(con, self.segment_dir)
                except (duckdb.IOException, segments.MissingSegments):
                    missing = sorted(p for p in segments.referenced_paths(con) if not os.path.exists(p))
                    if not missing:
                        raise
                    raise MissingSegmentsError(
                        f"{self.path} lists {len(missing)} segment file(s) that are missing, such as {missing[0]}: "
                        f"keep the warehouse file and its .segments folder together ({self.segment_dir}), "
                        "restore the folder or start a new warehouse; nothing was changed"
                    ) from None
                yield con
            finally:
                con.close()

    def publish(self, run_id: str) -> Path:
        """Atomically make this run's staging copy the published warehouse.

        Seals the run's staged rows into segments, writes a compact copy of the staging catalog, and
        replaces the published file with it. Raises ConcurrentPublishError (and discards the run's
        staging files) when another run published the warehouse after this run's staging copy was made.
        """
        staging = self.staging_path(run_id)
        if not staging.exists():
            raise FileNotFoundError(f"run {run_id} has no staged warehouse at {staging}")
        try:
            with self.connect_staging(run_id) as con:
                segments.seal(con, self.segment_dir, run_id)
                con.execute("CHECKPOINT")
        except (OSError, duckdb.IOException) as error:
            reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise SegmentWriteError(
                f"run {run_id} could not write its rows to {self.segment_dir} ({reason}); make that folder "
                f"writable beside {self.path.name} and rerun: the published warehouse is unchanged"
            ) from None
        # The staging file still holds the freed blocks of the staged rows; a copy of its catalog does not.
        catalog = staging.with_name(staging.name + ".catalog")
        catalog.unlink(missing_ok=True)
        with duckdb.connect() as con:
            con.execute(f"ATTACH {segments.sql_literal(str(staging))} AS sealed (READ_ONLY)")
            con.execute(f"ATTACH {segments.sql_literal(str(catalog))} AS fresh")
            con.execute("COPY FROM DATABASE sealed TO fresh")
            con.execute("DETACH fresh")
        with open(catalog, "rb") as handle:
            os.fsync(handle.fileno())
        with self._lock():
            try:
                self._check_unchanged(run_id)
            except ConcurrentPublishError:
                self.discard(run_id)
                raise
            # Retirement starts the retention clock of the segments the new catalog no longer lists
            # (computed here, not by seal: a publish retried after a crash must retire them too).
            for path in _listed(self.path) - _listed(catalog):
                with contextlib.suppress(FileNotFoundError):
                    os.utime(path)
            os.replace(catalog, self.path)
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

    def remove_unlisted_segments(self) -> list[Path]:
        """Delete segments the published catalog does not list, once unlisted for the retention; returns them.

        Unlisted means replaced by a later publish (its mtime is the retirement) or written by a run
        that never published (its mtime is the write). Segments a run is about to publish are newer
        than the retention, so they are never taken.
        """
        if not self.segment_dir.is_dir():
            return []
        listed = _listed(self.path)
        if any(not os.path.exists(p) or not Path(p).is_relative_to(self.segment_dir) for p in listed):
            # The catalog lists segments elsewhere or missing: a moved or copied warehouse, whose next
            # staging relinks or refuses. Deleting by this catalog's list could take its history.
            return []
        cutoff = time.time() - self.segment_retention_s
        removed = []
        for path in sorted(self.segment_dir.rglob("*")):
            try:
                if path.is_file() and str(path) not in listed and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed.append(path)
            except FileNotFoundError:
                continue
        return removed

    def discard(self, run_id: str) -> None:
        """Remove everything a run staged (its warehouse copy and scratch files)."""
        staging = self.staging_path(run_id)
        base = self.base_path(run_id)
        for path in (
            staging,
            staging.with_name(staging.name + ".wal"),
            staging.with_name(staging.name + ".catalog"),
            staging.with_name(staging.name + ".catalog.wal"),
            staging.with_name(staging.name + ".partial"),
            base,
            base.with_name(base.name + ".partial"),
            self.lease_path(run_id),
        ):
            path.unlink(missing_ok=True)
        shutil.rmtree(self.run_dir(run_id), ignore_errors=True)

    def discard_all_except(self, keep: Iterable[str]) -> list[str]:
        """Remove the leftovers of runs that are no longer in progress; returns the run ids removed.

        Runs in *keep* and runs whose lease is held (see ``run_lease``) are left alone.
        """
        keep = set(keep)
        removed = []
        for run_id in sorted(self.staged_run_ids() - keep):
            if _RUN_ID.fullmatch(run_id) and not self.is_leased(run_id):
                self.discard(run_id)
                removed.append(run_id)
        return removed

    def remove_unlisted_savepoints(self, keep: Iterable[str]) -> list[Path]:
        """Delete stream-mode savepoints (`savepoint_dir/<run id>/…`) that the published `stream_files` does
        not list, except those of the runs in `keep` (in progress) and of leased runs; returns them."""
        if not self.savepoint_dir.is_dir() or not self.path.exists():
            return []
        with self.connect_published() as con:
            tables = con.execute("SELECT count(*) FROM information_schema.tables WHERE table_name = 'stream_files'")
            if not tables.fetchall()[0][0]:
                return []
            listed = {str(Path(row[0].removeprefix("file:")).resolve())
                      for row in con.execute("SELECT savepoint FROM stream_files WHERE savepoint IS NOT NULL").fetchall()}  # fmt: skip
        keep = set(keep)
        removed = []
        for run in sorted(self.savepoint_dir.iterdir()):
            if run.name in keep or (_RUN_ID.fullmatch(run.name) and self.is_leased(run.name)):
                continue
            for savepoint in sorted(run.glob("*/savepoint-*")):
                if str(savepoint.resolve()) not in listed:
                    shutil.rmtree(savepoint, ignore_errors=True)
                    removed.append(savepoint)
            for folder in sorted(run.glob("*")) + [run]:  # the emptied ones
                with contextlib.suppress(OSError):
                    folder.rmdir()
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
