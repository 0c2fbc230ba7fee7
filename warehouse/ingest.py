"""Streaming reader and validator for transaction CSV files: the exact parser of the data contract.

``read_transactions`` turns a file into :class:`Chunk` objects. Every data record ends up exactly once,
in ``Chunk.valid`` (``source_row, line, transaction_id, key, event_time_ms, amount_units``) or in
``Chunk.rejected`` (``source_row, line, raw, reason``); a problem with the whole file raises
:class:`InputFileError`, one sentence naming the file and the line. Invalid arguments raise ``ValueError``.

The rules it implements (UTF-8, gzip by magic bytes, strict RFC 4180 quoting, trimmed fields, blank lines,
``source_row``/``line``/``raw`` numbering, timestamps, exact ``DECIMAL(18, 4)`` amounts as int64 units of
0.0001, chunking and size limits) are stated in docs/data-contract.md ("Input rules" and "How a file is
read"). Design: amounts are judged by a vectorized DFA over the character codes and never go through a
float; quote-free blocks are split without the csv module; one chunk of input is held in memory at a time.
"""

from __future__ import annotations

import csv
import gc
import gzip
import os
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from warehouse.timestamps import parse_event_times, validate_timezone

__all__ = ["Chunk", "InputFileError", "REQUIRED_COLUMNS", "read_transactions", "record_texts"]

REQUIRED_COLUMNS = ("transaction_id", "timestamp", "amount")

VALID_COLUMNS = ("source_row", "line", "transaction_id", "key", "event_time_ms", "amount_units")
REJECTED_COLUMNS = ("source_row", "line", "raw", "reason")

_MAX_LINE_BYTES = 64 << 20
# A quoted field may span lines, so it is bounded separately (default 128 KiB: a 1 MB quoted key
# was mis-split).
_MAX_FIELD_CHARS = 64 << 20


def _csv_reader(lines, **options):
    """csv.reader with fields up to _MAX_FIELD_CHARS. The csv module's limit is process-wide, so it
    is raised only here, where a file is parsed, and never lowered."""
    if csv.field_size_limit() < _MAX_FIELD_CHARS:
        csv.field_size_limit(_MAX_FIELD_CHARS)
    return csv.reader(lines, **options)


_MAX_BLOCK_BYTES = 64 << 20  # a chunk may hold fewer records rather than more input
_MIN_BLOCK_LINES = 2_000_000  # physical lines scanned per block: max(this, 2 * chunk_rows)
_SCAN_STEP = 8 << 20
# Records parsed at a time; chunks are made of such parts. The arrays of 25k records stay in the CPU's
# caches: 1M rows parse in 1.12 s against 1.44 s in 200k-record pieces here.
_PARSE_ROWS = 25_000
_TAKE_BYTES = 1 << 20  # csv path: bytes decoded at a time
_MIN_READ = 1 << 12
_MAX_READ = 64 << 20
_BOM = b"\xef\xbb\xbf"
_GZIP_MAGIC = b"\x1f\x8b"
# Delimiters a header may reveal; only ',' is supported (see "Delimiters" in the module docstring).
_OTHER_DELIMITERS = {";": "semicolon", "\t": "tab", "|": "pipe"}
_SHOW_LIMIT = 60


class InputFileError(Exception):
    """Fatal problem with the whole file; str(e) is ONE clear sentence naming the file,
    the line if relevant, and the problem."""


@dataclass
class Chunk:
    valid: pd.DataFrame  # source_row, line, transaction_id, key, event_time_ms, amount_units
    rejected: pd.DataFrame  # source_row, line, raw, reason


# --------------------------------------------------------------------------
# Amount parsing: a vectorized DFA for the strict decimal grammar.
# --------------------------------------------------------------------------

_AMOUNT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NON_FINITE_WORDS = frozenset({"nan", "inf", "infinity", "snan"})

# Character classes.
_C_DIGIT, _C_SIGN, _C_DOT, _C_EXP, _C_OTHER, _C_PAD = range(6)
_CLASS_LUT = np.full(128, _C_OTHER, dtype=np.uint8)
_CLASS_LUT[ord("0") : ord("9") + 1] = _C_DIGIT
_CLASS_LUT[[ord("+"), ord("-")]] = _C_SIGN
_CLASS_LUT[ord(".")] = _C_DOT
_CLASS_LUT[[ord("e"), ord("E")]] = _C_EXP

# States: 0 start, 1 sign, 2 int digits*, 3 dot after int, 4 frac digits*,
# 5 leading dot, 6 'e', 7 exponent sign, 8 exponent digits*, 9 dead.
_DEAD = 9
_TRANS = np.full((10, 6), _DEAD, dtype=np.intp)
for _state, _cls, _to in (
    (0, _C_DIGIT, 2),
    (0, _C_SIGN, 1),
    (0, _C_DOT, 5),
    (1, _C_DIGIT, 2),
    (1, _C_DOT, 5),
    (2, _C_DIGIT, 2),
    (2, _C_DOT, 3),
    (2, _C_EXP, 6),
    (3, _C_DIGIT, 4),
    (4, _C_DIGIT, 4),
    (4, _C_EXP, 6),
    (5, _C_DIGIT, 4),
    (6, _C_DIGIT, 8),
    (6, _C_SIGN, 7),
    (7, _C_DIGIT, 8),
    (8, _C_DIGIT, 8),
):
    _TRANS[_state, _cls] = _to
