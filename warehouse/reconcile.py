"""Independent recomputation of the window averages in DuckDB SQL.

The Flink job's output is checked against this module; :mod:`warehouse.replay`
is the plain-Python reference, and this module deliberately shares no code with
it (property tests check that the two agree).

Input is the DuckDB table ``transactions`` with the columns::

    source_file VARCHAR, source_row BIGINT, transaction_id VARCHAR, key VARCHAR,
    event_time TIMESTAMPTZ, event_time_ms BIGINT, amount DOUBLE

Each source file is replayed on its own, in ascending ``source_row``:

* watermark before a row = running max of ``event_time_ms`` over the *previous*
  rows of the same file, minus ``out_of_orderness_ms``, minus 1 (NULL - never
  late - for the first row);
* ``window_start = ts - ((ts % size) + size) % size`` (floor-correct: DuckDB's
  ``%`` keeps the sign of the dividend);
* a row is late iff ``window_start + size - 1 + allowed_lateness <= watermark``;
* ``avg_amount = exact_mean(list(amount))``, a Python scalar UDF computing the
  exact rational mean rounded once to a double.

With ``source_file=None`` every file in the table is replayed (each one
independently) and the result frames get a leading ``source_file`` column.
All values are bound as query parameters.
"""

from __future__ import annotations

from typing import Any, Protocol

import duckdb
import numpy as np
import pandas as pd

__all__ = [
    "EXACT_MEAN_UDF",
    "EXPECTED_LATE_EVENTS_SQL",
    "EXPECTED_WINDOWS_SQL",
    "LATE_COLUMNS",
    "WINDOW_COLUMNS",
    "compare_late_events",
    "compare_tables",
    "compare_window_averages",
    "expected_late_events",
    "expected_window_averages",
    "register_exact_mean",
]

EXACT_MEAN_UDF = "exact_mean"

WINDOW_COLUMNS = ["key", "window_start_ms", "window_end_ms", "avg_amount", "txn_count"]
LATE_COLUMNS = ["source_row", "key", "event_time_ms", "amount", "watermark_ms"]


class _ConfigLike(Protocol):
    window_size_ms: int
    out_of_orderness_ms: int
    allowed_lateness_ms: int


# --------------------------------------------------------------------------- #
# Exact mean UDF
# --------------------------------------------------------------------------- #
def _exact_mean_udf(amounts: list[float] | None) -> float | None:
    """Exact mean of a DOUBLE[]: integer arithmetic on the binary fractions.

    Every finite double is ``n / 2**k``; scaling all of them to the largest
    ``k`` gives an exact integer sum, and CPython's int / int true division is
    correctly rounded, so the result is the exact mean rounded once.
    """
    if amounts is None or len(amounts) == 0:
        return None
    numerator = 0
    shift = 0  # all terms are currently scaled by 2**shift
    for amount in amounts:
        if amount is None:
            raise ValueError("exact_mean: NULL amount in window")
        n, d = float(amount).as_integer_ratio()  # raises on NaN / inf
        k = d.bit_length() - 1  # d == 2**k
        if k > shift:
            numerator <<= k - shift
            shift = k
        numerator += n << (shift - k)
    return numerator / (len(amounts) << shift)


def register_exact_mean(con: duckdb.DuckDBPyConnection) -> None:
    """Register ``exact_mean(DOUBLE[]) -> DOUBLE`` on ``con`` (idempotent).

    If a Python UDF of that name already exists it is replaced by this one.
    """
    args = ([duckdb.list_type(duckdb.sqltype("DOUBLE"))], duckdb.sqltype("DOUBLE"))
    try:
        con.create_function(EXACT_MEAN_UDF, _exact_mean_udf, *args)
    except duckdb.NotImplementedException:
        # "A function by the name of ... is already created": replace it.
        con.remove_function(EXACT_MEAN_UDF)
        con.create_function(EXACT_MEAN_UDF, _exact_mean_udf, *args)


