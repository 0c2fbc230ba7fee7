"""Loading a transaction CSV into ``transactions`` and ``rejected_rows``: DuckDB's CSV reader where it
provably gives the records of :mod:`warehouse.ingest`, that module's exact parser everywhere else.

Contract: the tables equal what ``read_transactions`` yields (same rows, source_row, line, raw, reason).
Design (measurements: bench/results/ingest.md):

* ``scan`` proves a file *simple* with a vectorized pass over its bytes (mmap + numpy): plain UTF-8, no
  ``"``, no NUL, LF or CRLF endings only (no bare CR, not mixed), the header on line 1 resolves, every
  data line has exactly the header's field count (so no blank or space-only lines) and is < 1 MiB. Then
  every physical line is one record and ``line = source_row + 1``. Anything else falls back, whole file.
* DuckDB reads a simple file with quoting off, all columns VARCHAR, in parallel into a temporary table
  (insertion order preserved, so ``rowid + 1`` is source_row; ``row_number() OVER ()`` would pin the
  whole load to one thread). Memory stays bounded: DuckDB spills the table beyond its memory limit. A row is inserted by SQL only if each field
  matches a conservative pattern the exact validator reads identically (trimmed-free ids, UTC timestamps,
  short plain decimals); every other row goes through ``ingest.validate_records`` itself, so reasons are its own.
* gzip input is decompressed to a temporary file first (a bad stream falls back to the exact parser).
"""

from __future__ import annotations

import gzip
import mmap
import os
import shutil
import tempfile
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import duckdb
import numpy as np

from warehouse import ingest
from warehouse.timestamps import UTC_NAMES, validate_timezone

__all__ = ["Loaded", "Simple", "load_file", "scan"]

_BLOCK = 64 << 20  # bytes scanned at a time
_MAX_LINE = 1 << 20  # DuckDB's max_line_size is 2 MB; longer lines go to the exact parser
_RESIDUAL_BATCH = 100_000
_LINES = "bulk_ingest_lines"  # the connection's temporary table of the file's data lines  # rows of the exact validation at a time
_GZIP_MAGIC = b"\x1f\x8b"
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Simple:
    """A file proven simple: every physical line after the header (line 1) is one record."""

    path: str  # the (decompressed) file DuckDB reads
    width: int  # fields per line
    wanted: list[int]  # header positions of transaction_id, timestamp, amount[, key]
    key_slot: int  # index into ``wanted`` of the key column
    records: int  # data lines
    crlf: bool


@dataclass
class Loaded:
    records: int  # data records of the file (transactions + rejected rows)
    event_time_ms: np.ndarray  # the file's transactions in file order, for the time-outlier quarantine
    source_rows: np.ndarray
    fast: bool  # True when DuckDB's reader was used
    decided_in_sql: int  # rows DuckDB inserted without the exact validator (0 on the exact path)
    fallback_reason: str | None  # why the exact parser was used, if it was


def scan(path: str, key_column: str) -> Simple | str:
    """Prove *path* (an uncompressed file) simple, or return one sentence saying why it is not."""
    with open(path, "rb") as handle:
        size = os.fstat(handle.fileno()).st_size
        if size == 0:
            return "the file is empty"
        with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            return _scan(mm, size, path, key_column)


def _scan(mm: mmap.mmap, size: int, path: str, key_column: str) -> Simple | str:
    if mm[:2] == _GZIP_MAGIC:
        return "the file is gzip-compressed"
    start = len(_BOM) if mm[: len(_BOM)] == _BOM else 0
    header_end = mm.find(b"\n", start)
    if header_end < 0:
        return "the file has no data line"
    header_bytes = mm[start:header_end]
    crlf = header_bytes.endswith(b"\r")
    header_bytes = header_bytes[:-1] if crlf else header_bytes
    try:
        header = header_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return "the header is not valid UTF-8"
    if '"' in header or "\r" in header or "\x00" in header:
        return "the header holds a quote, CR or NUL"
    fields = header.split(",")
    try:
        wanted, key_slot = ingest.resolve_header(path, fields, 1, key_column)
    except ingest.InputFileError:
        return "the header does not resolve (the exact parser reports it)"
    commas = len(fields) - 1
    arr = np.frombuffer(mm, dtype=np.uint8)
    records = 0
    pos = header_end + 1
    while pos < size:
        end = min(size, pos + _BLOCK)
        if end < size:
            cut = mm.rfind(b"\n", pos, end)
            if cut < 0:
                return f"a line is longer than {_MAX_LINE >> 20} MiB"
            end = cut + 1
        problem = _check_block(mm[pos:end], arr[pos:end], commas, crlf, end == size)
        if isinstance(problem, str):
            return problem
        records += problem
        pos = end
    if records == 0:
        return "the file has no data line"
    return Simple(path, len(fields), wanted, key_slot, records, crlf)