_TRANS[:, _C_PAD] = np.arange(10)  # past the end of a value: keep the state
_ACCEPTING = np.zeros(10, dtype=bool)
_ACCEPTING[[2, 4, 8]] = True
_EXP_DIGITS = 8  # the DFA state inside an exponent's digits
_DFA_MAX_WIDTH = 64  # longer values are checked with the regular expression
_DIGIT_LUT = np.zeros(128, dtype=np.uint8)
_DIGIT_LUT[ord("0") : ord("9") + 1] = np.arange(10)

# Amounts are DECIMAL(18, 4) (warehouse.schema.AMOUNT_TYPE): ingest yields them as
# int64 units of 10**-4, |units| < 10**18.
_AMOUNT_SCALE = 4
_MAX_UNIT_DIGITS = 18
_AMOUNT_DECIMAL = f"DECIMAL({_MAX_UNIT_DIGITS}, {_AMOUNT_SCALE})"


def _show(value: str) -> str:
    if len(value) > _SHOW_LIMIT:
        value = value[: _SHOW_LIMIT - 3] + "..."
    return repr(value)


def _parse_amounts(values: list[str]) -> tuple[np.ndarray, dict[int, str]]:
    """Parse trimmed amount strings strictly and exactly.

    Returns (int64 amounts in units of 10**-4, {position: reason} for rejected
    values); rejected positions hold 0.
    """
    n = len(values)
    units = np.zeros(n, dtype=np.int64)
    if n == 0:
        return units, {}
    lens = np.fromiter(map(len, values), dtype=np.int64, count=n)
    long_rows = np.flatnonzero(lens > _DFA_MAX_WIDTH).tolist()
    short = values
    if long_rows:
        short = list(values)
        for i in long_rows:
            short[i] = ""
    width = max(1, min(_DFA_MAX_WIDTH, int(lens.max())))
    text = np.array(short, dtype=f"<U{width}").view(np.uint32).reshape(n, width)
    codes = np.minimum(text, 127, out=text).astype(np.uint8)  # one byte per character
    del text
    classes = _CLASS_LUT[codes]
    classes[np.arange(width) >= lens[:, None]] = _C_PAD
    state = np.zeros(n, dtype=np.intp)
    for j in range(width):
        state = _TRANS[state, classes[:, j]]
    ok = _ACCEPTING[state] & (lens > 0)

    # Values without an exponent, read from the code array. In a value whose '.' is in
    # column p (p = its length without one) the digit in column j is worth 10**k units,
    # k = p - j - (j < p) + 4. Only nonzero digits matter, so leading and trailing zeros
    # are free: a value is too large if its first nonzero digit has k >= 18 and has a
    # fifth decimal if its last one has k < 0.
    is_dot = classes == _C_DOT
    dot = np.where(is_dot.any(axis=1), is_dot.argmax(axis=1), np.minimum(lens, width))
    digits = _DIGIT_LUT[codes]
    nonzero = digits != 0
    first = np.where(nonzero.any(axis=1), nonzero.argmax(axis=1), width)
    last = width - 1 - nonzero[:, ::-1].argmax(axis=1)  # meaningful only where first < width
    big = first <= dot - (_MAX_UNIT_DIGITS - _AMOUNT_SCALE + 1)
    fine = (first < width) & (last > dot + _AMOUNT_SCALE)
    cols = np.arange(width)
    p = np.arange(width + 1)[:, None]
    k = p - cols - (cols < p) + _AMOUNT_SCALE
    weight = np.where((k >= 0) & (k < _MAX_UNIT_DIGITS), 10 ** np.clip(k, 0, _MAX_UNIT_DIGITS - 1), 0)
    for j in range(width):  # column by column: memory stays O(n), not O(n * width) int64
        units += digits[:, j] * weight[dot, j]
    np.negative(units, out=units, where=codes[:, 0] == ord("-"))

    # Exponents and values longer than the code array: exact integer arithmetic, one by one.
    for i in long_rows:
        ok[i] = _AMOUNT_RE.fullmatch(values[i]) is not None
    for i in np.flatnonzero(ok & ((state == _EXP_DIGITS) | (lens > _DFA_MAX_WIDTH))).tolist():
        units[i], big[i], fine[i] = _exact_units(values[i])

    big &= ok
    fine &= ok & ~big
    bad = ~ok | big | fine
    reasons = {i: _amount_reason(values[i], bool(big[i]), bool(fine[i])) for i in np.flatnonzero(bad).tolist()}
    units[bad] = 0
    return units, reasons


