"""The `watermark_advice` asset: the smallest out-of-orderness bound per late-event target, and why.

It depends on `transactions` only, not on the Flink job: the advice is computed in DuckDB SQL from
each event's own minimal on-time bound (warehouse/advice.py), so it costs 0.5-0.8 s of CPU at 1M rows
and needs no second replay. One row per target of TXN_ADVICE_TARGETS, one for
TXN_MAX_LATE_RATIO (what late_ratio_within_limit cites) and one for the configured bound
(`is_current`). The materialization carries the disorder profile (how far events lag the latest
event seen), a plot of late ratio against bound, and a diagnosis when the file is not in time order,
which the WARN check `file_in_time_order` also reports. In stream mode the latest event seen starts at
the stream's maximum before the file, so the figures are the stream's, as the job's restored watermark
makes them.

Like every step it writes the run's staging copy and publishes only as the run's last step
(orchestration/write_audit_publish.py, PIPELINE_TABLES). Dagster orders steps by their deps alone, and this
one depends on `transactions` only. When the step that publishes runs before it (the window step, in a
run whose last selected table is the window step's), its rows go to a staging copy that is never
published. Making the window assets depend on `watermark_advice` orders it first in every run.
"""

# No `from __future__ import annotations`: Dagster checks the `context` annotation at runtime.
import math
import time
from collections.abc import Iterator
from xml.sax.saxutils import escape

from dagster import (
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MaterializeResult,
    MetadataValue,
    multi_asset,
)

from orchestration.asset_helpers import (
    asset_spec,
    check_result,
    contract_result,
    contract_spec,
    fetch_df,
    markdown_preview,
    table_counts,
)
from orchestration.plots import markdown_image
from orchestration.settings import PipelineSettings, ReplayMode
from orchestration.write_audit_publish import PipelineStep
from warehouse import quality, stream
from warehouse.advice import Advice, advise, human_ms, parse_targets, write_advice

WIDTH, HEIGHT = 720, 300  # HEIGHT: down to the axis title; the legend rows come below
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 30, 52
LEGEND_COLUMNS, LEGEND_ROW = 3, 18
COLOURS = ("#dc2626", "#ea580c", "#ca8a04", "#16a34a", "#0891b2", "#7c3aed", "#db2777")  # advised bounds
TICK_CHAR_PX, TICK_GAP_PX = 6.5, 8  # a generous width per character of an 11 px label, and the space between labels
_TICKS_MS = (1, 10, 100, 1_000, 10_000, 60_000, 600_000, 3_600_000, 86_400_000, 864_000_000, 8_640_000_000)


@multi_asset(
    name="watermark_advice",
    specs=[
        asset_spec(
            "watermark_advice",
            "Per late-event target (TXN_ADVICE_TARGETS, TXN_MAX_LATE_RATIO), the smallest TXN_OUT_OF_ORDERNESS_MS "
            "that meets it with the configured windows, with the late events and added latency it gives; plus "
            "the configured bound's row. Computed in DuckDB from transactions (no Flink job).",
            {"duckdb"},
            deps=["transactions"],
        )
    ],
    check_specs=[
        contract_spec("watermark_advice"),
        AssetCheckSpec(
            "file_in_time_order",
            asset="watermark_advice",
            description="The file is roughly in event-time order: fewer than 10% of events lag the latest event "
            "seen by more than a tenth of the file's time span (at least 1 min, at most 1 day). Warns, non-blocking.",
        ),
    ],
)
def watermark_advice(context: AssetExecutionContext, pipeline: PipelineSettings) -> Iterator:
    """Measure the file's disorder and advise an out-of-orderness bound per late-event target."""
    with PipelineStep(context, pipeline) as step:
        yield from _watermark_advice(context, step)


