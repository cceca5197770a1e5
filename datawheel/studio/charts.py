"""Inline SVG charts for the studio's pages: a line chart over time and a horizontal bar chart.

Every label and value is escaped (markupsafe) before it is put in the markup, and the
charts use SVG presentation attributes only (``stroke=``, ``fill=``, ``x=``...), never a
``style`` attribute, so they render under the studio's CSP (``style-src 'self'``). Each
chart is ``role="img"`` with a ``<title>`` and ``<desc>`` it is labelled by, and every
point carries a ``<title>`` with its value (the browser's tooltip, and what a screen
reader reads).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from markupsafe import Markup, escape

__all__ = ["PALETTE", "Series", "bar_chart", "line_chart", "time_label"]

#: Line colours (colour-blind friendly, Okabe-Ito), in series order.
PALETTE = ("#0072b2", "#d55e00", "#009e73", "#cc79a7", "#e69f00", "#56b4e9", "#000000")
_W, _H = 640, 240  # the viewBox; the CSS scales it to the card's width
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 150, 16, 34


@dataclass(frozen=True)
class Series:
    """One line: ``points`` are (x, y) with x in seconds since the epoch; ``notes`` (one per
    point, optional) is added to each point's tooltip (e.g. "12 labels")."""

    name: str
    points: Sequence[tuple[float, float]]
    notes: Sequence[str] = field(default_factory=tuple)


def time_label(ts: float, span: float) -> str:
    """A tick label for ``ts`` on an axis spanning ``span`` seconds (UTC)."""
    when = datetime.fromtimestamp(ts, UTC)
    if span <= 600:  # a few minutes (a demo's run): minutes alone would repeat on the axis
        return when.strftime("%H:%M:%S")
    if span <= 2 * 86400:
        return when.strftime("%H:%M")
    return when.strftime("%m-%d %H:%M") if span <= 14 * 86400 else when.strftime("%Y-%m-%d")


def _num(x: float) -> str:
    return f"{x:.1f}"


def _value(y: float) -> str:
    if abs(y) >= 1e6:
        return f"{y / 1e6:.3g}M"
    return f"{y / 1e3:.3g}k" if abs(y) >= 1e3 else f"{y:.3g}"


def _ticks(lo: float, hi: float, count: int = 4) -> list[float]:
    if hi <= lo:
        return [lo]
    return [lo + (hi - lo) * i / count for i in range(count + 1)]


def _frame(
    chart_id: str,
    title: str,
    desc: str,
    body: list[str],
    css: str,
    height: int = _H,
    width: int = _W,
) -> Markup:
    head = (
        f'<svg class="chart {escape(css)}" viewBox="0 0 {width} {height}" role="img" '
        f'aria-labelledby="{escape(chart_id)}-t {escape(chart_id)}-d" '
        f'xmlns="http://www.w3.org/2000/svg" id="{escape(chart_id)}">'
        f'<title id="{escape(chart_id)}-t">{escape(title)}</title>'
        f'<desc id="{escape(chart_id)}-d">{escape(desc)}</desc>'
    )
    return Markup(head + "".join(body) + "</svg>")


