"""A tiny SVG writer for the anomaly plot shown in the Dagster UI (no plotting dependency).

`anomaly_svg` draws one panel per key over event time: the window averages as a band from each pixel column's
lowest to its highest average with a line through its median (a key with 100k windows stays one readable line and no
spike disappears); the key's 1-transaction threshold as a red dashed line, the highest a window can have (a window of
n transactions is anomalous above z / sqrt(n) of it, so a busy window can be red below the line); and every
anomalous window as a red dot, at most one per column (its highest), with a thin stem to its own threshold when the
caller gives it. The anomalous windows come from the caller (the `anomalies` table, or the current thresholds),
because a window's threshold depends on its transaction count; without them the points above the dashed line are
marked. Every label sits outside the plotted area (title and method above, counts in a header row over each panel,
axis labels beside and below), so no line crosses text. `markdown_image` embeds an SVG in markdown metadata as a
base64 data URI, which the Dagster UI renders. What the plots show: docs/automation-and-ui.md ("What the UI shows").
"""

from __future__ import annotations

import base64
import math
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from xml.sax.saxutils import escape

WIDTH = 720
PANEL_HEIGHT = 150  # header row + plot + time axis of one key
HEADER, AXIS = 18, 16  # a panel's header row (key, counts) and time-axis row
MARGIN_LEFT, MARGIN_RIGHT = 72, 16
LINE_HEIGHT = 15
CHARS_PER_LINE = 128  # at 11 px sans-serif, about 5.2 px a character (measured in Chromium): fits WIDTH - 16 px
MAX_POINTS = 600  # kept for callers: a panel never draws more than one column per pixel anyway

METHOD_NOTE = (
    "A window is red when its average is above its own threshold: the key's robust centre of log(1 + amount) "
    "plus z robust standard deviations divided by sqrt(transactions in the window). The dashed line is the "
    "threshold of a 1-transaction window, the highest; busier windows have lower ones (red stem: the window's "
    "own threshold). Blue: median of the windows in each pixel column, band: their min to max."
)