def _check_block(data: bytes, arr: np.ndarray, commas: int, crlf: bool, last: bool) -> int | str:
    """Lines of one block of whole lines, or why the block is not simple."""
    if data.find(b'"') >= 0:
        return 'the file holds a quote character (")'
    if data.find(b"\x00") >= 0:
        return "the file holds a NUL byte"
    newlines = data.count(b"\n")
    if data.count(b"\r") != (data.count(b"\r\n") if crlf else 0) or (crlf and data.count(b"\r\n") != newlines):
        return "the file has a bare CR or mixes LF and CRLF line endings"
    if not data.isascii():
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            return "the file is not valid UTF-8"
    ends = np.flatnonzero(arr == 10)
    if last and not data.endswith(b"\n"):
        ends = np.append(ends, len(data))  # the last line has no line ending
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    if len(ends) and int((ends - starts).max()) >= _MAX_LINE:
        return f"a line is longer than {_MAX_LINE >> 20} MiB"
    # Exactly `commas` commas per line: the sorted comma offsets, `commas` per line, each line's first at or
    # after its start and its last before its end (so every line holds its own and no other).
    found = np.flatnonzero(arr == 44)
    if len(found) != commas * len(ends):
        return "a line does not have the header's number of fields (or is blank)"
    per_line = found.reshape(len(ends), commas)
    if not ((per_line[:, 0] >= starts).all() and (per_line[:, -1] < ends).all()):
        return "a line does not have the header's number of fields (or is blank)"
    return len(ends)


@contextmanager
def _plain_copy(path: str, scratch_dir: str | None) -> Iterator[str | None]:
    """*path* itself, or for gzip input a decompressed temporary copy (None if the stream is bad)."""
    with open(path, "rb") as handle:
        compressed = handle.read(2) == _GZIP_MAGIC
    if not compressed:
        yield path
        return
    with tempfile.TemporaryDirectory(dir=scratch_dir, prefix="ingest-") as tmp:
        target = os.path.join(tmp, "decompressed.csv")
        try:
            with gzip.open(path, "rb") as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, 16 << 20)
        except (OSError, EOFError, zlib.error):
            yield None
            return
        yield target


# --------------------------------------------------------------------------
# SQL: which rows DuckDB may decide, and their values
# --------------------------------------------------------------------------

# A field the exact parser keeps as is: not empty, no whitespace at either end (str.strip) - its first
# and last characters are printable ASCII, which str.isspace never holds.
_ID_OK = "({c} IS NOT NULL AND left({c}, 1) BETWEEN '!' AND '~' AND right({c}, 1) BETWEEN '!' AND '~')"
# Amounts: at most 14 integer and 4 decimal digits, no exponent: inside DECIMAL(18, 4), cast exactly.
_AMOUNT_OK = r"regexp_full_match({c}, '[+-]?[0-9]{{1,14}}(\.[0-9]{{1,4}})?')"
# Timestamps YYYY-MM-DD[ T]HH:MM:SS[.f{1,9}][Z] with every field in its range (leap seconds excluded); the
# day of the month and year 0000 are checked apart. A naive value is UTC only when the zone is.
_TS_RE = (
    r"[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])[ T]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9]"
    r"(\.[0-9]{1,9})?"
)


def _reader_sql(plan: Simple) -> str:
    columns = ", ".join(f"'c{i}': 'VARCHAR'" for i in range(plan.width))
    path = plan.path.replace("'", "''")
    return (
        f"read_csv('{path}', delim=',', quote='', escape='', header=true, auto_detect=false, "
        f"strict_mode=true, compression='none', columns={{{columns}}})"
    )


def _decided_sql(plan: Simple, naive_utc: bool) -> str:
    """The records of ``_LINES`` in file order (``n``), with ``ms`` (UTC epoch ms) and ``ok`` (SQL may decide
    the row: every field matches its pattern). ``ok`` is never NULL: a row is decided here or by the validator."""
    tid, ts, amount = (f"c{plan.wanted[i]}" for i in range(3))
    key = f"c{plan.wanted[plan.key_slot]}"
    zone = "Z?" if naive_utc else "Z"
    # epoch_ms of the whole seconds (the cast returns NULL for a day the month lacks) + the fraction's
    # first three digits: the instant floored to the millisecond, before 1970 too.
    ms = (
        f"CASE WHEN regexp_full_match({ts}, '{_TS_RE}{zone}') AND left({ts}, 4) <> '0000' THEN "
        f"epoch_ms(TRY_CAST(left({ts}, 19) AS TIMESTAMP)) + CASE WHEN substr({ts}, 20, 1) = '.' "
        f"THEN rpad(rtrim(substr({ts}, 21, 3), 'Z'), 3, '0')::BIGINT ELSE 0 END END"
    )
    fields_ok = f"{_ID_OK.format(c=tid)} AND {_ID_OK.format(c=key)} AND {_AMOUNT_OK.format(c=amount)}"
    return (
        f"SELECT n, {tid} AS tid, {key} AS key, {amount} AS amount, ms, coalesce({fields_ok} AND ms IS NOT NULL, "
        f"false) AS ok, * EXCLUDE (n, ms) FROM (SELECT *, {ms} AS ms FROM (SELECT rowid + 1 AS n, * FROM {_LINES}))"
    )