# --------------------------------------------------------------------------- #
# SQL
# --------------------------------------------------------------------------- #
# Parameters: $size, $ooo, $lateness (BIGINT), $source_file (VARCHAR) or
# $all_files (BOOLEAN) -- both are always bound; $all_files=true ignores the
# file filter.
_CLASSIFIED_CTE = """
WITH src AS (
    SELECT source_file, source_row, key, event_time_ms, amount
    FROM transactions
    WHERE $all_files OR source_file = $source_file
),
marked AS (
    SELECT
        source_file,
        source_row,
        key,
        event_time_ms,
        amount,
        max(event_time_ms) OVER (
            PARTITION BY source_file
            ORDER BY source_row
            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING
        ) - CAST($ooo AS BIGINT) - 1 AS watermark_ms,
        event_time_ms
            - (((event_time_ms % CAST($size AS BIGINT)) + CAST($size AS BIGINT))
               % CAST($size AS BIGINT)) AS window_start_ms
    FROM src
),
classified AS (
    SELECT
        *,
        coalesce(
            window_start_ms + CAST($size AS BIGINT) - 1 + CAST($lateness AS BIGINT)
                <= watermark_ms,
            false
        ) AS is_late
    FROM marked
)
"""

EXPECTED_WINDOWS_SQL = (
    _CLASSIFIED_CTE
    + """
SELECT
    source_file,
    key,
    window_start_ms,
    window_start_ms + CAST($size AS BIGINT) AS window_end_ms,
    -- one (non-zero) amount is its own mean; the UDF (the slow part) only sees larger windows
    CASE WHEN count(*) = 1 AND any_value(amount) <> 0 THEN any_value(amount)
         ELSE exact_mean(list(amount)) END AS avg_amount,
    count(*) AS txn_count
FROM classified
WHERE NOT is_late
GROUP BY source_file, key, window_start_ms
ORDER BY source_file, key, window_start_ms
"""
)

EXPECTED_LATE_EVENTS_SQL = (
    _CLASSIFIED_CTE
    + """
SELECT source_file, source_row, key, event_time_ms, amount, watermark_ms
FROM classified
WHERE is_late
ORDER BY source_file, source_row
"""
)

# Kept under the name used in the design notes.


def _params(config: _ConfigLike, source_file: str | None) -> dict[str, Any]:
    size = int(config.window_size_ms)
    ooo = int(config.out_of_orderness_ms)
    lateness = int(config.allowed_lateness_ms)
    if size <= 0 or ooo < 0 or lateness < 0:
        raise ValueError(
            "need window_size_ms > 0, out_of_orderness_ms >= 0, allowed_lateness_ms >= 0; "
            f"got {size}, {ooo}, {lateness}"
        )
    return {
        "size": size,
        "ooo": ooo,
        "lateness": lateness,
        "source_file": source_file,
        "all_files": source_file is None,
    }


def _run(
    con: duckdb.DuckDBPyConnection,
    sql: str,
    config: _ConfigLike,
    source_file: str | None,
    columns: list[str],
    dtypes: dict[str, str],
) -> pd.DataFrame:
    register_exact_mean(con)
    df = con.execute(sql, _params(config, source_file)).df()
    if df.empty:  # keep stable dtypes for empty results
        df = pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, "object")) for c in df.columns})
    df = df.astype(dtypes)
    keep = columns if source_file is not None else ["source_file", *columns]
    return df[keep].reset_index(drop=True)


def expected_window_averages(
    con: duckdb.DuckDBPyConnection,
    config: _ConfigLike,
    source_file: str | None = None,
) -> pd.DataFrame:
    """Expected ``[key, window_start_ms, window_end_ms, avg_amount, txn_count]``.

    Sorted by ``(key, window_start_ms)``.  With ``source_file=None`` every file
    is replayed independently and a leading ``source_file`` column is added.
    """
    return _run(
        con,
        EXPECTED_WINDOWS_SQL,
        config,
        source_file,
        WINDOW_COLUMNS,
        {
            "source_file": "object",
            "key": "object",
            "window_start_ms": "int64",
            "window_end_ms": "int64",
            "avg_amount": "float64",
            "txn_count": "int64",
        },
    )


