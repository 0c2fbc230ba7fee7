"""The anomaly plot's SVG (orchestration/plots.py): readable at millions of windows, nothing clipped."""

from __future__ import annotations

import re

from orchestration.plots import CHARS_PER_LINE, WIDTH, anomaly_svg


def _texts(svg: str) -> list[str]:
    return [re.sub("<[^>]+>", "", t) for t in re.findall(r"<text[^>]*>(.*?)</text>", svg)]


def test_a_long_title_wraps_instead_of_being_clipped_and_the_method_is_stated() -> None:
    title = (
        "This file's window averages of the 4 keys with the most history, judged against the new thresholds (z = 3.5)"
    )
    svg = anomaly_svg({"k": ([(0, 1.0), (5000, 2.0)], 5.0)}, title)
    texts = _texts(svg)
    shown = " ".join(re.findall(r'<text x="8" y="\d+" font-size="13" font-weight="bold">(.*?)</text>', svg))
    assert shown == title, "the title is not shown whole"
    assert all(len(t) <= CHARS_PER_LINE for t in texts), "a text line is longer than the plot's width holds"
    method = " ".join(re.findall(r'<text class="method"[^>]*>(.*?)</text>', svg))
    assert "own threshold" in method and "sqrt(transactions in the window)" in method


def test_millions_of_windows_draw_one_column_per_pixel_and_count_every_anomaly() -> None:
    points = [(i * 5000, 100.0 + (i % 7)) for i in range(300_000)]
    anomalous = {t: 101.0 for t, _ in points[::300]}  # 1,000 anomalies, own threshold below them
    svg = anomaly_svg({"busy": (points, 150.0, anomalous)}, "t")
    assert "300,000 windows" in svg and "1,000 anomalous" in svg  # the counts are exact
    assert svg.count('class="anomaly"') <= WIDTH  # at most one mark per pixel column
    assert svg.count('class="anomaly"') >= 600  # and every column with an anomaly has its mark
    (line,) = re.findall(r'<polyline points="([^"]+)"', svg)
    assert len(line.split()) <= WIDTH
    assert len(svg) < 200_000, "the plot must stay small enough for the UI's metadata"
    # a red dot below the dashed 1-transaction line has its stem to its own, lower threshold
    assert svg.count('stroke-width="0.8" opacity="0.6"') == svg.count('class="anomaly"')


def test_a_threshold_far_above_the_windows_is_stated_not_drawn() -> None:
    points = [(i * 5000, 10.0 + i % 3) for i in range(100)]
    svg = anomaly_svg({"calm": (points, 1.3e163)}, "t")
    assert "1.3e+163 (off the plotted range, not drawn)" in svg and 'stroke-dasharray="5,3"' not in svg
    assert ">12.10<" in svg  # the y axis spans the windows (10 to 12, padded), not up to the threshold
    near = anomaly_svg({"calm": (points, 14.0)}, "t")
    assert 'stroke-dasharray="5,3"' in near and "not drawn" not in near
