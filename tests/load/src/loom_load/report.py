"""The run's results as headline figures and ratios, a rich table, a JSON file and an HTML page.

Everything takes the results dictionary the CLI builds (see ``loom_load.cli``) and is pure
except :func:`write_reports`, which writes ``results.json`` and ``report.html`` in a folder.
The HTML page is self-contained: tables plus inline SVG charts (latency CDF, throughput over
time), no script and no external asset.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.table import Table

from .stats import ratio

NA = "n/a"


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    value: float | None
    unit: str
    target: str = ""
    ok: bool | None = None  # None: no target, or nothing to judge
    note: str = ""

    def shown(self) -> str:
        if self.value is None:
            return NA
        if self.unit == "×":
            return f"{self.value:.2f}×"
        if self.unit == "ms":
            return f"{self.value:.2f} ms"
        return f"{self.value:,.0f} {self.unit}".strip()

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "label": self.label,
            "value": self.value,
            "unit": self.unit,
            "shown": self.shown(),
            "target": self.target,
            "ok": self.ok,
            "note": self.note,
        }


def phase(results: dict[str, Any], name: str) -> dict[str, Any] | None:
    for item in results.get("phases", []):
        if item.get("name") == name:
            found: dict[str, Any] = item
            return found
    return None


def _get(data: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _na_reason(section: Any) -> str:
    if not isinstance(section, dict):
        return "not measured"
    return str(section.get("na") or section.get("error") or "")


def figures(results: dict[str, Any]) -> list[Figure]:
    """The headline figures and ratios of a run, with their (unasserted) targets."""
    out: list[Figure] = []
    closed = phase(results, "echo-nats-closed") or {}
    rest_closed = phase(results, "echo-rest-closed") or {}
    open_loop = phase(results, "echo-nats-open") or {}
    seq_rest = phase(results, "echo-rest-seq") or {}
    seq_nats = phase(results, "echo-nats-seq") or {}
    calc = phase(results, "calculator") or {}
    orch = phase(results, "orchestrator") or {}
    celery = results.get("celery") or {}
    ceilings = results.get("ceilings") or {}
    ingest = results.get("ingest") or {}
    live = results.get("live") or {}

    conc = closed.get("concurrency")
    loom_tp = closed.get("throughput")
    out.append(Figure("loom_echo_throughput", f"Loom echo closed loop c={conc} (NATS)", loom_tp, "tasks/s"))
    for key in ("p50_ms", "p99_ms"):
        out.append(
            Figure(f"loom_echo_closed_{key}", f"  latency {key[:-3]}", _get(closed, "latency", key), "ms")
        )
    out.append(Figure("loom_echo_submit_rate", "  submit rate", closed.get("submit_rate"), "tasks/s"))
    out.append(
        Figure(
            "loom_echo_rest_throughput",
            "Loom echo closed loop (REST ?wait)",
            rest_closed.get("throughput"),
            "tasks/s",
        )
    )
    out.append(
        Figure(
            "loom_echo_open_p99",
            f"Loom echo open loop {open_loop.get('target_rate') or '?'}/s p99",
            _get(open_loop, "latency", "p99_ms"),
            "ms",
        )
    )
    for label, data, key in (("REST ?wait", seq_rest, "rest"), ("NATS", seq_nats, "nats")):
        for p in ("p50_ms", "p99_ms"):
            out.append(
                Figure(
                    f"loom_seq_{key}_{p}",
                    f"Loom sequential round trip {label} {p[:-3]}",
                    _get(data, "latency", p),
                    "ms",
                )
            )
    out.append(
        Figure("loom_calc_throughput", "Loom calculator throughput", calc.get("throughput"), "tasks/s")
    )
    out.append(Figure("loom_calc_p50", "  calculator p50", _get(calc, "latency", "p50_ms"), "ms"))
    out.append(Figure("loom_orch_p50", "Loom orchestrator p50", _get(orch, "latency", "p50_ms"), "ms"))

    celery_tp = _get(celery, "closed", "throughput")
    celery_note = _na_reason(celery) if celery_tp is None else ""
    celery_conc = _get(celery, "closed", "concurrency") or conc
    out.append(
        Figure(
            "celery_throughput",
            f"Celery no-op closed loop c={celery_conc}",
            celery_tp,
            "tasks/s",
            note=celery_note,
        )
    )
    for p in ("p50_ms", "p99_ms"):
        out.append(
            Figure(
                f"celery_seq_{p}",
                f"Celery sequential round trip {p[:-3]}",
                _get(celery, "sequential", "latency", p),
                "ms",
            )
        )

    nats_pub = _get(ceilings, "nats", "publish_async", "rate")
    out.append(
        Figure(
            "raw_nats_publish",
            "raw JetStream publish_async",
            nats_pub,
            "msgs/s",
            note=_na_reason(ceilings.get("nats")) if nats_pub is None else "",
        )
    )
    out.append(
        Figure(
            "raw_nats_fetch",
            "raw JetStream pull fetch+ack",
            _get(ceilings, "nats", "fetch_ack", "rate"),
            "msgs/s",
        )
    )
    copy_rate = _get(ceilings, "copy", "rate")
    out.append(
        Figure(
            "raw_copy",
            "raw TimescaleDB COPY",
            copy_rate,
            "rows/s",
            note=_na_reason(ceilings.get("copy")) if copy_rate is None else "",
        )
    )

    lag: dict[str, Any] = ingest["lag"] if isinstance(ingest.get("lag"), dict) else {}
    ingest_na = _na_reason(ingest) or _na_reason(lag)
    for p in ("p50_ms", "p99_ms"):
        value = _get(lag, "lag", p) if not lag.get("na") else None
        out.append(
            Figure(
                f"ingest_lag_{p}",
                f"ingest lag event→row {p[:-3]}",
                value,
                "ms",
                note=ingest_na if value is None else "",
            )
        )
    burst: dict[str, Any] = ingest["burst"] if isinstance(ingest.get("burst"), dict) else {}
    ingest_rate = burst.get("sustained_rate") if not burst.get("na") else None
    out.append(
        Figure(
            "ingest_rows_s",
            f"ingest sustained (burst of {burst.get('events', '?')})",
            ingest_rate,
            "rows/s",
            note=(ingest_na or _na_reason(burst)) if ingest_rate is None else "",
        )
    )

    live_na = live.get("na") if isinstance(live, dict) else "not measured"
    for p in ("p50_ms", "p99_ms"):
        value = None if live_na else _get(live, "latency", p)
        target = "< 100 ms" if p == "p99_ms" else ""
        ok = (value < 100) if (value is not None and p == "p99_ms") else None
        out.append(
            Figure(f"live_{p}", f"live feed emit→WebSocket {p[:-3]}", value, "ms", target, ok, live_na or "")
        )

    tp_ratio = ratio(loom_tp, celery_tp)
    out.append(
        Figure(
            "ratio_throughput",
            "ratio Loom / Celery throughput",
            tp_ratio,
            "×",
            "≥ 3×",
            None if tp_ratio is None else tp_ratio >= 3,
        )
    )
    celery_p50 = _get(celery, "sequential", "latency", "p50_ms")
    for label, data, key in (("REST", seq_rest, "rest"), ("NATS", seq_nats, "nats")):
        value = ratio(_get(data, "latency", "p50_ms"), celery_p50)
        out.append(
            Figure(
                f"ratio_p50_{key}",
                f"ratio Loom / Celery sequential p50 ({label})",
                value,
                "×",
                "≤ 1×",
                None if value is None else value <= 1,
            )
        )
    ingest_ratio = ratio(ingest_rate, copy_rate)
    out.append(
        Figure(
            "ratio_ingest_copy",
            "ratio ingest / raw COPY",
            ingest_ratio,
            "×",
            "≥ 0.6×",
            None if ingest_ratio is None else ingest_ratio >= 0.6,
            "" if ingest_ratio is not None else (ingest_na or _na_reason(burst)),
        )
    )
    return out


def rich_table(results: dict[str, Any]) -> Table:
    table = Table(title=f"Loom load test — profile {results.get('run', {}).get('profile', '?')}")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target")
    table.add_column("note", overflow="fold", max_width=60)
    for fig in figures(results):
        verdict = {True: "[green]✓[/green] ", False: "[red]✗[/red] ", None: ""}[fig.ok]
        table.add_row(fig.label, fig.shown(), f"{verdict}{fig.target}", fig.note)
    return table


def accounting_table(results: dict[str, Any]) -> Table:
    table = Table(title="every task accounted for")
    columns = ("completed", "failed", "dead", "cancelled", "rejected", "missing", "total")
    table.add_column("phase")
    for column in columns:
        table.add_column(column, justify="right")
    rows = [(p["title"], p.get("accounting", {})) for p in results.get("phases", [])]
    celery = results.get("celery") or {}
    for key, title in (("closed", "Celery closed loop"), ("sequential", "Celery sequential")):
        if isinstance(celery.get(key), dict):
            rows.append((title, celery[key].get("accounting", {})))
    for title, acc in rows:
        table.add_row(title, *(str(acc.get(c, 0)) for c in columns))
    return table


# -- HTML --------------------------------------------------------------------------------------

_COLORS = (
    "#1f77b4",
    "#d62728",
    "#2ca02c",
    "#ff7f0e",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#17becf",
    "#7f7f7f",
    "#bcbd22",
    "#000000",
    "#aec7e8",
    "#ffbb78",
    "#98df8a",
)


def svg_chart(
    series: Mapping[str, Sequence[Sequence[float]]],
    *,
    x_label: str,
    y_label: str,
    x_log: bool = False,
    width: int = 860,
    height: int = 360,
    y_max: float | None = None,
) -> str:
    """A line chart as an inline ``<svg>``: one polyline per series, axes with ticks, a legend."""
    pts = {
        name: [(float(x), float(y)) for x, y in data if not x_log or x > 0] for name, data in series.items()
    }
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        return '<p class="na">no data</p>'
    left, right, top, bottom = 64, 250, 16, 44
    plot_w, plot_h = width - left - right, height - top - bottom
    xs = [x for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    if x_log:
        x_lo, x_hi = 10.0 ** math.floor(math.log10(min(xs))), 10.0 ** math.ceil(math.log10(max(xs)))
        if x_hi == x_lo:
            x_hi = x_lo * 10
        x_ticks = [10.0**e for e in range(round(math.log10(x_lo)), round(math.log10(x_hi)) + 1)]
    else:
        x_ticks = nice_ticks(min(0.0, min(xs)), max(xs))
        x_lo, x_hi = x_ticks[0], x_ticks[-1]
    y_ticks = nice_ticks(0.0, y_max if y_max is not None else max(ys))
    y_hi = y_ticks[-1]

    def sx(x: float) -> float:
        if x_log:
            return left + (math.log10(x) - math.log10(x_lo)) / (math.log10(x_hi) - math.log10(x_lo)) * plot_w
        return left + (x - x_lo) / (x_hi - x_lo) * plot_w

    def sy(y: float) -> float:
        return top + plot_h - (min(y, y_hi) / y_hi) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>',
    ]
    for t in x_ticks:
        x = sx(t)
        parts.append(f'<line x1="{x:.1f}" y1="{top}" x2="{x:.1f}" y2="{top + plot_h}" stroke="#eee"/>')
        parts.append(f'<text x="{x:.1f}" y="{top + plot_h + 14}" text-anchor="middle">{_fmt_tick(t)}</text>')
    for value in y_ticks:
        y = sy(value)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{left - 4}" y="{y + 4:.1f}" text-anchor="end">{_fmt_tick(value)}</text>')
    mid_x = left + plot_w / 2
    parts.append(f'<text x="{mid_x:.0f}" y="{height - 6}" text-anchor="middle">{html.escape(x_label)}</text>')
    parts.append(
        f'<text x="14" y="{top + plot_h / 2:.0f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2:.0f})">{html.escape(y_label)}</text>'
    )
    for i, (name, data) in enumerate(pts.items()):
        color = _COLORS[i % len(_COLORS)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in data)
        parts.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.6" points="{coords}"/>')
        ly = top + 12 + i * 16
        lx = left + plot_w + 10
        parts.append(
            f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 18}" y2="{ly - 4}" stroke="{color}" stroke-width="3"/>'
        )
        parts.append(f'<text x="{lx + 22}" y="{ly}">{html.escape(name[:38])}</text>')
    parts.append("</svg>")
    return "".join(parts)


def nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` evenly spaced round ticks (steps of 1, 2 or 5 × 10^k) covering [lo, hi]."""
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    start = math.floor(lo / step) * step
    ticks = [start]
    while ticks[-1] < hi - 1e-9 * step:
        ticks.append(ticks[-1] + step)
    return [round(t, 10) for t in ticks]


