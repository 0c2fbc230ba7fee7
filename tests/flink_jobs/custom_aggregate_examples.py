"""Aggregates the custom-aggregate tests plug in by import path (`tests.flink_jobs.custom_aggregate_examples:...`).

The repository root is on the Flink Python workers' path, so the job imports them there as a
user's module on PYTHONPATH would be.
"""

from __future__ import annotations

import math

from pyflink.datastream.functions import AggregateFunction


def weight(ts_ms: int) -> int:
    return (ts_ms // 1000) % 7 + 1


def weighted_sum(key: str, events) -> float:
    """The independent computation WeightedSum must equal: fsum(amount * weight(ts)) + len(key)."""
    return math.fsum(float(amount) * weight(ts) for ts, amount in events) + len(key)


class WeightedSum:
    """Not a subclass of AggregateFunction (four methods suffice). Keeps every value, so its result
    depends on each event's key, time and amount, and is exactly order-independent (fsum)."""

    def create_accumulator(self):
        return []

    def add(self, value, accumulator):
        key, ts, amount = value
        assert isinstance(key, str) and type(ts) is int and type(amount) is float, value
        accumulator.append(value)
        return accumulator

    def merge(self, acc_a, acc_b):
        return acc_a + acc_b

    def get_result(self, accumulator):
        keys = {key for key, _, _ in accumulator}
        assert len(keys) == 1, keys  # one window, one key
        return weighted_sum(keys.pop(), [(ts, amount) for _, ts, amount in accumulator])


class Partials(AggregateFunction):
    """How many partial accumulators the job merged into the window's result: (adds, partials)."""

    def create_accumulator(self):
        return (0, 1)

    def add(self, value, accumulator):
        return (accumulator[0] + 1, accumulator[1])

    def merge(self, acc_a, acc_b):
        return (acc_a[0] + acc_b[0], acc_a[1] + acc_b[1])

    def get_result(self, accumulator):
        return accumulator[1]  # an int: stored as a DOUBLE


class NoneForSingles(AggregateFunction):
    """None (NULL) for a window of one event, else the count."""

    def create_accumulator(self):
        return 0

    def add(self, value, accumulator):
        return accumulator + 1

    def merge(self, acc_a, acc_b):
        return acc_a + acc_b

    def get_result(self, accumulator):
        return None if accumulator == 1 else accumulator


class RaisesInAdd(AggregateFunction):
    def create_accumulator(self):
        return 0.0

    def add(self, value, accumulator):
        raise ValueError(f"amount {value[2]} is not welcome")

    def merge(self, acc_a, acc_b):
        return acc_a + acc_b

    def get_result(self, accumulator):
        return accumulator


class ReturnsText(AggregateFunction):
    def create_accumulator(self):
        return 0.0

    def add(self, value, accumulator):
        return accumulator + value[2]

    def merge(self, acc_a, acc_b):
        return acc_a + acc_b

    def get_result(self, accumulator):
        return f"{accumulator:.2f} EUR"


class LacksMerge(AggregateFunction):
    def create_accumulator(self):
        return 0.0

    def add(self, value, accumulator):
        return accumulator + value[2]

    def get_result(self, accumulator):
        return accumulator


class SumCountAverage(AggregateFunction):
    """The lab's interface and arithmetic: a (sum, count) accumulator, its average as the result."""

    def create_accumulator(self):
        return (0.0, 0)

    def add(self, value, accumulator):
        return (accumulator[0] + value[2], accumulator[1] + 1)

    def get_result(self, accumulator):
        return accumulator[0] / accumulator[1] if accumulator[1] > 0 else 0

    def merge(self, acc_a, acc_b):
        return (acc_a[0] + acc_b[0], acc_a[1] + acc_b[1])