def _exact_units(value: str) -> tuple[int, bool, bool]:
    """(units, too large, more than 4 decimals) of a value that matches the grammar.

    Never builds a big integer: the checks come first, on digit counts, so
    ``1e999999999`` or a megabyte of digits costs one pass over the text.
    """
    mantissa, _, exponent = value.replace("E", "e").partition("e")
    whole, _, frac = mantissa.lstrip("+-").partition(".")
    digits = (whole + frac).lstrip("0")
    if not digits:
        return 0, False, False  # zero, whatever the exponent
    significant = digits.rstrip("0")
    exp_digits = exponent.lstrip("+-").lstrip("0") or "0"
    if len(exp_digits) > 30:  # beyond any field length: the sign of the exponent decides
        return 0, not exponent.startswith("-"), exponent.startswith("-")
    power = len(digits) - len(significant) - len(frac)  # of the last significant digit
    power += -int(exp_digits) if exponent.startswith("-") else int(exp_digits)
    if power + len(significant) + _AMOUNT_SCALE > _MAX_UNIT_DIGITS:
        return 0, True, False
    if power < -_AMOUNT_SCALE:
        return 0, False, True
    units = int(significant) * 10 ** (power + _AMOUNT_SCALE)  # at most 18 digits
    return (-units if mantissa.startswith("-") else units), False, False


def _amount_reason(value: str, too_large: bool = False, too_fine: bool = False) -> str:
    shown = _show(value)
    if not value:
        return "missing amount"
    if too_large:
        return (
            f"amount {shown} is too large: the warehouse keeps amounts as {_AMOUNT_DECIMAL}, "
            f"which holds -99,999,999,999,999.9999 to 99,999,999,999,999.9999"
        )
    if too_fine:
        return (
            f"amount {shown} has more than {_AMOUNT_SCALE} decimal places; the warehouse keeps "
            f"amounts as {_AMOUNT_DECIMAL} and rounds nothing: round it in the source"
        )
    if value.lower().lstrip("+-") in _NON_FINITE_WORDS:
        return f"amount {shown} is not a finite number"
    if "," in value and _AMOUNT_RE.fullmatch(value.replace(",", "")):
        return f"non-numeric amount {shown}: thousands separators are not accepted"
    return f"non-numeric amount {shown}: expected a plain decimal number such as 123.45, -0.5 or 1.5e3"


# --------------------------------------------------------------------------
# Record layer: bytes -> records with line numbers.
# --------------------------------------------------------------------------


@dataclass
class Records:
    """The records of one chunk, before field validation."""

    line: np.ndarray  # int64, start line of each record
    problem: dict[int, str]  # record index -> structural problem (field count, quoting, NUL)
    fields: list[list[str]]  # per wanted column: trimmed values of the other records, in order
    raw: Callable[[int], str]  # record index -> original text


# Bytes that may begin or end a whitespace character (str.strip semantics):
# ASCII whitespace, the separators 0x1c-0x1f, and any non-ASCII byte.
_MAYBE_SPACE = np.zeros(256, dtype=bool)
_MAYBE_SPACE[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32]] = True
_MAYBE_SPACE[128:] = True


def _newline_positions(arr: np.ndarray, limit: int) -> np.ndarray:
    """Offsets of the first ``limit`` b"\\n" bytes, scanning in steps to bound memory."""
    found, total = [], 0
    for offset in range(0, len(arr), _SCAN_STEP):
        hits = np.flatnonzero(arr[offset : offset + _SCAN_STEP] == 10)
        if total + len(hits) >= limit:
            found.append(hits[: limit - total] + offset)
            break
        found.append(hits + offset)
        total += len(hits)
    return np.concatenate(found) if found else np.zeros(0, dtype=np.intp)


def _strip_newline(text: str) -> str:
    if text.endswith("\r\n"):
        return text[:-2]
    if text.endswith("\n"):
        return text[:-1]
    return text


def _split_keepends(text: str) -> list[str]:
    parts = text.split("\n")
    last = parts.pop()
    lines = [p + "\n" for p in parts]
    if last:
        lines.append(last)
    return lines


def _csv_error_reason(message: str, hit_eof: bool, start_line: int) -> str:
    if hit_eof:
        return (
            f"unterminated quoted field: a '\"' opened in the record starting on line "
            f"{start_line} is never closed before the end of the file"
        )
    if "expected after" in message:
        return "malformed quoting: a closing '\"' must be followed by ',' or the end of the line"
    if "new-line character" in message:
        return "bare carriage return (CR) inside an unquoted field"
    return f"malformed CSV record: {message}"


