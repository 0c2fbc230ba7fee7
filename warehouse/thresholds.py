"""Per-key anomaly thresholds derived from window averages.

Method (documented in the README): the modified z-score of Iglewicz and Hoaglin. For each key with at
least `min_windows` windows in the warehouse (all source files: the accumulated history),

    threshold = median(avg_amount) + z * MAD / 0.6745,   MAD = median(|avg_amount - median|)

and a window whose average is above its key's threshold is anomalous. Median and MAD ignore the
outliers they are meant to find, unlike mean and standard deviation. When MAD is 0 (more than half of
the key's windows share one average) the threshold equals the median, so any higher average counts
as anomalous. Keys with fewer windows get no threshold: too little history to judge.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence

import duckdb

from warehouse import schema

METHOD = "median + z * MAD / 0.6745 (modified z-score)"
MAD_SCALE = 0.6745

_THRESHOLDS_SQL = """
WITH per_key AS (
    SELECT key, count(*) AS window_count, median(avg_amount) AS median_avg, max(avg_amount) AS max_avg
    FROM window_averages
    GROUP BY key
    HAVING count(*) >= $min_windows
),
deviation AS (
    SELECT w.key, median(abs(w.avg_amount - p.median_avg)) AS mad
    FROM window_averages w JOIN per_key p USING (key)
    GROUP BY w.key
),
thresholds AS (
    SELECT p.key, p.median_avg + $z * d.mad / $mad_scale AS threshold, p.window_count,
           p.median_avg, d.mad, p.max_avg
    FROM per_key p JOIN deviation d USING (key)
)
SELECT t.key, t.threshold, $method AS method, t.window_count, t.median_avg, t.mad, t.max_avg,
       (SELECT count(*) FROM window_averages w WHERE w.key = t.key AND w.avg_amount > t.threshold)
           AS anomalous_windows
FROM thresholds t
ORDER BY t.key
"""


def replace_thresholds(con: duckdb.DuckDBPyConnection, *, min_windows: int, z: float) -> int:
    """Recompute `anomaly_thresholds` from all of `window_averages`; returns the number of keys."""
    if min_windows < 1:
        raise ValueError(f"min_windows must be >= 1, got {min_windows}")
    if not (math.isfinite(z) and z > 0):
        raise ValueError(f"z must be a finite number > 0, got {z}")
    params = {"min_windows": min_windows, "z": float(z), "mad_scale": MAD_SCALE, "method": METHOD}
    con.execute("DELETE FROM anomaly_thresholds")
    con.execute(f"INSERT INTO anomaly_thresholds {_THRESHOLDS_SQL}", params)
    return schema.fetch_one(con, "SELECT count(*) FROM anomaly_thresholds")[0]


def thresholds_reference(
    averages_by_key: Mapping[str, Sequence[float]], *, min_windows: int, z: float
) -> dict[str, float]:
    """Plain-Python version of the same rule, for tests."""
    result = {}
    for key, averages in averages_by_key.items():
        if len(averages) < min_windows:
            continue
        median = statistics.median(averages)
        mad = statistics.median(abs(a - median) for a in averages)
        result[key] = median + z * mad / MAD_SCALE
    return result
