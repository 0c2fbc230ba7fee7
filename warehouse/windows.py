"""The window spec: which windows a replay computes and how lateness is judged. One value, one set of rules.

A `WindowSpec` (kind + parameters, all in milliseconds) travels unchanged from the settings
(`TXN_WINDOW_KIND`, ...) to the Flink job's arguments, the loader, the checks, the DuckDB
recomputation and the plain-Python reference. Its rules and defaults are defined here once; every
layer validates through `WindowSpec.problems()`, whose sentences name the environment variable.

The kinds are Flink's own assigners: ``tumbling`` (``TumblingEventTimeWindows.of(size)``), ``sliding``
(``SlidingEventTimeWindows.of(size, slide)``) and ``session`` (``EventTimeSessionWindows.withGap(gap)``:
windows ``[ts, ts + gap)`` of one key that overlap or touch merge), aligned by floor, so times before
1970 work. The watermark before event ``e`` is ``W(e) = max(event time of the events before e) -
out_of_orderness - 1``; a window ``w`` is late iff ``w.end - 1 + allowed_lateness <= W(e)``
(WindowOperator.isWindowLate). The windows of each kind, exactly: docs/windows.md#the-rule.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

KINDS = ("tumbling", "sliding", "session")

DEFAULT_KIND = "tumbling"
DEFAULT_SIZE_MS = 5000
DEFAULT_SLIDE_MS = 0  # 0 = not set (only sliding windows have a slide)
DEFAULT_GAP_MS = 0  # 0 = not set (only session windows have a gap)
DEFAULT_SESSION_GAP_MS = 60_000  # the lab's EventTimeSessionWindows.with_gap(1 min), when kind=session
DEFAULT_OUT_OF_ORDERNESS_MS = 1000
DEFAULT_ALLOWED_LATENESS_MS = 0

# Bounds that keep every watermark and window end inside a signed 64-bit millisecond (the event
# times themselves span years 0001-9999, about +-2.5e14 ms).
MAX_DURATION_MS = 10**12  # about 31 years
MAX_WINDOWS_PER_EVENT = 10_000  # sliding: size / slide windows hold each event

ENV_VARS = {
    "kind": "TXN_WINDOW_KIND",
    "size_ms": "TXN_WINDOW_SIZE_MS",
    "slide_ms": "TXN_WINDOW_SLIDE_MS",
    "gap_ms": "TXN_SESSION_GAP_MS",
    "out_of_orderness_ms": "TXN_OUT_OF_ORDERNESS_MS",
    "allowed_lateness_ms": "TXN_ALLOWED_LATENESS_MS",
}


class WindowSpecError(ValueError):
    """An invalid window spec; the message has one sentence per problem, naming the variable."""


@dataclass(frozen=True)
class WindowSpec:
    kind: str = DEFAULT_KIND
    size_ms: int = DEFAULT_SIZE_MS
    slide_ms: int = DEFAULT_SLIDE_MS
    gap_ms: int = DEFAULT_GAP_MS
    out_of_orderness_ms: int = DEFAULT_OUT_OF_ORDERNESS_MS
    allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS

    @classmethod
    def unvalidated(
        cls,
        kind: str = DEFAULT_KIND,
        *,
        size_ms: int | None = None,
        slide_ms: int | None = None,
        gap_ms: int | None = None,
        out_of_orderness_ms: int = DEFAULT_OUT_OF_ORDERNESS_MS,
        allowed_lateness_ms: int = DEFAULT_ALLOWED_LATENESS_MS,
    ) -> WindowSpec:
        """A spec from settings where None or 0 means "not set": tumbling and sliding windows
        default to a size of 5000 ms, sessions to the lab's gap of 1 min. A parameter set for a
        kind it does not apply to is a problem (see `problems`)."""
        if kind in ("tumbling", "sliding") and not size_ms:
            size_ms = DEFAULT_SIZE_MS
        if kind == "session" and not gap_ms:
            gap_ms = DEFAULT_SESSION_GAP_MS
        spec = cls(
            kind=kind,
            size_ms=size_ms or 0,
            slide_ms=slide_ms or 0,
            gap_ms=gap_ms or 0,
            out_of_orderness_ms=out_of_orderness_ms,
            allowed_lateness_ms=allowed_lateness_ms,
        )
        return spec

    @classmethod
    def of(cls, kind: str = DEFAULT_KIND, **values) -> WindowSpec:
        """`unvalidated(...)`, validated: raises WindowSpecError."""
        return cls.unvalidated(kind, **values).validate()

    def problems(self) -> list[str]:
        """Every problem, one sentence each naming the environment variable ([] when valid)."""
        found: list[str] = []
        for name, var in ENV_VARS.items():
            value = getattr(self, name)
            if name != "kind" and (isinstance(value, bool) or not isinstance(value, int)):
                found.append(f"{var} must be a whole number of milliseconds, got {value!r}")
        if found:
            return found
        if self.kind not in KINDS:
            return [f"TXN_WINDOW_KIND must be one of {', '.join(KINDS)}, got {self.kind!r}"]
        if self.kind in ("tumbling", "sliding"):
            if not 0 < self.size_ms <= MAX_DURATION_MS:
                found.append(f"TXN_WINDOW_SIZE_MS must be from 1 to {MAX_DURATION_MS} ms for {self.kind} windows, got {self.size_ms}")  # fmt: skip
            if self.gap_ms:
                found.append(f"TXN_SESSION_GAP_MS applies to session windows only; unset it for {self.kind} windows (got {self.gap_ms})")  # fmt: skip
        if self.kind == "tumbling" and self.slide_ms:
            found.append(f"TXN_WINDOW_SLIDE_MS applies to sliding windows only; unset it for tumbling windows or set TXN_WINDOW_KIND=sliding (got {self.slide_ms})")  # fmt: skip
        if self.kind == "sliding":
            if self.slide_ms <= 0:
                found.append(f"TXN_WINDOW_SLIDE_MS must be > 0 ms for sliding windows, got {self.slide_ms}")
            elif 0 < self.size_ms and self.slide_ms > self.size_ms:
                found.append(f"TXN_WINDOW_SLIDE_MS ({self.slide_ms}) must not exceed TXN_WINDOW_SIZE_MS ({self.size_ms}): a slide larger than the window would skip events")  # fmt: skip
            elif 0 < self.size_ms and -(-self.size_ms // self.slide_ms) > MAX_WINDOWS_PER_EVENT:
                found.append(f"TXN_WINDOW_SIZE_MS / TXN_WINDOW_SLIDE_MS must be at most {MAX_WINDOWS_PER_EVENT} windows per event, got {self.size_ms} / {self.slide_ms}")  # fmt: skip
        if self.kind == "session":
            if not 0 < self.gap_ms <= MAX_DURATION_MS:
                found.append(f"TXN_SESSION_GAP_MS must be from 1 to {MAX_DURATION_MS} ms for session windows, got {self.gap_ms}")  # fmt: skip
            if self.slide_ms:
                found.append(f"TXN_WINDOW_SLIDE_MS applies to sliding windows only; unset it for session windows (got {self.slide_ms})")  # fmt: skip
            if self.size_ms:
                found.append(f"TXN_WINDOW_SIZE_MS does not apply to session windows (their length follows the data); unset it (got {self.size_ms})")  # fmt: skip
        for name in ("out_of_orderness_ms", "allowed_lateness_ms"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_DURATION_MS:
                found.append(f"{ENV_VARS[name]} must be from 0 to {MAX_DURATION_MS} ms, got {value}")
        return found

    def validate(self) -> WindowSpec:
        problems = self.problems()
        if problems:
            raise WindowSpecError("; ".join(problems))
        return self

    # --- the windows -------------------------------------------------------------------------

    def windows_of(self, ts_ms: int) -> list[tuple[int, int]]:
        """The windows ``(start, end)`` an event at ``ts_ms`` is assigned to, latest first (for a
        session: the event's own window before merging)."""
        if self.kind == "session":
            return [(ts_ms, ts_ms + self.gap_ms)]
        step = self.size_ms if self.kind == "tumbling" else self.slide_ms
        last = ts_ms - ts_ms % step  # Python's % floors, also before 1970
        windows = []
        start = last
        while start > ts_ms - self.size_ms:
            windows.append((start, start + self.size_ms))
            start -= step
        return windows

    def is_late(self, window_end_ms: int, watermark_ms: int | None) -> bool:
        """WindowOperator.isWindowLate: the window's last millisecond plus the allowed lateness is
        at or behind the watermark. With no watermark yet (the first event), nothing is late."""
        return watermark_ms is not None and window_end_ms - 1 + self.allowed_lateness_ms <= watermark_ms

    def watermark_after(self, max_event_time_ms: int | None) -> int | None:
        return None if max_event_time_ms is None else max_event_time_ms - self.out_of_orderness_ms - 1

    # --- presentation ------------------------------------------------------------------------

    def as_dict(self) -> dict[str, object]:
        return asdict(self)

    def describe(self) -> str:
        """E.g. 'sliding 10000 ms / 5000 ms, out-of-orderness 1000 ms, allowed lateness 0 ms'."""
        if self.kind == "tumbling":
            shape = f"tumbling {self.size_ms} ms"
        elif self.kind == "sliding":
            shape = f"sliding {self.size_ms} ms every {self.slide_ms} ms"
        else:
            shape = f"session gap {self.gap_ms} ms"
        return (
            f"{shape}, out-of-orderness {self.out_of_orderness_ms} ms, allowed lateness {self.allowed_lateness_ms} ms"
        )

    def job_arguments(self) -> list[str]:
        """The Flink job's command-line arguments for this spec (flink_jobs/window_job.py)."""
        return [
            "--window-kind", self.kind,
            "--window-size-ms", str(self.size_ms),
            "--window-slide-ms", str(self.slide_ms),
            "--session-gap-ms", str(self.gap_ms),
            "--out-of-orderness-ms", str(self.out_of_orderness_ms),
            "--allowed-lateness-ms", str(self.allowed_lateness_ms),
        ]  # fmt: skip