# --------------------------------------------------------------------------
# Loading
# --------------------------------------------------------------------------

Log = Callable[[str], None]


class _Mismatch(Exception):
    """DuckDB's records do not match the scan's lines."""


def load_file(
    con: duckdb.DuckDBPyConnection,
    path: str | os.PathLike[str],
    source_file: str,
    tables: tuple[str, str],
    *,
    key_column: str = "transaction_id",
    timezone: str = "UTC",
    fast: bool = True,
    scratch_dir: str | None = None,
    log: Log | None = None,
) -> Loaded:
    """Insert *path*'s records into ``tables`` = (transactions, rejected_rows) as *source_file*.

    ``fast=False`` forces the exact parser. Raises ``ingest.InputFileError`` for a bad file (from the
    exact parser, so the message is its own), ``ValueError`` for bad arguments.
    """
    validate_timezone(timezone)
    if not isinstance(key_column, str) or not key_column.strip():
        raise ValueError(f"key_column must be a non-empty column name, got {key_column!r}")
    key_column = key_column.strip()
    log = log or (lambda message: None)
    path = os.fspath(path)
    reason = "the exact parser was asked for"
    if fast and os.path.isfile(path):
        try:
            return _load_fast(con, path, source_file, tables, key_column, timezone, scratch_dir, log)
        except _FallBack as why:
            reason = str(why)
    elif fast:
        reason = "the path is not a regular file"
    return _load_exact(con, path, source_file, tables, key_column, timezone, log, reason)


class _FallBack(Exception):
    """Why the exact parser must read the file."""


def _load_fast(con, path: str, source_file: str, tables, key_column: str, timezone: str, scratch_dir, log) -> Loaded:
    try:
        with _plain_copy(path, scratch_dir) as plain:
            plan = scan(plain, key_column) if plain is not None else "the gzip stream is corrupt or truncated"
            if isinstance(plan, Simple):
                try:
                    return _load_simple(con, plan, source_file, tables, key_column, timezone, log)
                except (duckdb.Error, _Mismatch, OSError) as error:  # never expected: undo, the exact parser decides
                    for table in tables:
                        con.execute(f"DELETE FROM {table} WHERE source_file = ?", [source_file])
                    plan = f"DuckDB's reader failed on a file the scan judged simple ({error})"
    except OSError as error:  # unreadable: the exact parser says so in its own words
        plan = f"the file cannot be read ({error.strerror or error})"
    raise _FallBack(plan)


def _load_simple(con, plan: Simple, source_file: str, tables, key_column: str, timezone: str, log: Log) -> Loaded:
    started = time.monotonic()
    with con.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")  # the TIMESTAMPTZ cast, as in the exact path
        cur.execute("SET preserve_insertion_order = true")  # the temporary table's rowid is the file's order
        cur.execute(f"CREATE OR REPLACE TEMP TABLE {_LINES} AS SELECT * FROM {_reader_sql(plan)}")
        try:
            return _insert_lines(cur, plan, source_file, tables, key_column, timezone, log, started)
        finally:
            cur.execute(f"DROP TABLE IF EXISTS {_LINES}")


def _insert_lines(cur, plan: Simple, source_file: str, tables, key_column: str, timezone: str, log: Log, started):
    transactions, rejected = tables
    decided = _decided_sql(plan, timezone in UTC_NAMES)
    lines = cur.execute(f"SELECT count(*) FROM {_LINES}").fetchall()[0][0]
    if lines != plan.records:
        raise _Mismatch(f"DuckDB read {lines} records of '{plan.path}' where the scan found {plan.records} lines")
    cur.execute(
        f"INSERT INTO {transactions} SELECT $f, n, n + 1, tid, key, epoch_ms(ms)::TIMESTAMPTZ, ms, "
        f"amount::DECIMAL(18, 4) FROM ({decided}) WHERE ok",
        {"f": source_file},
    )
    fast_rows = cur.execute(f"SELECT count(*) FROM {transactions} WHERE source_file = ?", [source_file]).fetchall()
    fast_rows = fast_rows[0][0]
    residual = 0
    if fast_rows < plan.records:
        residual = _validate_residual(cur, plan, decided, source_file, tables, key_column, timezone)
    counted = cur.execute(
        f"SELECT (SELECT count(*) FROM {transactions} WHERE source_file = $f) + "
        f"(SELECT count(*) FROM {rejected} WHERE source_file = $f)",
        {"f": source_file},
    ).fetchall()[0][0]
    if counted != plan.records or fast_rows + residual != plan.records:
        raise _Mismatch(f"DuckDB read {counted} records of '{plan.path}' where the scan found {plan.records} lines")
    times, rows = _file_order(cur, transactions, source_file)
    log(
        f"Ingested {plan.records:,} rows with DuckDB's reader ({fast_rows:,} decided in SQL, {residual:,} by the "
        f"exact validator) in {time.monotonic() - started:.1f} s"
    )
    return Loaded(plan.records, times, rows, True, fast_rows, None)