def expected_late_events(
    con: duckdb.DuckDBPyConnection,
    config: _ConfigLike,
    source_file: str | None = None,
) -> pd.DataFrame:
    """Expected late events ``[source_row, key, event_time_ms, amount, watermark_ms]``.

    Sorted by ``source_row``.  With ``source_file=None`` a leading
    ``source_file`` column is added.
    """
    return _run(
        con,
        EXPECTED_LATE_EVENTS_SQL,
        config,
        source_file,
        LATE_COLUMNS,
        {
            "source_file": "object",
            "source_row": "int64",
            "key": "object",
            "event_time_ms": "int64",
            "amount": "float64",
            "watermark_ms": "int64",
        },
    )


# --------------------------------------------------------------------------- #
# Comparison
# --------------------------------------------------------------------------- #
_MAX_EXAMPLES = 5


def _join_columns(actual: pd.DataFrame, expected: pd.DataFrame, base: list[str]) -> list[str]:
    if "source_file" in actual.columns and "source_file" in expected.columns:
        return ["source_file", *base]
    return list(base)


def _require(df: pd.DataFrame, columns: list[str], name: str) -> None:
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}; has {list(df.columns)}")


def _key_tuples(df: pd.DataFrame, columns: list[str]) -> list[tuple[Any, ...]]:
    return [tuple(row) for row in df[columns].itertuples(index=False, name=None)]


def _bits(values: pd.Series) -> np.ndarray:
    return np.ascontiguousarray(values.to_numpy(dtype=np.float64)).view(np.int64)


def compare_window_averages(actual: pd.DataFrame, expected: pd.DataFrame) -> dict[str, Any]:
    """Compare actual window averages to expected ones; exact equality passes.

    Rows are matched on ``(key, window_start_ms, window_end_ms)`` (plus
    ``source_file`` when both frames have it).  ``avg_amount`` must match
    bit-for-bit and ``txn_count`` exactly; ``max_abs_diff`` reports the largest
    absolute average difference among matched windows.  The result is
    JSON-serialisable (usable as asset-check metadata).
    """
    join = _join_columns(actual, expected, ["key", "window_start_ms", "window_end_ms"])
    for df, name in ((actual, "actual"), (expected, "expected")):
        _require(df, [*join, "avg_amount", "txn_count"], name)

    def prepared(df: pd.DataFrame) -> pd.DataFrame:
        out = df[[*join, "avg_amount", "txn_count"]].copy()
        out["window_start_ms"] = out["window_start_ms"].astype("int64")
        out["window_end_ms"] = out["window_end_ms"].astype("int64")
        out["key"] = out["key"].astype(str)
        out["avg_amount"] = out["avg_amount"].astype("float64")
        out["txn_count"] = out["txn_count"].astype("int64")
        return out

    act, exp = prepared(actual), prepared(expected)
    dup_actual = int(act.duplicated(join).sum())
    dup_expected = int(exp.duplicated(join).sum())
    merged = act.drop_duplicates(join).merge(
        exp.drop_duplicates(join),
        on=join,
        how="outer",
        suffixes=("_actual", "_expected"),
        indicator=True,
    )
    both = merged[merged["_merge"] == "both"]
    missing = merged[merged["_merge"] == "right_only"]
    unexpected = merged[merged["_merge"] == "left_only"]

    count_bad = both["txn_count_actual"].astype("int64") != both["txn_count_expected"].astype(
        "int64"
    )
    avg_bad = _bits(both["avg_amount_actual"]) != _bits(both["avg_amount_expected"])
    diffs = (both["avg_amount_actual"] - both["avg_amount_expected"]).abs()
    max_abs_diff = float(diffs.max()) if len(diffs) else 0.0
    if np.isnan(max_abs_diff):
        max_abs_diff = float("inf") if len(diffs) else 0.0

    examples: list[str] = []
    for label, frame in (("missing", missing), ("unexpected", unexpected)):
        for row in _key_tuples(frame, join)[:_MAX_EXAMPLES]:
            examples.append(f"{label} window {row}")
    mismatched = both[np.asarray(count_bad) | avg_bad]
    for row in mismatched.head(_MAX_EXAMPLES).itertuples(index=False):
        r = row._asdict()
        examples.append(
            f"mismatch {tuple(r[c] for c in join)}: "
            f"avg {r['avg_amount_actual']!r} vs {r['avg_amount_expected']!r}, "
            f"count {int(r['txn_count_actual'])} vs {int(r['txn_count_expected'])}"
        )

    result = {
        "windows_expected": int(len(exp)),
        "windows_actual": int(len(act)),
        "windows_compared": int(len(both)),
        "missing": int(len(missing)),
        "unexpected": int(len(unexpected)),
        "duplicates_actual": dup_actual,
        "duplicates_expected": dup_expected,
        "count_mismatches": int(count_bad.sum()),
        "avg_mismatches": int(avg_bad.sum()),
        "max_abs_diff": max_abs_diff,
        "examples": examples[: 3 * _MAX_EXAMPLES],
    }
    result["equal"] = (
        result["missing"] == 0
        and result["unexpected"] == 0
        and dup_actual == 0
        and dup_expected == 0
        and result["count_mismatches"] == 0
        and result["avg_mismatches"] == 0
    )
    return result