class _Source:
    """Reads a CSV file as complete records, one chunk at a time."""

    def __init__(self, path: str, handle, chunk_rows: int, compressed: bool = False) -> None:
        self.path = path
        self.handle = handle
        self.compressed = compressed  # gzip: offsets in messages are in the decompressed data
        self.chunk_rows = chunk_rows
        self.pending = b""  # undecoded bytes, starting at a line boundary
        self.pending_nl = 0  # number of b"\n" in pending
        self.pending_offset = 0  # file offset of pending[0]
        self.line_no = 1  # physical line number of pending[0]
        self.eof = False
        self.bytes_read = 0  # total bytes read from the file (BOM included)
        self.bytes_per_line = 64.0
        self.max_lines = max(_MIN_BLOCK_LINES, 2 * chunk_rows)
        self.width = 0  # number of header fields
        self.wanted: list[int] = []  # header positions of transaction_id, timestamp, amount[, key]
        self.key_slot = 0  # index into ``wanted`` of the key column

    # ---- raw input -------------------------------------------------------
    def _raw_read(self, size: int) -> bytes:
        if not self.compressed:
            return self.handle.read(size)
        try:
            return self.handle.read(size)
        except (OSError, EOFError, zlib.error) as exc:  # gzip.BadGzipFile is an OSError
            detail = str(exc).rstrip(".") or type(exc).__name__
            raise InputFileError(
                f"input file '{self.path}' is a corrupt or truncated gzip file: {detail} "
                f"(after {self.bytes_read} decompressed bytes, around line {self.line_no + self.pending_nl})"
            ) from None

    def _read(self, size: int) -> None:
        data = self._raw_read(size)
        if not data:
            self.eof = True
            return
        if self.bytes_read == 0:
            while len(data) < len(_BOM) and _BOM.startswith(data):  # tiny first read
                more = self._raw_read(len(_BOM) - len(data))
                if not more:
                    break
                data += more
            if data.startswith(_BOM):
                data = data[len(_BOM) :]
                self.pending_offset = self.bytes_read = len(_BOM)
        self.bytes_read += len(data)
        self.pending += data
        self.pending_nl += data.count(b"\n")
        tail = len(self.pending) - self.pending.rfind(b"\n") - 1
        if tail > _MAX_LINE_BYTES:
            raise InputFileError(
                f"input file '{self.path}' has a line longer than {_MAX_LINE_BYTES >> 20} MiB "
                f"at line {self.line_no + self.pending_nl}, so it does not look like a CSV file"
            )

    def _fill(self, want_newlines: int) -> None:
        want_newlines = min(want_newlines, self.max_lines)
        while not self.eof and self.pending_nl < want_newlines and len(self.pending) < _MAX_BLOCK_BYTES:
            need = want_newlines - self.pending_nl
            per_line = len(self.pending) / self.pending_nl if self.pending_nl else self.bytes_per_line
            size = int(min(_MAX_READ, max(_MIN_READ, need * per_line * 1.1)))
            self._read(size)

    def _decode(self, data: bytes, first_line: int, offset: int) -> str:
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = first_line + data.count(b"\n", 0, exc.start)
            where = "offset in the decompressed data" if self.compressed else "file offset"
            raise InputFileError(
                f"input file '{self.path}' is not valid UTF-8: byte 0x{data[exc.start]:02x} "
                f"at line {line} ({where} {offset + exc.start}) cannot be decoded"
            ) from None

    def _consume(self, nbytes: int, nlines: int, newlines: int) -> None:
        self.pending_nl -= newlines
        self.pending = self.pending[nbytes:]
        self.pending_offset += nbytes
        self.line_no += nlines

    def _take_lines(self) -> tuple[list[str], int]:
        """Decode and remove the complete lines in the first ~1 MiB of ``pending``.

        Reads more input if ``pending`` holds no complete line. Returns (lines
        with their endings, line number of the first one); an empty list at
        the end of the file.
        """
        if self.pending_nl == 0:
            self._fill(1)  # reads until a line is complete or the file ends
        pending = self.pending
        if self.pending_nl == 0:  # end of file: the rest is one unterminated line
            cut = len(pending)
        elif len(pending) <= _TAKE_BYTES:
            cut = len(pending) if self.eof else pending.rfind(b"\n") + 1
        else:
            cut = pending.rfind(b"\n", 0, _TAKE_BYTES) + 1 or pending.find(b"\n") + 1
        if cut == 0:
            return [], self.line_no
        data = pending[:cut]
        first = self.line_no
        lines = _split_keepends(self._decode(data, first, self.pending_offset))
        self._consume(cut, len(lines), data.count(b"\n"))
        return lines, first

    def _push_back(self, lines: list[str]) -> None:
        if not lines:
            return
        data = "".join(lines).encode("utf-8")
        self.pending = data + self.pending
        self.pending_nl += data.count(b"\n")
        self.pending_offset -= len(data)
        self.line_no -= len(lines)

    # ---- header -------------------------------------------------------------
    def read_header(self) -> tuple[list[str], int] | None:
        records = self._parse_csv(limit=1)
        if not records:
            return None
        fields, problem, start_line, _ = records[0]
        if problem is not None:
            raise InputFileError(f"input file '{self.path}' has a malformed header on line {start_line}: {problem}")
        return fields, start_line

    # ---- records ------------------------------------------------------------
    def next_records(self) -> Records | None:
        """Parse the next ``chunk_rows`` records, or return None at the end of the file."""
        while True:
            records = self._next_block()
            if records is None or len(records.line):
                return records

    def _next_block(self) -> Records | None:
        chunk_rows = self.chunk_rows
        want = chunk_rows
        while True:
            self._fill(want)
            buf = self.pending
            if not buf:
                return None
            arr = np.frombuffer(buf, dtype=np.uint8)
            ends = _newline_positions(arr, self.max_lines)
            terminated = len(ends)
            capped = terminated >= self.max_lines
            if self.eof and not capped and (not len(ends) or ends[-1] != len(buf) - 1):
                ends = np.append(ends, len(buf))  # last line without a line ending
            starts = np.empty_like(ends)
            starts[:1] = 0
            starts[1:] = ends[:-1] + 1
            length = ends - starts
            blank = (length == 0) | ((length == 1) & (arr[np.minimum(starts, len(buf) - 1)] == 13))
            nonblank = np.cumsum(~blank)
            have = int(nonblank[-1]) if len(nonblank) else 0
            if have >= chunk_rows or self.eof or capped or len(buf) >= _MAX_BLOCK_BYTES:
                break
            want = self.pending_nl + (chunk_rows - have) + 1
        nlines = int(np.searchsorted(nonblank, chunk_rows)) + 1 if have > chunk_rows else len(ends)
        if nlines == 0:
            return None
        newlines = min(nlines, terminated)
        cut = int(ends[nlines - 1]) + (1 if nlines <= terminated else 0)
        cand = buf[:cut]
        simple = b'"' not in cand and b"\x00" not in cand
        if simple and b"\r" in cand:
            simple = cand.count(b"\r") == cand.count(b"\r\n")
        if simple:
            records = self._fast(cand, arr[:cut], starts[:nlines], ends[:nlines], blank[:nlines])
        else:
            records = self._one_line_records(cand)
            if records is None:  # a record spans lines, or a record is malformed
                return self._records_from_csv(self._parse_csv(limit=chunk_rows))
        self._consume(cut, nlines, newlines)
        self.bytes_per_line = max(1.0, cut / nlines)
        return records

    def _fast(self, cand: bytes, arr: np.ndarray, starts, ends, blank) -> Records:
        """Quote-free block: every line is one record; split without the csv module."""
        first_line = self.line_no
        text = self._decode(cand, first_line, self.pending_offset)
        lines = text.split("\n")
        if cand.endswith(b"\n"):
            lines.pop()
        commas = np.flatnonzero(arr == 44)
        ncommas = np.searchsorted(commas, ends) - np.searchsorted(commas, starts)
        rec = np.flatnonzero(~blank)
        width = self.width
        good = ncommas[rec] == width - 1
        all_good = bool(good.all())
        if all_good and len(rec) == len(lines):
            selected = lines
        else:
            selected = [lines[i] for i in rec[good].tolist()]
        flat = ",".join(selected).split(",") if selected else []
        fields = []
        for j in self.wanted:
            column = flat[j::width]
            if not all_good or self._needs_strip(arr, j, commas, starts[rec], ends[rec]):
                column = list(map(str.strip, column))
            fields.append(column)
        problem = {
            i: f"expected {width} fields, got {int(ncommas[rec[i]]) + 1}" for i in np.flatnonzero(~good).tolist()
        }
        rec_list = rec.tolist()

        def raw(i: int) -> str:
            text = lines[rec_list[i]]
            return text[:-1] if text.endswith("\r") else text

        return Records(first_line + rec.astype(np.int64), problem, fields, raw)

    def _needs_strip(self, arr: np.ndarray, j: int, commas: np.ndarray, starts, ends) -> bool:
        """Whether any value of column j (all records well-formed) may need trimming."""
        if not len(starts):
            return False
        width = self.width
        per_line = commas.reshape(len(starts), width - 1)
        first = starts if j == 0 else per_line[:, j - 1] + 1
        stop = ends if j == width - 1 else per_line[:, j]
        nonempty = stop > first
        last_index = len(arr) - 1
        edge = _MAYBE_SPACE[arr[np.minimum(first, last_index)]] | _MAYBE_SPACE[arr[np.maximum(stop - 1, 0)]]
        return bool((edge & nonempty).any())

    def _one_line_records(self, cand: bytes) -> Records | None:
        """Block with quotes where every record is one well-formed line (csv in C)."""
        if b"\x00" in cand:
            return None
        first_line = self.line_no
        lines = _split_keepends(self._decode(cand, first_line, self.pending_offset))
        # Building one list per record makes the cyclic GC rescan the growing
        # result again and again (over half the time); no cycles can arise in
        # this pure-C loop, so collection is paused for its duration.
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            parsed = list(_csv_reader(lines, strict=True))
        except csv.Error:
            return None
        finally:
            if gc_was_enabled:
                gc.enable()
        if len(parsed) != len(lines):
            return None
        counts = np.fromiter(map(len, parsed), dtype=np.int64, count=len(parsed))
        rec = np.flatnonzero(counts != 0)  # [] is a blank line
        width = self.width
        good = counts[rec] == width
        if good.all() and len(rec) == len(parsed):
            selected = parsed
        else:
            selected = [parsed[i] for i in rec[good].tolist()]
        columns = list(zip(*selected)) if selected else [()] * width
        fields = [list(map(str.strip, columns[j])) for j in self.wanted]
        problem = {i: f"expected {width} fields, got {int(counts[rec[i]])}" for i in np.flatnonzero(~good).tolist()}
        rec_list = rec.tolist()

        def raw(i: int) -> str:
            return _strip_newline(lines[rec_list[i]])

        return Records(first_line + rec.astype(np.int64), problem, fields, raw)

    def _records_from_csv(self, records: list) -> Records:
        width = self.width
        lines = np.fromiter((r[2] for r in records), dtype=np.int64, count=len(records))
        problem: dict[int, str] = {}
        good: list[list[str]] = []
        for i, (fields, prob, _, _) in enumerate(records):
            if prob is None and len(fields) != width:
                prob = f"expected {width} fields, got {len(fields)}"
            if prob is None:
                good.append(fields)
            else:
                problem[i] = prob
        columns = [[f[j].strip() for f in good] for j in self.wanted]
        raws = [r[3] for r in records]
        return Records(lines, problem, columns, raws.__getitem__)

    def _parse_csv(self, limit: int) -> list[tuple[list[str], str | None, int, str]]:
        """Parse up to ``limit`` non-blank records one by one with ``csv.reader``.

        Returns [(fields, problem, start_line, raw)], empty at the end of the
        file. Lines read beyond the last record are pushed back.
        """
        lines, first_line = self._take_lines()
        if not lines:
            return []
        pos = 0  # lines[:pos] have been given to the csv reader
        dropped = 0  # lines already deleted from the front of ``lines``
        hit_eof = False

        def feed():
            nonlocal pos, hit_eof
            while True:
                if pos == len(lines):
                    more, _ = self._take_lines()
                    if not more:
                        hit_eof = True
                        return
                    lines.extend(more)
                pos += 1
                yield lines[pos - 1]

        reader = _csv_reader(feed(), strict=True)
        out = []
        while len(out) < limit:
            if pos > 4096:  # keep only the lines of the current record in memory
                del lines[:pos]
                dropped += pos
                pos = 0
            start = pos
            start_line = first_line + dropped + start
            try:
                fields = next(reader)
                problem = None
            except StopIteration:
                break
            except csv.Error as exc:
                if "field larger than field limit" in str(exc):
                    # The reader cannot resynchronise inside an over-long quoted field: the
                    # rest of the file would be mis-split into bogus records. Stop instead.
                    raise InputFileError(
                        f"input file '{self.path}' has a field longer than {_MAX_FIELD_CHARS >> 20} "
                        f"MiB in the record starting on line {start_line}, so a '\"' is probably "
                        "left open"
                    ) from None
                fields = []
                problem = _csv_error_reason(str(exc), hit_eof, start_line)
            if problem is None and not fields:
                continue  # blank line
            raw_text = "".join(lines[start:pos])
            if problem is None and "\x00" in raw_text:
                problem = "record contains a NUL character"
            out.append((fields, problem, start_line, _strip_newline(raw_text)))
        # Return unread lines so that the next chunk starts right after the last record.
        self._push_back(lines[pos:])
        return out


