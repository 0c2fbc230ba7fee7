"""Unit tests for warehouse.ingest."""

from __future__ import annotations

import os
import tempfile
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from warehouse import ingest
from warehouse.ingest import REQUIRED_COLUMNS, Chunk, InputFileError, read_transactions

UTC = UTC
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
HEADER = "transaction_id,timestamp,amount\n"
VALID_DTYPES = {
    "source_row": np.dtype("int64"),
    "line": np.dtype("int64"),
    "transaction_id": np.dtype("O"),
    "key": np.dtype("O"),
    "event_time_ms": np.dtype("int64"),
    "amount_units": np.dtype("int64"),
}
TOO_LARGE = (
    "the warehouse keeps amounts as DECIMAL(18, 4), which holds -99,999,999,999,999.9999 to 99,999,999,999,999.9999"
)
TOO_FINE = "the warehouse keeps amounts as DECIMAL(18, 4) and rounds nothing: round it in the source"
REJECTED_DTYPES = {
    "source_row": np.dtype("int64"),
    "line": np.dtype("int64"),
    "raw": np.dtype("O"),
    "reason": np.dtype("O"),
}


def utc_ms(*args) -> int:
    return (datetime(*args, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


def write(tmp_path: Path, content: str | bytes, name: str = "input.csv") -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def read_all(path, **kwargs) -> tuple[pd.DataFrame, pd.DataFrame, list[Chunk]]:
    chunks = list(read_transactions(path, **kwargs))
    valid = pd.concat([c.valid for c in chunks], ignore_index=True)
    rejected = pd.concat([c.rejected for c in chunks], ignore_index=True)
    return valid, rejected, chunks


def only_reason(tmp_path, data_line: str, **kwargs) -> str:
    valid, rejected, _ = read_all(write(tmp_path, HEADER + data_line + "\n"), **kwargs)
    assert len(valid) == 0
    assert len(rejected) == 1
    assert rejected.loc[0, "raw"] == data_line
    return rejected.loc[0, "reason"]


def fatal(path, **kwargs) -> str:
    iterator = read_transactions(path, **kwargs)  # file problems surface on next()
    with pytest.raises(InputFileError) as info:
        next(iterator)
    message = str(info.value)
    assert str(path) in message
    assert "\n" not in message
    return message


# ---------------------------------------------------------------- happy path


def test_lab_example(tmp_path):
    path = write(
        tmp_path, HEADER + "tx1,2024-05-11 10:00:00,100\ntx1,2024-05-11 10:00:03,200\ntx1,2024-05-11 10:00:06,300\n"
    )
    valid, rejected, chunks = read_all(path)
    assert len(chunks) == 1
    assert rejected.empty
    assert valid["event_time_ms"].tolist() == [1715421600000, 1715421603000, 1715421606000]
    assert valid["amount_units"].tolist() == [1_000_000, 2_000_000, 3_000_000]
    assert valid["transaction_id"].tolist() == ["tx1"] * 3
    assert valid["key"].tolist() == ["tx1"] * 3
    assert valid["source_row"].tolist() == [1, 2, 3]
    assert valid["line"].tolist() == [2, 3, 4]


def test_frame_schemas(tmp_path):
    path = write(tmp_path, HEADER + "a,2024-05-11 10:00:00,1\nb,bad,2\n")
    chunk = next(read_transactions(path))
    assert list(chunk.valid.columns) == list(VALID_DTYPES)
    assert chunk.valid.dtypes.to_dict() == VALID_DTYPES
    assert list(chunk.rejected.columns) == list(REJECTED_DTYPES)
    assert chunk.rejected.dtypes.to_dict() == REJECTED_DTYPES
    assert isinstance(chunk.valid["transaction_id"].iloc[0], str)


def test_header_only_file_yields_one_empty_chunk(tmp_path):
    valid, rejected, chunks = read_all(write(tmp_path, HEADER))
    assert len(chunks) == 1
    assert valid.empty and rejected.empty
    assert chunks[0].valid.dtypes.to_dict() == VALID_DTYPES
    assert chunks[0].rejected.dtypes.to_dict() == REJECTED_DTYPES


def test_last_line_without_newline(tmp_path):
    valid, rejected, _ = read_all(write(tmp_path, HEADER + "a,2024-05-11 10:00:00,1\nb,2024-05-11 10:00:01,2"))
    assert rejected.empty
    assert valid["transaction_id"].tolist() == ["a", "b"]


def test_fields_are_trimmed(tmp_path):
    path = write(
        tmp_path, HEADER + '  tx 1 \t,  2024-05-11 10:00:00 , 12.5  \n" tx2 ","\t2024-05-11 10:00:01\t"," -3 "\n'
    )
    valid, rejected, _ = read_all(path)
    assert rejected.empty
    assert valid["transaction_id"].tolist() == ["tx 1", "tx2"]
    assert valid["amount_units"].tolist() == [125_000, -30_000]
    assert valid["event_time_ms"].tolist() == [utc_ms(2024, 5, 11, 10), utc_ms(2024, 5, 11, 10, 0, 1)]


def test_blank_lines_are_skipped_and_not_numbered(tmp_path):
    path = write(tmp_path, "\n" + HEADER + "\na,2024-05-11 10:00:00,1\n\n\r\nb,2024-05-11 10:00:01,2\n\n")
    valid, rejected, _ = read_all(path)
    assert rejected.empty
    assert valid["source_row"].tolist() == [1, 2]
    assert valid["line"].tolist() == [4, 7]


def test_whitespace_only_line_is_a_record(tmp_path):
    valid, rejected, _ = read_all(write(tmp_path, HEADER + "   \na,2024-05-11 10:00:00,1\n"))
    assert rejected["reason"].tolist() == ["expected 3 fields, got 1"]
    assert rejected["source_row"].tolist() == [1]
    assert valid["source_row"].tolist() == [2]


# ---------------------------------------------------------------- quoting


def test_quoted_keys_with_commas_quotes_newlines_and_unicode(tmp_path):
    content = (
        HEADER
        + '"acct,1",2024-05-11 10:00:00,1\n'
        + '"say ""hi""",2024-05-11 10:00:01,2\n'
        + '"multi\nline\nkey",2024-05-11 10:00:02,3\n'
        + "계좌-🚀-ünï,2024-05-11 10:00:03,4\n"
        + '"",2024-05-11 10:00:04,5\n'
        + "after,2024-05-11 10:00:05,6\n"
    )
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert valid["transaction_id"].tolist() == ["acct,1", 'say "hi"', "multi\nline\nkey", "계좌-🚀-ünï", "after"]
    assert valid["source_row"].tolist() == [1, 2, 3, 4, 6]
    assert valid["line"].tolist() == [2, 3, 4, 7, 9]
    assert rejected["source_row"].tolist() == [5]
    assert rejected["line"].tolist() == [8]
    assert rejected["raw"].tolist() == ['"",2024-05-11 10:00:04,5']
    assert rejected["reason"].tolist() == ["missing transaction_id"]


def test_raw_of_rejected_multiline_record_is_exact(tmp_path):
    record = '"multi\r\nline ""k""",2024-02-30 10:00:00,1'
    content = HEADER.replace("\n", "\r\n") + record + "\r\nok,2024-05-11 10:00:00,1\r\n"
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert rejected["raw"].tolist() == [record]
    assert rejected["line"].tolist() == [2]
    assert "day 30 does not exist" in rejected.loc[0, "reason"]
    assert valid["line"].tolist() == [4]
    assert valid["source_row"].tolist() == [2]


def test_quoted_and_unquoted_files_give_identical_results(tmp_path):
    rows = [
        ("a", "2024-05-11 10:00:00", "1.5"),
        ("b", "2024-05-11 10:00:01", "-2"),
        ("", "2024-05-11 10:00:02", "3"),
        ("d", "2024-13-11 10:00:03", "x"),
    ]
    plain = HEADER + "".join(",".join(r) + "\n" for r in rows)
    quoted = HEADER + "".join(",".join(f'"{f}"' for f in r) + "\n" for r in rows)
    v1, r1, _ = read_all(write(tmp_path, plain, "plain.csv"))
    v2, r2, _ = read_all(write(tmp_path, quoted, "quoted.csv"))
    pd.testing.assert_frame_equal(v1, v2)
    pd.testing.assert_frame_equal(r1[["source_row", "line", "reason"]], r2[["source_row", "line", "reason"]])
    assert r2["raw"].tolist() == [",".join(f'"{f}"' for f in r) for r in rows[2:]]


def test_bom_and_crlf(tmp_path):
    content = "\ufefftransaction_id,timestamp,amount\r\nk1,2024-05-11 10:00:00,1\r\nk2,2024-05-11 10:00:01,x\r\n"
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert valid["transaction_id"].tolist() == ["k1"]
    assert valid["amount_units"].tolist() == [10_000]
    assert rejected["raw"].tolist() == ["k2,2024-05-11 10:00:01,x"]
    assert rejected["line"].tolist() == [3]


def test_bom_with_quoted_header(tmp_path):
    content = '\ufeff"transaction_id","timestamp","amount"\n"k1","2024-05-11 10:00:00","7"\n'
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert rejected.empty
    assert valid["transaction_id"].tolist() == ["k1"]


def test_malformed_quoting_is_rejected_and_reading_continues(tmp_path):
    content = HEADER + '"k1"x,2024-05-11 10:00:00,1\nk2,2024-05-11 10:00:00,2\n'
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert rejected["reason"].tolist() == [
        "malformed quoting: a closing '\"' must be followed by ',' or the end of the line"
    ]
    assert rejected["raw"].tolist() == ['"k1"x,2024-05-11 10:00:00,1']
    assert valid["transaction_id"].tolist() == ["k2"]
    assert valid["source_row"].tolist() == [2]


def test_unterminated_quote_at_end_of_file(tmp_path):
    tail = 'k2,"2024-05-11 10:00:00,2\nk3,2024-05-11 10:00:00,3\n'
    valid, rejected, _ = read_all(write(tmp_path, HEADER + "k1,2024-05-11 10:00:00,1\n" + tail))
    assert valid["transaction_id"].tolist() == ["k1"]
    assert rejected["source_row"].tolist() == [2]
    assert rejected["line"].tolist() == [3]
    assert rejected["raw"].tolist() == [tail[:-1]]
    assert rejected.loc[0, "reason"].startswith("unterminated quoted field")


def test_nul_byte_is_rejected(tmp_path):
    content = HEADER + "k\x001,2024-05-11 10:00:00,1\nk2,2024-05-11 10:00:00,2\n"
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert rejected["reason"].tolist() == ["record contains a NUL character"]
    assert rejected["raw"].tolist() == ["k\x001,2024-05-11 10:00:00,1"]
    assert valid["transaction_id"].tolist() == ["k2"]


def test_bare_carriage_return_is_rejected(tmp_path):
    content = HEADER + "k\r1,2024-05-11 10:00:00,1\nk2,2024-05-11 10:00:00,2\n"
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert len(rejected) == 1 and "carriage return" in rejected.loc[0, "reason"]
    assert valid["transaction_id"].tolist() == ["k2"]


# ---------------------------------------------------------------- header


def test_column_order_extra_columns_and_header_case(tmp_path):
    content = (
        " Amount ,note,TIMESTAMP,Transaction_ID ,other\n"
        "12.5,hello,2024-05-11 10:00:00,k1,x\n"
        "1,,2024-05-11 10:00:01,k2,\n"
    )
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert rejected.empty
    assert valid["transaction_id"].tolist() == ["k1", "k2"]
    assert valid["amount_units"].tolist() == [125_000, 10_000]
    assert valid["event_time_ms"].tolist() == [utc_ms(2024, 5, 11, 10), utc_ms(2024, 5, 11, 10, 0, 1)]


def test_field_count_follows_header_width(tmp_path):
    content = "transaction_id,timestamp,amount,extra\nk1,2024-05-11 10:00:00,1\n"
    _, rejected, _ = read_all(write(tmp_path, content))
    assert rejected["reason"].tolist() == ["expected 4 fields, got 3"]


def test_key_column(tmp_path):
    content = (
        "transaction_id,timestamp,amount, Account \n"
        "t1,2024-05-11 10:00:00,1,acc-1\n"
        "t2,2024-05-11 10:00:00,1, \n"
        ",2024-05-11 10:00:00,1,acc-3\n"
    )
    valid, rejected, _ = read_all(write(tmp_path, content), key_column="account")
    assert valid["transaction_id"].tolist() == ["t1"]
    assert valid["key"].tolist() == ["acc-1"]
    assert rejected["reason"].tolist() == ["missing key value (column 'account')", "missing transaction_id"]


def test_missing_key_column_is_fatal(tmp_path):
    path = write(tmp_path, HEADER + "t1,2024-05-11 10:00:00,1\n")
    message = fatal(path, key_column="account")
    assert "key column 'account'" in message
    assert "'transaction_id', 'timestamp', 'amount'" in message


@pytest.mark.parametrize(
    "header, missing",
    [
        ("transaction_id,timestamp\n", ["'amount'"]),
        ("id,time,amount\n", ["'transaction_id'", "'timestamp'"]),
        ("foo\n", ["'transaction_id'", "'timestamp'", "'amount'"]),
    ],
)
def test_missing_required_columns_are_fatal(tmp_path, header, missing):
    message = fatal(write(tmp_path, header + "a,b,c\n"))
    for name in missing:
        assert name in message
    assert "missing required column" in message
    assert "found columns: " + ", ".join(repr(h) for h in header.strip().split(",")) in message


def test_duplicate_required_column_is_fatal(tmp_path):
    message = fatal(write(tmp_path, "transaction_id,timestamp,amount,AMOUNT\n"))
    assert "'amount' more than once" in message


def test_malformed_header_is_fatal(tmp_path):
    message = fatal(write(tmp_path, '"transaction_id"x,timestamp,amount\n'))
    assert "malformed header on line 1" in message


# ---------------------------------------------------------------- fatal file errors


def test_missing_path_is_fatal(tmp_path):
    message = fatal(tmp_path / "nope.csv")
    assert "does not exist" in message


def test_directory_is_fatal(tmp_path):
    message = fatal(tmp_path)
    assert "is a directory" in message


def test_empty_file_is_fatal(tmp_path):
    message = fatal(write(tmp_path, b""))
    assert "is empty (0 bytes)" in message


@pytest.mark.parametrize("content", ["\n\n\r\n", "\ufeff"])
def test_file_without_header_is_fatal(tmp_path, content):
    message = fatal(write(tmp_path, content))
    assert "has no header line" in message


def test_invalid_utf8_is_fatal_and_names_the_line(tmp_path):
    content = (HEADER + "k1,2024-05-11 10:00:00,1\n").encode() + b"k\xff2,2024-05-11 10:00:00,2\n"
    message = fatal(write(tmp_path, content))
    assert "not valid UTF-8" in message
    assert "line 3" in message


def test_invalid_utf8_in_later_chunk_names_the_line(tmp_path):
    good = "".join(f"k{i},2024-05-11 10:00:00,1\n" for i in range(10)).encode()
    path = write(tmp_path, HEADER.encode() + good + b"\xc3(,2024-05-11 10:00:00,1\n")
    with pytest.raises(InputFileError, match=r"not valid UTF-8: .* at line 12 "):
        list(read_transactions(path, chunk_rows=3))


def test_invalid_arguments_raise_value_error_immediately(tmp_path):
    path = tmp_path / "does-not-matter.csv"
    with pytest.raises(ValueError, match="Not/AZone"):
        read_transactions(path, timezone="Not/AZone")
    with pytest.raises(ValueError, match="chunk_rows"):
        read_transactions(path, chunk_rows=0)
    with pytest.raises(ValueError, match="key_column"):
        read_transactions(path, key_column=" ")


# ---------------------------------------------------------------- row rejections


@pytest.mark.parametrize(
    "line, expected",
    [
        ("k,2024-05-11 10:00:00,1,extra", "expected 3 fields, got 4"),
        ("k,2024-05-11 10:00:00", "expected 3 fields, got 2"),
        (" ,2024-05-11 10:00:00,1", "missing transaction_id"),
        ("k,,1", "missing timestamp"),
        ("k,2024-05-11 10:00:00,", "missing amount"),
        (
            "k,2024/05/11 10:00,1",
            "unparseable timestamp '2024/05/11 10:00': expected YYYY-MM-DD HH:MM:SS[.fff] or ISO-8601 "
            "YYYY-MM-DDTHH:MM:SS[.fff][Z|±HH:MM]",
        ),
        ("k,2024-02-30 10:00:00,1", "invalid timestamp '2024-02-30 10:00:00': day 30 does not exist in 2024-02"),
        ("k,2024-05-11 10:00:00,abc", "non-numeric amount 'abc'"),
        ('k,2024-05-11 10:00:00,"1,234.50"', "non-numeric amount '1,234.50': thousands separators are not accepted"),
        ("k,2024-05-11 10:00:00,1_000", "non-numeric amount '1_000'"),
        ("k,2024-05-11 10:00:00,0x1A", "non-numeric amount '0x1A'"),
        ("k,2024-05-11 10:00:00,1.", "non-numeric amount '1.'"),
        ("k,2024-05-11 10:00:00,1e", "non-numeric amount '1e'"),
        ("k,2024-05-11 10:00:00,--1", "non-numeric amount '--1'"),
        ("k,2024-05-11 10:00:00,$5", "non-numeric amount '$5'"),
        ("k,2024-05-11 10:00:00,١٢", "non-numeric amount '١٢'"),
        ("k,2024-05-11 10:00:00,NaN", "amount 'NaN' is not a finite number"),
        ("k,2024-05-11 10:00:00,-inf", "amount '-inf' is not a finite number"),
        ("k,2024-05-11 10:00:00,Infinity", "amount 'Infinity' is not a finite number"),
        ("k,2024-05-11 10:00:00,1e400", "amount '1e400' is too large: " + TOO_LARGE),
        ("k,2024-05-11 10:00:00,-1e309", "amount '-1e309' is too large: " + TOO_LARGE),
        ("k,2024-05-11 10:00:00,1.23456", "amount '1.23456' has more than 4 decimal places; " + TOO_FINE),
        (",bad,", "missing transaction_id; unparseable timestamp 'bad'"),
        (",2024-05-11 10:00:00,x", "missing transaction_id; non-numeric amount 'x'"),
    ],
)
def test_row_rejection_reasons(tmp_path, line, expected):
    reason = only_reason(tmp_path, line)
    assert reason.startswith(expected)


def test_thousands_separator_in_unquoted_field_is_a_field_count_error(tmp_path):
    assert only_reason(tmp_path, "k,2024-05-11 10:00:00,1,234.50") == "expected 3 fields, got 4"


def test_several_problems_are_joined(tmp_path):
    reason = only_reason(tmp_path, ",,")
    assert reason == "missing transaction_id; missing timestamp; missing amount"


def amount_units(tmp_path, texts: list[str]) -> list[int]:
    """Units of valid amounts (one row each, in one file so they share one code array)."""
    body = "".join(f"k,2024-05-11 10:00:00,{t}\n" for t in texts)
    valid, rejected, _ = read_all(write(tmp_path, HEADER + body))
    assert rejected.empty, rejected["reason"].tolist()
    return valid["amount_units"].tolist()


def amount_reasons(tmp_path, texts: list[str]) -> list[str]:
    body = "".join(f"k,2024-05-11 10:00:00,{t}\n" for t in texts)
    valid, rejected, _ = read_all(write(tmp_path, HEADER + body))
    assert valid.empty and len(rejected) == len(texts)
    return rejected["reason"].tolist()


LONG = 70  # leading zeros that push a value past the 64-character code array (the one-by-one path)


@pytest.mark.parametrize(
    "text, units",
    [
        ("-0", 0),
        ("-0.0", 0),
        ("+0", 0),
        ("0", 0),
        (".5", 5_000),
        ("+.5", 5_000),
        ("007", 70_000),
        ("-12.340", -123_400),
        ("0.1", 1_000),
        ("1", 10_000),
        ("123.45", 1_234_500),
        ("0" * LONG + "1.5", 15_000),
        ("-" + "0" * LONG + ".25", -2_500),
        ("1." + "0" * LONG, 10_000),
    ],
)
def test_valid_amounts(tmp_path, text, units):
    assert amount_units(tmp_path, [text]) == [units]


def test_minus_zero_is_zero(tmp_path):
    # DECIMAL has no negative zero; every spelling of zero is 0 units.
    assert amount_units(tmp_path, ["-0", "-0.0", "+0", "-.0000", "-0e5", "0E-999999999", "-" + "0" * LONG]) == [0] * 7


def test_exactly_four_decimals_are_kept_exactly(tmp_path):
    texts = ["1.2345", "-0.0001", "0.0001", "12345678901234.5678", "0.1234", ".9999"]
    assert amount_units(tmp_path, texts) == [12_345, -1, 1, 123_456_789_012_345_678, 1_234, 9_999]


def test_trailing_zeros_are_not_decimal_places(tmp_path):
    texts = ["1.50000", "1.23450000000", "0.000100", "2.0000000000000000000000000", "1.5" + "0" * LONG]
    assert amount_units(tmp_path, texts) == [15_000, 12_345, 1, 20_000, 15_000]


@pytest.mark.parametrize(
    "text",
    [
        "1.23456",
        "0.00001",
        ".12345",
        "-0.00005",
        "99999999999999.99999",
        "1.000000000000000000001",
        "1e-5",
        "5e-324",
        "1e-400",
        "1.2345e-1",
        "12345e-5",
        "-1E-5",
        "0.0001e-1",
        "0." + "0" * LONG + "1",
    ],
)
def test_more_than_four_decimals_is_rejected_not_rounded(tmp_path, text):
    shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
    assert amount_reasons(tmp_path, [text]) == [f"amount {shown} has more than 4 decimal places; " + TOO_FINE]


def test_decimal_18_4_bounds(tmp_path):
    texts = ["99999999999999.9999", "-99999999999999.9999", "9.99999999999999999e13", "1.5e13", "0" * LONG + "9" * 14]
    assert amount_units(tmp_path, texts) == [10**18 - 1, -(10**18 - 1), 10**18 - 1, 15 * 10**16, (10**14 - 1) * 10**4]


@pytest.mark.parametrize(
    "text",
    [
        "1e14",
        "-1e14",
        "1e308",
        "1E+309",
        "100000000000000",
        "-100000000000000.0",
        "99999999999999.99990e1",
        "123456789012345.12345",
        "1" * LONG,
        "0.1e15",
    ],
)
def test_too_large_is_rejected(tmp_path, text):
    shown = repr(text) if len(text) <= 60 else repr(text[:57] + "...")
    assert amount_reasons(tmp_path, [text]) == [f"amount {shown} is too large: " + TOO_LARGE]


@pytest.mark.parametrize(
    "text, units",
    [
        ("1.5e3", 15_000_000),
        ("12345e-4", 12_345),
        ("1E+2", 1_000_000),
        ("-1.5E+3", -15_000_000),
        ("0.00001e1", 1),
        (".5e1", 50_000),
        ("1e-0", 10_000),
        ("1e+0004", 100_000_000),
        ("5e-4", 5),
        ("0.000000000000000000012345e20", 12_345),
        ("123456789012345e-4", 123_456_789_012_345),
        ("1e13", 10**17),
        ("0" * LONG + "1.5e3", 15_000_000),
    ],
)
def test_exponents_are_exact(tmp_path, text, units):
    assert amount_units(tmp_path, [text]) == [units]


def test_absurd_exponents_and_digit_counts_are_rejected_fast(tmp_path):
    import time

    mb = 1 << 20
    big = ["1e999999999", "-1e999999999", "1e" + "9" * 5000, "1" * mb]  # 5000 > int()'s digit limit
    fine = ["1e-999999999", "1e-" + "9" * 5000, "0." + "0" * mb + "1"]
    started = time.perf_counter()
    reasons = amount_reasons(tmp_path, big + fine)
    assert time.perf_counter() - started < 5
    assert all("is too large" in r for r in reasons[: len(big)])
    assert all("more than 4 decimal places" in r for r in reasons[len(big) :])
    # many leading zeros in the exponent are not a big exponent
    assert amount_units(tmp_path, ["0e999999999", "1e-" + "0" * 40 + "4", "1e+" + "0" * 40 + "13"]) == [0, 1, 10**17]


def test_amount_type_matches_the_warehouse_schema():
    from warehouse.schema import AMOUNT_TYPE

    assert AMOUNT_TYPE.replace(" ", "") == "DECIMAL(18,4)"  # what ingest's units and reasons assume


_DIGITS = st.text("0123456789", max_size=16)


@st.composite
def _decimal_texts(draw):
    """Strings of the amount grammar: signs, leading/trailing zeros, exponents, long forms."""
    whole, frac = draw(_DIGITS), draw(_DIGITS)
    if not whole and not frac:
        whole = "0"
    text = draw(st.sampled_from(["", "+", "-"])) + "0" * draw(st.sampled_from([0, 0, 1, 3, LONG]))
    text += whole + ("." + frac if frac or not whole else "")
    text += "0" * draw(st.sampled_from([0, 0, 2])) if frac else ""
    if draw(st.booleans()):
        text += draw(st.sampled_from(["e", "E"])) + draw(st.sampled_from(["", "+", "-"]))
        text += str(draw(st.integers(0, 30))).zfill(draw(st.integers(1, 3)))
    return text


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    texts=st.lists(
        st.one_of(_decimal_texts(), st.decimals(-(10**14) + 1, 10**14 - 1, places=4).map(str)), min_size=1, max_size=30
    )
)
def test_property_amounts_are_exact_or_rejected(texts):
    with tempfile.TemporaryDirectory() as tmp:
        body = "".join(f"k,2024-05-11 10:00:00,{t}\n" for t in texts)
        path = Path(tmp) / "amounts.csv"
        path.write_text(HEADER + body, encoding="utf-8")
        valid, rejected, _ = read_all(path)
    units = dict(zip(valid["source_row"], valid["amount_units"], strict=True))
    reasons = dict(zip(rejected["source_row"], rejected["reason"], strict=True))
    with localcontext() as ctx:
        ctx.prec = 200  # every product below is exact
        for row, text in enumerate(texts, start=1):
            scaled = Decimal(text) * 10_000
            if abs(scaled) >= 10**18:
                assert "is too large" in reasons[row], text
            elif scaled != scaled.to_integral_value():
                assert "more than 4 decimal places" in reasons[row], text
            else:
                assert units[row] == int(scaled), text


def test_long_offending_values_are_shortened_in_reason_but_not_in_raw(tmp_path):
    amount = "9" * 50 + "x" * 200
    line = f"k,2024-05-11 10:00:00,{amount}"
    reason = only_reason(tmp_path, line)
    assert len(reason) < 200
    assert amount[:40] in reason


# ---------------------------------------------------------------- time zones


def test_timezone_conversion_and_dst_rejections(tmp_path):
    content = (
        HEADER + "a,2024-05-11 19:00:00,1\nb,2024-03-10 02:30:00,1\nc,2024-11-03 01:30:00,1\nd,2024-03-10T02:30:00Z,1\n"
    )
    valid, _, _ = read_all(write(tmp_path, content, "seoul.csv"), timezone="Asia/Seoul")
    assert valid["event_time_ms"].tolist()[0] == utc_ms(2024, 5, 11, 10)

    valid, rejected, _ = read_all(write(tmp_path, content, "ny.csv"), timezone="America/New_York")
    assert valid["transaction_id"].tolist() == ["a", "d"]
    assert valid["event_time_ms"].tolist() == [utc_ms(2024, 5, 11, 23), utc_ms(2024, 3, 10, 2, 30)]
    assert rejected["reason"].tolist() == [
        "nonexistent local time 2024-03-10 02:30:00 in America/New_York (DST gap)",
        "ambiguous local time 2024-11-03 01:30:00 in America/New_York (DST overlap)",
    ]


def test_pre_1970_and_far_future_timestamps(tmp_path):
    content = HEADER + "a,1969-12-31 23:59:59.9995,1\nb,0001-01-01 00:00:00,1\nc,9999-12-31T23:59:59.999Z,1\n"
    valid, rejected, _ = read_all(write(tmp_path, content))
    assert rejected.empty
    assert valid["event_time_ms"].tolist() == [-1, utc_ms(1, 1, 1), utc_ms(9999, 12, 31, 23, 59, 59) + 999]


# ---------------------------------------------------------------- chunking


MIXED = (
    HEADER
    + "a,2024-05-11 10:00:00,1\n"
    + '"b,1",2024-05-11 10:00:01,2\n'
    + "\n"
    + '"multi\nline",2024-05-11 10:00:02,3\n'
    + "bad,2024-05-11 10:00:03\n"
    + "c,2024-05-11 10:00:04,nan\n"
    + "d,2024-05-11 10:00:05,4\n"
    + "\n\n"
    + 'e,"2024-05-11 10:00:06",5\n'
    + "f\x00,2024-05-11 10:00:07,6\n"
    + "g,2024-05-11 10:00:08,7\n"
    + '"h"x,2024-05-11 10:00:09,8\n'
    + "i,2024-05-11 10:00:10,9\n"
    + "j,2024-05-11 10:00:11,10\n"
)


@pytest.mark.parametrize("parse_rows", [25_000, 2, 3])  # records parsed at a time, a chunk's parts
@pytest.mark.parametrize("chunk_rows", [1, 2, 3, 4, 5, 7, 12, 13])
def test_chunking_does_not_change_results(tmp_path, monkeypatch, chunk_rows, parse_rows):
    monkeypatch.setattr(ingest, "_PARSE_ROWS", parse_rows)
    path = write(tmp_path, MIXED)
    big_valid, big_rejected, big_chunks = read_all(path, chunk_rows=1000)
    assert len(big_chunks) == 1
    assert len(big_valid) + len(big_rejected) == 12

    valid, rejected, chunks = read_all(path, chunk_rows=chunk_rows)
    pd.testing.assert_frame_equal(valid, big_valid)
    pd.testing.assert_frame_equal(rejected, big_rejected)
    sizes = [len(c.valid) + len(c.rejected) for c in chunks]
    assert all(size == chunk_rows for size in sizes[:-1])
    assert 0 < sizes[-1] <= chunk_rows
    for c in chunks:
        assert c.valid["source_row"].is_monotonic_increasing
        assert c.rejected["source_row"].is_monotonic_increasing
        rows = sorted(c.valid["source_row"].tolist() + c.rejected["source_row"].tolist())
        assert rows == list(range(rows[0], rows[0] + len(rows)))


def test_mixed_file_details(tmp_path):
    valid, rejected, _ = read_all(write(tmp_path, MIXED))
    assert valid["transaction_id"].tolist() == ["a", "b,1", "multi\nline", "d", "e", "g", "i", "j"]
    assert valid["source_row"].tolist() == [1, 2, 3, 6, 7, 9, 11, 12]
    assert valid["line"].tolist() == [2, 3, 5, 9, 12, 14, 16, 17]
    assert rejected["source_row"].tolist() == [4, 5, 8, 10]
    assert rejected["line"].tolist() == [7, 8, 13, 15]
    assert rejected["reason"].tolist() == [
        "expected 3 fields, got 2",
        "amount 'nan' is not a finite number",
        "record contains a NUL character",
        "malformed quoting: a closing '\"' must be followed by ',' or the end of the line",
    ]


def test_generator_streams_lazily(tmp_path):
    rows = "".join(f"k{i},2024-05-11 10:00:00,{i}\n" for i in range(50))
    iterator = read_transactions(write(tmp_path, HEADER + rows), chunk_rows=10)
    first = next(iterator)
    assert first.valid["source_row"].tolist() == list(range(1, 11))
    rest = list(iterator)
    assert len(rest) == 4
    assert rest[-1].valid["source_row"].tolist() == list(range(41, 51))


@pytest.mark.parametrize("multiline_every", [None, 997])
def test_large_chunks_crossing_read_blocks(tmp_path, multiline_every):
    # > 1 MiB and > 4096 lines per chunk, optionally with quoted multi-line records
    # (which sends every chunk through the record-by-record csv path).
    n = 10_000
    pad = "x" * 100
    parts = []
    for i in range(n):
        multi = multiline_every is not None and i % multiline_every == 0
        key = f'"k{i}\n{pad}"' if multi else f"k{i}{pad}"
        parts.append(f"{key},2024-05-11 10:{i // 60 % 60:02d}:{i % 60:02d},{i}\n")
    valid, rejected, chunks = read_all(write(tmp_path, HEADER + "".join(parts)), chunk_rows=4500)
    assert rejected.empty
    assert [len(c.valid) for c in chunks] == [4500, 4500, 1000]
    assert valid["amount_units"].tolist() == [i * 10_000 for i in range(n)]
    assert valid["source_row"].tolist() == list(range(1, n + 1))
    multi_before = np.cumsum([0] + [multiline_every is not None and i % multiline_every == 0 for i in range(n - 1)])
    assert valid["line"].tolist() == [2 + i + int(multi_before[i]) for i in range(n)]


# ---------------------------------------------------------------- property test

_KEY_PIECES = st.sampled_from(list("abcXYZ019 ,\"\n\r\t'-_é계🚀\u00a0\u2028") + ["\r\n", '""'])
_VALID_AMOUNTS = st.one_of(
    st.integers(-(10**12), 10**12).map(str),
    st.decimals(-(10**14) + 1, 10**14 - 1, places=4).map(str),
    st.sampled_from(["-0", ".5", "+1.5e-3", "1e13", "007", "1.50000"]),
)
_INVALID_AMOUNTS = st.sampled_from(
    ["", "abc", "1,234.50", "1_000", "0x10", "nan", "inf", "1e400", "1.", "--1", "$3", "1e14", "1.23456", "1e-5"]
)
_INVALID_TIMES = st.sampled_from(
    [
        "",
        "2024/05/11 10:00",
        "2024-02-30 00:00:00",
        "2024-01-01 24:00:00",
        "yesterday",
        "2024-05-11 10:00:00+25:00",
        "2024-05-11",
    ]
)


def _csv_field(value: str, force_quotes: bool) -> str:
    if force_quotes or any(c in value for c in ',"\r\n') or value != value.strip():
        return '"' + value.replace('"', '""') + '"'
    return value


@st.composite
def _rows(draw):
    ok_id = draw(st.booleans())
    if ok_id:
        key = "".join(draw(st.lists(_KEY_PIECES, min_size=1, max_size=8)))
    else:
        key = draw(st.sampled_from(["", " ", "\t"]))
    if not key.strip():
        ok_id = False
    ok_time = draw(st.booleans())
    if ok_time:
        dt = draw(st.datetimes(min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31)))
        ts = f"{dt.year:04d}-{dt.month:02d}-{dt.day:02d} {dt:%H:%M:%S}"
        expected_ms = (dt.replace(tzinfo=UTC) - EPOCH) // timedelta(seconds=1) * 1000
    else:
        ts, expected_ms = draw(_INVALID_TIMES), None
    ok_amount = draw(st.booleans())
    amount = draw(_VALID_AMOUNTS if ok_amount else _INVALID_AMOUNTS)
    fields = [key, ts, amount]
    extra = draw(st.sampled_from([0, 0, 0, 1, -1]))
    if extra > 0:
        fields.append("extra")
    elif extra < 0:
        fields.pop()
    quote = draw(st.booleans())
    text = ",".join(_csv_field(f, quote) for f in fields)
    if text == "":
        text = '""'
    valid = ok_id and ok_time and ok_amount and extra == 0
    return {
        "text": text,
        "valid": valid,
        "key": key.strip(),
        "ms": expected_ms,
        "units": int(Decimal(amount) * 10_000) if valid else None,
    }


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(_rows(), max_size=25),
    newline=st.sampled_from(["\n", "\r\n"]),
    chunk_rows=st.integers(1, 8),
    blank_every=st.integers(0, 4),
)
def test_property_every_record_lands_exactly_once(rows, newline, chunk_rows, blank_every):
    parts = [HEADER.replace("\n", newline)]
    expected_lines = []
    line = 2
    for i, row in enumerate(rows):
        if blank_every and i % blank_every == 0:
            parts.append(newline)
            line += 1
        expected_lines.append(line)
        parts.append(row["text"] + newline)
        line += 1 + row["text"].count("\n")
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "prop.csv"
        path.write_bytes("".join(parts).encode("utf-8"))
        chunks = list(read_transactions(path, chunk_rows=chunk_rows))
    valid = pd.concat([c.valid for c in chunks], ignore_index=True)
    rejected = pd.concat([c.rejected for c in chunks], ignore_index=True)

    assert len(valid) + len(rejected) == len(rows)
    all_rows = sorted(valid["source_row"].tolist() + rejected["source_row"].tolist())
    assert all_rows == list(range(1, len(rows) + 1))
    assert all(len(c.valid) + len(c.rejected) <= chunk_rows for c in chunks)

    expected_valid = [i + 1 for i, r in enumerate(rows) if r["valid"]]
    assert valid["source_row"].tolist() == expected_valid
    for rec in valid.itertuples():
        row = rows[rec.source_row - 1]
        assert rec.line == expected_lines[rec.source_row - 1]
        assert rec.transaction_id == row["key"] == rec.key
        assert rec.event_time_ms == row["ms"]
        assert rec.amount_units == row["units"]
    for rec in rejected.itertuples():
        row = rows[rec.source_row - 1]
        assert rec.line == expected_lines[rec.source_row - 1]
        assert rec.raw == row["text"]
        assert isinstance(rec.reason, str) and rec.reason


