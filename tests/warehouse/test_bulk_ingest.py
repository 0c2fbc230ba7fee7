"""warehouse.bulk_ingest against the exact parser (warehouse.ingest): the same tables, row for row, on
generated files (clean, with every kind of bad row, with every reason to fall back) and on the corpus."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.corpus.corpus import case_path, load_cases
from warehouse import bulk_ingest, schema
from warehouse.ingest import InputFileError

SOURCE = "source.csv"
TABLES = ("transactions", "rejected_rows")
HEADER = "transaction_id,timestamp,amount"
ZONES = ["UTC", "Etc/UTC", "Europe/Berlin", "America/New_York"]


def load(path: Path, fast: bool, **kwargs) -> tuple[bulk_ingest.Loaded, dict[str, list[tuple]]]:
    """Load *path* into a fresh in-memory warehouse; the loader's result and both tables by source_row."""
    con = duckdb.connect()
    try:
        for table in TABLES:
            con.execute(f"CREATE TABLE {table} ({schema.columns_sql(table)})")
        loaded = bulk_ingest.load_file(con, path, SOURCE, TABLES, fast=fast, **kwargs)
        tables = {
            "transactions": con.execute(
                "SELECT source_file, source_row, line, transaction_id, key, epoch_ms(event_time), event_time_ms, "
                "amount::VARCHAR FROM transactions ORDER BY source_row"
            ).fetchall(),
            "rejected_rows": con.execute("SELECT * FROM rejected_rows ORDER BY source_row").fetchall(),
        }
    finally:
        con.close()
    return loaded, tables


def same_as_exact(path: Path, **kwargs) -> bulk_ingest.Loaded | None:
    """Load *path* both ways and assert equal tables, records and quarantine arrays (or the same fatal error:
    then None); the fast load's result."""
    try:
        exact, exact_tables = load(path, False, **kwargs)
    except InputFileError as error:
        with pytest.raises(InputFileError) as fast_error:
            load(path, True, **kwargs)
        assert str(fast_error.value) == str(error)
        return None
    fast, fast_tables = load(path, True, **kwargs)
    assert not exact.fast
    assert "failed on a file the scan judged simple" not in (fast.fallback_reason or ""), fast.fallback_reason
    assert fast_tables == exact_tables
    assert fast.records == exact.records == len(exact_tables["transactions"]) + len(exact_tables["rejected_rows"])
    assert fast.event_time_ms.tolist() == exact.event_time_ms.tolist()
    assert fast.source_rows.tolist() == exact.source_rows.tolist()
    return fast