def _fmt_tick(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.0f}"
    if abs(value) >= 1:
        return f"{value:.1f}".rstrip("0").rstrip(".")
    return f"{value:.3g}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return NA
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_cell(v)}" for k, v in value.items())
    return str(value)


def _cdf_series(results: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for p in results.get("phases", []):
        if p.get("cdf"):
            series[p["title"]] = [(x, y * 100) for x, y in p["cdf"]]
    celery = results.get("celery") or {}
    for key, title in (("closed", "Celery closed loop"), ("sequential", "Celery sequential")):
        cdf = _get(celery, key, "cdf")
        if cdf:
            series[title] = [(x, y * 100) for x, y in cdf]
    live = results.get("live") or {}
    if live.get("cdf"):
        series["live feed (WS)"] = [(x, y * 100) for x, y in live["cdf"]]
    lag = _get(results, "ingest", "lag", "cdf")
    if lag:
        series["ingest lag"] = [(x, y * 100) for x, y in lag]
    return series


def _timeline_series(results: dict[str, Any]) -> dict[str, list[tuple[float, float]]]:
    series: dict[str, list[tuple[float, float]]] = {}
    for p in results.get("phases", []):
        if p.get("timeline") and p.get("mode") != "sequential":
            series[p["title"]] = p["timeline"]
    celery_tl = _get(results, "celery", "closed", "timeline")
    if celery_tl:
        series["Celery closed loop"] = celery_tl
    return series


def render_html(results: dict[str, Any]) -> str:
    run = results.get("run", {})
    title = f"Loom load test {run.get('id', '')} ({run.get('profile', '?')})"
    sections = [f"<h1>{html.escape(title)}</h1>"]
    sections.append(
        "<p>"
        + html.escape(
            f"started {run.get('started_at', '?')}, {run.get('duration_s', '?')} s, "
            f"{run.get('cpus', '?')} CPUs, Python {run.get('python', '?')}"
        )
        + "</p>"
    )
    figs = figures(results)
    sections.append("<h2>Figures</h2>")
    sections.append(
        _table(
            ("figure", "value", "target", "met", "note"),
            [
                (f.label.strip(), f.shown(), f.target, {True: "yes", False: "no", None: ""}[f.ok], f.note)
                for f in figs
            ],
        )
    )
    sections.append("<h2>Latency CDF</h2>")
    sections.append(
        svg_chart(
            _cdf_series(results),
            x_label="latency (ms, log scale)",
            y_label="% of tasks ≤",
            x_log=True,
            y_max=100,
        )
    )
    sections.append("<h2>Completed tasks per second over time</h2>")
    sections.append(
        svg_chart(_timeline_series(results), x_label="seconds since phase start", y_label="tasks/s")
    )

    rows = []
    for p in results.get("phases", []):
        lat = p.get("latency", {})
        rows.append(
            (
                p["title"],
                p.get("mode"),
                p.get("concurrency") or p.get("target_rate"),
                p.get("submitted"),
                p.get("submit_rate"),
                p.get("throughput"),
                lat.get("p50_ms"),
                lat.get("p95_ms"),
                lat.get("p99_ms"),
                lat.get("max_ms"),
                p.get("events_per_task"),
                p.get("harness_cpu_pct"),
            )
        )
    sections.append("<h2>Loom phases</h2>")
    sections.append(
        _table(
            (
                "phase",
                "mode",
                "conc./rate",
                "tasks",
                "submit/s",
                "completed/s",
                "p50 ms",
                "p95 ms",
                "p99 ms",
                "max ms",
                "events/task",
                "harness CPU %",
            ),
            rows,
        )
    )
    acc_cols = ("completed", "failed", "dead", "cancelled", "rejected", "missing", "total")
    acc_rows = [
        (p["title"], *(p.get("accounting", {}).get(c, 0) for c in acc_cols))
        for p in results.get("phases", [])
    ]
    celery = results.get("celery") or {}
    for key, title in (("closed", "Celery closed loop"), ("sequential", "Celery sequential")):
        acc = _get(celery, key, "accounting")
        if acc:
            acc_rows.append((title, *(acc.get(c, 0) for c in acc_cols)))
    sections.append("<h2>Accounting (every submitted task)</h2>")
    sections.append(_table(("phase", *acc_cols), acc_rows))
    hop_rows = []
    for p in results.get("phases", []):
        for hop, s in (p.get("hops") or {}).items():
            hop_rows.append(
                (
                    p["title"],
                    hop,
                    s.get("count"),
                    s.get("p50_ms"),
                    s.get("p95_ms"),
                    s.get("p99_ms"),
                    s.get("max_ms"),
                )
            )
    sections.append("<h2>Per-hop latency</h2>")
    sections.append(
        "<p>submitted / assigned: the dispatcher's CloudEvents; running / done: the worker's status "
        "reports; final: the dispatcher's terminal announcement; client: receipt by the harness.</p>"
    )
    sections.append(_table(("phase", "hop", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"), hop_rows))
    if celery:
        sections.append("<h2>Celery baseline</h2>")
        sections.append(f"<pre>{html.escape(json.dumps(_strip(celery), indent=2))}</pre>")
    for key, heading in (
        ("ceilings", "Raw ceilings"),
        ("ingest", "Ingest"),
        ("live", "Live feed"),
        ("cpu", "CPU by process (% of one core)"),
    ):
        if results.get(key) is not None:
            sections.append(f"<h2>{heading}</h2>")
            sections.append(f"<pre>{html.escape(json.dumps(_strip(results[key]), indent=2))}</pre>")
    sections.append("<h2>Run</h2>")
    sections.append(f"<pre>{html.escape(json.dumps(run, indent=2))}</pre>")
    style = (
        "body{font-family:sans-serif;margin:2em;max-width:1100px}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}"
        "pre{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}.na{color:#888}"
    )
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{style}</style></head><body>{''.join(sections)}</body></html>"
    )


def _strip(data: Any) -> Any:
    """The data without the bulky series (cdf, timeline, samples) for display."""
    if isinstance(data, dict):
        return {k: _strip(v) for k, v in data.items() if k not in ("cdf", "timeline", "samples")}
    if isinstance(data, list):
        return [_strip(v) for v in data]
    return data


def write_reports(results: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    """Write ``results.json`` (with the figures) and ``report.html`` into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    results = {**results, "figures": [f.to_dict() for f in figures(results)]}
    json_path = folder / "results.json"
    json_path.write_text(json.dumps(results, indent=2, default=str) + "\n")
    html_path = folder / "report.html"
    html_path.write_text(render_html(results))
    return json_path, html_path
