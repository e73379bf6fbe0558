"""The chart: connections, events per second and latency over time, from a report's timeline.

``.html`` is a self-contained page with inline SVG: no script, no network, opens
anywhere. ``.png`` needs matplotlib (``pip install 'trio-sse[chart]'``), which is not
a dependency of trio_sse; :func:`check_chart_path` says so before a run starts.

The connections panel starts at t = 0 with the server's count before the run (the
baseline) and no open connection, so a leak shows as the distance from where the
server line began. Phase markers sit where each phase began (``phases.starts``).
In the latency panel, max is drawn dashed over a wider p99, so where they are equal
(a second with few events) both stay visible.
"""

from __future__ import annotations

import html
import importlib.util
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from ._report import format_duration
from ._schema import Report

__all__ = [
    "CHART_SUFFIXES",
    "check_chart_path",
    "connection_columns",
    "phase_starts",
    "render_html",
    "write_chart",
]

CHART_SUFFIXES: Final = (".html", ".htm", ".png")

_WIDTH: Final = 960
_HEIGHT: Final = 260
_LEFT: Final = 80
_RIGHT: Final = 20
_TOP: Final = 34
_BOTTOM: Final = 36

# Colour-blind-safe (Okabe-Ito).
_BLUE: Final = "#0072B2"
_ORANGE: Final = "#E69F00"
_RED: Final = "#D55E00"
_GREEN: Final = "#009E73"
_GREY: Final = "#999999"

# Name, colour, values, and extra SVG stroke attributes.
Series = tuple[str, str, Sequence[float | None], str]

_SOLID: Final = 'stroke-width="1.8"'
# p99 under max: wide and solid beneath, max dashed and narrow above.
_WIDE: Final = 'stroke-width="4" stroke-opacity="0.75"'
_DASHED: Final = 'stroke-width="1.5" stroke-dasharray="5 3"'


def check_chart_path(path: Path) -> None:
    """Refuse, before the run, a chart that could not be written.

    Raises:
        ValueError: An unknown suffix, or ``.png`` without matplotlib.
    """
    suffix = path.suffix.lower()
    if suffix not in CHART_SUFFIXES:
        raise ValueError(f"--chart must end in .html or .png, got {str(path)!r}")
    if suffix == ".png" and importlib.util.find_spec("matplotlib") is None:
        raise ValueError(
            "--chart *.png needs matplotlib, which is not installed: "
            "`pip install 'trio-sse[chart]'` (or `pip install matplotlib`), or write .html "
            "instead (no dependency)"
        )


def write_chart(report: Report, path: Path) -> None:
    """Draw the report's timeline to ``path`` (.html, or .png with matplotlib)."""
    check_chart_path(path)
    if path.suffix.lower() == ".png":
        _write_png(report, path)
    else:
        path.write_text(render_html(report), encoding="utf-8")


def _columns(report: Report) -> dict[str, list[Any]]:
    # Read as plain mappings: the columns are picked by name below.
    timeline: list[Mapping[str, Any]] = list(report["timeline"])
    return {key: [row[key] for row in timeline] for key in timeline[0]} if timeline else {}


def _ms(values: Sequence[float | None]) -> list[float | None]:
    return [None if v is None else v * 1e3 for v in values]


def phase_starts(report: Report) -> list[tuple[float, str]]:
    """Where each phase after the first began, seconds from the start.

    From ``phases.starts`` (the moment each began); a report written before it had
    them gets the start of the one-second window in which the phase first shows (the
    previous row's ``t``, not ``t - 1``: the last row may be shorter than a second).
    """
    starts = report["phases"].get("starts")
    if starts:
        return sorted((t, phase) for phase, t in starts.items())
    columns = _columns(report)
    found: list[tuple[float, str]] = []
    previous_t, previous_phase = 0.0, None
    for t, phase in zip(columns.get("t", []), columns.get("phase", []), strict=True):
        if previous_phase is not None and phase != previous_phase:
            found.append((previous_t, phase))
        previous_t, previous_phase = t, phase
    return found


def connection_columns(
    report: Report,
) -> tuple[list[float], list[float | None], list[float | None]]:
    """Times, open connections and the server's count, from t = 0 (the baseline)."""
    columns = _columns(report)
    times = [0.0, *columns.get("t", [])]
    connections = [0.0, *columns.get("connections", [])]
    server = [
        float(report["server"]["baseline_subscribers"]),
        *columns.get("server_subscribers", []),
    ]
    return times, connections, server