def _watermark_advice(context: AssetExecutionContext, step: PipelineStep) -> Iterator:
    started = time.monotonic()
    pipeline = step.settings
    source_file = str(pipeline.source_path)
    spec = pipeline.window_spec()
    targets = parse_targets(pipeline.advice_targets)  # validated by problems() already
    with step.staging() as con:
        stream_max_before = None
        if pipeline.replay_mode == ReplayMode.stream:  # judged after the files before it, as the job judges it
            _, median, _ = stream.file_figures(con, source_file)
            stream_max_before = stream.max_before(con, source_file, median)
        advice = advise(con, source_file, spec, targets, limit=pipeline.max_late_ratio,
                        stream_max_before=stream_max_before)  # fmt: skip
        con.execute("BEGIN")
        n_rows = write_advice(con, advice)
        con.execute("COMMIT")
        contract = contract_result(con, "watermark_advice")
        counts = step.table_metadata(con, "watermark_advice", n_rows)
        preview = fetch_df(
            con,
            "SELECT target_late_ratio, out_of_orderness_ms, late_events, late_ratio, added_latency_ms, "
            "is_current, target_source FROM watermark_advice WHERE source_file = ? "
            "ORDER BY is_current DESC, target_late_ratio DESC",
            [source_file],
        )
    profile = advice.profile
    diagnosis = profile.diagnosis() if profile else None
    if diagnosis:
        context.log.warning(diagnosis)
    order = check_result(
        "watermark_advice",
        "file_in_time_order",
        quality.CheckOutcome(
            passed=diagnosis is None, description=diagnosis, metadata=profile.as_metadata() if profile else {}
        ),
        AssetCheckSeverity.WARN,
    )
    checks = [contract, order]
    context.log.info(
        f"Watermark advice for {advice.transactions:,} transactions ({spec.describe()}) in {advice.seconds:.2f} s"
    )
    published = step.audit_and_publish(checks)
    yield MaterializeResult(
        asset_key="watermark_advice",
        metadata={
            **table_counts(step, counts),
            "source_file": MetadataValue.path(source_file),
            "transactions": advice.transactions,
            "window_spec": spec.describe(),
            "advice": MetadataValue.md(summary_markdown(advice)),
            "preview": markdown_preview(preview),
            "late_events_exact": advice.exact,
            **(profile.as_metadata() if profile else {}),
            "plot": MetadataValue.md(markdown_image(advice_svg(advice), "late ratio against out-of-orderness bound")),
            "diagnosis": MetadataValue.md(diagnosis or "_none: the file is in time order up to ordinary disorder_"),
            "advice_s": round(advice.seconds, 3),
            "duration_s": round(time.monotonic() - started, 3),
            "config": MetadataValue.json(pipeline.as_metadata()),
            **published,
        },
    )
    yield from checks


def percent(ratio: float) -> str:
    """A target as people write it: 0.05 -> '5%', 0.001 -> '0.1%', 0 -> '0%'."""
    return f"{ratio * 100:.4g}%"


def summary_markdown(advice: Advice) -> str:
    """One line per row, e.g. '**<= 1%**: 7,688 ms (+6.69 s of latency): 10,000 late events (1.00%)'."""
    current = advice.current
    bound = "at most " if not advice.exact else ""
    lines = [
        f"Configured (TXN_OUT_OF_ORDERNESS_MS) **{current.out_of_orderness_ms:,} ms**: {bound}"
        f"{current.late_events:,} late events ({current.late_ratio:.2%}) of {advice.transactions:,}."
    ]
    for row in advice.rows[1:]:
        delta = row.added_latency_ms
        cost = "no change" if delta == 0 else f"{'+' if delta > 0 else ''}{human_ms(delta)} of latency"
        if delta < 0:
            cost += ", windows close earlier than now"
        lines.append(
            f"- late ratio **<= {percent(row.target_late_ratio)}** ({row.target_source}): "
            f"**{row.out_of_orderness_ms:,} ms** ({cost}): {bound}{row.late_events:,} late events ({row.late_ratio:.3%})"
        )
    if not advice.exact:
        lines.append(
            "\n_Session windows: the late counts are upper bounds (an event whose own window is late can still "
            "merge into an open session), so each advised bound meets its target, possibly with room to spare._"
        )
    return "\n".join(lines)


def _nice_ticks(top: float) -> list[float]:
    """0 and round steps (1, 2 or 5 x 10^k) up to `top`: 3 to 6 ticks."""
    step = 10 ** math.floor(math.log10(top / 3))
    for factor in (1, 2, 5, 10):
        if top / (step * factor) <= 5:
            step *= factor
            break
    return [i * step for i in range(int(top / step + 1e-9) + 1)]


