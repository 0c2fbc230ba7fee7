"""What the window job takes and writes, readable without importing PyFlink (the Dagster code server
uses it): the rules of its options, shared with the settings, and its output files."""

from __future__ import annotations

import re
from pathlib import Path

OUTPUT_SUFFIX = ".csv"  # the job's part files (Flink names them part-<uuid>-<n>.csv)
JVM_HEAP = re.compile(r"[1-9]\d*[kKmMgG]")  # an -Xmx value for the local mini-cluster JVM (--jvm-heap)


def jvm_heap_problem(value: str, name: str = "JVM heap") -> str | None:
    """Why `value` is not an -Xmx value (one sentence), or None."""
    return None if JVM_HEAP.fullmatch(value) else f"{name} must look like 1g or 768m, got {value!r}"


def parallelism_problem(value: int, name: str = "parallelism") -> str | None:
    return None if value >= 1 else f"{name} must be >= 1, got {value}"


# A job that fails for a reason the user can fix (a broken custom aggregate, an unreachable or
# unsuitable cluster, input the cluster cannot read, a cancellation) leaves its one sentence here:
# Dagster Pipes only reports the exit code, and the asset puts the sentence into its Failure.
FAILURE_FILE = "job_failure.txt"


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


def write_failure(output_dir: Path, sentence: str) -> None:
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / FAILURE_FILE).write_text(sentence + "\n", encoding="utf-8")


def read_failure(output_dir: Path) -> str | None:
    """The sentence a failed job left in its output directory, if any."""
    try:
        return (Path(output_dir) / FAILURE_FILE).read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
