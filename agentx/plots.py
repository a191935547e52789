"""Plots as inline SVG strings: no JavaScript, no fonts or files to fetch, so a report or a
page shows them offline, in any browser, and a test can count their marks.

Three shapes cover what agentx shows: `forest` (an effect with its confidence interval per
row: per seed, per experiment), `lines` (series over x: the best metric over time, a
learning curve) and `bars` (stacked counts or seconds per label: outcomes by recipe family,
where the time went). Every mark carries a `<title>`, which browsers show on hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

PALETTE = ("#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563")
COLORS = {"ship": "#16a34a", "win": "#16a34a", "reject": "#dc2626", "loss": "#dc2626", "inconclusive": "#6b7280",
          "neutral": "#6b7280", "vetoed": "#d97706", "failure": "#d97706", "failed": "#d97706",
          "rejected_by_reviewer": "#7c3aed"}


@dataclass(frozen=True)
class Interval:
    label: str
    estimate: float
    low: float | None
    high: float | None
    group: str = ""                  # colours the row (a decision, an arm)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if step * m >= raw)
    first = math.ceil(lo / step) * step
    return [round(first + i * step, 12) for i in range(int((hi - first) / step) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.1e}"


def _frame(width: int, height: int, title: str, body: list[str], cls: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" class="plot {cls}" viewBox="0 0 {width} {height}" '
            f'width="{width}" height="{height}" font-family="system-ui, sans-serif" role="img" aria-label="{escape(title)}">'
            f'<text x="{width / 2}" y="16" text-anchor="middle" font-size="13" font-weight="600">{escape(title)}</text>'
            + "".join(body) + "</svg>")


def empty(title: str, why: str, width: int = 520) -> str:
    return _frame(width, 60, title, [f'<text x="{width / 2}" y="42" text-anchor="middle" font-size="12" '
                                     f'fill="#6b7280">{escape(why)}</text>'], "empty")


def forest(rows: Sequence[Interval], title: str, xlabel: str, *, width: int = 560) -> str:
    """Each row an estimate with its interval; a dashed line at zero."""
    if not rows:
        return empty(title, "nothing to plot yet")
    left, right, top, row_h = 150, 20, 28, 22
    height = top + row_h * len(rows) + 40
    values = [v for r in rows for v in (r.estimate, r.low, r.high) if v is not None] + [0.0]
    lo, hi = min(values), max(values)
    pad = (hi - lo) * 0.08 or 1e-3
    lo, hi = lo - pad, hi + pad
    x = lambda v: left + (v - lo) / (hi - lo) * (width - left - right)  # noqa: E731
    body = [f'<line x1="{x(0):.1f}" y1="{top}" x2="{x(0):.1f}" y2="{height - 34}" stroke="#9ca3af" '
            'stroke-dasharray="4 3"/>']
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        color = COLORS.get(r.group, PALETTE[0])
        ci = "" if r.low is None else f" [{_fmt(r.low)}, {_fmt(r.high)}]"
        body.append(f'<text x="{left - 8}" y="{y + 4:.1f}" text-anchor="end" font-size="11">{escape(r.label)}</text>')
        if r.low is not None and r.high is not None:
            body.append(f'<line class="ci" x1="{x(r.low):.1f}" y1="{y:.1f}" x2="{x(r.high):.1f}" y2="{y:.1f}" '
                        f'stroke="{color}" stroke-width="2"/>')
        body.append(f'<circle class="mark" cx="{x(r.estimate):.1f}" cy="{y:.1f}" r="4" fill="{color}">'
                    f'<title>{escape(r.label)}: {_fmt(r.estimate)}{ci}</title></circle>')
    body += _x_axis(lo, hi, x, height - 34, xlabel, width)
    return _frame(width, height, title, body, "forest")


def _x_axis(lo, hi, x, y0, label, width, fmt=_fmt) -> list[str]:
    out = [f'<line x1="{x(lo):.1f}" y1="{y0}" x2="{x(hi):.1f}" y2="{y0}" stroke="#374151"/>']
    for t in _ticks(lo, hi):
        if lo <= t <= hi:
            out.append(f'<text x="{x(t):.1f}" y="{y0 + 14}" text-anchor="middle" font-size="10">{fmt(t)}</text>')
    out.append(f'<text x="{width / 2}" y="{y0 + 30}" text-anchor="middle" font-size="11">{escape(label)}</text>')
    return out


def lines(series: dict[str, Sequence[tuple[float, float]]], title: str, xlabel: str, ylabel: str, *,
          width: int = 560, height: int = 260, x_format=_fmt, steps: set[str] = frozenset()) -> str:
    """Series of (x, y) points; names in `steps` draw as a step line (a running best)."""
    points = [p for pts in series.values() for p in pts]
    if not points:
        return empty(title, "nothing to plot yet")
    left, top, bottom = 60, 28, 46
    right = 24 + int(6.5 * max(len(name) for name in series))      # room for the legend's longest name
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    if x_hi == x_lo:
        x_lo, x_hi = x_lo - 1, x_hi + 1
    y_lo, y_hi = min(ys), max(ys)
    pad = (y_hi - y_lo) * 0.08 or abs(y_hi) * 0.01 or 1e-3
    y_lo, y_hi = y_lo - pad, y_hi + pad
    x = lambda v: left + (v - x_lo) / (x_hi - x_lo) * (width - left - right)  # noqa: E731
    y = lambda v: height - bottom - (v - y_lo) / (y_hi - y_lo) * (height - top - bottom)  # noqa: E731
    body = [f'<line x1="{left}" y1="{top}" x2="{left}" y2="{height - bottom}" stroke="#374151"/>']
    for t in _ticks(y_lo, y_hi):
        if y_lo <= t <= y_hi:
            body.append(f'<text x="{left - 6}" y="{y(t) + 3:.1f}" text-anchor="end" font-size="10">{_fmt(t)}</text>'
                        f'<line x1="{left}" y1="{y(t):.1f}" x2="{width - right}" y2="{y(t):.1f}" stroke="#e5e7eb"/>')
    body.append(f'<text x="14" y="{(top + height - bottom) / 2:.1f}" font-size="11" text-anchor="middle" '
                f'transform="rotate(-90 14 {(top + height - bottom) / 2:.1f})">{escape(ylabel)}</text>')
    for i, (name, pts) in enumerate(series.items()):
        color = PALETTE[i % len(PALETTE)]
        pts = sorted(pts)
        if name in steps:
            path = [(pts[0][0], pts[0][1])]
            for a, b in zip(pts, pts[1:]):
                path += [(b[0], a[1]), b]
        else:
            path = pts
        d = " ".join(f"{'M' if j == 0 else 'L'}{x(px):.1f},{y(py):.1f}" for j, (px, py) in enumerate(path))
        body.append(f'<path class="series" d="{d}" fill="none" stroke="{color}" stroke-width="2"/>')
        for px, py in pts:
            body.append(f'<circle class="mark" cx="{x(px):.1f}" cy="{y(py):.1f}" r="3" fill="{color}">'
                        f'<title>{escape(name)}: {x_format(px)}, {_fmt(py)}</title></circle>')
        body.append(f'<text x="{width - right + 8}" y="{top + 14 * i + 10}" font-size="11" fill="{color}">'
                    f'{escape(name)}</text>')
    body += _x_axis(x_lo, x_hi, x, height - bottom, xlabel, width - right + left, fmt=x_format)
    return _frame(width, height, title, body, "lines")


def bars(items: Sequence[tuple[str, dict[str, float]]], title: str, unit: str, *, width: int = 560) -> str:
    """One horizontal bar per label, stacked by segment (a decision, a stage)."""
    items = [(label, parts) for label, parts in items if sum(parts.values()) > 0]
    if not items:
        return empty(title, "nothing to plot yet")
    segments = list(dict.fromkeys(s for _, parts in items for s in parts))
    left, right, top, row_h = 150, 20, 28, 22
    legend_y = top + row_h * len(items) + 34
    height = legend_y + 18
    total = max(sum(parts.values()) for _, parts in items)
    x = lambda v: left + v / total * (width - left - right)  # noqa: E731
    color = {s: COLORS.get(s, PALETTE[i % len(PALETTE)]) for i, s in enumerate(segments)}
    body = []
    for i, (label, parts) in enumerate(items):
        y = top + row_h * i + 3
        body.append(f'<text x="{left - 8}" y="{y + 12}" text-anchor="end" font-size="11">{escape(label)}</text>')
        at = 0.0
        for s in segments:
            v = parts.get(s, 0.0)
            if v <= 0:
                continue
            body.append(f'<rect class="mark" x="{x(at):.1f}" y="{y}" width="{max(x(at + v) - x(at), 1):.1f}" '
                        f'height="{row_h - 6}" fill="{color[s]}"><title>{escape(label)}: {escape(s)} {_fmt(v)} '
                        f'{escape(unit)}</title></rect>')
            at += v
    body += _x_axis(0.0, total, x, top + row_h * len(items) + 4, unit, width)
    at = left
    for s in segments:
        body.append(f'<rect x="{at}" y="{legend_y}" width="10" height="10" fill="{color[s]}"/>'
                    f'<text x="{at + 14}" y="{legend_y + 9}" font-size="11">{escape(s)}</text>')
        at += 24 + 7 * len(s)
    return _frame(width, height, title, body, "bars")