def compare_late_events(actual: pd.DataFrame, expected: pd.DataFrame) -> dict[str, Any]:
    """Compare late events by their ``source_row`` sets (plus ``source_file``
    when both frames have it), then every other column both frames have
    (``key``, ``event_time_ms``, ``watermark_ms`` exactly, ``amount`` bit for bit)."""
    join = _join_columns(actual, expected, ["source_row"])
    for df, name in ((actual, "actual"), (expected, "expected")):
        _require(df, join, name)

    def keys(df: pd.DataFrame) -> list[tuple[Any, ...]]:
        out = df[join].copy()
        out["source_row"] = out["source_row"].astype("int64")
        return [tuple(int(v) if c == "source_row" else v for c, v in zip(join, row))
                for row in out.itertuples(index=False, name=None)]

    act, exp = keys(actual), keys(expected)
    act_set, exp_set = set(act), set(exp)
    missing = sorted(exp_set - act_set)
    unexpected = sorted(act_set - exp_set)
    dup_actual = len(act) - len(act_set)
    dup_expected = len(exp) - len(exp_set)
    examples = [f"missing late {r}" for r in missing[:_MAX_EXAMPLES]] + [
        f"unexpected late {r}" for r in unexpected[:_MAX_EXAMPLES]
    ]
    value_columns = [c for c in ("key", "event_time_ms", "amount", "watermark_ms") if c in actual and c in expected]
    value_mismatches = 0
    if value_columns and not dup_actual and not dup_expected:
        both = actual[join + value_columns].merge(
            expected[join + value_columns], on=join, how="inner", suffixes=("_actual", "_expected")
        )
        bad = np.zeros(len(both), dtype=bool)
        for column in value_columns:
            a, e = both[f"{column}_actual"], both[f"{column}_expected"]
            bad |= (_bits(a) != _bits(e)) if column == "amount" else (a.to_numpy() != e.to_numpy())
        value_mismatches = int(bad.sum())
        examples += [
            f"late {tuple(r[c] for c in join)} differs: "
            + ", ".join(f"{c} {r[c + '_actual']!r} vs {r[c + '_expected']!r}" for c in value_columns)
            for _, r in both[bad].head(_MAX_EXAMPLES).iterrows()
        ]
    return {
        "late_expected": len(exp),
        "late_actual": len(act),
        "late_compared": len(act_set & exp_set),
        "missing": len(missing),
        "unexpected": len(unexpected),
        "duplicates_actual": dup_actual,
        "duplicates_expected": dup_expected,
        "value_mismatches": value_mismatches,
        "examples": examples,
        "equal": not missing and not unexpected and dup_actual == 0 and dup_expected == 0 and value_mismatches == 0,
    }


# --------------------------------------------------------------------------- #
# Comparison inside DuckDB (the asset check: no full-table copies into Python)
# --------------------------------------------------------------------------- #
# Bit equality of two non-NaN doubles: equal values, equal sign bits (0.0 = -0.0 in SQL).
_SAME_BITS = "({a} = {e} AND signbit({a}) = signbit({e}))"

_WINDOW_JOIN = "key, window_start_ms, window_end_ms"