def render_html(report: Report) -> str:
    """The chart as one HTML page with inline SVG."""
    columns = _columns(report)
    times: list[float] = columns.get("t", [])
    phases = phase_starts(report)
    conn_times, connections, server_count = connection_columns(report)
    source = report["server"]["source"]["description"] or "GET /stats"
    panels = [
        _panel(
            "Connections",
            conn_times,
            [
                ("load tester: open connections", _BLUE, connections, _SOLID),
                (f"server: subscribers ({source})", _ORANGE, server_count, _SOLID),
            ],
            phases,
            unit="",
        ),
        _panel(
            "Events received per second",
            times,
            [("events/s (replays included)", _GREEN, columns.get("events_per_s", []), _SOLID)],
            phases,
            unit="",
        ),
        _panel(
            "Delivery latency (ms, log scale; publish to receipt)",
            times,
            [
                ("p50", _BLUE, _ms(columns.get("latency_p50", [])), _SOLID),
                ("p99", _ORANGE, _ms(columns.get("latency_p99", [])), _WIDE),
                ("max", _RED, _ms(columns.get("latency_max", [])), _DASHED),
            ],
            phases,
            unit=" ms",
            is_log=True,
        ),
    ]
    server = report["server"]
    verdict = server["verdict"].upper()
    if server["verdict"] == "clean":
        verdict += f": subscribers back to baseline in {format_duration(server['clean_seconds'])}"
    elif server["verdict"] == "leaking":
        verdict += f": {server['ghosts']:,} ghost subscribers after {server['clean_timeout']:g} s"
    events, latency = report["events"], report["latency"]
    facts = (
        f"{report['connections']['target']:,} connections · published {events['published']:,}"
        f" · delivered {events['delivered']:,} · lost {events['lost']:,} · undelivered"
        f" {events['undelivered']:,} · duplicated"
        f" {events['duplicated']:,} · latency p50 {format_duration(latency['p50'])}, p99"
        f" {format_duration(latency['p99'])}, max {format_duration(latency['max'])} · {verdict}"
    )
    title = f"trio-sse loadtest {report['url']}"
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        f"<title>{html.escape(title)}</title>"
        "<style>body{font:14px system-ui,sans-serif;margin:20px;color:#222}"
        "h1{font-size:18px;margin:0 0 4px}p{margin:0 0 12px;color:#444}"
        "svg{display:block;margin-bottom:8px}</style></head><body>\n"
        f"<h1>{html.escape(title)}</h1>\n<p>{html.escape(report['started_at'])} · "
        f"{html.escape(facts)}</p>\n" + "\n".join(panels) + "\n</body></html>\n"
    )


def _nice_step(span: float, ticks: int) -> float:
    raw = span / ticks
    magnitude = 10.0 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * magnitude:
            return factor * magnitude
    return 10 * magnitude  # pragma: no cover - the loop always returns


def _format_tick(value: float) -> str:
    if value >= 1000:
        return f"{value:,.0f}"
    return f"{value:g}"


