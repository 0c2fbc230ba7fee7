"""Loads the bad-input corpus (tests/corpus/expected.json) and materializes its generated cases."""

from __future__ import annotations

import json
from pathlib import Path

CORPUS = Path(__file__).resolve().parent
EXPECTED = CORPUS / "expected.json"
HEADER = "transaction_id,timestamp,amount\n"
MB = 1 << 20


def load_cases() -> list[dict]:
    return json.loads(EXPECTED.read_text(encoding="utf-8"))["cases"]


def case_path(case: dict, tmp_path: Path) -> Path:
    """The input path of a case: the committed file, or one built in *tmp_path*."""
    if "file" in case:
        return CORPUS / case["file"]
    kind = case["generate"]
    target = tmp_path / f"{case['case']}.csv"
    if kind == "missing_path":
        return tmp_path / "no_such_dir" / "missing.csv"
    if kind == "directory":
        target.mkdir()
        return target
    if kind == "long_key_1mb":
        body = f"{'k' * MB},2024-05-11 10:00:00,1\nabc,2024-05-11 10:00:01,2\n"
    elif kind == "long_amount_1mb":
        body = f"tx1,2024-05-11 10:00:00,{'1' * MB}x\ntx1,2024-05-11 10:00:01,2\n"
    elif kind == "long_quoted_multiline_1mb":
        key = "\n".join(["k" * 1048] * 1000)  # ~1 MB over 1000 physical lines
        body = f'"{key}",2024-05-11 10:00:00,1\ntx2,2024-05-11 10:00:01,2\n'
    else:  # pragma: no cover - a typo in expected.json
        raise ValueError(f"unknown generated case {kind!r}")
    target.write_text(HEADER + body, encoding="utf-8")
    return target
