"""Vectorized normalization of event timestamps to UTC epoch milliseconds.

Accepted text, already trimmed, with a space or ``T`` between date and time (docs/data-contract.md)::

    YYYY-MM-DD HH:MM:SS[.f{1,9}][Z|+HH:MM|-HH:MM|+HHMM|-HHMM]

* Years 0001-9999, converted with integer "days from civil" arithmetic, never ``datetime64[ns]`` (no
  1677-2262 limit). Calendar values are checked: real dates (leap years included), hour 00-23, minute
  and second 00-59 (leap seconds are rejected).
* Fractions are **floored** to the millisecond, on the instant: ``.9999`` is 999 ms, and
  ``1969-12-31 23:59:59.9995Z`` is -1 ms, not 0.
* An explicit offset wins and ``timezone`` is ignored; offsets beyond ±18:00 (java.time's and Flink's
  range) are rejected. A naive value is wall-clock time in ``timezone`` (IANA); one inside a DST gap or
  overlap is **rejected**, because guessing would silently shift events by the transition.
* Invalid values get epoch 0 in the millisecond array and a one-line reason quoting the (shortened) value.

UTC offsets come from :mod:`zoneinfo` once per distinct local wall-clock hour; only the rows of an hour
that contains a transition are resolved one distinct second at a time.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd

__all__ = ["parse_event_times", "validate_timezone", "EXPECTED_FORMAT"]

EXPECTED_FORMAT = "expected YYYY-MM-DD HH:MM:SS[.fff] or ISO-8601 YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]"

# Longest acceptable value: 'YYYY-MM-DDTHH:MM:SS.fffffffff+HH:MM'.
_MAX_LEN = 35
_BASE_LEN = 19
_MAX_OFFSET_MINUTES = 18 * 60

# Names that denote plain UTC: no zone lookups needed at all.
UTC_NAMES = frozenset(
    {
        "UTC",
        "Etc/UTC",
        "Etc/UCT",
        "UCT",
        "Etc/Universal",
        "Universal",
        "Etc/Zulu",
        "Zulu",
        "GMT",
        "Etc/GMT",
        "Etc/GMT0",
        "Etc/GMT+0",
        "Etc/GMT-0",
        "GMT0",
        "GMT+0",
        "GMT-0",
        "Etc/Greenwich",
        "Greenwich",
    }
)

# Error codes (0 = valid).
_OK, _UNPARSEABLE, _EMPTY, _NOT_STR = 0, 1, 2, 3
_BAD_YEAR, _BAD_MONTH, _BAD_DAY, _BAD_HOUR, _BAD_MINUTE, _BAD_SECOND = 4, 5, 6, 7, 8, 9
_BAD_OFFSET, _GAP, _OVERLAP = 10, 11, 12

_DIGIT_POS = np.array([0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18])
_DAYS_IN_MONTH = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=np.int64)
_FRAC_SCALE = 10 ** np.arange(8, -1, -1, dtype=np.int64)  # nanoseconds per fraction digit
_EPOCH = datetime(1970, 1, 1)
_ONE_SECOND = timedelta(seconds=1)
_HOUR_END = timedelta(seconds=3599)

_ORD_0, _ORD_DASH, _ORD_COLON, _ORD_SPACE, _ORD_T = ord("0"), ord("-"), ord(":"), ord(" "), ord("T")
_ORD_DOT, _ORD_Z, _ORD_PLUS = ord("."), ord("Z"), ord("+")


def validate_timezone(name: str) -> None:
    """Raise ``ValueError`` unless *name* is a known IANA time-zone name."""
    _zone(name)


def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name.strip():
        raise ValueError(
            f"invalid time zone {name!r}: expected an IANA time-zone name such as 'UTC' or 'Europe/Berlin'"
        )
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(
            f"unknown time zone {name!r}: expected an IANA time-zone name such as 'UTC' or 'Europe/Berlin'"
        ) from exc


def _show(value: object, limit: int = 60) -> str:
    """Quote a value for a reason message, shortening very long values."""
    text = value if isinstance(value, str) else str(value)
    if len(text) > limit:
        text = text[: limit - 3] + "..."
    return repr(text)


def days_from_civil(year: np.ndarray, month: np.ndarray, day: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 for proleptic-Gregorian dates (int64 arrays, year >= 0)."""
    y = year - (month <= 2)
    era = y // 400
    yoe = y - era * 400
    mp = (month + 9) % 12
    doy = (153 * mp + 2) // 5 + day - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def parse_event_times(values: pd.Series, timezone: str) -> tuple[np.ndarray, pd.Series]:
    """Parse trimmed timestamp strings into UTC epoch milliseconds.

    Returns ``(epoch_ms, reasons)``: an int64 array (0 where invalid) and an
    object Series aligned with *values* holding ``None`` for valid rows and a
    short human-readable reason otherwise. Raises ``ValueError`` for an
    unknown *timezone*. See the module docstring for the accepted grammar,
    flooring of fractions and the DST-gap/overlap rule.
    """
    zone = _zone(timezone)
    index = values.index
    original = values.to_numpy(dtype=object)
    obj = original
    n = len(obj)
    if n == 0:
        return np.zeros(0, dtype=np.int64), pd.Series([], index=index, dtype=object)

    code = np.zeros(n, dtype=np.int8)
    try:
        lens = np.fromiter(map(len, obj), dtype=np.int64, count=n)
    except TypeError:
        not_str = np.fromiter((not isinstance(v, str) for v in obj), dtype=bool, count=n)
        obj = obj.copy()
        obj[not_str] = ""
        lens = np.fromiter(map(len, obj), dtype=np.int64, count=n)
        code[not_str] = _NOT_STR

    bad_len = (lens < _BASE_LEN) | (lens > _MAX_LEN)
    if bad_len.any():
        code[bad_len & (code == _OK)] = _UNPARSEABLE
        code[(lens == 0) & (code == _UNPARSEABLE)] = _EMPTY
        too_long = lens > _MAX_LEN
        if too_long.any():
            obj = obj.copy()
            obj[too_long] = ""
    width = int(max(_BASE_LEN, min(_MAX_LEN, int(lens.max()))))
    chars = obj.astype(f"<U{width}").view(np.uint32).reshape(n, width)

    # ---- fixed part: YYYY-MM-DD?HH:MM:SS -------------------------------
    digits = chars[:, :_BASE_LEN] - np.uint32(_ORD_0)  # wraps for non-digits
    ok = (digits[:, _DIGIT_POS] < 10).all(axis=1)
    ok &= chars[:, 4] == _ORD_DASH
    ok &= chars[:, 7] == _ORD_DASH
    ok &= (chars[:, 10] == _ORD_SPACE) | (chars[:, 10] == _ORD_T)
    ok &= chars[:, 13] == _ORD_COLON
    ok &= chars[:, 16] == _ORD_COLON
    ok &= code == _OK

    d = digits.astype(np.int64)
    year = d[:, 0] * 1000 + d[:, 1] * 100 + d[:, 2] * 10 + d[:, 3]
    month = d[:, 5] * 10 + d[:, 6]
    day = d[:, 8] * 10 + d[:, 9]
    hour = d[:, 11] * 10 + d[:, 12]
    minute = d[:, 14] * 10 + d[:, 15]
    second = d[:, 17] * 10 + d[:, 18]
    del d, digits

    # ---- optional tail: fraction and offset ------------------------------
    frac_ms = np.zeros(n, dtype=np.int64)
    offset_min = np.zeros(n, dtype=np.int64)
    has_offset = np.zeros(n, dtype=bool)
    bad_offset = np.zeros(n, dtype=bool)
    tail_rows = np.flatnonzero(ok & (lens > _BASE_LEN))
    if tail_rows.size:
        tail_ok, t_frac, t_has_off, t_off, t_bad_off = _parse_tail(
            chars[tail_rows, _BASE_LEN:], lens[tail_rows] - _BASE_LEN
        )
        ok[tail_rows] = tail_ok
        frac_ms[tail_rows] = t_frac
        has_offset[tail_rows] = t_has_off
        offset_min[tail_rows] = t_off
        bad_offset[tail_rows] = t_bad_off
    code[~ok & (code == _OK)] = _UNPARSEABLE
    del chars

    # ---- calendar checks (first failing field wins) ----------------------
    leap = ((year % 4 == 0) & (year % 100 != 0)) | (year % 400 == 0)
    month_ok = (month >= 1) & (month <= 12)
    dim = _DAYS_IN_MONTH[np.where(month_ok, month, 0)] + (leap & (month == 2))
    for bad, err in (
        (year < 1, _BAD_YEAR),
        (~month_ok, _BAD_MONTH),
        ((day < 1) | (day > dim), _BAD_DAY),
        (hour > 23, _BAD_HOUR),
        (minute > 59, _BAD_MINUTE),
        (second > 59, _BAD_SECOND),
        (bad_offset | (np.abs(offset_min) > _MAX_OFFSET_MINUTES), _BAD_OFFSET),
    ):
        code[bad & (code == _OK)] = err

    valid = code == _OK
    parts = (year, month, day, hour, minute, second)
    if not valid.all():
        # Neutralize garbage components of invalid rows before any arithmetic.
        parts = tuple(np.where(valid, a, 1) for a in parts)
    y, mo, dd, hh, mi, ss = parts
    local_s = days_from_civil(y, mo, dd) * 86400 + hh * 3600 + mi * 60 + ss
    epoch_ms = local_s * 1000 + frac_ms

    # ---- explicit offsets and zone conversion ----------------------------
    epoch_ms -= offset_min * 60_000
    naive = valid & ~has_offset
    if timezone not in UTC_NAMES and naive.any():
        rows = np.flatnonzero(naive)
        shift_s, tz_code = _zone_offsets(local_s[rows], zone)
        epoch_ms[rows] -= shift_s * 1000
        code[rows] = tz_code

    invalid = code != _OK
    epoch_ms[invalid] = 0
    reasons = np.full(n, None, dtype=object)
    for i in np.flatnonzero(invalid):
        reasons[i] = _reason(
            int(code[i]),
            original[i],
            int(year[i]),
            int(month[i]),
            int(day[i]),
            int(hour[i]),
            int(minute[i]),
            int(second[i]),
            timezone,
        )
    return epoch_ms, pd.Series(reasons, index=index, dtype=object)


