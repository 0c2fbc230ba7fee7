"""Per-key anomaly thresholds: a robust z-score on log amounts, scaled by the window's transaction count.

METHOD, per key over *all* windows of the warehouse (every source file), with n = txn_count:
y = sign(avg_amount) * ln(1 + |avg_amount|), binned to y_b = round(256 * y) / 256; center = median(y_b);
scale = max(1.4826 * median(sqrt(n) * |y_b - center|), min_scale) (1.2533 * the mean when that median
is 0); a window is anomalous iff sqrt(n) * (y - center) / scale > z. The log handles skewed amounts,
sqrt(n) puts windows of any count in per-transaction units, and the median and the MAD cannot be moved
by the few windows they judge. Keys with fewer than `min_windows` windows get no threshold; the stored
`threshold` is threshold(1), the highest (the `anomalies` table keeps each window's threshold(n)).

The fit reads a histogram, `threshold_histogram` (windows per key, y_b and txn_count), and a ledger,
`threshold_key_files` (which run wrote each file's windows), because exact medians cannot be merged.
With a run id a refit subtracts and adds only the files whose writer changed and refits their keys;
it rebuilds from every window when the ledger cannot say what the histogram holds, and refits every key
on a plain database or when a row was fitted with other parameters. The counts are integers, so any
sequence of runs gives the histogram a rebuild gives. Formula, measurements and costs: docs/anomalies.md.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import duckdb

from warehouse import schema, segments

METHOD = "robust_log_z_sqrt_n_binned"
TRANSFORM = "sign(a) * ln(1 + |a|)"
MAD_TO_SIGMA = 1.4826  # 1 / Phi^-1(3/4): MAD -> standard deviation of a normal distribution
MEAN_AD_TO_SIGMA = 1.2533  # sqrt(pi / 2): mean absolute deviation -> standard deviation
MIN_SCALE = 0.05  # log units: about 5 % of the amount for a one-transaction window
DEFAULT_Z = 3.5
BINS_PER_LOG_UNIT = 256  # y is binned at 1/256 (0.4 % of the amount) in the histogram the fit reads
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
            "y_bins_per_log_unit": BINS_PER_LOG_UNIT,
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


# Per key, a histogram of the key's final windows over the whole history (the fit's input; a provisional
# window of stream mode is still changing, docs/stream-mode.md), and per key
# and file the counts, the largest average and which run wrote the file's windows (the ledger that
# says which windows the histogram holds). Internal tables of the catalog, not of the data contract.
_SUMMARY_TABLES = (
    "CREATE TABLE IF NOT EXISTS threshold_histogram (key VARCHAR, y_bin BIGINT, txn_count BIGINT, windows BIGINT)",
    "CREATE TABLE IF NOT EXISTS threshold_key_files "
    "(key VARCHAR, source_file VARCHAR, run_id VARCHAR, window_count BIGINT, txn_count BIGINT, max_avg_amount DOUBLE)",
)


def y_bin_sql(avg: str) -> str:
    return f"floor({y_sql(avg)} * {float(BINS_PER_LOG_UNIT)} + 0.5)::BIGINT"


_HISTOGRAM_ROWS_SQL = f"""
SELECT key, {y_bin_sql("avg_amount")} AS y_bin, txn_count, count(*) AS windows
FROM {{windows}} AS window_averages WHERE is_final GROUP BY ALL
"""

_KEY_FILE_ROWS_SQL = """
SELECT key, source_file, {run_id} AS run_id, count(*), sum(txn_count), max(avg_amount)::DOUBLE
FROM {windows} AS window_averages WHERE is_final GROUP BY key, source_file
"""


def _weighted_median_sql(value: str, weight: str, rows: str) -> str:
    """Per key, the median of `value` repeated `weight` times (the mean of the two middle ones for an
    even total), as `statistics.median` of the expanded list gives it: two cumulative sums."""
    return f"""
    SELECT key, (min({value}) FILTER (WHERE upto >= (total + 1) // 2)
                 + min({value}) FILTER (WHERE upto >= total // 2 + 1)) / 2 AS median,
           sum({weight} * {value}) / sum({weight}) AS mean
    FROM (SELECT key, {value}, {weight},
                 sum({weight}) OVER (PARTITION BY key ORDER BY {value} ROWS UNBOUNDED PRECEDING) AS upto,
                 sum({weight}) OVER (PARTITION BY key) AS total
          FROM {rows})
    GROUP BY key"""


_THRESHOLDS_SQL = f"""
WITH totals AS (
    SELECT key, sum(window_count) AS window_count, sum(txn_count) AS txn_count, max(max_avg_amount) AS max_avg
    FROM threshold_key_files {{where}}
    GROUP BY key
    HAVING sum(window_count) >= $min_windows
),
cells AS (
    SELECT h.key, h.y_bin / $bins AS y, h.txn_count, h.windows FROM threshold_histogram h JOIN totals USING (key)
),
centers AS ({_weighted_median_sql("y", "w", "(SELECT key, y, sum(windows) AS w FROM cells GROUP BY key, y)")}),
spread AS ({_weighted_median_sql("d", "windows", "(SELECT c.key, c.windows, abs(c.y - m.median) * sqrt(greatest(c.txn_count, 1)) AS d FROM cells c JOIN centers m USING (key))")}),
fitted AS MATERIALIZED (  -- read twice below
    SELECT t.*, m.median AS log_center,
           greatest(CASE WHEN s.median > 0 THEN $mad_to_sigma * s.median ELSE $mean_ad_to_sigma * s.mean END,
                    $min_scale) AS log_scale
    FROM totals t JOIN centers m USING (key) JOIN spread s USING (key)
),
flagged AS (  -- on the histogram: a window within half a bin of its threshold may count on the other side
    SELECT c.key,
           coalesce(sum(c.windows) FILTER (WHERE c.y > f.log_center + $z * f.log_scale / sqrt(greatest(c.txn_count, 1))), 0)
               AS anomalous_windows
    FROM cells c JOIN fitted f USING (key)
    GROUP BY c.key
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
    run_id: str | None = None,
) -> int:
    """Bring `anomaly_thresholds` up to date with `window_averages`; returns the number of keys with a row.

    `run_id` is the run whose staged rows the connection holds (a segmented warehouse). With it, the
    histogram is updated by the files whose windows changed since it was last updated, and only
    their keys are refitted (see the module docstring). Without it, or on a plain database, the
    histogram is rebuilt from every window and every key is refitted. Either way the rows are the
    same. Invalid parameters raise ValueError before anything is changed."""
    method = Method(z=z, min_windows=min_windows, min_scale=min_scale).validate()
    params = {
        "min_windows": method.min_windows,
        "z": float(method.z),
        "min_scale": float(method.min_scale),
        "mad_to_sigma": MAD_TO_SIGMA,
        "mean_ad_to_sigma": MEAN_AD_TO_SIGMA,
        "bins": float(BINS_PER_LOG_UNIT),
        "method": METHOD,
        "params": method.params_json(),
    }
    refit_all = False
    if schema.contract_mismatches(con, "anomaly_thresholds"):
        # Derived data: a table of an older contract (a warehouse from before this method, with
        # mad_avg_amount) is recreated and refitted whole instead of failing the insert.
        con.execute("DROP TABLE IF EXISTS anomaly_thresholds")
        schema.create_tables(con)
        refit_all = True
    incremental = update_histogram(con, run_id)
    if not incremental or refit_all or _fitted_otherwise(con, params["params"]):
        con.execute("DELETE FROM anomaly_thresholds")
        con.execute(f"INSERT INTO anomaly_thresholds {_THRESHOLDS_SQL.format(where='')}", params)
    else:
        # the keys stay in SQL: a file of a million keys would cost minutes as Python parameters
        con.execute(_STALE_KEYS_SQL, {"min_windows": method.min_windows})
        con.execute("DELETE FROM anomaly_thresholds WHERE key IN (SELECT key FROM changed_keys)")
        where = "WHERE key IN (SELECT key FROM changed_keys)"
        con.execute(f"INSERT INTO anomaly_thresholds {_THRESHOLDS_SQL.format(where=where)}", params)
    con.execute("DROP TABLE IF EXISTS changed_keys")
    return schema.fetch_one(con, "SELECT count(*) FROM anomaly_thresholds")[0]


def update_histogram(con: duckdb.DuckDBPyConnection, run_id: str | None) -> bool:
    """Make the histogram and the key-file ledger describe `window_averages`. Returns True when they
    were updated file by file (the temp table `changed_keys` then holds the keys whose windows
    changed), False when both were rebuilt from every window.

    A segmented warehouse knows which run wrote each file's windows (`segments.run_id`; the staged
    rows are `run_id`'s). A file whose writer differs from the ledger's has its old windows (the
    segments the ledger names, still listed while this run replaces them) subtracted and its new
    ones added: the cost of that file, not of the history. When the old windows are not listed
    any more (a run replaced the file without this step), or the ledger does not know which run
    wrote a file (a refit without `run_id`), everything is rebuilt."""
    for statement in _SUMMARY_TABLES:
        con.execute(statement)
    con.execute("CREATE OR REPLACE TEMP TABLE changed_keys (key VARCHAR)")  # repeats are harmless: read by IN
    if run_id is None or not segments.is_segmented(con, "window_averages"):
        _rebuild_histogram(con, "NULL")
        return False
    writers = con.execute(_FILE_WRITERS_SQL, {"run": run_id}).fetchall()
    ledger = con.execute("SELECT DISTINCT source_file, run_id FROM threshold_key_files").fetchall()
    expected, recorded = dict(writers), dict(ledger)
    held, listed = schema.fetch_one(
        con,
        "SELECT (SELECT coalesce(sum(windows), 0) FROM threshold_histogram), "
        "(SELECT coalesce(sum(window_count), 0) FROM threshold_key_files)",
    )
    # a file written by two runs, a file of an unknown writer, or a histogram that does not hold what
    # its ledger lists
    if len(expected) != len(writers) or len(recorded) != len(ledger) or None in recorded.values() or held != listed:
        _rebuild_histogram(con, "w.run_id", run_id)
        return False
    changed_files = sorted((f for f in expected.keys() | recorded.keys() if expected.get(f) != recorded.get(f)),
                           key=lambda f: (f is None, f or ""))  # fmt: skip
    for source_file in changed_files:
        old = recorded.get(source_file)
        if old is not None:
            old_rows = _segment_rows(con, source_file, old)
            if old_rows is None or old == run_id:  # the windows the histogram holds are not listed any more
                _rebuild_histogram(con, "w.run_id", run_id)
                return False
            _add_file(con, old_rows, -1)
            con.execute("DELETE FROM threshold_key_files WHERE source_file IS NOT DISTINCT FROM ?", [source_file])
        new = expected.get(source_file)
        if new is not None:
            new_rows = (
                f"(SELECT * FROM staged.window_averages WHERE source_file IS NOT DISTINCT FROM {_literal(source_file)})"
                if new == run_id
                else _segment_rows(con, source_file, new)
            )
            _add_file(con, new_rows, +1)
            con.execute(
                f"INSERT INTO threshold_key_files {_KEY_FILE_ROWS_SQL.format(windows=new_rows, run_id=_literal(new))}"
            )
    if changed_files and not _merge_cells(con):
        _rebuild_histogram(con, "w.run_id", run_id)
        return False
    return True


# Which run wrote each file's windows as this connection sees them: the published segments this run
# does not replace, and the run's own staged rows.
_FILE_WRITERS_SQL = f"""
SELECT DISTINCT source_file, run_id FROM ({segments.visible_segments_sql("window_averages")})
UNION
SELECT DISTINCT source_file, $run FROM staged.window_averages
"""


def _literal(text: str | None) -> str:
    return "NULL" if text is None else segments.sql_literal(text)


def _segment_rows(con: duckdb.DuckDBPyConnection, source_file: str | None, writer: str) -> str | None:
    """A subquery of the windows one run wrote for one file, from the segments still listed, or None."""
    paths = [
        row[0]
        for row in con.execute(
            "SELECT path FROM segments WHERE table_name = 'window_averages' "
            "AND source_file IS NOT DISTINCT FROM ? AND run_id = ? ORDER BY path",
            [source_file, writer],
        ).fetchall()
    ]
    if not paths:
        return None
    return f"({segments.parquet_rows_sql(con, 'window_averages', paths)})"


def _add_file(con: duckdb.DuckDBPyConnection, rows: str, sign: int) -> None:
    """Add (+1) or subtract (-1) one file's windows to the histogram, and their keys to `changed_keys`."""
    con.execute(
        f"INSERT INTO threshold_histogram SELECT key, y_bin, txn_count, {sign} * windows "
        f"FROM ({_HISTOGRAM_ROWS_SQL.format(windows=rows)})"
    )
    con.execute(f"INSERT INTO changed_keys SELECT DISTINCT key FROM {rows} AS w")


def _merge_cells(con: duckdb.DuckDBPyConnection) -> bool:
    """One row per (key, y_bin, txn_count) again for the changed keys, without the cells that are now
    empty; False when a count went below zero (the ledger was wrong: the caller rebuilds)."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE merged_cells AS SELECT key, y_bin, txn_count, sum(windows) AS windows "
        "FROM threshold_histogram WHERE key IN (SELECT key FROM changed_keys) GROUP BY ALL HAVING sum(windows) <> 0"
    )
    (negative,) = schema.fetch_one(con, "SELECT count(*) FROM merged_cells WHERE windows < 0")
    con.execute("DELETE FROM threshold_histogram WHERE key IN (SELECT key FROM changed_keys)")
    con.execute("INSERT INTO threshold_histogram SELECT * FROM merged_cells ORDER BY key, y_bin, txn_count")
    con.execute("DROP TABLE merged_cells")
    return negative == 0


def _rebuild_histogram(con: duckdb.DuckDBPyConnection, writer_sql: str, run_id: str | None = None) -> None:
    """The histogram and the ledger from every window (the cost of the history: first run, or repair)."""
    con.execute("DELETE FROM threshold_histogram")
    con.execute("DELETE FROM threshold_key_files")
    con.execute(
        "INSERT INTO threshold_histogram "
        f"{_HISTOGRAM_ROWS_SQL.format(windows='window_averages')} ORDER BY key, y_bin, txn_count"
    )
    if writer_sql == "NULL":
        con.execute(
            f"INSERT INTO threshold_key_files {_KEY_FILE_ROWS_SQL.format(windows='window_averages', run_id='NULL')}"
        )
        return
    con.execute(
        "INSERT INTO threshold_key_files "
        "SELECT w.key, w.source_file, k.run_id, w.window_count, w.txn_count, w.max_avg "
        "FROM (SELECT key, source_file, count(*) AS window_count, sum(txn_count) AS txn_count, "
        "             max(avg_amount)::DOUBLE AS max_avg FROM window_averages WHERE is_final GROUP BY key, source_file) w "
        f"JOIN ({_FILE_WRITERS_SQL}) k ON k.source_file IS NOT DISTINCT FROM w.source_file",
        {"run": run_id},
    )


def _fitted_otherwise(con: duckdb.DuckDBPyConnection, params_json: str) -> bool:
    """Whether any stored row was fitted with another method or other parameters."""
    (other,) = schema.fetch_one(
        con,
        "SELECT count(*) FROM anomaly_thresholds WHERE method IS DISTINCT FROM ? OR params IS DISTINCT FROM ?",
        [METHOD, params_json],
    )
    return other > 0


# Keys whose stored row does not describe their windows (another tool changed the table), keys now
# eligible without a row, and rows of keys that have no windows left: compared with the ledger, a
# row per key and file, not with the windows.
_STALE_KEYS_SQL = """
INSERT INTO changed_keys
SELECT coalesce(w.key, t.key)
FROM (SELECT key, sum(window_count) AS window_count, sum(txn_count) AS txn_count, max(max_avg_amount) AS max_avg
      FROM threshold_key_files GROUP BY key) w
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


def binned_y(avg: float) -> float:
    """The value the histogram keeps for a window's y: y rounded to 1/BINS_PER_LOG_UNIT, computed with
    the SQL's operations (ln(1 + |a|), not log1p) so that both put a window in the same bin."""
    y = math.copysign(math.log(1 + abs(avg)), avg) if avg else 0.0
    return math.floor(y * BINS_PER_LOG_UNIT + 0.5) / BINS_PER_LOG_UNIT


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

    def is_counted_anomalous(self, avg: float, txn_count: int) -> bool:
        """How `anomalous_windows` counts a window: its binned y against the threshold in y."""
        return binned_y(avg) > self.center + self.z * self.scale / math.sqrt(max(txn_count, 1))


def fit_key(windows: Sequence[tuple[float, int]], method: Method = Method()) -> KeyFit | None:
    """The fit of one key from its (avg_amount, txn_count) windows, or None with too little history."""
    method.validate()
    if len(windows) < method.min_windows:
        return None
    ys = [binned_y(avg) for avg, _ in windows]  # what the histogram keeps
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
