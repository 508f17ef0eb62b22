"""Small SVG charts drawn on the server: progress bars, time series and a task's neighbourhood.

Pure functions from numbers to SVG text (no I/O, no JavaScript), so the live page and the
self-contained HTML report show the same pictures. Colours are presentation attributes, not
``style``, so a strict Content-Security-Policy allows them; hovering an element shows its
``<title>``. Every text that comes from the database is escaped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from html import escape

from markupsafe import Markup

#: One colour per task state: waiting greys and blues, running blue, done greens, errors warm.
STATE_COLOURS = {
    "CREATED": "#c7c7c7", "AWAITING_PARENTS": "#a6a6a6", "READY": "#9ecae1",
    "STAGED_IN": "#6baed6", "PREPROCESSED": "#4292c6", "RUNNING": "#1f5fbf",
    "RUN_DONE": "#74c476", "POSTPROCESSED": "#41ab5d", "JOB_FINISHED": "#1b7837",
    "RUN_ERROR": "#fd8d3c", "RUN_TIMEOUT": "#fdae6b", "RESTART_READY": "#9e79c2",
    "FAILED": "#c9302c", "USER_KILLED": "#7f5539",
}
#: Colours of groups (users, workflows, batch jobs), in order of size.
GROUP_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
                 "#7f7f7f", "#bcbd22", "#17becf")


def state_colour(state: str) -> str:
    return STATE_COLOURS.get(state, "#999999")


def _svg(width: float, height: float, body: list[str], label: str) -> Markup:
    return Markup(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" '
                  f'height="{height:.0f}" viewBox="0 0 {width:.0f} {height:.0f}" role="img" '
                  f'aria-label="{escape(label)}">' + "".join(body) + "</svg>")


def _rect(x: float, y: float, w: float, h: float, fill: str, title: str = "") -> str:
    tip = f"<title>{escape(title)}</title>" if title else ""
    return (f'<rect x="{x:.2f}" y="{y:.2f}" width="{max(w, 0):.2f}" height="{max(h, 0):.2f}" '
            f'fill="{fill}">{tip}</rect>')


def _text(x: float, y: float, text: str, anchor: str = "start", extra: str = "",
          size: int = 11) -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}" font-family="sans-serif" '
            f'font-size="{size}" {extra}>{escape(text)}</text>')


def state_bar(counts: Mapping[str, int], width: float = 320, height: float = 16) -> Markup:
    """Tasks per state as one stacked bar (in the order given)."""
    total = sum(counts.values())
    body = [_rect(0, 0, width, height, "#eeeeee")]
    x = 0.0
    for state, n in counts.items():
        if n <= 0 or total <= 0:
            continue
        w = width * n / total
        body.append(_rect(x, 0, w, height, state_colour(state),
                          f"{state}: {n:,} ({100 * n / total:.1f}%)"))
        x += w
    label = ", ".join(f"{s} {n:,}" for s, n in counts.items()) or "no tasks"
    return _svg(width, height, body, label)


# --- time series ------------------------------------------------------------------------------


def nice_ticks(top: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``top`` (about ``count`` of them)."""
    if top <= 0 or not math.isfinite(top):
        return [0.0, 1.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


def _number(value: float) -> str:
    if value >= 10_000:
        return f"{value / 1000:,.0f}k"
    return f"{value:,.0f}" if value == int(value) else f"{value:,.1f}"


def _time_label(moment: datetime, span_seconds: float) -> str:
    local = moment.astimezone()
    return f"{local:%H:%M}" if span_seconds <= 86400 else f"{local:%m-%d %H:%M}"


@dataclass(frozen=True)
class Series:
    """Values per time bin: stacked layers (name -> values), and an optional line on top."""

    starts: Sequence[datetime]
    end: datetime
    layers: Mapping[str, Sequence[float]]
    line: tuple[str, Sequence[float]] | None = None


def time_chart(series: Series, *, bars: bool, y_label: str, width: float = 760,
               height: float = 240, colours: Mapping[str, str] | None = None) -> Markup:
    """Stacked bars (``bars``) or stacked steps over time, with a legend on the right."""
    left, right, top, bottom = 48.0, 150.0, 10.0, 34.0
    plot_w, plot_h = width - left - right, height - top - bottom
    n = len(series.starts)
    stacks = [sum(v[i] for v in series.layers.values()) for i in range(n)]
    line = list(series.line[1]) if series.line else []
    ticks = nice_ticks(max([*stacks, *line, 0.0]))
    y_max = ticks[-1]
    t0 = series.starts[0].timestamp() if n else 0.0
    span = (series.end.timestamp() - t0) if n else 1.0
    span = span or 1.0

    def x_of(moment: datetime) -> float:
        return left + plot_w * (moment.timestamp() - t0) / span

    def y_of(value: float) -> float:
        return top + plot_h * (1 - value / y_max)

    body = [_text(12, top + plot_h / 2, y_label, "middle",
                  f'transform="rotate(-90 12 {top + plot_h / 2:.1f})"')]
    for tick in ticks:
        y = y_of(tick)
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                    f'stroke="#e3e3e3"/>')
        body.append(_text(left - 4, y + 4, _number(tick), "end"))
    for i in range(0, n, max(1, math.ceil(n / 6))):
        x = x_of(series.starts[i])
        body.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top + plot_h}" '
                    f'y2="{top + plot_h + 4}" stroke="#888"/>')
        body.append(_text(x, top + plot_h + 16, _time_label(series.starts[i], span), "middle"))
    palette = colours or {}
    keys = list(series.layers)
    base = [0.0] * n
    for k, key in enumerate(keys):
        colour = palette.get(key, GROUP_COLOURS[k % len(GROUP_COLOURS)])
        values = series.layers[key]
        for i in range(n):
            if values[i] <= 0:
                continue
            x0 = x_of(series.starts[i])
            x1 = x_of(series.starts[i + 1]) if i + 1 < n else x_of(series.end)
            gap = min(1.0, (x1 - x0) * 0.15) if bars else 0.0
            y0, y1 = y_of(base[i] + values[i]), y_of(base[i])
            when = series.starts[i].astimezone()
            body.append(_rect(x0 + gap / 2, y0, x1 - x0 - gap, y1 - y0, colour,
                              f"{key or '(none)'}: {_number(values[i])} at {when:%Y-%m-%d %H:%M}"))
            base[i] += values[i]
    if series.line and n:
        name, values = series.line
        points = []
        for i in range(n):
            x0 = x_of(series.starts[i])
            x1 = x_of(series.starts[i + 1]) if i + 1 < n else x_of(series.end)
            points += [f"{x0:.1f},{y_of(values[i]):.1f}", f"{x1:.1f},{y_of(values[i]):.1f}"]
        body.append(f'<polyline points="{" ".join(points)}" fill="none" stroke="#222" '
                    f'stroke-width="1.5"><title>{escape(name)}</title></polyline>')
    body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" '
                f'y2="{top + plot_h}" stroke="#888"/>')
    legend = [(key or "(none)", palette.get(key, GROUP_COLOURS[k % len(GROUP_COLOURS)]))
              for k, key in enumerate(keys)]
    if series.line:
        legend.append((series.line[0], "#222"))
    for j, (name, colour) in enumerate(legend[:14]):
        y = top + 6 + 16 * j
        body.append(_rect(width - right + 12, y - 8, 10, 10, colour))
        body.append(_text(width - right + 27, y + 1, name[:22]))
    if not n:
        body.append(_text(left + plot_w / 2, top + plot_h / 2, "no data in this window",
                          "middle"))
    return _svg(width, height, body, y_label)