def _parse_tail(tail: np.ndarray, tail_len: np.ndarray):
    """Parse ``[.fffffffff][Z|±HH:MM|±HHMM]`` for rows whose text is longer than 19."""
    uniform = _uniform_fraction(tail, tail_len)
    if uniform is not None:
        return uniform
    m, width = tail.shape
    pad = max(0, 16 - width)
    if pad:
        tail = np.pad(tail, ((0, 0), (0, pad)))
    has_frac = tail[:, 0] == _ORD_DOT
    fdig = tail[:, 1:10] - np.uint32(_ORD_0)
    run_mask = np.cumprod(fdig < 10, axis=1).astype(bool) & has_frac[:, None]
    run = run_mask.sum(axis=1)
    frac_ns = (np.where(run_mask, fdig, 0).astype(np.int64) * _FRAC_SCALE).sum(axis=1)
    frac_ms = frac_ns // 1_000_000

    ok = ~has_frac | (run > 0)
    pos = np.where(has_frac, 1 + run, 0)
    rest = tail_len - pos
    cols = np.minimum(pos[:, None] + np.arange(6), tail.shape[1] - 1)
    off = np.take_along_axis(tail, cols, axis=1)
    odig = off - np.uint32(_ORD_0)
    sign_ok = (off[:, 0] == _ORD_PLUS) | (off[:, 0] == _ORD_DASH)
    colon_form = sign_ok & (odig[:, [1, 2, 4, 5]] < 10).all(axis=1) & (off[:, 3] == _ORD_COLON)
    compact_form = sign_ok & (odig[:, 1:5] < 10).all(axis=1)
    zulu = off[:, 0] == _ORD_Z

    odig = odig.astype(np.int64)
    oh = odig[:, 1] * 10 + odig[:, 2]
    om = np.where(rest == 6, odig[:, 4] * 10 + odig[:, 5], odig[:, 3] * 10 + odig[:, 4])
    numeric = ((rest == 6) & colon_form) | ((rest == 5) & compact_form)
    ok &= (rest == 0) | ((rest == 1) & zulu) | numeric
    # Offset minutes must be 00-59; the overall range is checked by the caller.
    bad_offset = ok & numeric & (om > 59)
    sign = np.where(off[:, 0] == _ORD_DASH, -1, 1)
    offset_min = np.where(numeric & ok, sign * (oh * 60 + om), 0)
    has_offset = ok & (rest > 0)
    return ok, np.where(ok, frac_ms, 0), has_offset, offset_min, bad_offset


