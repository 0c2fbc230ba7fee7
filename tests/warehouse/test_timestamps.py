"""Unit tests for warehouse.timestamps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from warehouse.timestamps import parse_event_times, validate_timezone

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MS = timedelta(milliseconds=1)


def parse(values, tz="UTC"):
    ms, reasons = parse_event_times(pd.Series(values, dtype=object), tz)
    return ms, list(reasons)


def ref_ms(aware: datetime) -> int:
    """Reference epoch milliseconds (floored) using datetime arithmetic."""
    return (aware - EPOCH) // ONE_MS


# ---------------------------------------------------------------- valid input


def test_lab_example_utc():
    ms, reasons = parse(["2024-05-11 10:00:00", "2024-05-11 10:00:03", "2024-05-11 10:00:06"])
    assert reasons == [None, None, None]
    assert ms.dtype == np.int64
    assert ms.tolist() == [1715421600000, 1715421603000, 1715421606000]


def test_space_and_t_separators_are_equivalent():
    ms, reasons = parse(["2024-05-11 10:00:00", "2024-05-11T10:00:00"])
    assert reasons == [None, None]
    assert ms[0] == ms[1] == ref_ms(datetime(2024, 5, 11, 10, tzinfo=UTC))


@pytest.mark.parametrize(
    "text, offset",
    [
        ("2024-05-11T10:00:00Z", timedelta(0)),
        ("2024-05-11T10:00:00+09:00", timedelta(hours=9)),
        ("2024-05-11 10:00:00-01:30", timedelta(hours=-1, minutes=-30)),
        ("2024-05-11T10:00:00+0545", timedelta(hours=5, minutes=45)),
        ("2024-05-11T10:00:00-0000", timedelta(0)),
        ("2024-05-11T10:00:00.250+18:00", timedelta(hours=18)),
    ],
)
def test_explicit_offsets(text, offset):
    ms, reasons = parse([text])
    assert reasons == [None]
    naive = datetime.fromisoformat(text[:19])
    frac_ms = int(text[20:23]) if text[19:20] == "." else 0
    expected = ref_ms(naive.replace(tzinfo=timezone(offset))) + frac_ms
    assert ms[0] == expected


def test_explicit_offset_wins_over_timezone_argument():
    ms_seoul, r1 = parse(["2024-05-11T10:00:00Z", "2024-05-11T19:00:00+09:00"], "Asia/Seoul")
    ms_utc, r2 = parse(["2024-05-11 10:00:00"], "UTC")
    assert r1 == [None, None] and r2 == [None]
    assert ms_seoul.tolist() == [ms_utc[0], ms_utc[0]]


@pytest.mark.parametrize(
    "text, expected_fraction_ms",
    [
        ("2024-05-11 10:00:00.1", 100),
        ("2024-05-11 10:00:00.12", 120),
        ("2024-05-11 10:00:00.123", 123),
        ("2024-05-11 10:00:00.9999", 999),
        ("2024-05-11 10:00:00.123456789", 123),
        ("2024-05-11 10:00:00.000999999", 0),
    ],
)
def test_fractions_are_floored_to_milliseconds(text, expected_fraction_ms):
    ms, reasons = parse([text, text[:19]])
    assert reasons == [None, None]
    assert ms[0] - ms[1] == expected_fraction_ms


def test_fraction_floor_before_1970_rounds_towards_the_past():
    ms, reasons = parse(
        [
            "1969-12-31 23:59:59.9995",
            "1969-12-31T23:59:59.001Z",
            "1969-12-31 23:59:59",
            "1970-01-01 00:00:00.0009",
        ]
    )
    assert reasons == [None] * 4
    whole_second = ref_ms(datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC))
    assert ms.tolist() == [whole_second + 999, whole_second + 1, whole_second, 0]
    assert ms[0] == -1  # the true instant is -0.5 ms; floor gives -1, not 0


def test_year_range_extremes():
    ms, reasons = parse(["0001-01-01 00:00:00", "9999-12-31 23:59:59.999", "1600-02-29 12:00:00"])
    assert reasons == [None, None, None]
    assert ms[0] == ref_ms(datetime(1, 1, 1, tzinfo=UTC))
    assert ms[1] == ref_ms(datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC))
    assert ms[2] == ref_ms(datetime(1600, 2, 29, 12, tzinfo=UTC))
    assert ms[0] < 0 < ms[1]


def test_leap_days():
    ms, reasons = parse(["2024-02-29 00:00:00", "2000-02-29 00:00:00", "1900-02-29 00:00:00", "2023-02-29 00:00:00"])
    assert reasons[:2] == [None, None]
    assert "day 29 does not exist in 1900-02" in reasons[2]
    assert "day 29 does not exist in 2023-02" in reasons[3]
    assert ms[0] == ref_ms(datetime(2024, 2, 29, tzinfo=UTC))


_SUFFIXES = st.sampled_from(["", "Z", "+00:00", "+05:30", "-08:00", "+1400", "-0330", "+18:00"])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)),
            st.integers(min_value=0, max_value=9),
            st.sampled_from([" ", "T"]),
            _SUFFIXES,
        ),
        min_size=1,
        max_size=40,
    )
)
def test_matches_datetime_reference(rows):
    texts, expected = [], []
    for dt, digits, sep, suffix in rows:
        fraction = f"{dt.microsecond:06d}000"[:digits]
        text = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d}{sep}{dt:%H:%M:%S}"  # %Y is not padded
        text += ("." + fraction if digits else "") + suffix
        texts.append(text)
        if suffix in ("", "Z"):
            offset = timedelta(0)
        else:
            sign = -1 if suffix[0] == "-" else 1
            hh, mm = int(suffix[1:3]), int(suffix[-2:])
            offset = sign * timedelta(hours=hh, minutes=mm)
        whole = dt.replace(microsecond=0, tzinfo=timezone(offset))
        frac_ms = int(fraction.ljust(3, "0")[:3]) if digits else 0
        expected.append(ref_ms(whole) + frac_ms)
    ms, reasons = parse(texts)
    assert reasons == [None] * len(texts)
    assert ms.tolist() == expected


@settings(max_examples=200, deadline=None)
@given(
    st.integers(min_value=1, max_value=9),
    st.lists(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30)), min_size=1, max_size=40),
)
def test_same_fraction_width_on_every_row_matches_datetime_reference(digits, datetimes):
    # Every row '.' + `digits` digits and no offset: the shortcut a file written by one program takes.
    texts = [f"{dt.year:04d}-{dt:%m-%d %H:%M:%S}." + f"{dt.microsecond:06d}000"[:digits] for dt in datetimes]
    expected = [
        ref_ms(dt.replace(microsecond=0, tzinfo=UTC)) + int(f"{dt.microsecond:06d}000"[:digits].ljust(3, "0")[:3])
        for dt in datetimes
    ]
    ms, reasons = parse(texts)
    assert reasons == [None] * len(texts)
    assert ms.tolist() == expected


def test_one_odd_fraction_among_uniform_ones_is_still_judged():
    ms, reasons = parse(["2024-05-11 10:00:00.123", "2024-05-11 10:00:00.12x", "2024-05-11 10:00:00.456"])
    assert reasons[0] is None and reasons[2] is None and reasons[1] is not None
    assert ms[0] % 1000 == 123 and ms[2] % 1000 == 456


# ---------------------------------------------------------------- invalid input


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("2024-13-01 00:00:00", "month 13 is outside 01-12"),
        ("2024-00-10 00:00:00", "month 00 is outside 01-12"),
        ("2024-02-30 00:00:00", "day 30 does not exist in 2024-02"),
        ("2024-04-31 00:00:00", "day 31 does not exist in 2024-04"),
        ("2024-01-00 00:00:00", "day 00 does not exist in 2024-01"),
        ("2024-01-01 24:00:00", "hour 24 is outside 00-23"),
        ("2024-01-01 00:60:00", "minute 60 is outside 00-59"),
        ("2024-01-01 00:00:60", "second 60 is outside 00-59"),
        ("0000-01-01 00:00:00", "year 0000 is outside 0001-9999"),
        ("2024-01-01 00:00:00+18:01", "UTC offset must be within -18:00..+18:00"),
        ("2024-01-01 00:00:00+05:60", "UTC offset must be within -18:00..+18:00"),
    ],
)
def test_invalid_calendar_values(text, fragment):
    ms, reasons = parse([text, "2024-05-11 10:00:00"])
    assert reasons[0] == f"invalid timestamp '{text}': " + reasons[0].split(": ", 1)[1]
    assert fragment in reasons[0]
    assert ms[0] == 0
    assert reasons[1] is None and ms[1] != 0


@pytest.mark.parametrize(
    "text",
    [
        "2024/05/11 10:00",
        "2024-05-11",
        "2024-5-11 10:00:00",
        "2024-05-11 10:00",
        "2024-05-11 1:00:00",
        "2024-05-11t10:00:00",
        "2024-05-11  10:00:00",
        "2024-05-11 10:00:00.",
        "2024-05-11 10:00:00.1234567890",
        "2024-05-11 10:00:00z",
        "2024-05-11 10:00:00 Z",
        "2024-05-11 10:00:00+5",
        "2024-05-11 10:00:00+05:0",
        "2024-05-11 10:00:00+05:00:00",
        "2024-05-11 10:00:00 +05:00",
        "2024-05-11 10:00:00Zx",
        "2024-05-11 10:00:00.5.5",
        "20240511T100000",
        "+2024-05-11 10:00:00",
        "１２３４-05-11 10:00:00",
        "2024-05-11 10:00:0\u0661",
        "2024-05-11 10:00:00\x00",
        "not a timestamp",
        "1715421600",
    ],
)
def test_unparseable_values(text):
    ms, reasons = parse([text])
    assert ms[0] == 0
    assert reasons[0] == (
        f"unparseable timestamp {text!r}: expected YYYY-MM-DD HH:MM:SS[.fff] or ISO-8601 "
        "YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]"
    )


def test_empty_and_very_long_values():
    long_text = "2024-05-11 10:00:00" + "0" * 500
    ms, reasons = parse(["", long_text])
    assert ms.tolist() == [0, 0]
    assert reasons[0].startswith("missing timestamp")
    assert reasons[1].startswith("unparseable timestamp '2024-05-11 10:00:00000")
    assert len(reasons[1]) < 200  # the offending value is shortened in the reason


def test_non_string_values_are_rejected_not_crashing():
    ms, reasons = parse(["2024-05-11 10:00:00", None, 1715421600])
    assert reasons[0] is None
    assert "expected text, got NoneType" in reasons[1]
    assert "expected text, got int" in reasons[2]
    assert ms.tolist()[1:] == [0, 0]


# ---------------------------------------------------------------- time zones


def test_naive_seoul_time_converts_to_utc():
    ms, reasons = parse(["2024-05-11 19:00:00", "2024-05-12 02:00:06.5"], "Asia/Seoul")
    assert reasons == [None, None]
    ms_utc, _ = parse(["2024-05-11 10:00:00", "2024-05-11 17:00:06.5"])
    assert ms.tolist() == ms_utc.tolist()


def test_dst_gap_is_rejected():
    ms, reasons = parse(
        ["2024-03-10 02:30:00", "2024-03-10 02:00:00", "2024-03-10 01:59:59", "2024-03-10 03:00:00"],
        "America/New_York",
    )
    assert reasons[0] == "nonexistent local time 2024-03-10 02:30:00 in America/New_York (DST gap)"
    assert reasons[1] == "nonexistent local time 2024-03-10 02:00:00 in America/New_York (DST gap)"
    assert reasons[2:] == [None, None]
    assert ms[:2].tolist() == [0, 0]
    est, edt = timezone(timedelta(hours=-5)), timezone(timedelta(hours=-4))
    assert ms[2] == ref_ms(datetime(2024, 3, 10, 1, 59, 59, tzinfo=est))
    assert ms[3] == ref_ms(datetime(2024, 3, 10, 3, 0, 0, tzinfo=edt))
    assert ms[3] - ms[2] == 1000  # the gap hour does not exist


def test_dst_overlap_is_rejected():
    ms, reasons = parse(
        ["2024-11-03 01:30:00", "2024-11-03T01:00:00.5", "2024-11-03 00:59:59", "2024-11-03 02:00:00"],
        "America/New_York",
    )
    assert reasons[0] == "ambiguous local time 2024-11-03 01:30:00 in America/New_York (DST overlap)"
    assert reasons[1] == "ambiguous local time 2024-11-03 01:00:00 in America/New_York (DST overlap)"
    assert reasons[2:] == [None, None]
    assert ms[:2].tolist() == [0, 0]
    est, edt = timezone(timedelta(hours=-5)), timezone(timedelta(hours=-4))
    assert ms[2] == ref_ms(datetime(2024, 11, 3, 0, 59, 59, tzinfo=edt))
    assert ms[3] == ref_ms(datetime(2024, 11, 3, 2, 0, 0, tzinfo=est))


def test_explicit_offset_inside_dst_gap_is_accepted():
    ms, reasons = parse(["2024-03-10T02:30:00-05:00"], "America/New_York")
    assert reasons == [None]
    assert ms[0] == ref_ms(datetime(2024, 3, 10, 7, 30, tzinfo=UTC))


def _round_trip_reference(wall: datetime, zone: ZoneInfo):
    """Independent oracle: the set of UTC instants whose local time is `wall`."""
    found = set()
    for fold in (0, 1):
        instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
        if instant.astimezone(zone).replace(tzinfo=None) == wall:
            found.add(ref_ms(instant))
    return found


@pytest.mark.parametrize(
    "zone_name, day",
    [
        ("America/New_York", datetime(2024, 3, 10)),
        ("America/New_York", datetime(2024, 11, 3)),
        ("Europe/Berlin", datetime(2024, 10, 27)),
        ("Australia/Lord_Howe", datetime(2024, 4, 7)),  # 30-minute DST shift
        ("Australia/Lord_Howe", datetime(2024, 10, 6)),
        ("America/Sao_Paulo", datetime(2018, 11, 4)),  # transition at midnight
        ("America/St_Johns", datetime(2024, 11, 3)),  # -03:30 / -02:30
        ("Europe/Amsterdam", datetime(1937, 7, 1)),  # +00:19:32 -> +00:20
        ("America/New_York", datetime(2200, 3, 9)),  # beyond 2037: POSIX rule
    ],
)
def test_zone_conversion_matches_round_trip_oracle_every_minute(zone_name, day):
    zone = ZoneInfo(zone_name)
    walls = [day + timedelta(minutes=m) for m in range(-120, 26 * 60)]
    ms, reasons = parse([w.isoformat(sep=" ") for w in walls], zone_name)
    gaps = overlaps = 0
    for wall, value, reason in zip(walls, ms.tolist(), reasons):
        expected = _round_trip_reference(wall, zone)
        if len(expected) == 1:
            assert reason is None and value == expected.pop(), wall
        elif not expected:
            assert reason is not None and reason.startswith("nonexistent local time"), wall
            gaps += 1
        else:
            assert reason is not None and reason.startswith("ambiguous local time"), wall
            overlaps += 1
    assert gaps + overlaps > 0  # each case really exercises a transition


@settings(max_examples=100, deadline=None)
@given(
    st.sampled_from(
        ["Europe/London", "America/Los_Angeles", "Australia/Sydney", "Asia/Tehran", "Pacific/Chatham", "America/Havana"]
    ),
    st.lists(st.datetimes(min_value=datetime(1900, 1, 1), max_value=datetime(2100, 1, 1)), min_size=1, max_size=30),
)
def test_zone_conversion_matches_oracle_random(zone_name, walls):
    walls = [w.replace(microsecond=0) for w in walls]
    zone = ZoneInfo(zone_name)
    ms, reasons = parse([w.strftime("%Y-%m-%d %H:%M:%S") for w in walls], zone_name)
    for wall, value, reason in zip(walls, ms.tolist(), reasons):
        expected = _round_trip_reference(wall, zone)
        if len(expected) == 1:
            assert reason is None and value == expected.pop()
        else:
            assert reason is not None and value == 0


def test_many_rows_in_transition_hour():
    values = [f"2024-03-10 02:{m:02d}:{s:02d}" for m in range(60) for s in range(0, 60, 7)]
    values += [f"2024-03-10 01:{m:02d}:00" for m in range(60)]
    ms, reasons = parse(values, "America/New_York")
    n_gap = 60 * len(range(0, 60, 7))
    assert all(r is not None and "DST gap" in r for r in reasons[:n_gap])
    assert reasons[n_gap:] == [None] * 60
    assert (ms[:n_gap] == 0).all()
    assert (np.diff(ms[n_gap:]) == 60_000).all()


# ---------------------------------------------------------------- API details


def test_unknown_timezone_raises_value_error():
    with pytest.raises(ValueError, match="Mars/Olympus_Mons"):
        parse(["2024-05-11 10:00:00"], "Mars/Olympus_Mons")
    with pytest.raises(ValueError, match="time zone"):
        validate_timezone("")
    with pytest.raises(ValueError, match="time zone"):
        validate_timezone("../../etc/passwd")
    assert validate_timezone("Europe/Berlin") is None
    assert validate_timezone("UTC") is None


def test_empty_input_and_index_alignment():
    ms, reasons = parse_event_times(pd.Series([], dtype=object), "UTC")
    assert ms.dtype == np.int64 and len(ms) == 0 and len(reasons) == 0

    values = pd.Series(["bad", "2024-05-11 10:00:00"], index=[10, 20], dtype=object)
    ms, reasons = parse_event_times(values, "Europe/Berlin")
    assert list(reasons.index) == [10, 20]
    assert reasons.dtype == object
    assert reasons[20] is None and reasons[10].startswith("unparseable timestamp 'bad'")
    assert ms[1] == ref_ms(datetime(2024, 5, 11, 8, tzinfo=UTC))
