"""A tiny SVG writer for the anomaly plot shown in the Dagster UI (no plotting dependency).

`anomaly_svg` draws one panel per key: the window averages over event time (blue line), the key's
anomaly threshold for a one-transaction window (red dashed line: the highest threshold, a busier
window's own threshold is lower) and the anomalous windows (red dots). The anomalous windows are
given by the caller, from the `anomalies` table, because a window's threshold depends on its
transaction count; without them, the points above the line are marked. `markdown_image` embeds an
SVG in markdown metadata as a base64 data URI, which the Dagster UI renders as an image.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping
from datetime import UTC, datetime
from xml.sax.saxutils import escape

WIDTH = 720
PANEL_HEIGHT = 140
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 64, 16, 22, 22
MAX_POINTS = 600  # per panel; longer series are thinned (every n-th point, anomalies always kept)


def _fmt(value: float) -> str:
    if value == 0 or 0.01 <= abs(value) < 1e6:
        return f"{value:,.2f}"
    return f"{value:.3g}"


def _time(ms: int) -> str:
    try:
        return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (ValueError, OverflowError, OSError):  # beyond datetime's range (year 10000+)
        return f"{ms} ms since epoch"


def anomaly_svg(series: Mapping[str, tuple], title: str) -> str:
    """series: key -> (points, threshold) or (points, threshold, anomalous): points are
    [(window_start_ms, avg_amount), ...] sorted by time, anomalous the window_start_ms of the
    points to mark (default: the points above the threshold)."""
    height = MARGIN_TOP + max(1, len(series)) * PANEL_HEIGHT + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN_LEFT}" y="15" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if not series:
        out.append(f'<text x="{MARGIN_LEFT}" y="{MARGIN_TOP + 40}">no key has a threshold yet</text>')
    for index, (key, panel) in enumerate(series.items()):
        points, threshold = panel[0], panel[1]
        marked = set(panel[2]) if len(panel) > 2 else {t for t, v in points if v > threshold}
        top = MARGIN_TOP + index * PANEL_HEIGHT + 8
        bottom = top + PANEL_HEIGHT - MARGIN_BOTTOM - 8
        left, right = MARGIN_LEFT, WIDTH - MARGIN_RIGHT
        values = [v for _, v in points] + ([threshold] if math.isfinite(threshold) else [])
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

        out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
                   f'fill="none" stroke="#ccc"/>')  # fmt: skip
        above = sum(1 for t, _ in points if t in marked)
        out.append(
            f'<text x="{left + 4}" y="{top + 12}" font-weight="bold">{escape(str(key))}</text>'
            f'<text x="{right - 4}" y="{top + 12}" text-anchor="end">{len(points)} windows, '
            f"threshold {_fmt(threshold)} (1 txn), {above} anomalous</text>"
        )
        out.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{_fmt(hi)}</text>')
        out.append(f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_fmt(lo)}</text>')
        if points:
            out.append(f'<text x="{left}" y="{bottom + 13}">{_time(t0)}</text>')
            out.append(f'<text x="{right}" y="{bottom + 13}" text-anchor="end">{_time(t1)}</text>')
            step = max(1, math.ceil(len(points) / MAX_POINTS))
            kept = [p for i, p in enumerate(points) if i % step == 0 or p[0] in marked]
            line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in kept)
            out.append(f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="1.2"/>')
            for t, v in points:
                if t in marked:
                    out.append(f'<circle class="anomaly" cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="#dc2626"/>')
        if math.isfinite(threshold):
            out.append(f'<line x1="{left}" x2="{right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                       f'stroke="#dc2626" stroke-dasharray="5,3"/>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def markdown_image(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![{alt}](data:image/svg+xml;base64,{data})"