def _window_report_sql(expected: str) -> str:
    same_avg = _SAME_BITS.format(a="a.avg_amount", e="e.avg_amount")
    return f"""
WITH a AS (SELECT key, window_start_ms, window_end_ms, avg_amount, txn_count
           FROM window_averages WHERE source_file = $source_file),
     e AS (SELECT key, window_start_ms, window_end_ms, avg_amount, txn_count FROM {expected}),
     j AS (SELECT {_WINDOW_JOIN}, a.avg_amount AS a_avg, e.avg_amount AS e_avg, a.txn_count AS a_count,
                  e.txn_count AS e_count, a.key IS NOT NULL AS in_a, e.key IS NOT NULL AS in_e,
                  in_a AND in_e AND NOT (a.txn_count = e.txn_count AND {same_avg}) AS differs
           FROM (SELECT DISTINCT ON ({_WINDOW_JOIN}) * FROM a) a
           FULL OUTER JOIN (SELECT DISTINCT ON ({_WINDOW_JOIN}) * FROM e) e USING ({_WINDOW_JOIN}))
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM a),
       (SELECT count(*) FROM j WHERE in_a AND in_e),
       (SELECT count(*) FROM j WHERE in_e AND NOT in_a),
       (SELECT count(*) FROM j WHERE in_a AND NOT in_e),
       (SELECT count(*) FROM a) - (SELECT count(*) FROM (SELECT DISTINCT {_WINDOW_JOIN} FROM a)),
       (SELECT count(*) FROM e) - (SELECT count(*) FROM (SELECT DISTINCT {_WINDOW_JOIN} FROM e)),
       (SELECT count(*) FROM j WHERE in_a AND in_e AND a_count <> e_count),
       (SELECT count(*) FROM j WHERE in_a AND in_e AND NOT {_SAME_BITS.format(a="a_avg", e="e_avg")}),
       (SELECT coalesce(max(abs(a_avg - e_avg)), 0) FROM j WHERE in_a AND in_e),
       (SELECT list(row ORDER BY row) FROM (
           (SELECT 'missing window ' || CAST(({_WINDOW_JOIN}) AS VARCHAR) AS row FROM j
            WHERE in_e AND NOT in_a ORDER BY {_WINDOW_JOIN} LIMIT {_MAX_EXAMPLES})
           UNION ALL
           (SELECT 'unexpected window ' || CAST(({_WINDOW_JOIN}) AS VARCHAR) FROM j
            WHERE in_a AND NOT in_e ORDER BY {_WINDOW_JOIN} LIMIT {_MAX_EXAMPLES})
           UNION ALL
           (SELECT 'mismatch ' || CAST(({_WINDOW_JOIN}) AS VARCHAR) || ': avg ' || CAST(a_avg AS VARCHAR)
                   || ' vs ' || CAST(e_avg AS VARCHAR) || ', count ' || a_count || ' vs ' || e_count
            FROM j WHERE differs ORDER BY {_WINDOW_JOIN} LIMIT {_MAX_EXAMPLES})
           UNION ALL
           (SELECT 'duplicate window ' || CAST(({_WINDOW_JOIN}) AS VARCHAR) FROM a
            GROUP BY {_WINDOW_JOIN} HAVING count(*) > 1 ORDER BY {_WINDOW_JOIN} LIMIT {_MAX_EXAMPLES})))
"""


