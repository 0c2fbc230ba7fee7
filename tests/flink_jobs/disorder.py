"""Generated events with the disorder the window rules must survive (plain Python, fixed seeds).

Times mostly move forward with jitter; some events arrive far behind (late under any window
kind), some just behind the watermark (borderline), some keys get pairs exactly one gap apart
(sessions that touch) and some events fall between two sessions of their key (a bridge, which
may arrive late and still merge them while they are open).
"""

from __future__ import annotations

import random
from decimal import Decimal


def disordered_events(n: int, *, keys: int = 7, seed: int = 0, gap_ms: int = 3000, start_ms: int = 1_715_421_600_000,
                      late_fraction: float = 0.08) -> list[tuple[int, str, int, Decimal]]:  # fmt: skip
    """(source_row, key, event_time_ms, amount) in arrival order."""
    rng = random.Random(seed)
    clock = start_ms
    events = []
    names = [f"k{i}" for i in range(keys)] + ['key, with "comma"\nand newline', "ключ"]
    row = 0

    def emit(key: str, ts: int) -> None:
        nonlocal row
        row += 1
        cents = rng.choice([rng.randint(1, 50_000), rng.randint(1, 10**8), 0, -rng.randint(1, 9_999)])
        amount = (
            Decimal(cents) / Decimal(100)
            if rng.random() < 0.9
            else Decimal(rng.randint(-(10**6), 10**6)) / Decimal(10_000)
        )
        events.append((row, key, ts, amount))

    while row < n:
        clock += rng.randint(0, 400)
        key = rng.choice(names)
        draw = rng.random()
        if draw < late_fraction:
            emit(key, clock - rng.randint(2_000, 30_000))  # far behind
        elif draw < late_fraction + 0.05:
            emit(key, clock - rng.randint(500, 2_500))  # around the watermark
        elif draw < late_fraction + 0.08:
            emit(key, clock)
            emit(key, clock + gap_ms)  # touching sessions ([t, t+gap) and [t+gap, t+2gap))
        elif draw < late_fraction + 0.10:
            emit(key, clock - gap_ms * 2)
            emit(key, clock)
            emit(key, clock - gap_ms)  # a bridge, arriving last
        else:
            emit(key, clock - rng.randint(0, 800))
    return events[:n]