# --------------------------------------------------------------------------
# Chunk validation
# --------------------------------------------------------------------------


def _empty_valid() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_row": np.zeros(0, dtype=np.int64),
            "line": np.zeros(0, dtype=np.int64),
            "transaction_id": np.zeros(0, dtype=object),
            "key": np.zeros(0, dtype=object),
            "event_time_ms": np.zeros(0, dtype=np.int64),
            "amount_units": np.zeros(0, dtype=np.int64),
        }
    )


def _empty_rejected() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "source_row": np.zeros(0, dtype=np.int64),
            "line": np.zeros(0, dtype=np.int64),
            "raw": np.zeros(0, dtype=object),
            "reason": np.zeros(0, dtype=object),
        }
    )


def validate_records(records: Records, first_row: int, key_column: str, key_slot: int, timezone: str) -> Chunk:
    key_is_id = key_slot == 0
    n = len(records.line)
    source_row = np.arange(first_row, first_row + n, dtype=np.int64)
    structural_ok = np.ones(n, dtype=bool)
    structural_ok[list(records.problem)] = False
    good_idx = np.flatnonzero(structural_ok)
    m = len(good_idx)

    tid, ts, amt = records.fields[0], records.fields[1], records.fields[2]
    key = tid if key_is_id else records.fields[key_slot]

    tid_missing = np.fromiter(map(len, tid), dtype=np.int64, count=m) == 0
    key_missing = tid_missing if key_is_id else np.fromiter(map(len, key), dtype=np.int64, count=m) == 0
    event_ms, ts_reasons = parse_event_times(pd.Series(ts, dtype=object), timezone)
    ts_bad = ts_reasons.notna().to_numpy()
    amount_units, amount_reasons = _parse_amounts(amt)

    bad = tid_missing | key_missing | ts_bad
    bad[list(amount_reasons)] = True

    # Rejected rows: structural problems plus field-level problems, by source_row.
    reasons = dict(records.problem)
    for j in np.flatnonzero(bad).tolist():
        parts = []
        if tid_missing[j]:
            parts.append("missing transaction_id")
        if key_missing[j] and not key_is_id:
            parts.append(f"missing key value (column '{key_column}')")
        if ts_bad[j]:
            parts.append(ts_reasons.iat[j] if ts[j] else "missing timestamp")
        if j in amount_reasons:
            parts.append(amount_reasons[j])
        reasons[int(good_idx[j])] = "; ".join(parts)

    if reasons:
        rej_idx = np.array(sorted(reasons), dtype=np.int64)
        rejected = pd.DataFrame(
            {
                "source_row": source_row[rej_idx],
                "line": records.line[rej_idx],
                "raw": np.array([records.raw(i) for i in rej_idx.tolist()], dtype=object),
                "reason": np.array([reasons[i] for i in rej_idx.tolist()], dtype=object),
            }
        )
    else:
        rejected = _empty_rejected()

    keep = ~bad
    all_kept = bool(keep.all())
    rows = good_idx if all_kept else good_idx[keep]

    def column(values: list[str]) -> np.ndarray:
        arr = np.array(values, dtype=object) if values else np.zeros(0, dtype=object)
        return arr if all_kept else arr[keep]

    tid_col = column(tid)
    valid = pd.DataFrame(
        {
            "source_row": source_row[rows],
            "line": records.line[rows],
            "transaction_id": tid_col,
            "key": tid_col if key_is_id else column(key),
            "event_time_ms": event_ms if all_kept else event_ms[keep],
            "amount_units": amount_units if all_kept else amount_units[keep],
        }
    )
    return Chunk(valid=valid, rejected=rejected)