def _late_report_sql(expected: str) -> str:
    differs = (
        "a.key IS DISTINCT FROM e.key OR a.event_time_ms <> e.event_time_ms OR a.watermark_ms <> e.watermark_ms "
        f"OR NOT {_SAME_BITS.format(a='a.amount', e='e.amount')}"
    )
    return f"""
WITH a AS (SELECT source_row, key, event_time_ms, amount, watermark_ms
           FROM late_events WHERE source_file = $source_file),
     e AS (SELECT source_row, key, event_time_ms, amount, watermark_ms FROM {expected}),
     dup AS (SELECT (SELECT count(*) - count(DISTINCT source_row) FROM a) AS dup_a,
                    (SELECT count(*) - count(DISTINCT source_row) FROM e) AS dup_e),
     j AS (SELECT source_row, a.source_row IS NOT NULL AS in_a, e.source_row IS NOT NULL AS in_e,
                  CASE WHEN a.source_row IS NOT NULL AND e.source_row IS NOT NULL THEN {differs} END AS differs,
                  a.key AS a_key, e.key AS e_key, a.amount AS a_amount, e.amount AS e_amount,
                  a.watermark_ms AS a_wm, e.watermark_ms AS e_wm
           FROM (SELECT DISTINCT ON (source_row) * FROM a) a
           FULL OUTER JOIN (SELECT DISTINCT ON (source_row) * FROM e) e USING (source_row))
SELECT (SELECT count(*) FROM e), (SELECT count(*) FROM a),
       (SELECT count(*) FROM j WHERE in_a AND in_e),
       (SELECT count(*) FROM j WHERE in_e AND NOT in_a),
       (SELECT count(*) FROM j WHERE in_a AND NOT in_e),
       (SELECT dup_a FROM dup), (SELECT dup_e FROM dup),
       -- values are only compared when neither side has duplicate rows (as compare_late_events)
       (SELECT CASE WHEN dup_a = 0 AND dup_e = 0 THEN (SELECT count(*) FROM j WHERE differs) ELSE 0 END FROM dup),
       (SELECT list(row ORDER BY row) FROM (
           (SELECT 'missing late ' || source_row AS row FROM j WHERE in_e AND NOT in_a
            ORDER BY source_row LIMIT {_MAX_EXAMPLES})
           UNION ALL
           (SELECT 'unexpected late ' || source_row FROM j WHERE in_a AND NOT in_e
            ORDER BY source_row LIMIT {_MAX_EXAMPLES})
           UNION ALL
           (SELECT 'late ' || source_row || ' differs: key ' || a_key || ' vs ' || e_key || ', amount '
                   || CAST(a_amount AS VARCHAR) || ' vs ' || CAST(e_amount AS VARCHAR) || ', watermark_ms '
                   || a_wm || ' vs ' || e_wm
            FROM j WHERE differs ORDER BY source_row LIMIT {_MAX_EXAMPLES})
           UNION ALL
           (SELECT 'duplicate late ' || source_row FROM a
            GROUP BY source_row HAVING count(*) > 1 ORDER BY source_row LIMIT {_MAX_EXAMPLES})))
"""


def compare_tables(
    con: duckdb.DuckDBPyConnection, config: _ConfigLike, source_file: str
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Compare ``window_averages`` and ``late_events`` of ``source_file`` with the recomputation.

    The same reports as :func:`compare_window_averages` and :func:`compare_late_events`, computed
    inside DuckDB (the expected rows go to temporary tables, never to pandas), so memory stays flat
    at 10M rows. Leaves no temporary tables behind.
    """
    register_exact_mean(con)
    params = _params(config, source_file)
    try:
        con.execute(f"CREATE OR REPLACE TEMP TABLE _expected_windows AS {EXPECTED_WINDOWS_SQL}", params)
        con.execute(f"CREATE OR REPLACE TEMP TABLE _expected_late AS {EXPECTED_LATE_EVENTS_SQL}", params)
        w = con.execute(_window_report_sql("_expected_windows"), {"source_file": source_file}).fetchall()[0]
        late = con.execute(_late_report_sql("_expected_late"), {"source_file": source_file}).fetchall()[0]
    finally:
        con.execute("DROP TABLE IF EXISTS _expected_windows")
        con.execute("DROP TABLE IF EXISTS _expected_late")
    windows = dict(
        zip(
            ["windows_expected", "windows_actual", "windows_compared", "missing", "unexpected",
             "duplicates_actual", "duplicates_expected", "count_mismatches", "avg_mismatches"],
            map(int, w[:9]),
        )
    )  # fmt: skip
    windows["max_abs_diff"] = float(w[9])
    windows["examples"] = list(w[10] or [])
    windows["equal"] = not any(
        windows[k] for k in ("missing", "unexpected", "duplicates_actual", "duplicates_expected",
                             "count_mismatches", "avg_mismatches")
    )  # fmt: skip
    late_report = dict(
        zip(
            ["late_expected", "late_actual", "late_compared", "missing", "unexpected",
             "duplicates_actual", "duplicates_expected", "value_mismatches"],
            map(int, late[:8]),
        )
    )  # fmt: skip
    late_report["examples"] = list(late[8] or [])
    late_report["equal"] = not any(
        late_report[k] for k in ("missing", "unexpected", "duplicates_actual", "duplicates_expected", "value_mismatches")
    )
    return windows, late_report