def _validate_residual(cur, plan: Simple, decided: str, source_file, tables, key_column, timezone) -> int:
    """The rows SQL did not accept, through the exact validator in batches; returns how many."""
    everything = ", ".join(f"coalesce(c{i}, '')" for i in range(plan.width))
    wanted = ", ".join(f"coalesce(c{i}, '')" for i in plan.wanted)
    reader = cur.sql(f"SELECT n, concat_ws(',', {everything}), {wanted} FROM ({decided}) WHERE NOT ok").to_arrow_reader(
        _RESIDUAL_BATCH
    )
    done = 0
    with cur.cursor() as writer:
        writer.execute("SET TimeZone = 'UTC'")
        for batch in reader:
            columns = [column.to_pylist() for column in batch.columns]
            numbers = np.asarray(columns[0], dtype=np.int64)
            raws = columns[1]
            records = ingest.Records(
                line=numbers + 1,
                problem={},
                fields=[list(map(str.strip, column)) for column in columns[2:]],
                raw=raws.__getitem__,
            )
            chunk = ingest.validate_records(records, 0, key_column, plan.key_slot, timezone)
            chunk.valid["source_row"] = numbers[chunk.valid["source_row"].to_numpy()]
            chunk.rejected["source_row"] = numbers[chunk.rejected["source_row"].to_numpy()]
            _insert_chunk(writer, chunk, source_file, tables)
            done += len(numbers)
    return done


def _insert_chunk(cur: duckdb.DuckDBPyConnection, chunk: ingest.Chunk, source_file: str, tables) -> None:
    transactions, rejected = tables
    cur.register("chunk_valid", chunk.valid)
    cur.execute(
        f"INSERT INTO {transactions} SELECT ?, source_row, line, transaction_id, key, "
        "epoch_ms(event_time_ms)::TIMESTAMPTZ, event_time_ms, "
        "amount_units::DECIMAL(18,0) * 0.0001::DECIMAL(4,4) "  # exact: DECIMAL(18,4)
        "FROM chunk_valid ORDER BY source_row",
        [source_file],
    )
    cur.register("chunk_rejected", chunk.rejected)
    cur.execute(
        f"INSERT INTO {rejected} SELECT ?, source_row, line, raw, reason FROM chunk_rejected ORDER BY source_row",
        [source_file],
    )
    cur.unregister("chunk_valid")
    cur.unregister("chunk_rejected")


def _file_order(cur, transactions: str, source_file: str) -> tuple[np.ndarray, np.ndarray]:
    got = cur.execute(
        f"SELECT event_time_ms, source_row FROM {transactions} WHERE source_file = ? ORDER BY source_row",
        [source_file],
    ).fetchnumpy()
    return np.asarray(got["event_time_ms"], dtype=np.int64), np.asarray(got["source_row"], dtype=np.int64)


def _load_exact(con, path: str, source_file: str, tables, key_column: str, timezone: str, log: Log, reason: str):
    """The exact streaming parser; a chunk is inserted by a thread of its own while the next one is parsed
    (parsing holds the GIL, DuckDB mostly not). One thread, so the chunks land in file order; one commit
    per chunk keeps memory bounded (the staging copy is private to the run)."""
    started = time.monotonic()
    records = 0
    times: list[np.ndarray] = []
    rows: list[np.ndarray] = []
    log(f"Reading with the exact parser: {reason}")
    with con.cursor() as cur, ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-insert") as inserter:
        cur.execute("SET TimeZone = 'UTC'")
        inserting: Future | None = None
        for chunk in ingest.read_transactions(path, key_column=key_column, timezone=timezone):
            if inserting is not None:
                inserting.result()
            inserting = inserter.submit(_insert_chunk, cur, chunk, source_file, tables)
            times.append(chunk.valid["event_time_ms"].to_numpy())
            rows.append(chunk.valid["source_row"].to_numpy())
            records += len(chunk.valid) + len(chunk.rejected)
            log(f"Ingested {records:,} rows ({time.monotonic() - started:.1f} s)")
        if inserting is not None:
            inserting.result()
    return Loaded(records, np.concatenate(times), np.concatenate(rows), False, 0, reason)