# --- a task's neighbourhood -------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    id: int
    name: str
    state: str


def dag_view(task: Node, parents: Sequence[Node], children: Sequence[Node], *,
             more_parents: int = 0, more_children: int = 0, href: str = "{id}") -> Markup:
    """The task in the middle, its parents above and its children below, linked by arrows;
    each box links to its task (``href`` with ``{id}``). ``more_*`` say how many are not drawn."""
    box_w, box_h, gap_x, row_h = 132.0, 34.0, 12.0, 78.0
    widest = max(len(parents) + (more_parents > 0), len(children) + (more_children > 0), 1)
    width = max(widest * (box_w + gap_x) + gap_x, 300.0)
    has_parents = bool(parents) or more_parents > 0
    has_children = bool(children) or more_children > 0
    height = 10 + row_h * (has_parents + has_children) + box_h + 10
    body = ['<defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" '
            'fill="#777"/></marker></defs>']
    y_rows = [10.0, 10.0 + row_h * has_parents, 10.0 + row_h * (1 + has_parents)]

    def centre_x(count: int, i: int) -> float:
        row_width = count * (box_w + gap_x) - gap_x
        return (width - row_width) / 2 + i * (box_w + gap_x) + box_w / 2

    mid_x = width / 2
    for r, (row, extra) in enumerate(((parents, more_parents), ([task], 0),
                                      (children, more_children))):
        count = len(row) + (extra > 0)
        for i, node in enumerate(row):
            cx, y = centre_x(count, i), y_rows[r]
            if r == 0:
                body.append(_edge(cx, y + box_h, mid_x, y_rows[1]))
            elif r == 2:
                body.append(_edge(mid_x, y_rows[1] + box_h, cx, y))
            body.append(_box(node, cx - box_w / 2, y, box_w, box_h, href, current=r == 1))
        if extra > 0:
            cx = centre_x(count, len(row))
            body.append(_text(cx, y_rows[r] + box_h / 2 + 4, f"+{extra:,} more", "middle"))
    return _svg(width, height, body, f"task {task.id}, its parents and children")


def _edge(x1: float, y1: float, x2: float, y2: float) -> str:
    return (f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#777" '
            f'marker-end="url(#arrow)"/>')


def _box(node: Node, x: float, y: float, w: float, h: float, href: str, *,
         current: bool) -> str:
    colour = state_colour(node.state)
    label = f"{node.id} {node.name}" if node.name else str(node.id)
    label = label if len(label) <= 20 else label[:19] + "\u2026"
    link = escape(href.format(id=node.id))
    stroke = 'stroke="#111" stroke-width="2.5"' if current else 'stroke="#555"'
    return (f'<a href="{link}"><title>task {node.id} {escape(node.name)} ({node.state})</title>'
            f'<rect x="{x:.1f}" y="{y:.1f}" width="{w:.1f}" height="{h:.1f}" rx="5" fill="#fff" '
            f'{stroke}/><rect x="{x:.1f}" y="{y:.1f}" width="7" height="{h:.1f}" rx="2" '
            f'fill="{colour}"/>'
            + _text(x + 12, y + 14, label)
            + _text(x + 12, y + 27, node.state, extra='fill="#555"', size=9)
            + "</a>")