def _uniform_fraction(tail: np.ndarray, tail_len: np.ndarray):
    """_parse_tail's result when every tail is ``.`` and the same number of digits, without an offset
    (what a file written by one program has: a third of the parse time at 1M rows otherwise); None
    when any tail differs. Floors to the millisecond like the general path."""
    width = int(tail_len[0])
    if not 2 <= width <= 10 or tail.shape[1] < width or (tail_len != width).any() or (tail[:, 0] != _ORD_DOT).any():
        return None
    digits = tail[:, 1:width] - np.uint32(_ORD_0)  # wraps for non-digits
    if (digits >= 10).any():
        return None
    kept = min(3, width - 1)  # digits below the millisecond are floored away
    frac_ms = np.zeros(len(tail), dtype=np.int64)
    for i in range(kept):
        frac_ms = frac_ms * 10 + digits[:, i]
    frac_ms *= 10 ** (3 - kept)
    none = np.zeros(len(tail), dtype=bool)
    return ~none, frac_ms, none, np.zeros(len(tail), dtype=np.int64), none


def _zone_offsets(local_s: np.ndarray, zone: ZoneInfo) -> tuple[np.ndarray, np.ndarray]:
    """UTC offsets (seconds) for local wall-clock seconds, plus gap/overlap codes.

    Offsets are looked up once per distinct wall-clock hour. An hour whose
    start and end (with both PEP 495 folds) share one offset has no
    transition; rows in other hours are resolved per distinct second.
    """
    hours, inverse = np.unique(local_s // 3600, return_inverse=True)
    inverse = inverse.reshape(-1)
    hour_off = np.zeros(len(hours), dtype=np.int64)
    hour_mixed = np.zeros(len(hours), dtype=bool)
    utcoffset = zone.utcoffset
    for i, h in enumerate(hours.tolist()):
        start = _EPOCH + timedelta(hours=h)
        end = start + _HOUR_END
        o = utcoffset(start)
        if o == utcoffset(start.replace(fold=1)) == utcoffset(end) == utcoffset(end.replace(fold=1)):
            hour_off[i] = o // _ONE_SECOND
        else:
            hour_mixed[i] = True

    shift = hour_off[inverse]
    codes = np.zeros(len(local_s), dtype=np.int8)
    mixed_rows = np.flatnonzero(hour_mixed[inverse])
    if mixed_rows.size:
        secs, inv2 = np.unique(local_s[mixed_rows], return_inverse=True)
        inv2 = inv2.reshape(-1)
        sec_off = np.zeros(len(secs), dtype=np.int64)
        sec_code = np.zeros(len(secs), dtype=np.int8)
        for j, s in enumerate(secs.tolist()):
            wall = _EPOCH + timedelta(seconds=s)
            o0, o1 = utcoffset(wall), utcoffset(wall.replace(fold=1))
            if o0 == o1:
                sec_off[j] = o0 // _ONE_SECOND
            else:
                # PEP 495: in a gap fold=0 uses the earlier (smaller) offset;
                # in an overlap fold=0 uses the earlier (larger) offset.
                sec_code[j] = _GAP if o0 < o1 else _OVERLAP
        shift[mixed_rows] = sec_off[inv2]
        codes[mixed_rows] = sec_code[inv2]
    return shift, codes


def _reason(code: int, value, year, month, day, hour, minute, second, timezone) -> str:
    shown = _show(value)
    if code == _EMPTY:
        return "missing timestamp (empty value)"
    if code == _NOT_STR:
        return f"unparseable timestamp {shown}: expected text, got {type(value).__name__}"
    if code == _UNPARSEABLE:
        return f"unparseable timestamp {shown}: {EXPECTED_FORMAT}"
    if code == _BAD_YEAR:
        return f"invalid timestamp {shown}: year {year:04d} is outside 0001-9999"
    if code == _BAD_MONTH:
        return f"invalid timestamp {shown}: month {month:02d} is outside 01-12"
    if code == _BAD_DAY:
        return f"invalid timestamp {shown}: day {day:02d} does not exist in {year:04d}-{month:02d}"
    if code == _BAD_HOUR:
        return f"invalid timestamp {shown}: hour {hour:02d} is outside 00-23"
    if code == _BAD_MINUTE:
        return f"invalid timestamp {shown}: minute {minute:02d} is outside 00-59"
    if code == _BAD_SECOND:
        return f"invalid timestamp {shown}: second {second:02d} is outside 00-59 (leap seconds are not supported)"
    if code == _BAD_OFFSET:
        return f"invalid timestamp {shown}: UTC offset must be within -18:00..+18:00 with minutes 00-59"
    wall = f"{year:04d}-{month:02d}-{day:02d} {hour:02d}:{minute:02d}:{second:02d}"
    if code == _GAP:
        return f"nonexistent local time {wall} in {timezone} (DST gap)"
    if code == _OVERLAP:
        return f"ambiguous local time {wall} in {timezone} (DST overlap)"
    raise AssertionError(f"unknown timestamp error code {code}")  # pragma: no cover