def _fmt(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _time(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # beyond datetime's range (year 10000+)
        return f"{ms} ms since epoch"


def _lines(text: str, chars: int = CHARS_PER_LINE) -> list[str]:
    return textwrap.wrap(text, chars) or [""]


def _columns(points: list[tuple[int, float]], x, width: int) -> list[tuple[float, float, float, float]]:
    """(x, min, median, max) per pixel column of the points (sorted by time)."""
    columns: dict[int, list[float]] = {}
    for t, v in points:
        columns.setdefault(min(width - 1, int(x(t))), []).append(v)
    out = []
    for column, values in sorted(columns.items()):
        values.sort()
        out.append((column + 0.5, values[0], values[len(values) // 2], values[-1]))
    return out


def anomaly_svg(series: Mapping[str, tuple], title: str, note: str = METHOD_NOTE) -> str:
    """series: key -> (points, threshold) or (points, threshold, anomalous): points are
    [(window_start_ms, avg_amount), ...] sorted by time; anomalous the window_start_ms of the points
    to mark, or a mapping window_start_ms -> that window's own threshold (drawn as its stem). Default:
    the points above the threshold."""
    title_lines = _lines(title, CHARS_PER_LINE * 11 // 14)  # bold and 13 px
    note_lines = _lines(note)
    top_block = 8 + LINE_HEIGHT * (len(title_lines) + len(note_lines)) + 6
    height = top_block + max(1, len(series)) * PANEL_HEIGHT + 4
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
    ]
    y_text = 8
    for line in title_lines:
        y_text += LINE_HEIGHT
        out.append(f'<text x="8" y="{y_text}" font-size="13" font-weight="bold">{escape(line)}</text>')
    for line in note_lines:
        y_text += LINE_HEIGHT
        out.append(f'<text class="method" x="8" y="{y_text}" fill="#374151">{escape(line)}</text>')
    if not series:
        out.append(f'<text x="{MARGIN_LEFT}" y="{top_block + 40}">no key has a threshold yet</text>')
    left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
    for index, (key, panel) in enumerate(series.items()):
        points, threshold = panel[0], panel[1]
        given = panel[2] if len(panel) > 2 else None
        if given is None:
            marked: dict[int, float | None] = {t: None for t, v in points if v > threshold}
        elif isinstance(given, Mapping):
            marked = dict(given)
        else:
            marked = {t: None for t in given}
        panel_top = top_block + index * PANEL_HEIGHT
        top = panel_top + HEADER
        bottom = panel_top + PANEL_HEIGHT - AXIS - 10
        values = [v for _, v in points] + [own for own in marked.values() if own is not None and math.isfinite(own)]
        # the dashed line is drawn when it is near the data: a threshold far above it (a high z, a calm key)
        # would squash every window into one flat line at the bottom, so the header states it instead
        data_span = (max(values) - min(values) or 1.0) if values else 1.0
        threshold_shown = math.isfinite(threshold) and (
            not values or min(values) - data_span <= threshold <= max(values) + data_span
        )
        if threshold_shown:
            values.append(threshold)
        lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
        if hi == lo:
            lo, hi = lo - 1, hi + 1
        pad = (hi - lo) * 0.05
        lo, hi = lo - pad, hi + pad
        t0 = points[0][0] if points else 0
        t1 = points[-1][0] if points else 1
        span = (t1 - t0) or 1

        # bound per panel (default arguments): the closures must not see the next panel's values
        def x(t: int, left: float = left, right: float = right, t0: int = t0, span: int = span) -> float:
            return left + (t - t0) / span * (right - left)

        def y(v: float, top: float = top, bottom: float = bottom, lo: float = lo, hi: float = hi) -> float:
            return bottom - (v - lo) / (hi - lo) * (bottom - top)

        anomalous = [(t, v) for t, v in points if t in marked]
        # one mark per pixel column (its highest anomalous window, the stem down to the lowest own threshold
        # there): 830 anomalies of a key at 3M rows are as many dots as the width has columns, the count is exact
        drawn: dict[int, tuple[int, float, float | None]] = {}
        for t, v in anomalous:
            own = marked[t]
            column = int(x(t))
            if column in drawn:
                _, best_v, best_own = drawn[column]
                lowest = min((o for o in (own, best_own) if o is not None), default=None)
                drawn[column] = (t, v, lowest) if v > best_v else (drawn[column][0], best_v, lowest)
            else:
                drawn[column] = (t, v, own)
        threshold_text = _fmt(threshold) if math.isfinite(threshold) else "none (too little history)"
        if math.isfinite(threshold) and not threshold_shown:
            threshold_text += " (off the plotted range, not drawn)"
        out.append(
            f'<text x="{left}" y="{panel_top + 13}" font-weight="bold">{escape(str(key))}</text>'
            f'<text x="{right}" y="{panel_top + 13}" text-anchor="end">{len(points):,} windows · '
            f'<tspan fill="#dc2626">{len(anomalous):,} anomalous</tspan> · 1-transaction threshold '
            f"{escape(threshold_text)}</text>"
        )
        out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
                   f'fill="none" stroke="#ccc"/>')  # fmt: skip
        out.append(f'<text x="{left - 4}" y="{top + 9}" text-anchor="end">{_fmt(hi)}</text>')
        out.append(f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_fmt(lo)}</text>')
        if points:
            out.append(f'<text x="{left}" y="{bottom + 13}">{_time(t0)}</text>')
            out.append(f'<text x="{right}" y="{bottom + 13}" text-anchor="end">{_time(t1)}</text>')
            columns = _columns(points, lambda t: x(t) - left, int(right - left))
            if any(c[1] != c[3] for c in columns):
                upper = " ".join(f"{left + c[0]:.1f},{y(c[3]):.1f}" for c in columns)
                lower = " ".join(f"{left + c[0]:.1f},{y(c[1]):.1f}" for c in reversed(columns))
                out.append(f'<polygon points="{upper} {lower}" fill="#bfdbfe" stroke="#bfdbfe" stroke-width="0.8"/>')
            line = " ".join(f"{left + c[0]:.1f},{y(c[2]):.1f}" for c in columns)
            out.append(f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="1.2"/>')
        if threshold_shown:
            out.append(f'<line x1="{left}" x2="{right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                       f'stroke="#dc2626" stroke-dasharray="5,3"/>')  # fmt: skip
        for t, v, own in drawn.values():
            if own is not None and math.isfinite(own):
                out.append(f'<line x1="{x(t):.1f}" x2="{x(t):.1f}" y1="{y(own):.1f}" y2="{y(v):.1f}" '
                           f'stroke="#dc2626" stroke-width="0.8" opacity="0.6"/>')  # fmt: skip
            out.append(f'<circle class="anomaly" cx="{x(t):.1f}" cy="{y(v):.1f}" r="2.5" fill="#dc2626" '
                       f'fill-opacity="0.75"/>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def markdown_image(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![{alt}](data:image/svg+xml;base64,{data})"
