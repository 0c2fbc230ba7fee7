"""A tiny SVG writer for the anomaly plot shown in the Dagster UI (no plotting dependency).

`anomaly_svg` draws one panel per key: the window averages over event time (blue line), the key's
anomaly threshold (red dashed line) and the windows above it (red dots). `markdown_image` embeds an
SVG in markdown metadata as a base64 data URI, which the Dagster UI renders as an image.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Mapping, Sequence
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


def anomaly_svg(series: Mapping[str, tuple[Sequence[tuple[int, float]], float]], title: str) -> str:
    """series: key -> ([(window_start_ms, avg_amount), ...] sorted by time, threshold)."""
    height = MARGIN_TOP + max(1, len(series)) * PANEL_HEIGHT + 6
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{MARGIN_LEFT}" y="15" font-size="13" font-weight="bold">{escape(title)}</text>',
    ]
    if not series:
        out.append(f'<text x="{MARGIN_LEFT}" y="{MARGIN_TOP + 40}">no key has a threshold yet</text>')
    for index, (key, (points, threshold)) in enumerate(series.items()):
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

        def x(t: int) -> float:
            return left + (t - t0) / span * (right - left)

        def y(v: float) -> float:
            return bottom - (v - lo) / (hi - lo) * (bottom - top)

        out.append(f'<rect x="{left}" y="{top}" width="{right - left}" height="{bottom - top}" '
                   f'fill="none" stroke="#ccc"/>')  # fmt: skip
        above = sum(1 for _, v in points if v > threshold)
        out.append(
            f'<text x="{left + 4}" y="{top + 12}" font-weight="bold">{escape(str(key))}</text>'
            f'<text x="{right - 4}" y="{top + 12}" text-anchor="end">{len(points)} windows, '
            f'threshold {_fmt(threshold)}, {above} above</text>'
        )
        out.append(f'<text x="{left - 4}" y="{top + 10}" text-anchor="end">{_fmt(hi)}</text>')
        out.append(f'<text x="{left - 4}" y="{bottom}" text-anchor="end">{_fmt(lo)}</text>')
        if points:
            out.append(f'<text x="{left}" y="{bottom + 13}">{_time(t0)}</text>')
            out.append(f'<text x="{right}" y="{bottom + 13}" text-anchor="end">{_time(t1)}</text>')
            step = max(1, math.ceil(len(points) / MAX_POINTS))
            kept = [p for i, p in enumerate(points) if i % step == 0 or p[1] > threshold]
            line = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in kept)
            out.append(f'<polyline points="{line}" fill="none" stroke="#2563eb" stroke-width="1.2"/>')
            for t, v in points:
                if v > threshold:
                    out.append(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="#dc2626"/>')
        if math.isfinite(threshold):
            out.append(f'<line x1="{left}" x2="{right}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                       f'stroke="#dc2626" stroke-dasharray="5,3"/>')  # fmt: skip
    out.append("</svg>")
    return "".join(out)


def markdown_image(svg: str, alt: str) -> str:
    data = base64.b64encode(svg.encode("utf-8")).decode("ascii")
    return f"![{alt}](data:image/svg+xml;base64,{data})"
