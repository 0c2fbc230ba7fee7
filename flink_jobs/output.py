"""What the window job writes, readable without importing PyFlink (the Dagster code server uses it)."""

from __future__ import annotations

import re
from pathlib import Path

ENGINES = ("sql", "datastream")  # the first is the default
JVM_HEAP = re.compile(r"[1-9]\d*[kKmMgG]")  # an -Xmx value for the local mini-cluster JVM (--jvm-heap)


def output_files(directory: Path) -> list[Path]:
    """Finished JSON-lines part files (Flink leaves nothing in progress after a successful batch job)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob("*.jsonl") if not p.name.startswith("."))


def count_output_rows(directory: Path) -> int:
    total = 0
    for path in output_files(directory):
        with open(path, "rb") as handle:
            total += sum(1 for _ in handle)
    return total
