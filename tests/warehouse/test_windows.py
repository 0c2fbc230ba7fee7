"""Tests for the window spec (warehouse.windows): defaults, window assignment, lateness, every
validation rule and the round trip through the Flink job's command line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from flink_jobs.window_job import parse_args, spec_from_args
from warehouse.windows import ENV_VARS, KINDS, MAX_DURATION_MS, MAX_WINDOWS_PER_EVENT, WindowSpec, WindowSpecError

REPO_ROOT = Path(__file__).resolve().parents[2]


def error_of(kind: str = "tumbling", **values) -> str:
    """The message WindowSpec.of raises; also checks that problems() lists the same sentences."""
    with pytest.raises(WindowSpecError) as raised:
        WindowSpec.of(kind, **values)
    assert str(raised.value) == "; ".join(WindowSpec.unvalidated(kind, **values).problems())
    return str(raised.value)


# --------------------------------------------------------------------------- #
# defaults
# --------------------------------------------------------------------------- #
def test_default_spec_is_the_labs_tumbling_window() -> None:
    spec = WindowSpec()
    assert (spec.kind, spec.size_ms, spec.slide_ms, spec.gap_ms) == ("tumbling", 5000, 0, 0)
    assert (spec.out_of_orderness_ms, spec.allowed_lateness_ms) == (1000, 0)
    assert spec.problems() == []
    assert WindowSpec.of() == spec


@pytest.mark.parametrize("unset", [None, 0])
def test_unset_parameters_default_per_kind(unset) -> None:
    tumbling = WindowSpec.of("tumbling", size_ms=unset, slide_ms=unset, gap_ms=unset)
    assert (tumbling.size_ms, tumbling.slide_ms, tumbling.gap_ms) == (5000, 0, 0)
    sliding = WindowSpec.of("sliding", size_ms=unset, slide_ms=1000, gap_ms=unset)
    assert (sliding.size_ms, sliding.slide_ms, sliding.gap_ms) == (5000, 1000, 0)
    session = WindowSpec.of("session", size_ms=unset, slide_ms=unset, gap_ms=unset)
    assert (session.size_ms, session.slide_ms, session.gap_ms) == (0, 0, 60_000)  # the lab's 1 min gap


def test_sliding_windows_have_no_default_slide() -> None:
    message = error_of("sliding")
    assert message == "TXN_WINDOW_SLIDE_MS must be > 0 ms for sliding windows, got 0"


def test_spec_is_frozen_and_compares_by_value() -> None:
    spec = WindowSpec.of("session", gap_ms=3000)
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.gap_ms = 1  # type: ignore[misc]
    assert spec == WindowSpec(kind="session", size_ms=0, gap_ms=3000)
    assert spec != WindowSpec.of("session", gap_ms=3001)
    assert set(spec.as_dict()) == set(ENV_VARS)
    assert spec.as_dict()["gap_ms"] == 3000


# --------------------------------------------------------------------------- #
# window assignment
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    ("ts", "window"),
    [
        (0, (0, 5000)),
        (4999, (0, 5000)),
        (5000, (5000, 10000)),
        (1_715_421_603_000, (1_715_421_600_000, 1_715_421_605_000)),
        # before 1970: floor, not truncation towards zero
        (-1, (-5000, 0)),
        (-4999, (-5000, 0)),
        (-5000, (-5000, 0)),
        (-5001, (-10000, -5000)),
        (-62_135_596_800_000, (-62_135_596_800_000, -62_135_596_795_000)),  # 0001-01-01
    ],
)
def test_tumbling_window_of_an_event(ts: int, window: tuple[int, int]) -> None:
    assert WindowSpec().windows_of(ts) == [window]


@pytest.mark.parametrize(
    ("ts", "windows"),
    [
        (7000, [(5000, 15000), (0, 10000)]),
        (5000, [(5000, 15000), (0, 10000)]),
        (4999, [(0, 10000), (-5000, 5000)]),
        (-1, [(-5000, 5000), (-10000, 0)]),
        (-5000, [(-5000, 5000), (-10000, 0)]),
    ],
)
def test_sliding_windows_of_an_event_latest_first(ts: int, windows: list) -> None:
    assert WindowSpec.of("sliding", size_ms=10_000, slide_ms=5000).windows_of(ts) == windows


@pytest.mark.parametrize(
    ("ts", "windows"),
    [
        # size 7, slide 3: an event is in 2 or 3 windows
        (0, [(0, 7), (-3, 4), (-6, 1)]),
        (2, [(0, 7), (-3, 4)]),
        (5, [(3, 10), (0, 7)]),
        (6, [(6, 13), (3, 10), (0, 7)]),
        (-1, [(-3, 4), (-6, 1)]),
        (-7, [(-9, -2), (-12, -5)]),
    ],
)
def test_sliding_size_not_a_multiple_of_the_slide(ts: int, windows: list) -> None:
    assert WindowSpec.of("sliding", size_ms=7, slide_ms=3).windows_of(ts) == windows


def test_sliding_with_slide_equal_to_size_is_tumbling() -> None:
    sliding = WindowSpec.of("sliding", size_ms=5000, slide_ms=5000)
    for ts in (-5001, -1, 0, 4999, 5000, 123_456_789):
        assert sliding.windows_of(ts) == WindowSpec().windows_of(ts)


def test_session_window_of_an_event_is_its_own_gap() -> None:
    spec = WindowSpec.of("session", gap_ms=3000)
    assert spec.windows_of(10_000) == [(10_000, 13_000)]
    assert spec.windows_of(-1) == [(-1, 2999)]


@settings(max_examples=300)
@given(
    ts=st.integers(-(10**14), 10**14),
    size=st.integers(1, 300),
    data=st.data(),
)
def test_aligned_windows_are_every_window_holding_the_event(ts: int, size: int, data) -> None:
    kind = data.draw(st.sampled_from(["tumbling", "sliding"]))
    slide = data.draw(st.integers(1, size)) if kind == "sliding" else 0
    spec = WindowSpec.of(kind, size_ms=size, slide_ms=slide)
    step = slide or size
    # brute force: every start on a multiple of the step with start <= ts < start + size
    expected = [(s, s + size) for s in range(ts, ts - size, -1) if s % step == 0]
    assert spec.windows_of(ts) == expected


# --------------------------------------------------------------------------- #
# watermark and lateness
# --------------------------------------------------------------------------- #
def test_watermark_is_max_minus_out_of_orderness_minus_one() -> None:
    spec = WindowSpec.of(out_of_orderness_ms=250)
    assert spec.watermark_after(None) is None
    assert spec.watermark_after(10_000) == 9_749
    assert WindowSpec.of(out_of_orderness_ms=0).watermark_after(-5) == -6


@pytest.mark.parametrize(
    ("end", "watermark", "lateness", "late"),
    [
        (5000, 4999, 0, True),  # the window's last ms is at the watermark
        (5000, 4998, 0, False),
        (5000, 5000, 1, True),
        (5000, 4999, 1, False),  # allowed lateness keeps it open one more ms
        (0, -1, 0, True),  # window [-5000, 0)
        (0, -2, 0, False),
        (5000, None, 0, False),  # no watermark before the first event
        (-(10**14), None, 10**12, False),
    ],
)
def test_is_late_boundaries(end: int, watermark: int | None, lateness: int, late: bool) -> None:
    assert WindowSpec.of(allowed_lateness_ms=lateness).is_late(end, watermark) is late


# --------------------------------------------------------------------------- #
# validation: one rule per test, each sentence naming the variable
# --------------------------------------------------------------------------- #
def test_valid_specs_have_no_problems() -> None:
    for spec in (
        WindowSpec(),
        WindowSpec.of("tumbling", size_ms=1, out_of_orderness_ms=0),
        WindowSpec.of("sliding", size_ms=10_000, slide_ms=10_000),
        WindowSpec.of("sliding", size_ms=MAX_WINDOWS_PER_EVENT, slide_ms=1),
        WindowSpec.of("session", gap_ms=1, allowed_lateness_ms=MAX_DURATION_MS),
        WindowSpec.of("session", gap_ms=MAX_DURATION_MS, out_of_orderness_ms=MAX_DURATION_MS),
    ):
        assert spec.problems() == [], spec
        assert spec.validate() is spec


def test_error_is_a_value_error() -> None:
    assert issubclass(WindowSpecError, ValueError)


def test_slide_on_tumbling_windows() -> None:
    message = error_of("tumbling", slide_ms=1000)
    assert message == (
        "TXN_WINDOW_SLIDE_MS applies to sliding windows only; unset it for tumbling windows or set "
        "TXN_WINDOW_KIND=sliding (got 1000)"
    )


def test_slide_on_session_windows() -> None:
    assert error_of("session", slide_ms=500) == (
        "TXN_WINDOW_SLIDE_MS applies to sliding windows only; unset it for session windows (got 500)"
    )


def test_slide_larger_than_size() -> None:
    message = error_of("sliding", size_ms=1000, slide_ms=2000)
    assert message.startswith("TXN_WINDOW_SLIDE_MS (2000) must not exceed TXN_WINDOW_SIZE_MS (1000)")
    assert "skip events" in message


def test_negative_slide() -> None:
    assert error_of("sliding", size_ms=1000, slide_ms=-1) == (
        "TXN_WINDOW_SLIDE_MS must be > 0 ms for sliding windows, got -1"
    )


@pytest.mark.parametrize("gap", [-1, -60_000])
def test_session_gap_not_positive(gap: int) -> None:
    assert error_of("session", gap_ms=gap) == (
        f"TXN_SESSION_GAP_MS must be from 1 to {MAX_DURATION_MS} ms for session windows, got {gap}"
    )


def test_session_gap_zero_on_the_dataclass_itself() -> None:
    # 0 means "default" only through of()/unvalidated(); the dataclass itself must have a gap
    assert WindowSpec(kind="session", size_ms=0, gap_ms=0).problems() == [
        f"TXN_SESSION_GAP_MS must be from 1 to {MAX_DURATION_MS} ms for session windows, got 0"
    ]


def test_gap_on_tumbling_or_sliding_windows() -> None:
    assert error_of("tumbling", gap_ms=3000) == (
        "TXN_SESSION_GAP_MS applies to session windows only; unset it for tumbling windows (got 3000)"
    )
    assert error_of("sliding", slide_ms=1000, gap_ms=3000) == (
        "TXN_SESSION_GAP_MS applies to session windows only; unset it for sliding windows (got 3000)"
    )


def test_size_on_session_windows() -> None:
    message = error_of("session", size_ms=5000)
    assert message == (
        "TXN_WINDOW_SIZE_MS does not apply to session windows (their length follows the data); unset it (got 5000)"
    )


@pytest.mark.parametrize("size", [-1, MAX_DURATION_MS + 1])
def test_size_out_of_range(size: int) -> None:
    assert error_of("tumbling", size_ms=size) == (
        f"TXN_WINDOW_SIZE_MS must be from 1 to {MAX_DURATION_MS} ms for tumbling windows, got {size}"
    )


@pytest.mark.parametrize("kind", ["hopping", "Tumbling", "", " session"])
def test_unknown_kind(kind: str) -> None:
    assert error_of(kind) == f"TXN_WINDOW_KIND must be one of tumbling, sliding, session, got {kind!r}"
    assert kind not in KINDS


@pytest.mark.parametrize(
    ("field", "var"),
    [("allowed_lateness_ms", "TXN_ALLOWED_LATENESS_MS"), ("out_of_orderness_ms", "TXN_OUT_OF_ORDERNESS_MS")],
)
@pytest.mark.parametrize("value", [-1, MAX_DURATION_MS + 1])
def test_negative_or_huge_lateness_and_out_of_orderness(field: str, var: str, value: int) -> None:
    assert error_of("tumbling", **{field: value}) == f"{var} must be from 0 to {MAX_DURATION_MS} ms, got {value}"


def test_too_many_windows_per_event() -> None:
    message = error_of("sliding", size_ms=MAX_WINDOWS_PER_EVENT + 1, slide_ms=1)
    assert message == (
        f"TXN_WINDOW_SIZE_MS / TXN_WINDOW_SLIDE_MS must be at most {MAX_WINDOWS_PER_EVENT} windows per event, "
        f"got {MAX_WINDOWS_PER_EVENT + 1} / 1"
    )
    # ceil(size / slide) counts: 20001 / 2 needs 10001 windows for some events
    assert "windows per event" in error_of("sliding", size_ms=2 * MAX_WINDOWS_PER_EVENT + 1, slide_ms=2)
    assert WindowSpec.of("sliding", size_ms=2 * MAX_WINDOWS_PER_EVENT, slide_ms=2).problems() == []


@pytest.mark.parametrize(
    ("field", "var", "value"),
    [
        ("size_ms", "TXN_WINDOW_SIZE_MS", 5000.0),
        ("slide_ms", "TXN_WINDOW_SLIDE_MS", "1000"),
        ("gap_ms", "TXN_SESSION_GAP_MS", 2.5),
        ("out_of_orderness_ms", "TXN_OUT_OF_ORDERNESS_MS", True),
        ("allowed_lateness_ms", "TXN_ALLOWED_LATENESS_MS", None),
    ],
)
def test_non_integer_values(field: str, var: str, value: object) -> None:
    spec = dataclasses.replace(WindowSpec(), **{field: value})
    assert spec.problems() == [f"{var} must be a whole number of milliseconds, got {value!r}"]
    with pytest.raises(WindowSpecError, match=var):
        spec.validate()


def test_every_problem_is_reported_at_once() -> None:
    spec = WindowSpec(kind="session", size_ms=5000, slide_ms=100, gap_ms=0, out_of_orderness_ms=-1,
                      allowed_lateness_ms=-1)  # fmt: skip
    problems = spec.problems()
    assert len(problems) == 5, problems
    for var in ("TXN_SESSION_GAP_MS", "TXN_WINDOW_SLIDE_MS", "TXN_WINDOW_SIZE_MS", "TXN_OUT_OF_ORDERNESS_MS",
                "TXN_ALLOWED_LATENESS_MS"):  # fmt: skip
        assert sum(p.startswith(var) for p in problems) == 1, (var, problems)
    with pytest.raises(WindowSpecError) as raised:
        spec.validate()
    assert str(raised.value) == "; ".join(problems)


# --------------------------------------------------------------------------- #
# presentation and the job's command line
# --------------------------------------------------------------------------- #
def test_describe_names_every_parameter_of_the_kind() -> None:
    assert WindowSpec().describe() == "tumbling 5000 ms, out-of-orderness 1000 ms, allowed lateness 0 ms"
    assert WindowSpec.of("sliding", size_ms=10_000, slide_ms=5000, allowed_lateness_ms=300).describe() == (
        "sliding 10000 ms every 5000 ms, out-of-orderness 1000 ms, allowed lateness 300 ms"
    )
    assert WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=0).describe() == (
        "session gap 3000 ms, out-of-orderness 0 ms, allowed lateness 0 ms"
    )


SPECS = [
    WindowSpec(),
    WindowSpec.of("tumbling", size_ms=60_000, out_of_orderness_ms=0, allowed_lateness_ms=2500),
    WindowSpec.of("sliding", size_ms=10_000, slide_ms=5000, out_of_orderness_ms=1000, allowed_lateness_ms=300),
    WindowSpec.of("sliding", size_ms=7, slide_ms=3),
    WindowSpec.of("session", gap_ms=3000, out_of_orderness_ms=1000, allowed_lateness_ms=500),
    WindowSpec.of("session"),
]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.describe())
def test_job_arguments_round_trip_through_the_jobs_parser(spec: WindowSpec) -> None:
    args = parse_args(["--input", "staged.csv", "--output", "out", *spec.job_arguments()])
    assert spec_from_args(args) == spec
    assert str(args.input) == "staged.csv"


def test_job_defaults_are_the_default_spec() -> None:
    args = parse_args(["--input", "x", "--output", "y"])
    assert spec_from_args(args) == WindowSpec()
    session = parse_args(["--input", "x", "--output", "y", "--window-kind", "session"])
    assert spec_from_args(session) == WindowSpec.of("session", gap_ms=60_000)


def test_job_rejects_an_invalid_spec_with_the_same_sentence() -> None:
    args = parse_args(["--input", "x", "--output", "y", "--window-slide-ms", "1000"])
    with pytest.raises(WindowSpecError, match="TXN_WINDOW_SLIDE_MS applies to sliding windows only"):
        spec_from_args(args)
    with pytest.raises(SystemExit):  # argparse refuses an unknown kind
        parse_args(["--input", "x", "--output", "y", "--window-kind", "hopping"])


def test_importing_the_job_does_not_start_java() -> None:
    code = (
        "import sys\n"
        "import flink_jobs.window_job as job\n"
        "from warehouse.windows import WindowSpec\n"
        "assert job.spec_from_args(job.parse_args(['--input', 'x', '--output', 'y'])) == WindowSpec()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('pyflink', 'py4j')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