def _panel(
    title: str,
    times: Sequence[float],
    series: Sequence[Series],
    phases: Sequence[tuple[float, str]],
    *,
    unit: str,
    is_log: bool = False,
) -> str:
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    values = [v for _, _, column, _ in series for v in column if v is not None]
    x_max = max(times, default=1.0) or 1.0
    if is_log:
        positive = [v for v in values if v > 0]
        low = float(10 ** math.floor(math.log10(min(positive)))) if positive else 0.1
        high = float(10 ** math.ceil(math.log10(max(positive)))) if positive else 10.0
        high = max(high, low * 10)

        def y_of(v: float) -> float:
            v = max(v, low)
            return _TOP + plot_h * (1 - math.log10(v / low) / math.log10(high / low))

        y_ticks = [low * 10**i for i in range(round(math.log10(high / low)) + 1)]
    else:
        top = max(values, default=1.0) or 1.0
        step = _nice_step(top, 5)
        high = step * math.ceil(top / step)

        def y_of(v: float) -> float:
            return _TOP + plot_h * (1 - v / high)

        y_ticks = [step * i for i in range(round(high / step) + 1)]

    def x_of(t: float) -> float:
        return _LEFT + plot_w * t / x_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_WIDTH}" height="{_HEIGHT}" '
        f'viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" aria-label="{html.escape(title)}">',
        f'<rect x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}" fill="#fff"/>',
        f'<text x="{_LEFT}" y="18" font-size="14" font-weight="bold">{html.escape(title)}</text>',
    ]
    for tick in y_ticks:
        y = y_of(tick)
        parts.append(
            f'<line x1="{_LEFT}" x2="{_WIDTH - _RIGHT}" y1="{y:.1f}" y2="{y:.1f}" '
            'stroke="#e5e5e5"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">'
            f"{_format_tick(tick)}{unit}</text>"
        )
    x_step = _nice_step(x_max, 10)
    for i in range(math.floor(x_max / x_step) + 1):
        x = x_of(i * x_step)
        parts.append(
            f'<text x="{x:.1f}" y="{_HEIGHT - _BOTTOM + 16}" font-size="11" '
            f'text-anchor="middle">{_format_tick(i * x_step)} s</text>'
        )
    for t, phase in phases:
        x = x_of(t)
        parts.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP}" y2="{_TOP + plot_h}" '
            f'stroke="{_GREY}" stroke-dasharray="4 3" data-phase="{html.escape(phase)}" '
            f'data-t="{t:g}"/>'
            f'<text x="{x + 3:.1f}" y="{_TOP + 11}" font-size="10" fill="#666">'
            f"{html.escape(phase)}</text>"
        )
    parts.append(
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
        'stroke="#bbb"/>'
    )
    # Right-aligned, clear of the title on the left.
    legend_x = _WIDTH - _RIGHT - sum(_legend_width(name) for name, _, _, _ in series)
    for name, colour, column, stroke in series:
        for run in _runs(times, column):
            points = " ".join(f"{x_of(t):.1f},{y_of(v):.1f}" for t, v in run)
            if len(run) == 1:
                x, y = x_of(run[0][0]), y_of(run[0][1])
                parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{colour}"/>')
            else:
                parts.append(
                    f'<polyline points="{points}" fill="none" stroke="{colour}" {stroke} '
                    f'data-series="{html.escape(name)}"/>'
                )
        parts.append(
            f'<rect x="{legend_x}" y="9" width="14" height="4" fill="{colour}"/>'
            f'<text x="{legend_x + 18}" y="15" font-size="11">{html.escape(name)}</text>'
        )
        legend_x += _legend_width(name)
    parts.append("</svg>")
    return "".join(parts)


def _legend_width(name: str) -> float:
    # A colour swatch, then the name at about 6.5 px per character of 11 px text.
    return 26 + 6.5 * len(name)


def _runs(
    times: Sequence[float], column: Sequence[float | None]
) -> list[list[tuple[float, float]]]:
    """The column split at its gaps (None), as lists of (t, value) points."""
    runs: list[list[tuple[float, float]]] = [[]]
    for t, v in zip(times, column, strict=True):
        if v is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((t, v))
    return [run for run in runs if run]


def _write_png(report: Report, path: Path) -> None:  # pragma: no cover - optional
    import matplotlib  # noqa: PLC0415 - optional, only for .png

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    columns = _columns(report)
    times = columns.get("t", [])
    figure, (conns, rate, latency) = plt.subplots(3, 1, figsize=(10, 9), sharex=True)
    conn_times, connections, server_count = connection_columns(report)
    conns.plot(conn_times, connections, label="open connections")
    server = [float("nan") if v is None else v for v in server_count]
    conns.plot(conn_times, server, label="server subscribers")
    for axes in (conns, rate, latency):
        for t, phase in phase_starts(report):
            axes.axvline(t, color=_GREY, linestyle="--", linewidth=0.8)
            axes.annotate(phase, (t, 1), xycoords=("data", "axes fraction"), fontsize=8)
    conns.set_title("Connections")
    conns.legend()
    rate.plot(times, columns.get("events_per_s", []), label="events/s")
    rate.set_title("Events received per second")
    styles: dict[str, dict[str, Any]] = {
        "latency_p50": {"linewidth": 1.5},
        "latency_p99": {"linewidth": 4, "alpha": 0.75},
        "latency_max": {"linewidth": 1.2, "linestyle": "--"},
    }
    for key, style in styles.items():
        values = [float("nan") if v is None else v * 1e3 for v in columns.get(key, [])]
        latency.plot(times, values, label=key.removeprefix("latency_"), **style)
    latency.set_yscale("log")
    latency.set_title("Delivery latency (ms)")
    latency.set_xlabel("seconds")
    latency.legend()
    figure.suptitle(f"trio-sse loadtest {report['url']}")
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