# --------------------------------------------------------------------------
# Public entry point
# --------------------------------------------------------------------------


def read_transactions(
    path: str | os.PathLike[str],
    *,
    key_column: str = "transaction_id",
    timezone: str = "UTC",
    chunk_rows: int = 200_000,
) -> Iterator[Chunk]:
    """Stream *path* as validated :class:`Chunk` objects (see the module docstring).

    Arguments are checked immediately (``ValueError``); everything about the
    file itself is checked lazily, header problems on the first ``next()``.
    """
    validate_timezone(timezone)
    if not isinstance(chunk_rows, int) or isinstance(chunk_rows, bool) or chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    if not isinstance(key_column, str) or not key_column.strip():
        raise ValueError(f"key_column must be a non-empty column name, got {key_column!r}")
    return _read(os.fspath(path), key_column.strip(), timezone, chunk_rows)


def record_texts(path: str | os.PathLike[str], spans: list[tuple[int, int | None]]) -> list[str]:
    """The raw text of records already read, given as (line, line of the next record or None at the
    end of the file): exactly ``Chunk.rejected["raw"]`` for them (inner line endings kept, blank lines
    after the record and its final line ending dropped). One pass over the file, stopped after the last."""
    wanted = sorted(set(spans), key=lambda span: span[0])
    texts: dict[tuple[int, int | None], str] = {}
    if not wanted:
        return []
    handle, _ = _open(os.fspath(path))
    with handle:
        lines = handle.gzip if isinstance(handle, _GzipHandle) else handle  # both iterate over b'...\n' lines
        index, collected = 0, []
        for number, data in enumerate(lines, start=1):
            first, following = wanted[index]
            if number < first:
                continue
            collected.append(data)
            if following is not None and number < following - 1:
                continue
            while collected and collected[-1] in (b"\n", b"\r\n"):
                collected.pop()
            texts[wanted[index]] = _strip_newline(b"".join(collected).decode("utf-8"))
            index, collected = index + 1, []
            if index == len(wanted):
                break
        if index < len(wanted):  # the last record runs to the end of the file
            while collected and collected[-1] in (b"\n", b"\r\n"):
                collected.pop()
            texts[wanted[index]] = _strip_newline(b"".join(collected).decode("utf-8"))
    return [texts[span] for span in spans]


