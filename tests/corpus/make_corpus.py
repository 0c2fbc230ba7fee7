"""Writes the bad-input corpus in tests/corpus/cases/ (run from the repository root).

    .venv/bin/python -m tests.corpus.make_corpus

The files are committed; this script documents how each was made and regenerates them byte for byte
(gzip members are written with mtime 0). Cases that cannot be stored as a small file (a missing path,
a directory, a 1 MB field) are built by the test itself; see the "generate" entries of expected.json.
"""

from __future__ import annotations

import gzip
from pathlib import Path

CASES = Path(__file__).resolve().parent / "cases"
H = "transaction_id,timestamp,amount\n"


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def build() -> dict[str, bytes]:
    u = lambda text: text.encode("utf-8")  # noqa: E731
    good = "tx1,2024-05-11 10:00:00,100\ntx1,2024-05-11 10:00:03,200\ntx1,2024-05-11 10:00:06,300\n"
    files: dict[str, bytes] = {
        # --- structure --------------------------------------------------------------------------
        "ragged_rows.csv": u(
            H + "tx1,2024-05-11 10:00:00,1\ntx2,2024-05-11 10:00:01\n"
            "tx3,2024-05-11 10:00:02,3,extra\ntx4,2024-05-11 10:00:03,4\n,\n"
        ),
        "unterminated_quote_at_eof.csv": u(H + 'tx1,2024-05-11 10:00:00,1\n"tx2,2024-05-11 10:00:01,2\n'),
        "unterminated_quote_swallows_lines.csv": u(
            H + "tx1,2024-05-11 10:00:00,1\n"
            '"tx2,2024-05-11 10:00:01,2\ntx3,2024-05-11 10:00:02,3\n'
            'tx4",2024-05-11 10:00:03,4\ntx5,2024-05-11 10:00:04,5\n'
        ),
        "malformed_quote.csv": u(
            H + '"tx1" ,2024-05-11 10:00:00,1\ntx"2,2024-05-11 10:00:01,2\n'
            '"tx3"x,2024-05-11 10:00:02,3\ntx4,2024-05-11 10:00:03,4\n'
        ),
        "embedded_newlines.csv": u(
            H + '"line1\nline2",2024-05-11 10:00:00,1\n'
            '"a,""b""\r\nc",2024-05-11 10:00:01,2\ntx3,2024-05-11 10:00:02,3\n'
        ),
        "nul_bytes.csv": u(
            H + "tx1,2024-05-11 10:00:00,1\ntx\x002,2024-05-11 10:00:01,2\n"
            '"tx\x003",2024-05-11 10:00:02,3\ntx4,2024-05-11 10:00:03,4\n'
        ),
        "bare_carriage_return.csv": u(H + "tx1,2024-05-11\r10:00:00,1\ntx2,2024-05-11 10:00:01,2\n"),
        "old_mac_cr_line_endings.csv": u(H.replace("\n", "\r") + "tx1,2024-05-11 10:00:00,1\r"),
        "whitespace_and_blank_lines.csv": u(H + "\n\n   \ntx1 , 2024-05-11 10:00:00 , 1 \n\r\n\t\n"),
        "missing_values.csv": u(H + ",2024-05-11 10:00:00,1\ntx2,,2\ntx3,2024-05-11 10:00:02,\n,,\n"),
        "duplicate_rows.csv": u(H + "tx1,2024-05-11 10:00:00,5\n" * 3 + "tx1,2024-05-11 10:00:01,7\n" * 2),
        "bom_crlf.csv": u("\ufeff" + (H + good).replace("\n", "\r\n")),
        "no_final_newline.csv": u(H + good.rstrip("\n")),
        "header_only.csv": u(H),
        "header_only_no_newline.csv": u(H.rstrip("\n")),
        # --- header ---------------------------------------------------------------------------
        "header_case_and_spaces.csv": u(" Transaction_ID ,TIMESTAMP,  Amount  ,Note\ntx1,2024-05-11 10:00:00,1,n\n"),
        "duplicate_required_header.csv": u("transaction_id,timestamp,amount,Amount\ntx1,2024-05-11 10:00:00,1,2\n"),
        "duplicate_extra_header.csv": u("note,transaction_id,timestamp,amount,note\na,tx1,2024-05-11 10:00:00,1,b\n"),
        "missing_amount_column.csv": u("transaction_id,timestamp\ntx1,2024-05-11 10:00:00\n"),
        "malformed_header.csv": u('"transaction_id,timestamp,amount\n'),
        "blank_lines_only.csv": u("\n\r\n\n"),
        "empty.csv": b"",
        # --- delimiters -------------------------------------------------------------------------
        "semicolon_delimited.csv": u("transaction_id;timestamp;amount\ntx1;2024-05-11 10:00:00;1,50\n"),
        "tab_delimited.tsv": u("transaction_id\ttimestamp\tamount\ntx1\t2024-05-11 10:00:00\t1.50\n"),
        "pipe_delimited.csv": u("transaction_id|timestamp|amount\ntx1|2024-05-11 10:00:00|1.50\n"),
        "semicolon_with_extra_comma_column.csv": u(
            "transaction_id;timestamp;amount,note\ntx1;2024-05-11 10:00:00;1,x\n"
        ),
        # --- compression ----------------------------------------------------------------------
        "gzip.csv.gz": gz(u(H + good)),
        "gzip_multi_member.csv.gz": gz(u(H + good[:30])) + gz(u(good[30:] + "bad,2024-05-11 10:00:09,x\n")),
        "gzip_truncated.csv.gz": gz(u(H + good * 50))[:-20],
        "gzip_empty.csv.gz": gz(b""),
        "gzip_latin1.csv.gz": gz("transaction_id,timestamp,amount\ncafé,2024-05-11 10:00:00,1\n".encode("latin-1")),
        "plain_text_named_gz.csv.gz": u(H + good),
        # --- encoding -------------------------------------------------------------------------
        "latin1.csv": (
            "transaction_id,timestamp,amount\ntx1,2024-05-11 10:00:00,1\ncafé,2024-05-11 10:00:01,2\n"
        ).encode("latin-1"),
        "latin1_header.csv": "transaction_id,timestamp,amount,café\n".encode("latin-1"),
        "utf16.csv": (H + good).encode("utf-16"),
        "binary_png.csv": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01",
        "unicode_keys.csv": u(H + 'ключ,2024-05-11 10:00:00,1\n"鍵,😀",2024-05-11 10:00:01,2\n'),
        # --- timestamps -----------------------------------------------------------------------
        "dst_gap_europe_berlin.csv": u(
            H + "tx1,2024-03-31 01:59:59,1\ntx1,2024-03-31 02:00:00,2\n"
            "tx1,2024-03-31 02:30:00,3\ntx1,2024-03-31 03:00:00,4\n"
            "tx1,2024-03-31T02:30:00+01:00,5\n"
        ),
        "dst_overlap_europe_berlin.csv": u(
            H + "tx1,2024-10-27 01:59:59,1\ntx1,2024-10-27 02:00:00,2\n"
            "tx1,2024-10-27 02:59:59.999,3\ntx1,2024-10-27 03:00:00,4\n"
            "tx1,2024-10-27T02:30:00+02:00,5\ntx1,2024-10-27T02:30:00Z,6\n"
        ),
        "dst_new_york.csv": u(
            H + "tx1,2024-03-10 02:15:00,1\ntx1,2024-11-03 01:15:00,2\n"
            "tx1,2024-11-03 00:59:59,3\ntx1,2024-11-03 02:00:00,4\n"
        ),
        "dates_before_1970.csv": u(
            H + "tx1,1969-12-31 23:59:59.999,1\ntx1,1900-01-01 00:00:00,2\n"
            "tx1,0001-01-01T00:00:00Z,3\ntx1,0000-01-01 00:00:00,4\n"
        ),
        "far_future_dates.csv": u(
            H + "tx1,2262-04-12 00:00:00,1\ntx1,9999-12-31 23:59:59.999,2\n"
            "tx1,10000-01-01 00:00:00,3\ntx1,9999-12-31T23:59:59-18:00,4\n"
        ),
        "invalid_calendar_values.csv": u(
            H + "tx1,2023-02-29 00:00:00,1\ntx1,2024-02-29 00:00:00,2\n"
            "tx1,2024-05-11 24:00:00,3\ntx1,2016-12-31 23:59:60,4\n"
            "tx1,2024-13-01 00:00:00,5\ntx1,11/05/2024 10:00,6\n"
            "tx1,1715421600,7\ntx1,2024-05-11T10:00:00+19:00,8\n"
        ),
        # --- amounts --------------------------------------------------------------------------
        "amounts_edge_values.csv": u(
            H + "tx1,2024-05-11 10:00:00,1e308\ntx1,2024-05-11 10:00:01,-0\n"
            'tx1,2024-05-11 10:00:02,"1,234.50"\ntx1,2024-05-11 10:00:03,1,234.50\n'
            "tx1,2024-05-11 10:00:04,1e309\ntx1,2024-05-11 10:00:05,nan\n"
            "tx1,2024-05-11 10:00:06,-inf\ntx1,2024-05-11 10:00:07,1_000\n"
            "tx1,2024-05-11 10:00:08,0x10\ntx1,2024-05-11 10:00:09,1e-400\n"
            "tx1,2024-05-11 10:00:10,+.5\ntx1,2024-05-11 10:00:11,5.\n"
            "tx1,2024-05-11 10:00:12,€5\ntx1,2024-05-11 10:00:13,-1.5E+3\n"
        ),
        # DECIMAL(18, 4): exact, at most 4 decimal places, |amount| < 10**14, nothing rounded (issue 9)
        "amounts_decimal_18_4.csv": u(
            H
            + "".join(
                f"tx1,2024-05-11 10:00:{i:02d},{amount}\n"
                for i, amount in enumerate(
                    [
                        "1.2345",
                        "1.23456",
                        "1.50000",
                        "12345e-4",
                        "0.00001e1",
                        "1e-5",
                        "5e-324",
                        "0.1",
                        "99999999999999.9999",
                        "-99999999999999.9999",
                        "100000000000000",
                        "1e14",
                        "1e999999999",
                        "-0.0",
                    ]
                )
            )
        ),
    }
    return files


def main() -> None:
    CASES.mkdir(parents=True, exist_ok=True)
    for name, data in build().items():
        (CASES / name).write_bytes(data)
    print(f"wrote {len(build())} files to {CASES}")


if __name__ == "__main__":
    main()
