"""What the window job writes, readable without importing PyFlink (the Dagster code server uses it)."""

from __future__ import annotations

import re
from pathlib import Path

OUTPUT_SUFFIX = ".csv"  # the job's part files (Flink names them part-<uuid>-<n>.csv)
JVM_HEAP = re.compile(r"[1-9]\d*[kKmMgG]")  # an -Xmx value for the local mini-cluster JVM (--jvm-heap)


def output_files(directory: Path) -> list[Path]:
    """Finished part files (in-progress files are hidden: they start with a dot)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.rglob(f"*{OUTPUT_SUFFIX}") if not p.name.startswith("."))


def count_output_rows(directory: Path) -> int:
    total = 0
    for path in output_files(directory):
        with open(path, "rb") as handle:
            total += sum(1 for _ in handle)
    return total
