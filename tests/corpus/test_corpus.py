"""Every case of the bad-input corpus through read_transactions, against tests/corpus/expected.json."""

from __future__ import annotations

import pandas as pd
import pytest

from tests.corpus.corpus import CORPUS, case_path, load_cases
from warehouse.ingest import InputFileError, read_transactions

CASES = load_cases()


def test_corpus_is_complete():
    names = [c["case"] for c in CASES]
    assert len(names) == len(set(names)) >= 30
    files = {c["file"] for c in CASES if "file" in c}
    on_disk = {f"cases/{p.name}" for p in (CORPUS / "cases").iterdir()}
    assert files == on_disk, "every corpus file has an expectation and vice versa"
    assert sum(c["expect"] == "fatal" for c in CASES) >= 10
    assert sum(c["expect"] == "rows" for c in CASES) >= 10


@pytest.mark.parametrize("case", CASES, ids=[c["case"] for c in CASES])
@pytest.mark.parametrize("chunk_rows", [1, 200_000])
def test_corpus_case(case, chunk_rows, tmp_path):
    path = case_path(case, tmp_path)
    reader = read_transactions(path, timezone=case.get("timezone", "UTC"), chunk_rows=chunk_rows)
    if case["expect"] == "fatal":
        with pytest.raises(InputFileError) as info:
            list(reader)
        message = str(info.value)
        assert str(path) in message and "\n" not in message
        for fragment in case["message"]:
            assert fragment in message
        return

    chunks = list(reader)
    valid = pd.concat([c.valid for c in chunks], ignore_index=True)
    rejected = pd.concat([c.rejected for c in chunks], ignore_index=True)
    assert (len(valid), len(rejected)) == (case["valid"], case["rejected"])
    # every record exactly once, numbered 1..N
    rows = sorted(valid["source_row"].tolist() + rejected["source_row"].tolist())
    assert rows == list(range(1, len(rows) + 1))
    for fragment in case["reasons"]:
        assert any(fragment in reason for reason in rejected["reason"]), (fragment, rejected["reason"].tolist())
    if "rejected_source_rows" in case:
        assert rejected["source_row"].tolist() == case["rejected_source_rows"]
    if "valid_lines" in case:
        assert valid["line"].tolist() == case["valid_lines"]
    if "event_time_ms" in case:
        assert valid["event_time_ms"].tolist() == case["event_time_ms"]
    if "amount_units" in case:  # exact amounts in units of 0.0001 (DECIMAL(18, 4))
        assert valid["amount_units"].tolist() == case["amount_units"]
    if "valid_key_lengths" in case:
        assert valid["key"].str.len().tolist() == case["valid_key_lengths"]
    if "raw_lengths" in case:
        assert rejected["raw"].str.len().tolist() == case["raw_lengths"]
        assert all(len(reason) < 200 for reason in rejected["reason"])  # long values are shortened
