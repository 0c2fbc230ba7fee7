"""Your own AggregateFunction, by import path, run inside the Flink window job.

A user names a class with the lab's interface (`create_accumulator`, `add(value, accumulator)`,
`merge(acc_a, acc_b)`, `get_result(accumulator)`) in `TXN_AGGREGATE=package.module:ClassName`
(comma-separated for several); `add` receives the lab's tuple `(key, event_time_ms, amount)`.

Design: Python runs once per batch of windows (~45k events), never once per record. Java operators
chained into the window operator's task collect each window's events, pack windows into one columnar
record and write the results; `BatchAggregator` is the one PyFlink `map` in between. A window's
events are exactly the ones `window_averages` counts. Every piece of a window is folded in chunks of
PARTIAL_EVENTS and the partial accumulators merged left to right, so merge is always exercised and,
if it is order-independent, the result is a pure function of the file and the spec. A method that
fails raises CustomAggregateError, one sentence that reaches the Dagster step. User code runs with
the pipeline's permissions, in the Dagster process and in Flink's Python worker. The operator
chain, the rules and Python's measured share: docs/custom-aggregates.md.
"""

from __future__ import annotations

import decimal
import importlib
import inspect
import numbers
import os
import re
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np

ENV_VAR = "TXN_AGGREGATE"
METHODS = ("create_accumulator", "add", "merge", "get_result")
# Events folded into one partial accumulator before it is merged with the others. Small, so that
# merge runs on real data, not only on sessions Flink merged; the extra create_accumulator + merge
# cost 2 calls per 16 adds, and most windows (500 keys, 5 s) hold one or two events anyway.
PARTIAL_EVENTS = 16
# Characters of event times + amounts per batch, i.e. per Python call (~45k events): PyFlink's
# per-call cost vanishes, and a batch is a few MB of Python objects.
BATCH_CHARS = 1 << 20
# Written by the job's client (flink_jobs/window_job.py) into its output folder when a custom
# aggregate failed: the one-sentence reason, for the Dagster step's failure.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CustomAggregateError(RuntimeError):
    """A custom aggregate failed inside the Flink job (one sentence)."""


def parse_spec(spec_text: str | Sequence[str]) -> list[str]:
    """The import paths of `TXN_AGGREGATE` (comma-separated text, or a list), checked for form.

    Raises ValueError naming the value and what is wrong. Empty text means no aggregates.
    """
    if isinstance(spec_text, str):
        shown = spec_text
        entries = [part.strip() for part in spec_text.split(",")] if spec_text.strip() else []
    else:
        shown = ",".join(spec_text)
        entries = [str(part).strip() for part in spec_text]
    problems = []
    seen: set[str] = set()
    for entry in entries:
        if not entry:
            problems.append(f"{ENV_VAR}={shown!r} has an empty entry (write package.module:ClassName, "
                            "several separated by single commas)")  # fmt: skip
            continue
        module, colon, name = entry.partition(":")
        if not colon or not _dotted(module) or not _dotted(name):
            problems.append(f"{ENV_VAR} entry {entry!r} is not package.module:ClassName (a dotted module path, "
                            "a colon, then the class name)")  # fmt: skip
        elif entry in seen:
            problems.append(f"{ENV_VAR} lists {entry!r} twice")
        seen.add(entry)
    if problems:
        raise ValueError("; ".join(problems))
    return entries


def _dotted(text: str) -> bool:
    return bool(text) and all(part.isidentifier() for part in text.split("."))


def load_aggregates(spec_text: str | Sequence[str]) -> list[tuple[str, object]]:
    """(import path, instance) for every aggregate of `TXN_AGGREGATE`, imported and instantiated.

    Raises ValueError with one sentence per problem, each naming the entry and what is wrong: a
    malformed value, a module or class that is missing, an object without one of the four methods.
    """
    loaded = []
    problems = []
    for path in parse_spec(spec_text):
        try:
            loaded.append((path, load_aggregate(path)))
        except ValueError as error:
            problems.append(str(error))
    if problems:
        raise ValueError("; ".join(problems))
    return loaded


def load_aggregate(path: str) -> object:
    """The aggregate object of one `package.module:ClassName` (a class is instantiated without
    arguments; any other object must have the four methods itself)."""
    module_name, _, attribute = path.partition(":")
    where = f"{ENV_VAR} entry {path!r}"
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as error:
        if error.name and (module_name == error.name or module_name.startswith(error.name + ".")):
            pythonpath = os.environ.get("PYTHONPATH", "")
            raise ValueError(f"{where}: module {module_name!r} was not found on PYTHONPATH "
                             f"({pythonpath!r}) or in the venv") from None  # fmt: skip
        raise ValueError(f"{where}: importing module {module_name!r} failed with {error!r}") from None
    except Exception as error:  # user code: any exception at import time
        raise ValueError(f"{where}: importing module {module_name!r} raised {error!r}") from None
    target: object = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            origin = getattr(module, "__file__", None) or module_name
            raise ValueError(f"{where}: module {module_name!r} ({origin}) has no attribute {attribute!r}")
        target = getattr(target, part)
    missing = [name for name in METHODS if not _has_method(target, name)]
    if len(missing) == len(METHODS):
        raise ValueError(f"{where}: {attribute} is a {'class' if inspect.isclass(target) else type(target).__name__} without any of the methods of an "
                         f"AggregateFunction ({_and(list(METHODS))})")  # fmt: skip
    if missing:
        raise ValueError(f"{where}: {attribute} lacks {_and(missing)} (an AggregateFunction needs all of "
                         f"{_and(list(METHODS))})")  # fmt: skip
    if inspect.isclass(target):
        try:
            return target()
        except Exception as error:
            raise ValueError(
                f"{where}: {attribute}() raised {error!r} (the class is created without arguments)"
            ) from None
    return target