def _open(path: str) -> tuple[object, bool]:
    """Open *path* for binary reading: (handle, compressed). gzip is detected by its magic bytes."""
    try:
        if os.path.isdir(path):
            raise InputFileError(f"input file '{path}' is a directory, not a CSV file")
        handle = open(path, "rb")
    except FileNotFoundError:
        raise InputFileError(f"input file '{path}' does not exist") from None
    except PermissionError:
        raise InputFileError(f"input file '{path}' cannot be read: permission denied") from None
    except IsADirectoryError:  # pragma: no cover - caught by isdir above
        raise InputFileError(f"input file '{path}' is a directory, not a CSV file") from None
    except OSError as exc:
        raise InputFileError(f"input file '{path}' cannot be opened: {exc.strerror or exc}") from None
    try:
        magic = handle.peek(len(_GZIP_MAGIC))[: len(_GZIP_MAGIC)]
    except OSError as exc:  # e.g. a FIFO that errors, an I/O error
        handle.close()
        raise InputFileError(f"input file '{path}' cannot be read: {exc.strerror or exc}") from None
    if magic == _GZIP_MAGIC:
        return _GzipHandle(handle), True
    return handle, False


class _GzipHandle:
    """Streaming gzip reader that also closes the underlying file."""

    def __init__(self, raw) -> None:
        self._raw = raw
        self.gzip = gzip.GzipFile(fileobj=raw, mode="rb")

    def read(self, size: int) -> bytes:
        return self.gzip.read(size)

    def close(self) -> None:
        try:
            self.gzip.close()
        finally:
            self._raw.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def _reject_other_delimiter(path: str, header: list[str], line: int, wanted: list[str]) -> None:
    """Raise a clear error when the header is evidently delimited by something other than ','."""
    text = ",".join(header)
    for delimiter, name in _OTHER_DELIMITERS.items():
        if delimiter not in text:
            continue
        names = [h.strip().lower() for part in text.split(delimiter) for h in part.split(",")]
        if len(header) == 1 or all(w in names for w in wanted):
            raise InputFileError(
                f"input file '{path}' looks {name}-delimited ({delimiter!r} separates the header on "
                f"line {line}), but only comma-delimited CSV is supported: re-export it with ',' as "
                f"the delimiter and '.' as the decimal point"
            )