def write(tmp_path: Path, text: str | bytes, name: str = "input.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


# ---------------------------------------------------------------- generated fields

# Characters a simple file may hold in a field (no delimiter, quote, line ending or NUL), weighted
# towards the ones str.strip and the patterns care about.
FIELD_CHARS = st.one_of(
    st.sampled_from(
        list("tx01 9-+.:eE")
        + ["\t", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u00a0", "\u2003", "\u00e9", "\U0001f600", "\\", "'"]
    ),
    st.characters(blacklist_characters=',"\r\n\x00', blacklist_categories=("Cs",)),
)
IDS = st.one_of(
    st.sampled_from(
        ["tx1", "tx0007", "a b", " tx2", "tx3 ", "", " ", "\u00e9t\u00e9", "\u00a0x", "x\u2003", "#x", "~"]
    ),
    st.text(FIELD_CHARS, max_size=6),
)


@st.composite
def timestamps(draw) -> str:
    if draw(st.integers(0, 9)) == 0:
        return draw(st.text(FIELD_CHARS, max_size=30))
    year = draw(st.sampled_from([0, 1, 1600, 1969, 1970, 2023, 2024, 2100, 9999]))
    month, day = draw(st.integers(0, 13)), draw(st.integers(0, 32))
    hour, minute, second = draw(st.integers(0, 24)), draw(st.integers(0, 60)), draw(st.integers(0, 60))
    if draw(st.booleans()):  # the DST transitions of the zones above
        month, day, hour = draw(st.sampled_from([(3, 31, 2), (10, 27, 2), (3, 10, 2), (11, 3, 1), (3, 31, 3)]))
    text = f"{year:04d}-{month:02d}-{day:02d}{draw(st.sampled_from([' ', 'T', 't', '_']))}"
    text += f"{hour:02d}:{minute:02d}:{second:02d}"
    digits = draw(st.integers(0, 10))
    if digits:
        text += "." + "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=digits - 1, max_size=digits - 1)))
    text += draw(st.sampled_from(["", "", "", "Z", "z", "+01:00", "-0530", "+18:00", "+19:00", "-00:60", "+1"]))
    if draw(st.integers(0, 5)) == 0:
        text = draw(st.sampled_from([" ", "\t", "\u00a0"])) + text + draw(st.sampled_from(["", " "]))
    return text


@st.composite
def amounts(draw) -> str:
    if draw(st.integers(0, 5)) == 0:
        return draw(
            st.sampled_from(
                [
                    "",
                    " 1",
                    "1 ",
                    "-0",
                    "+0",
                    "-0.0",
                    "007",
                    "1.",
                    ".5",
                    "1.23456",
                    "1.50000",
                    "99999999999999.9999",
                    "-99999999999999.9999",
                    "100000000000000",
                    "1e3",
                    "1.5E-4",
                    "1e-5",
                    "nan",
                    "-inf",
                    "0x10",
                    "1_000",
                    "\u0661",
                    "\u00a01",
                ]
            )  # fmt: skip
        )
    sign = draw(st.sampled_from(["", "", "-", "+"]))
    whole = "".join(draw(st.lists(st.sampled_from("0123456789"), min_size=1, max_size=16)))
    frac = "".join(draw(st.lists(st.sampled_from("0123456789"), max_size=6)))
    return sign + whole + ("." + frac if frac else "")


@st.composite
def simple_files(draw, bad_rows: bool) -> tuple[str, str, str]:
    """(text, key column, time zone) of a file the scan must judge simple."""
    extra = draw(st.booleans())
    names = ["transaction_id", "timestamp", "amount"] + (["account"] if extra else [])
    order = draw(st.permutations(range(len(names))))
    header = ",".join(draw(st.sampled_from([n, n.upper(), f" {n} "])) for n in (names[i] for i in order))
    rows = []
    for _ in range(draw(st.integers(1, 25))):
        if bad_rows:
            values = [draw(IDS), draw(timestamps()), draw(amounts())] + ([draw(IDS)] if extra else [])
        else:
            values = [
                draw(st.sampled_from(["tx1", "tx0002", "k\u00e9y", "a b"])),
                draw(st.sampled_from(["2024-05-11 10:00:00.053", "1969-12-31T23:59:59.9999Z", "2024-02-29 00:00:00"])),
                draw(st.sampled_from(["47.12", "-0.5", "+3", "99999999999999.9999", "0"])),
            ] + (["acct"] if extra else [])
        rows.append(",".join(values[i] for i in order))
    newline = draw(st.sampled_from(["\n", "\r\n"]))
    text = newline.join([header, *rows]) + draw(st.sampled_from([newline, ""]))
    if draw(st.booleans()):
        text = "\ufeff" + text
    key = "account" if extra and draw(st.booleans()) else "transaction_id"
    return text, key, draw(st.sampled_from(ZONES))


HYPOTHESIS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@HYPOTHESIS
@given(case=simple_files(bad_rows=False))
def test_clean_simple_files_equal_the_exact_parser_and_are_decided_in_sql(case, tmp_path):
    text, key, zone = case
    loaded = same_as_exact(write(tmp_path, text), key_column=key, timezone="UTC")
    assert loaded.fast and loaded.fallback_reason is None
    assert loaded.decided_in_sql == loaded.records  # clean UTC rows never need the validator


@HYPOTHESIS
@given(case=simple_files(bad_rows=True))
def test_simple_files_with_bad_rows_equal_the_exact_parser(case, tmp_path):
    text, key, zone = case
    loaded = same_as_exact(write(tmp_path, text), key_column=key, timezone=zone)
    assert loaded.fast, loaded.fallback_reason


@HYPOTHESIS
@given(case=simple_files(bad_rows=True), damage=st.sampled_from(['"', '"x",', "\r", "\x00", ",", "\n\n", "\n  \n"]))
def test_files_that_are_not_simple_fall_back_with_the_same_tables(case, damage, tmp_path):
    text, key, zone = case
    lines = text.split("\n")
    at = min(len(lines) - 1, 1 + len(lines) // 2)
    lines[at] = damage + lines[at]
    path = write(tmp_path, "\n".join(lines))
    assert isinstance(bulk_ingest.scan(str(path), key), str)
    loaded = same_as_exact(path, key_column=key, timezone=zone)
    assert loaded is None or (not loaded.fast and loaded.fallback_reason)


# ---------------------------------------------------------------- each fallback condition

FALLBACKS = {
    "quote": ('tx1,2024-05-11 10:00:00,1\n"tx2",2024-05-11 10:00:01,2\n', "quote"),
    "quote_then_space": ('"tx1" ,2024-05-11 10:00:00,1\n', "quote"),
    "unterminated_quote": ('tx1,"2024-05-11 10:00:00,1\ntx2,2024-05-11 10:00:01,2\n', "quote"),
    "nul": ("tx1,2024-05-11 10:00:00,1\x00\n", "NUL"),
    "bare_cr": ("tx1,2024-05-11 10:00:00,1\rtx2,2024-05-11 10:00:01,2\n", "bare CR"),
    "mixed_endings": ("tx1,2024-05-11 10:00:00,1\r\ntx2,2024-05-11 10:00:01,2\n", "mixes LF and CRLF"),
    "blank_line": ("tx1,2024-05-11 10:00:00,1\n\ntx2,2024-05-11 10:00:01,2\n", "number of fields"),
    "trailing_blank_line": ("tx1,2024-05-11 10:00:00,1\n\n", "number of fields"),
    "spaces_line": ("tx1,2024-05-11 10:00:00,1\n   \n", "number of fields"),
    "ragged": ("tx1,2024-05-11 10:00:00,1,extra\n", "number of fields"),
    "short": ("tx1,2024-05-11 10:00:00\n", "number of fields"),
    "latin1": ("caf\xe9,2024-05-11 10:00:00,1\n".encode("latin-1"), "UTF-8"),
    "long_line": ("k" * (1 << 20) + ",2024-05-11 10:00:00,1\n", "longer than"),
    "header_only": ("", "no data line"),
}


@pytest.mark.parametrize("name", sorted(FALLBACKS))
def test_each_fallback_condition_falls_back(name, tmp_path):
    body, reason = FALLBACKS[name]
    head = (HEADER + "\n").encode() if isinstance(body, bytes) else HEADER + "\n"
    path = write(tmp_path, head + body)
    plan = bulk_ingest.scan(str(path), "transaction_id")
    assert isinstance(plan, str) and reason in plan, plan
    loaded = same_as_exact(path)
    assert loaded is None or (not loaded.fast and reason in loaded.fallback_reason)  # None: both fail alike


@pytest.mark.parametrize(
    "text, reason",
    [
        ("\n" + HEADER + "\ntx1,2024-05-11 10:00:00,1\n", "header does not resolve"),  # header not on line 1
        ("transaction_id;timestamp;amount\ntx1;2024-05-11 10:00:00;1\n", "header does not resolve"),
        ('"transaction_id",timestamp,amount\ntx1,2024-05-11 10:00:00,1\n', "header holds a quote"),
    ],
)
def test_headers_the_scan_does_not_judge_fall_back(text, reason, tmp_path):
    path = write(tmp_path, text)
    plan = bulk_ingest.scan(str(path), "transaction_id")
    assert isinstance(plan, str) and reason in plan
    loaded = same_as_exact(path)
    assert loaded is None or not loaded.fast


def test_exact_parser_on_request(tmp_path):
    loaded, _ = load(write(tmp_path, HEADER + "\ntx1,2024-05-11 10:00:00,1\n"), False)
    assert not loaded.fast and loaded.decided_in_sql == 0


# ---------------------------------------------------------------- gzip, time zones, numbering


def test_gzip_is_read_through_a_decompressed_copy(tmp_path):
    rows = [f"tx{i % 7},2024-05-11 10:00:{i % 60:02d}.{i:03d},{i}.25" for i in range(1000)] + ["bad,row,x"]
    path = write(tmp_path, gzip.compress((HEADER + "\n" + "\n".join(rows) + "\n").encode()), "input.csv.gz")
    loaded = same_as_exact(path)
    assert loaded.fast and loaded.decided_in_sql == 1000 and loaded.records == 1001


def test_truncated_gzip_falls_back_and_fails_like_the_exact_parser(tmp_path):
    data = gzip.compress((HEADER + "\n" + "tx1,2024-05-11 10:00:00,1\n" * 5000).encode())
    path = write(tmp_path, data[: len(data) // 2], "input.csv.gz")
    with pytest.raises(InputFileError) as fast_error:
        load(path, True)
    with pytest.raises(InputFileError) as exact_error:
        load(path, False)
    assert str(fast_error.value) == str(exact_error.value)


def test_naive_times_in_a_dst_zone_go_to_the_validator(tmp_path):
    text = (
        HEADER
        + "\na,2024-03-31 02:30:00,1\nb,2024-10-27 02:30:00,2\nc,2024-05-11 10:00:00,3\nd,2024-05-11T08:00:00Z,4\n"
    )
    loaded = same_as_exact(write(tmp_path, text), timezone="Europe/Berlin")
    assert loaded.fast and loaded.decided_in_sql == 1  # only the explicit UTC time is decided in SQL


def test_short_fractions_before_z_are_read_exactly(tmp_path):
    text = HEADER + "\na,2024-05-11 10:00:00.0Z,1\nb,2024-05-11T10:00:00.12Z,2\nc,1969-12-31 23:59:59.9999Z,3\n"
    loaded = same_as_exact(write(tmp_path, text))
    assert loaded.decided_in_sql == 3
    assert loaded.event_time_ms.tolist() == [1715421600000, 1715421600120, -1]


def test_line_numbers_and_raw_text_of_rejected_rows(tmp_path):
    text = "\ufeff" + HEADER + "\r\ntx1,2024-05-11 10:00:00,1\r\n  ,2024-05-11 10:00:01,x\r\ntx3,2024-02-30 00:00:00,3"
    loaded, tables = load(write(tmp_path, text), True)
    assert loaded.fast
    reasons = [(row, line, raw) for _, row, line, raw, _ in tables["rejected_rows"]]
    assert reasons == [(2, 3, "  ,2024-05-11 10:00:01,x"), (3, 4, "tx3,2024-02-30 00:00:00,3")]
    assert [(row, line) for _, row, line, *_ in tables["transactions"]] == [(1, 2)]


# ---------------------------------------------------------------- the corpus

CASES = load_cases()


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
def test_corpus_case_equals_the_exact_parser(case, tmp_path):
    loaded = same_as_exact(case_path(case, tmp_path), timezone=case.get("timezone", "UTC"))
    assert (loaded is None) == (case["expect"] == "fatal")