def test_required_columns_constant():
    assert REQUIRED_COLUMNS == ("transaction_id", "timestamp", "amount")


def _open_fds_to(path: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            count += os.readlink(f"/proc/self/fd/{fd}") == str(path)
        except OSError:
            pass
    return count


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_file_handle_is_closed_when_generator_is_closed(tmp_path):
    path = write(tmp_path, HEADER + "".join(f"k{i},2024-05-11 10:00:00,1\n" for i in range(20)))
    iterator = read_transactions(path, chunk_rows=5)
    next(iterator)
    assert _open_fds_to(path) == 1
    iterator.close()
    assert _open_fds_to(path) == 0


_GARBAGE = st.lists(
    st.sampled_from(list('ab1,"\r\n\x00 é-:.') + ["2024-05-11 10:00:00", "\n\n", "\r\n", '""']),
    max_size=60,
).map("".join)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_GARBAGE, chunk_rows=st.integers(1, 5))
def test_property_arbitrary_text_never_crashes_and_chunking_is_invisible(body, chunk_rows):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "garbage.csv"
        path.write_bytes((HEADER + body).encode("utf-8"))
        _, _, whole = read_all(path, chunk_rows=10_000)
        valid, rejected, chunks = read_all(path, chunk_rows=chunk_rows)
    ref_valid = pd.concat([c.valid for c in whole], ignore_index=True)
    ref_rejected = pd.concat([c.rejected for c in whole], ignore_index=True)
    pd.testing.assert_frame_equal(valid, ref_valid)
    pd.testing.assert_frame_equal(rejected, ref_rejected)

    n = len(valid) + len(rejected)
    merged = pd.concat([valid[["source_row", "line"]], rejected[["source_row", "line"]]]).sort_values("source_row")
    assert merged["source_row"].tolist() == list(range(1, n + 1))
    assert merged["line"].is_monotonic_increasing
    assert (merged["line"] >= 2).all()
    assert all(isinstance(r, str) and r for r in rejected["reason"])
    # Every record's raw text occurs in the file at its line.
    lines = (HEADER + body).split("\n")
    for rec in rejected.itertuples():
        assert "\n".join(lines[rec.line - 1 :]).startswith(rec.raw)


