"""A reader process for test_readers.py: queries the published warehouse until told to stop.

    python -m tests.reliability.reader WAREHOUSE STOP_FILE MODE OUT_JSON

MODE "reconnect": open read-only, run STATE_SQL, close, repeat.
MODE "long": keep one read-only connection for ~2 s of queries, then reconnect.
Every query is ONE statement returning, per source file, the counts and the conservation law.
"""

from __future__ import annotations

import json
import os
import sys
import time

import duckdb

from tests.reliability.common import STATE_SQL


def main(warehouse: str, stop_file: str, mode: str, out: str) -> None:
    queries, failures, states, inconsistent = 0, [], set(), []
    con = None
    opened = 0.0
    while not os.path.exists(stop_file):
        try:
            if con is None:
                con = duckdb.connect(warehouse, read_only=True)
                opened = time.monotonic()
            rows = con.execute(STATE_SQL).fetchall()
            queries += 1
            state = json.dumps(rows)
            states.add(state)
            if not all(row[6] for row in rows):
                inconsistent.append(state)
        except Exception as error:  # noqa: BLE001 - every failure is reported, none is hidden
            failures.append(f"{type(error).__name__}: {error}")
            if con is not None:
                con.close()
                con = None
        if con is not None and (mode == "reconnect" or time.monotonic() - opened > 2.0):
            con.close()
            con = None
        time.sleep(0.05 if mode == "long" else 0.02)  # leave CPU to the runs (2-core CI)
    if con is not None:
        con.close()
    with open(out, "w") as handle:
        json.dump(
            {
                "mode": mode,
                "queries": queries,
                "failures": failures,
                "states": sorted(states),
                "inconsistent": inconsistent,
            },
            handle,
        )


if __name__ == "__main__":
    main(*sys.argv[1:5])
