"""Median amount per window: an example of your own AggregateFunction (TXN_AGGREGATE).

    TXN_AGGREGATE=flink_jobs.aggregates.median:MedianAmount

The lab's interface, unchanged: `add(value, accumulator)` gets `(key, event_time_ms, amount)` with
the amount as a float. A median cannot be folded into a fixed-size accumulator, so the accumulator
is the list of the window's amounts; `merge` concatenates two lists, which is order-independent
for the result because `get_result` sorts. The result is the middle amount, or the mean of the two
middle amounts (rounded once to a double) for an even count, as `statistics.median` computes it.
"""

from __future__ import annotations

import statistics

from pyflink.datastream.functions import AggregateFunction


class MedianAmount(AggregateFunction):
    def create_accumulator(self) -> list[float]:
        return []

    def add(self, value, accumulator: list[float]) -> list[float]:
        accumulator.append(value[2])  # the job passes each accumulator to add/merge once and keeps the result
        return accumulator

    def merge(self, acc_a: list[float], acc_b: list[float]) -> list[float]:
        acc_a.extend(acc_b)
        return acc_a

    def get_result(self, accumulator: list[float]) -> float | None:
        return statistics.median(accumulator) if accumulator else None