# ---------------------------------------------------------------- gzip, delimiters, huge fields


def test_gzip_is_read_transparently_and_streamed(tmp_path):
    import gzip

    body = HEADER + "".join(f"k{i % 7},2024-05-11 10:00:{i % 60:02d},{i}\n" for i in range(5000)) + "bad,x,1\n"
    plain = write(tmp_path, body, "plain.csv")
    packed = write(tmp_path, gzip.compress(body.encode()), "packed.csv.gz")
    a_valid, a_rej, _ = read_all(plain, chunk_rows=777)
    b_valid, b_rej, chunks = read_all(packed, chunk_rows=777)
    assert len(chunks) == 7
    pd.testing.assert_frame_equal(a_valid, b_valid)
    pd.testing.assert_frame_equal(a_rej, b_rej)
    assert len(b_valid) == 5000 and len(b_rej) == 1


def test_gzip_detection_uses_magic_bytes_not_the_name(tmp_path):
    import gzip

    content = HEADER + "tx1,2024-05-11 10:00:00,1\n"
    v1, _, _ = read_all(write(tmp_path, gzip.compress(content.encode()), "no_suffix.csv"))
    v2, _, _ = read_all(write(tmp_path, content, "plain.csv.gz"))
    assert len(v1) == len(v2) == 1


