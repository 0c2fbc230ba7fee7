"""flink_jobs/output.py: the job's option rules (shared with the settings) and its failure sentence."""

from pathlib import Path

import pytest

from flink_jobs.output import FAILURE_FILE, jvm_heap_problem, parallelism_problem, read_failure, write_failure


@pytest.mark.parametrize("value", ["1g", "768m", "2048M", "512k"])
def test_jvm_heaps_that_the_jvm_takes(value: str) -> None:
    assert jvm_heap_problem(value) is None


@pytest.mark.parametrize("value", ["1gb", "0m", "1g -Dfoo=bar", " 1g", "", "g"])
def test_jvm_heap_problem_is_one_sentence_naming_the_setting(value: str) -> None:
    assert jvm_heap_problem(value) == f"JVM heap must look like 1g or 768m, got {value!r}"
    assert jvm_heap_problem(value, "Flink JVM heap (TXN_FLINK_JVM_HEAP)").startswith(
        "Flink JVM heap (TXN_FLINK_JVM_HEAP) must"
    )


def test_parallelism_problem() -> None:
    assert parallelism_problem(1) is None and parallelism_problem(8) is None
    assert parallelism_problem(0) == "parallelism must be >= 1, got 0"
    assert parallelism_problem(-2, "Flink parallelism (TXN_FLINK_PARALLELISM)") == (
        "Flink parallelism (TXN_FLINK_PARALLELISM) must be >= 1, got -2"
    )


def test_the_failure_sentence_round_trips_and_is_absent_otherwise(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert read_failure(out) is None  # no folder yet
    write_failure(out, "Flink jobmanager 127.0.0.1:1 is unreachable.")
    assert (out / FAILURE_FILE).read_text(encoding="utf-8") == "Flink jobmanager 127.0.0.1:1 is unreachable.\n"
    assert read_failure(out) == "Flink jobmanager 127.0.0.1:1 is unreachable."
