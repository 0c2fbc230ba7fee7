"""DuckDB work that runs beside the Flink job: on a cursor of its own, in a background thread.

The window step's Flink job leaves a core partly idle (its source runs at parallelism 1), and several
things the step needs depend only on the file's transactions, not on the job's output: the independent
recomputation (`reconcile.OverlappedRecomputation`), the transactions' Parquet segment
(`segments.BackgroundSegment`) and the watermark advice the late-ratio check cites. Each starts when
the job does and is waited for when the job's output is loaded. Measurements: docs/benchmark.md.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Generic, TypeVar

import duckdb

__all__ = ["OnOwnCursor"]

T = TypeVar("T")


class OnOwnCursor(Generic[T]):
    """``work(cursor, *args)`` on a new cursor of `con`'s database in a background thread, started at once.

    Use as a context manager: ``result()`` waits for the work and returns its value (or raises its
    error); leaving the block interrupts work still running, waits for the thread and closes the cursor
    (its temporary tables go with it).
    """

    def __init__(self, con: duckdb.DuckDBPyConnection, work: Callable[..., T], *args: object, name: str) -> None:
        self.cursor = con.cursor()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        self._future = self._pool.submit(work, self.cursor, *args)

    def __enter__(self) -> OnOwnCursor[T]:
        return self

    def result(self) -> T:
        return self._future.result()

    def __exit__(self, *exc_info: object) -> None:
        if not self._future.done():
            self.cursor.interrupt()
        self._pool.shutdown(wait=True)
        self.cursor.close()