def test_corrupt_gzip_after_some_chunks_is_fatal(tmp_path):
    import gzip
    import random

    rnd = random.Random(3)  # incompressible keys, so the stream is long and the cut is mid-data
    body = HEADER + "".join(f"{rnd.getrandbits(64):x},2024-05-11 10:00:00,1\n" for _ in range(20000))
    packed = gzip.compress(body.encode())
    path = write(tmp_path, packed[: len(packed) // 2], "cut.csv.gz")
    reader = read_transactions(path, chunk_rows=1000)
    assert len(next(reader).valid) == 1000  # earlier chunks were fine
    with pytest.raises(InputFileError, match="corrupt or truncated gzip file") as info:
        list(reader)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "header, name",
    [
        ("transaction_id;timestamp;amount", "semicolon"),
        ("Transaction_ID ; Timestamp ; Amount ; note", "semicolon"),
        ("transaction_id\ttimestamp\tamount", "tab"),
        ("transaction_id|timestamp|amount", "pipe"),
        ("transaction_id;timestamp;amount,extra", "semicolon"),
    ],
)
def test_other_delimiters_are_fatal_and_named(tmp_path, header, name):
    message = fatal(write(tmp_path, header + "\nx;y;z\n"))
    assert f"{name}-delimited" in message and "only comma-delimited CSV is supported" in message


def test_semicolon_in_a_comma_header_is_just_a_name(tmp_path):
    valid, _, _ = read_all(write(tmp_path, "transaction_id,timestamp,amount,a;b\ntx1,2024-05-11 10:00:00,1,x;y\n"))
    assert len(valid) == 1
    message = fatal(write(tmp_path, "transaction_id,timestamp,amt;x\n", "other.csv"))
    assert "missing required column 'amount'" in message  # no delimiter guess when it does not explain it


def test_quoted_field_of_several_megabytes_spanning_lines(tmp_path):
    key = "\n".join(["é" * 999] * 3000)  # ~6 MB, 3000 physical lines
    path = write(tmp_path, HEADER + f'"{key}",2024-05-11 10:00:00,1\ntx2,2024-05-11 10:00:01,2\n')
    valid, rejected, _ = read_all(path)
    assert valid["key"].tolist() == [key, "tx2"] and valid["line"].tolist() == [2, 3002]
    assert rejected.empty


def test_field_over_the_limit_is_fatal_instead_of_mis_splitting(tmp_path, monkeypatch):
    import csv

    import warehouse.ingest as ingest

    old = csv.field_size_limit(1000)
    monkeypatch.setattr(ingest, "_MAX_FIELD_CHARS", 1000)
    try:
        lines = "".join(f"tx{i},2024-05-11 10:00:00,1\n" for i in range(200))
        message = fatal(write(tmp_path, HEADER + 'tx0,2024-05-11 10:00:00,1\n"open,' + lines))
    finally:
        csv.field_size_limit(old)
    assert "starting on line 3" in message and "left open" in message