def advice_svg(advice: Advice) -> str:
    """Late ratio (linear) against out-of-orderness bound (log scale, 0 at the left edge): the step
    curve, the configured bound (grey dashed) and one coloured dot per advised bound, explained in
    the legend under the axis (labels beside close dots would overlap or point at the wrong one)."""
    n = advice.transactions
    advised = advice.rows[1:]
    legend_rows = math.ceil(len(advised) / LEGEND_COLUMNS)
    height = HEIGHT + LEGEND_ROW * legend_rows
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="16" font-size="13" font-weight="bold">'
        f"{escape('Late-event ratio against out-of-orderness bound (log scale)')}</text>",
    ]
    left, right, top, bottom = LEFT, WIDTH - RIGHT, TOP, HEIGHT - BOTTOM
    out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" fill="none" stroke="#ccc"/>')
    if not n or not advice.curve:
        out.append(f'<text x="{left + 8}" y="{top + 40}">no transactions</text></svg>')
        return "".join(out)
    x_max = max(advice.curve[-1][0], 1)
    ticks = _nice_ticks(max(late for _, late in advice.curve) / n or 0.01)
    y_max = max(ticks[-1], max(late for _, late in advice.curve) / n)

    def x(bound: int) -> float:
        return left + math.log10(min(bound, x_max) + 1) / math.log10(x_max + 1) * (right - left)

    def y(ratio: float) -> float:
        return bottom - ratio / y_max * (bottom - top - 14)

    labelled_until = -math.inf  # right edge of the last tick label: a label that would overlap it is left out
    for tick in (0, *(t for t in _TICKS_MS if t <= x_max)):
        out.append(f'<line x1="{x(tick):.1f}" x2="{x(tick):.1f}" y1="{bottom}" y2="{bottom + 4}" stroke="#999"/>')
        label = human_ms(tick)
        half = len(label) * TICK_CHAR_PX / 2
        if x(tick) - half < labelled_until + TICK_GAP_PX:
            continue
        labelled_until = x(tick) + half
        out.append(
            f'<text class="tick" x="{x(tick):.1f}" y="{bottom + 16}" text-anchor="middle">{escape(label)}</text>'
        )
    for ratio in ticks:
        out.append(f'<line x1="{left}" x2="{right}" y1="{y(ratio):.1f}" y2="{y(ratio):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 4}" y="{y(ratio) + 4:.1f}" text-anchor="end">{percent(ratio)}</text>')
    out.append(f'<text x="{(left + right) / 2}" y="{bottom + 31}" text-anchor="middle">out-of-orderness bound</text>')
    points = []
    for (bound, late), (next_bound, _) in zip(advice.curve, (*advice.curve[1:], advice.curve[-1]), strict=True):
        points += [f"{x(bound):.1f},{y(late / n):.1f}", f"{x(next_bound):.1f},{y(late / n):.1f}"]
    out.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#2563eb" stroke-width="1.5"/>')
    current = advice.current
    cx = x(current.out_of_orderness_ms)
    anchor, dx = ("end", -4) if cx > (left + right) * 0.6 else ("start", 4)
    out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{top}" y2="{bottom}" stroke="#6b7280" stroke-dasharray="5,3"/>')
    out.append(
        f'<text x="{cx + dx:.1f}" y="{top + 11}" text-anchor="{anchor}" fill="#374151">configured '
        f"{escape(human_ms(current.out_of_orderness_ms))}: {current.late_ratio:.2%} late</text>"
    )
    column = (WIDTH - LEFT) / LEGEND_COLUMNS
    for index, row in enumerate(advised):
        colour = COLOURS[index % len(COLOURS)]
        out.append(f'<circle cx="{x(row.out_of_orderness_ms):.1f}" cy="{y(row.late_ratio):.1f}" r="4" '
                   f'fill="{colour}" stroke="white"/>')  # fmt: skip
        lx = LEFT + (index % LEGEND_COLUMNS) * column
        ly = HEIGHT + 4 + LEGEND_ROW * (index // LEGEND_COLUMNS)
        delta = row.added_latency_ms
        cost = f"{'+' if delta >= 0 else ''}{human_ms(delta)}"
        out.append(f'<circle cx="{lx + 4:.1f}" cy="{ly - 4}" r="4" fill="{colour}"/>')
        target = escape(f"\u2264 {percent(row.target_late_ratio)}: ")
        out.append(
            f'<text x="{lx + 12:.1f}" y="{ly}">{target}<tspan font-weight="bold">'
            f"{escape(human_ms(row.out_of_orderness_ms))}</tspan> ({escape(cost)})</text>"
        )
    out.append("</svg>")
    return "".join(out)