def resolve_header(path: str, header: list[str], line: int, key_column: str) -> tuple[list[int], int]:
    """Header positions of the required columns (+ key column) and the key's slot."""
    names = [h.strip().lower() for h in header]
    wanted = list(REQUIRED_COLUMNS)
    key_name = key_column.lower()
    if key_name not in wanted:
        wanted.append(key_name)
    found = ", ".join(repr(h.strip()) for h in header)
    missing = [w for w in wanted if w not in names]
    if missing:
        _reject_other_delimiter(path, header, line, wanted)
        what = "required column" if len(missing) == 1 else "required columns"
        listed = ", ".join(repr(w) for w in missing)
        if missing == [key_name] and key_name not in REQUIRED_COLUMNS:
            what, listed = "key column", repr(key_column)
        raise InputFileError(
            f"input file '{path}' is missing {what} {listed} in its header on line {line} (found columns: {found})"
        )
    duplicated = [w for w in wanted if names.count(w) > 1]
    if duplicated:
        listed = ", ".join(repr(w) for w in duplicated)
        raise InputFileError(
            f"input file '{path}' names column {listed} more than once in its header on line "
            f"{line} (found columns: {found})"
        )
    return [names.index(w) for w in wanted], wanted.index(key_name)


def _read(path: str, key_column: str, timezone: str, chunk_rows: int) -> Iterator[Chunk]:
    handle, compressed = _open(path)
    with handle:
        source = _Source(path, handle, chunk_rows, compressed)
        header = source.read_header()
        if header is None:
            if source.bytes_read == 0:
                problem = "is empty (0 bytes after gzip decompression)" if compressed else "is empty (0 bytes)"
            else:
                problem = "has no header line (it contains only blank lines)"
            raise InputFileError(
                f"input file '{path}' {problem}; expected a header line naming the columns "
                f"{', '.join(REQUIRED_COLUMNS)}"
            )
        fields, line = header
        source.width = len(fields)
        source.wanted, source.key_slot = resolve_header(path, fields, line, key_column)

        next_row = 1
        produced = False
        done = False
        while not done:
            parts, count = [], 0
            while count < chunk_rows:
                source.chunk_rows = min(_PARSE_ROWS, chunk_rows - count)  # a chunk is made of such parts
                records = source.next_records()
                if records is None:
                    done = True
                    break
                parts.append(validate_records(records, next_row, key_column, source.key_slot, timezone))
                next_row += len(records.line)
                count += len(records.line)
            if parts:
                produced = True
                yield _concat(parts)
        if not produced:
            yield Chunk(valid=_empty_valid(), rejected=_empty_rejected())


def _concat(parts: list[Chunk]) -> Chunk:
    if len(parts) == 1:
        return parts[0]
    return Chunk(
        valid=pd.concat([p.valid for p in parts], ignore_index=True),
        rejected=pd.concat([p.rejected for p in parts], ignore_index=True),
    )