def line_chart(
    series: Sequence[Series],
    *,
    chart_id: str,
    title: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    x_format: Callable[[float, float], str] = time_label,
    threshold: float | None = None,
    log_y: bool = False,
) -> Markup:
    """Lines over time, one per series, with a legend; ``threshold`` draws a dashed line
    (e.g. drift severity 1); ``log_y`` scales y as log10(1 + y), for values >= 0 that span
    orders of magnitude. Empty series are left out; no points at all: an empty chart that
    says so."""
    drawn = [s for s in series if s.points]
    xs = [x for s in drawn for x, _ in s.points]
    ys = [y for s in drawn for _, y in s.points if math.isfinite(y)]
    desc = f"{y_label} over time: " + "; ".join(
        f"{s.name}: {len(s.points)} points, last {_value(s.points[-1][1])}" for s in drawn
    )
    if not xs or not ys:
        body = [f'<text x="{_W / 2}" y="{_H / 2}" text-anchor="middle">no points yet</text>']
        return _frame(chart_id, title, "no points yet", body, "line")
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x0, x1 = x0 - 60, x1 + 60
    y0, y1 = y_range if y_range else (min(0.0, min(ys)), max(ys))
    if threshold is not None and not y_range:
        y1 = max(y1, threshold * 1.1)
    if y1 <= y0:
        y1 = y0 + 1.0
    pw, ph = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def px(x: float) -> float:
        return _LEFT + (x - x0) / (x1 - x0) * pw

    def scaled(y: float) -> float:
        y = min(max(y, y0), y1)
        return math.log10(1 + max(y, 0.0)) if log_y else y

    def py(y: float) -> float:
        lo, hi = scaled(y0), scaled(y1)
        return _TOP + ph - (scaled(y) - lo) / ((hi - lo) or 1.0) * ph

    body = [
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP + ph}" x2="{_LEFT + pw}" y2="{_TOP + ph}" '
        'stroke="#5b6475"/>',
        f'<line class="axis" x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{_TOP + ph}" '
        'stroke="#5b6475"/>',
    ]
    y_ticks = [0.0, *(10.0**k for k in range(int(math.log10(max(y1, 1))) + 1))]
    for t in y_ticks if log_y else _ticks(y0, y1):
        body.append(
            f'<line x1="{_LEFT}" y1="{_num(py(t))}" x2="{_LEFT + pw}" y2="{_num(py(t))}" '
            'stroke="#e5e8ec"/>'
            f'<text class="tick" x="{_LEFT - 6}" y="{_num(py(t) + 4)}" text-anchor="end" '
            f'font-size="11">{escape(_value(t))}</text>'
        )
    for t in _ticks(x0, x1, 3):
        body.append(
            f'<text class="tick" x="{_num(px(t))}" y="{_TOP + ph + 18}" text-anchor="middle" '
            f'font-size="11">{escape(x_format(t, x1 - x0))}</text>'
        )
    body.append(
        f'<text class="axis-label" x="{_LEFT}" y="{_H - 2}" font-size="11">'
        f"{escape(y_label)} (UTC)</text>"
    )
    if threshold is not None and y0 <= threshold <= y1:
        body.append(
            f'<line class="threshold" x1="{_LEFT}" y1="{_num(py(threshold))}" x2="{_LEFT + pw}" '
            f'y2="{_num(py(threshold))}" stroke="#b42318" stroke-dasharray="4 3"/>'
        )
    for i, s in enumerate(drawn):
        colour = PALETTE[i % len(PALETTE)]
        pts = [(x, y) for x, y in s.points if math.isfinite(y)]
        d = " ".join(
            f"{'M' if j == 0 else 'L'}{_num(px(x))},{_num(py(y))}" for j, (x, y) in enumerate(pts)
        )
        body.append(
            f'<path class="series" d="{d}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        for j, (x, y) in enumerate(pts):
            note = f", {s.notes[j]}" if j < len(s.notes) and s.notes[j] else ""
            tip = f"{s.name} at {x_format(x, 0)}: {_value(y)}{note}"
            body.append(
                f'<circle cx="{_num(px(x))}" cy="{_num(py(y))}" r="3" fill="{colour}">'
                f"<title>{escape(tip)}</title></circle>"
            )
        ly = _TOP + 14 + i * 18
        body.append(
            f'<line x1="{_W - _RIGHT + 12}" y1="{ly - 4}" x2="{_W - _RIGHT + 30}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text class="legend" x="{_W - _RIGHT + 36}" y="{ly}" font-size="12">'
            f"{escape(s.name[:22])}</text>"
        )
    return _frame(chart_id, title, desc, body, "line")


def bar_chart(
    bars: Sequence[tuple[str, float]],
    *,
    chart_id: str,
    title: str,
    max_value: float | None = None,
    value_format: Callable[[float], str] = _value,
    width: int = 360,
) -> Markup:
    """Horizontal bars, one per (label, value), scaled to ``max_value`` (default: the largest);
    ``width`` is the viewBox width (a narrow one keeps the text readable in a small card)."""
    height = max(40, 22 * len(bars) + 10)
    top = max((v for _, v in bars), default=0.0)
    scale = max_value if max_value and max_value > 0 else (top if top > 0 else 1.0)
    longest = max((len(label[:24]) for label, _ in bars), default=4)
    label_w = min(150, 16 + 7 * longest)
    bar_w = width - label_w - 56
    body = []
    for i, (label, value) in enumerate(bars):
        y = 6 + i * 22
        length = max(0.0, min(1.0, value / scale)) * bar_w
        shown = value_format(value)
        body.append(
            f'<text class="bar-label" x="{label_w - 8}" y="{y + 13}" text-anchor="end" '
            f'font-size="12">{escape(label[:24])}</text>'
            f'<rect class="bar" x="{label_w}" y="{y}" width="{_num(length)}" height="16" '
            f'fill="{PALETTE[0]}"><title>{escape(label)}: {escape(shown)}</title></rect>'
            f'<text class="bar-value" x="{_num(label_w + length + 6)}" y="{y + 13}" '
            f'font-size="12">{escape(shown)}</text>'
        )
    if not bars:
        body.append(f'<text x="{width / 2}" y="24" text-anchor="middle">nothing to show</text>')
    desc = "; ".join(f"{label}: {value_format(v)}" for label, v in bars) or "nothing to show"
    return _frame(chart_id, title, desc, body, "bars", height, width)