def _has_method(target: object, name: str) -> bool:
    method = getattr(target, name, None)
    # pyflink's AggregateFunction declares the four as abstract: inheriting one is lacking it
    return callable(method) and not getattr(method, "__isabstractmethod__", False)


def _and(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def window_text(start_ms: int, end_ms: int) -> str:
    """E.g. '[2024-05-11 10:00:00.000, 2024-05-11 10:00:05.000) UTC'."""

    def at(ms: int) -> str:
        try:
            return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
        except OverflowError:
            return f"{ms} ms"

    return f"[{at(start_ms)}, {at(end_ms)}) UTC"


def _value_text(path: str, owner: str, result: object, key: str, starts: str, ends: str, window: int) -> str:
    """get_result as the DOUBLE column's text ('' = NULL); raises CustomAggregateError otherwise."""
    if result is None:
        return ""
    if isinstance(result, (numbers.Real, decimal.Decimal)) and not isinstance(result, bool):
        try:
            return repr(float(result))  # repr round-trips the double exactly; nan/inf load as such
        except (OverflowError, ValueError) as error:
            problem = f"returned {_short(repr(result))}, which is no DOUBLE ({error})"
    else:
        problem = f"returned {_short(repr(result))} (a {type(result).__name__}), not a number or None"
    raise CustomAggregateError(f"custom aggregate {path} failed in the Flink job: {owner}.get_result {problem}, "
                               f"for key {key!r} in window {_window_of(starts, ends, window)}")  # fmt: skip


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


_EXACT_UNITS = 2**53  # below it an int64 of units converts to a double exactly


def _integers(line: str, count: int) -> list[int]:
    """`count` comma-separated integers (epoch milliseconds), parsed in C."""
    parsed = np.fromstring(line, dtype=np.int64, sep=",")
    if parsed.size != count:  # not what the Java side writes: the plain way, which names the problem
        return list(map(int, line.split(",")))
    return parsed.tolist()


def _amounts(line: str, count: int) -> list[float]:
    """`count` comma-separated DECIMAL(18,4) amounts as floats, each equal to float(text).

    The job writes them with exactly four decimals. Then the text without its dots is the amount in
    units of 10**-4, parsed as integers in C, and units / 10**4 is ONE correctly rounded division of
    two exactly representable numbers: the double nearest the decimal, which is what float(text)
    gives. Any other form, or |units| >= 2**53, takes float() itself."""
    try:
        raw = np.frombuffer(line.encode("ascii"), dtype=np.uint8)
    except UnicodeEncodeError:
        raw = None
    if raw is not None:
        dots = np.flatnonzero(raw == ord("."))
        ends = np.append(np.flatnonzero(raw == ord(",")), raw.size)
        # one dot per value, four characters before its end: sorted and as many, so each is its own
        if dots.size == ends.size == count and np.array_equal(ends - dots, np.full(count, 5)):
            units = np.fromstring(line.replace(".", ""), dtype=np.int64, sep=",")
            if units.size == count and (count == 0 or int(np.abs(units).max()) < _EXACT_UNITS):
                return (units / 10_000).tolist()
    return list(map(float, line.split(",")))


class BatchAggregator:
    """The job's one Python function: a batch of window lines in, one result line per window and
    aggregate out. Pickled by reference (this module is on the workers' path); the aggregates are
    imported on the worker at the first batch, so they need not be picklable."""

    def __init__(self, paths: Sequence[str]):
        self.paths = tuple(paths)
        self._loaded: list[tuple[str, str, object, object, object, object]] | None = None
        self._keys: dict[str, str] = {}  # hex -> key: few keys, many windows

    def __getstate__(self) -> dict:
        return {"paths": self.paths}

    def __setstate__(self, state: dict) -> None:
        self.paths = state["paths"]
        self._loaded = None
        self._keys = {}

    def _aggregates(self):
        if self._loaded is None:
            try:
                objects = load_aggregates(list(self.paths))
            except ValueError as error:
                raise CustomAggregateError(
                    f"custom aggregate could not be loaded in Flink's Python worker: {error}"
                ) from None
            self._loaded = [
                (path, _owner(obj), obj.create_accumulator, obj.add, obj.merge, obj.get_result) for path, obj in objects
            ]
        return self._loaded

    def __call__(self, batch: str) -> str:
        """A columnar batch of windows (CustomAggregateOperators.WindowBatches: hex keys, starts,
        ends, piece sizes, event times, amounts; one comma-separated line each) -> its first three
        lines, then one line `aggregate,value,value,...` per aggregate (a value per window, empty
        for NULL), which CustomAggregateOperators.ResultLines turns into the custom/ lines.

        Python's own work per window is kept to a slice, a zip and the loop: with 500 keys and 5 s
        windows most windows hold one or two events, so per-window overhead, not per-event work,
        decides the throughput.
        """
        return self._call(batch)

    def _call(self, batch: str) -> str:
        aggregates = self._aggregates()
        hex_line, starts_line, ends_line, sizes_line, times_line, amounts_line = batch.split("\n")
        keys = self._keys
        window_keys = []
        for hex_key in hex_line.split(","):
            key = keys.get(hex_key)
            if key is None:
                key = keys[hex_key] = bytes.fromhex(hex_key).decode("utf-8")
            window_keys.append(key)
        # Per piece (several only for sessions Flink merged): its event count.
        if ";" in sizes_line:
            pieces = [tuple(map(int, sizes.split(";"))) for sizes in sizes_line.split(",")]
            sizes = [sum(piece) for piece in pieces]
        else:
            pieces = None
            sizes = list(map(int, sizes_line.split(",")))
        # Every value tuple of the batch at once, parsed in C: the loop below only slices them per
        # window. Parsing, not the user's methods, was the larger part of the Python time.
        event_keys = np.repeat(np.array(window_keys, dtype=object), sizes).tolist()
        times = _integers(times_line, len(event_keys))
        values = list(zip(event_keys, times, _amounts(amounts_line, len(event_keys))))
        answer = [batch[: len(hex_line) + len(starts_line) + len(ends_line) + 2]]
        # Windows of one piece of up to PARTIAL_EVENTS events (nearly all): one accumulator each.
        simple = pieces is None or all(len(piece) == 1 for piece in pieces)
        for path, owner, create, add, merge, get_result in aggregates:
            results = []
            keep = results.append
            position = window = 0
            method = "create_accumulator"
            try:
                for window, size in enumerate(sizes):
                    if size == 1 and simple:  # the common window: no slice, no inner loop
                        method = "create_accumulator"
                        accumulator = create()
                        method = "add"
                        accumulator = add(values[position], accumulator)
                    elif size <= PARTIAL_EVENTS and simple:
                        method = "create_accumulator"
                        accumulator = create()
                        method = "add"
                        for value in values[position : position + size]:
                            accumulator = add(value, accumulator)
                    else:  # several pieces, or a piece longer than PARTIAL_EVENTS: partials, merged
                        accumulator = None
                        at = position
                        for piece in pieces[window] if pieces is not None else (size,):
                            piece_end = at + piece
                            for chunk in range(at, piece_end, PARTIAL_EVENTS):
                                method = "create_accumulator"
                                partial = create()
                                method = "add"
                                for value in values[chunk : min(chunk + PARTIAL_EVENTS, piece_end)]:
                                    partial = add(value, partial)
                                if accumulator is None:
                                    accumulator = partial
                                else:
                                    method = "merge"
                                    accumulator = merge(accumulator, partial)
                            at = piece_end
                    method = "get_result"
                    keep(get_result(accumulator))
                    position += size
            except Exception as error:  # user code
                raise CustomAggregateError(
                    f"custom aggregate {path} failed in the Flink job: {owner}.{method} raised "
                    f"{_short(repr(error))} for key {window_keys[window]!r} in window "
                    f"{_window_of(starts_line, ends_line, window)}"
                ) from error
            if set(map(type, results)) <= {float}:  # the common case, formatted in C
                texts = ",".join(map(repr, results))
            else:
                texts = ",".join(
                    repr(result) if type(result) is float else
                    _value_text(path, owner, result, window_keys[window], starts_line, ends_line, window)
                    for window, result in enumerate(results)
                )  # fmt: skip
            answer.append(path + "," + texts)
        return "\n".join(answer)


def _window_of(starts_line: str, ends_line: str, window: int) -> str:
    """The window's text for a failure sentence (parsed only then)."""
    return window_text(int(starts_line.split(",")[window]), int(ends_line.split(",")[window]))


def _owner(obj: object) -> str:
    return obj.__name__ if inspect.isclass(obj) else type(obj).__name__


# --- failures, client side ---------------------------------------------------------------------

# pemja reports it as "pemja.core.PythonException: <class '...CustomAggregateError'>: <sentence>"
# on one line (the sentence has no raw newline: keys and exceptions are quoted with repr).
_SENTENCE = re.compile(r"CustomAggregateError'?>?: (custom aggregate [^\n]*)")


def failure_sentence(text: str) -> str | None:
    """The CustomAggregateError sentence inside a Flink/Java exception text, if any."""
    match = _SENTENCE.search(text or "")
    return match.group(1).rstrip() if match else None
