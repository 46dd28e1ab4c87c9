"""Render a :class:`~pricing.report.MonthReport` as table (Rich), csv, json, md or html.

HTML is one self-contained file: inline CSS and an inline SVG chart of daily
spend (local and cloud stacked), no script, no external asset.

Figures that include estimated token counts (rows whose usage was not reported,
see :class:`pricing.report.Bucket`) carry :data:`ESTIMATE_MARK` in table, md and
html, and an ``estimated`` column counts such rows per group (shown only when the
month has any, so a report without estimates reads as before). csv and json keep
every figure a plain number and carry the counts (``estimated_requests``,
``estimated_cloud_requests``) instead, so a spreadsheet can still sum them.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Callable

from pricing.errors import PricingError
from pricing.report import Bucket, MonthReport

FORMATS: tuple[str, ...] = ("table", "csv", "json", "md", "html")

# Put before a figure that includes estimated token counts (``~1.2k``, ``~$0.0042``).
ESTIMATE_MARK = "~"

_SECTIONS: tuple[tuple[str, str], ...] = (
    ("project", "by_project"),
    ("model", "by_model"),
    ("route", "by_route"),
    ("task", "by_task"),
    ("day", "by_day"),
)


def render(report: MonthReport, fmt: str) -> str:
    renderers: dict[str, Callable[[MonthReport], str]] = {
        "table": render_table,
        "csv": render_csv,
        "json": render_json,
        "md": render_markdown,
        "html": render_html,
    }
    renderer = renderers.get(fmt)
    if renderer is None:
        raise PricingError(f"unknown report format {fmt!r}; use one of {', '.join(FORMATS)}")
    return renderer(report)


def usd(value: float | None) -> str:
    """$1,234.56 for dollars, $0.0042 for cents, two significant digits below that
    ($0.000038): a cost that is not zero never reads as $0.0000. 'unpriced' for None."""
    if value is None:
        return "unpriced"
    if value != 0 and abs(value) < 0.001:
        decimals = min(12, 1 - math.floor(math.log10(abs(value))))
        return f"${value:.{decimals}f}"
    if value != 0 and abs(value) < 1:
        return f"${value:,.4f}"
    return f"${value:,.2f}"


def tokens(value: int) -> str:
    if value >= 1_000_000:
        return f"{value / 1e6:,.1f}M"
    if value >= 10_000:
        return f"{value / 1e3:,.1f}k"
    return f"{value:,}"


def marked(text: str, estimated: bool) -> str:
    """``text`` with :data:`ESTIMATE_MARK` in front when it includes estimates."""
    return f"{ESTIMATE_MARK}{text}" if estimated else text


def share(part: int, whole: int) -> str:
    """``part`` of ``whole`` as a percentage that never reads 0 % for a non-zero part."""
    if whole <= 0 or part <= 0:
        return "0%"
    fraction = part / whole
    return "<1%" if fraction < 0.01 else f"{fraction:.0%}"


def _title(report: MonthReport) -> str:
    scope = f"project {report.project}" if report.project else "all projects"
    return f"ds4router cost report: {report.month}, {scope}"


def _summary_lines(report: MonthReport) -> list[tuple[str, str]]:
    t = report.total
    local = report.route("local")
    est = t.tokens_estimated
    lines = [
        (
            "requests",
            f"{t.requests:,} ({t.outcomes()})",
        ),
        (
            "tokens",
            f"{marked(tokens(t.input_tokens), est)} in "
            f"({marked(tokens(t.cached_input_tokens), est)} cached), "
            f"{marked(tokens(t.output_tokens), est)} out "
            f"({marked(tokens(t.reasoning_tokens), est)} reasoning)",
        ),
        ("total cost", marked(usd(t.cost_usd), t.cost_estimated)),
        ("cloud", marked(usd(report.cloud_usd), report.route("cloud").cost_estimated)),
        (
            "local",
            f"{usd(report.local_usd)} (electricity {usd(local.electricity_usd)}, "
            f"hardware {usd(local.amortization_usd)}, {local.energy_j / 3.6e6:,.3f} kWh)",
        ),
    ]
    refs = ", ".join(report.reference_models) or "no reference model"
    if t.saving_known:
        saved = (
            f"{marked(usd(t.savings_usd), est)} over the {t.compared_requests:,} of "
            f"{t.requests - t.refused:,} requests priced both ways (reference "
            f"{marked(usd(t.compared_reference_usd), est)} vs "
            f"{marked(usd(t.compared_cost_usd), t.cost_estimated)}; {refs})"
        )
    else:
        saved = f"- (no request priced both on its own model and on the reference; {refs})"
    lines.append(("saved vs reference", saved))
    lines.append(("unpriced requests", f"{t.unpriced_requests:,} (not counted in costs)"))
    if est:
        lines.append(
            (
                "estimated usage",
                f"{t.estimated_requests:,} of {t.requests:,} requests "
                f"({share(t.estimated_requests, t.requests)}) reported no token usage; their "
                f"counts were estimated, and figures marked {ESTIMATE_MARK} include them",
            )
        )
    budget = report.budget
    if budget is not None:
        label = f"budget ({report.budget_project})" if report.budget_project else "budget"
        if budget.monthly_usd is None:
            lines.append((label, f"no cap; cloud spend {usd(budget.spent_usd)}"))
        else:
            state = "OVER BUDGET" if budget.over_budget else f"{usd(budget.remaining_usd)} left"
            pct = "" if budget.fraction is None else f" ({budget.fraction:.0%})"
            lines.append(
                (
                    label,
                    f"{usd(budget.spent_usd)} of {usd(budget.monthly_usd)}{pct}, {state}",
                )
            )
        lines.append(("projected month end", usd(budget.projected_month_end_usd)))
    return lines


def _never(bucket: Bucket) -> bool:
    return False


def _tokens_or_cost(bucket: Bucket) -> bool:
    return bucket.tokens_estimated or bucket.cost_estimated


_ESTIMATED_COLUMN = "estimated"
# A breakdown column: its header, its figure, whether that figure includes estimates.
Column = tuple[str, Callable[[Bucket], str], Callable[[Bucket], bool]]
_COLUMNS: tuple[Column, ...] = (
    ("requests", lambda b: f"{b.requests:,}", _never),
    ("in", lambda b: tokens(b.input_tokens), lambda b: b.tokens_estimated),
    ("cached", lambda b: tokens(b.cached_input_tokens), lambda b: b.tokens_estimated),
    ("out", lambda b: tokens(b.output_tokens), lambda b: b.tokens_estimated),
    ("cost", lambda b: usd(b.cost_usd), lambda b: b.cost_estimated),
    ("unpriced", lambda b: f"{b.unpriced_requests:,}", _never),
    (_ESTIMATED_COLUMN, lambda b: f"{b.estimated_requests:,}", _never),
    ("reference", lambda b: usd(b.counterfactual_usd), lambda b: b.tokens_estimated),
    (
        "saved",
        lambda b: usd(b.savings_usd) if b.saving_known else "-",
        lambda b: b.saving_known and _tokens_or_cost(b),
    ),
)


def _columns(report: MonthReport) -> tuple[Column, ...]:
    """The breakdown columns; the count of estimated rows only when there are any."""
    if report.total.tokens_estimated:
        return _COLUMNS
    return tuple(c for c in _COLUMNS if c[0] != _ESTIMATED_COLUMN)


def _cells(bucket: Bucket, columns: tuple[Column, ...]) -> list[str]:
    return [marked(fmt(bucket), estimated(bucket)) for _, fmt, estimated in columns]


def render_table(report: MonthReport, width: int = 110) -> str:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(
        file=io.StringIO(), width=width, record=True, color_system=None, force_terminal=False
    )
    console.print(_title(report), style="bold")
    summary = Table(box=None, show_header=False, pad_edge=False)
    summary.add_column(style="bold")
    summary.add_column()
    for label, value in _summary_lines(report):
        summary.add_row(label, value)
    console.print(summary)
    if report.total.requests == 0:
        console.print(f"No requests recorded in {report.month}.")
    columns = _columns(report)
    for label, attr in _SECTIONS:
        items = getattr(report, attr)
        if not items:
            continue
        table = Table(title=f"by {label}", box=box.SIMPLE_HEAD, title_justify="left")
        table.add_column(label)
        for name, _, _ in columns:
            table.add_column(name, justify="right")
        for key, bucket in items:
            table.add_row(key, *_cells(bucket, columns))
        console.print(table)
    return console.export_text()


def render_csv(report: MonthReport) -> str:
    """Long format: one line per (section, key) with every figure as a plain number."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    names = list(Bucket().as_dict())
    writer.writerow(["month", "section", "key", *names])
    writer.writerow([report.month, "total", report.project or "", *report.total.as_dict().values()])
    for label, attr in _SECTIONS:
        for key, bucket in getattr(report, attr):
            writer.writerow([report.month, label, key, *bucket.as_dict().values()])
    return out.getvalue()


def render_json(report: MonthReport) -> str:
    return json.dumps(report.as_dict(), indent=2, allow_nan=False) + "\n"


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(report: MonthReport) -> str:
    lines = [f"# {_title(report)}", ""]
    for label, value in _summary_lines(report):
        lines.append(f"- **{label}**: {_md_escape(value)}")
    columns = _columns(report)
    for label, attr in _SECTIONS:
        items = getattr(report, attr)
        if not items:
            continue
        lines += ["", f"## By {label}", ""]
        lines.append("| " + " | ".join([label, *(n for n, _, _ in columns)]) + " |")
        lines.append("|" + "---|" + "---:|" * len(columns))
        for key, bucket in items:
            cells = [_md_escape(key), *_cells(bucket, columns)]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


# --- HTML -------------------------------------------------------------------------

PAGE_CSS = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 2em auto; max-width: 1000px;
       color: #1d232a; padding: 0 1em; }
h1 { font-size: 1.4em; } h2 { font-size: 1.1em; margin-top: 1.6em; }
dl { display: grid; grid-template-columns: max-content auto; gap: .2em 1.2em; }
dt { font-weight: 600; } dd { margin: 0; }
table { border-collapse: collapse; margin: .4em 0; }
th, td { padding: .2em .7em; border-bottom: 1px solid #dde2e8; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
td.estimated { font-style: italic; }
.bar-local { fill: #2f8f5b; } .bar-cloud { fill: #3569b8; }
.axis { stroke: #8a96a3; stroke-width: 1; } .grid { stroke: #e4e8ec; stroke-width: 1; }
svg text { font: 11px system-ui, sans-serif; fill: #4a5561; }
"""


_COLORS = {"local": "#2f8f5b", "cloud": "#3569b8"}


def daily_chart_svg(report: MonthReport, width: int = 900, height: int = 260) -> str:
    """Inline SVG: one stacked bar a day, local (green, bottom) under cloud (blue)."""
    left, right, top, bottom = 64, 12, 28, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    days = report.daily
    peak = max((d.total_usd for d in days), default=0.0)
    scale_max = _nice_ceiling(peak) if peak > 0 else 1.0
    slot = plot_w / max(len(days), 1)
    bar_w = max(slot * 0.7, 1.0)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="daily-spend" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f"<title>Daily spend in {html.escape(report.month)}: local and cloud</title>",
    ]
    for i in range(5):
        value = scale_max * i / 4
        y = top + plot_h - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
        )
        label = html.escape(usd(value))
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    for index, day in enumerate(days):
        x = left + index * slot + (slot - bar_w) / 2
        base: float = top + plot_h
        for route, value in (("local", day.local_usd), ("cloud", day.cloud_usd)):
            if value <= 0:
                continue
            h = plot_h * value / scale_max
            base -= h
            tip = f"{day.day} {route}: {html.escape(usd(value))}"
            parts.append(
                f'<rect class="bar-{route}" fill="{_COLORS[route]}" data-day="{day.day}" '
                f'data-route="{route}" '
                f'data-usd="{value!r}" x="{x:.1f}" y="{base:.1f}" width="{bar_w:.1f}" '
                f'height="{h:.1f}"><title>{tip}</title></rect>'
            )
        if index % 5 == 0 or index == len(days) - 1:
            parts.append(
                f'<text x="{x + bar_w / 2:.1f}" y="{top + plot_h + 16}" '
                f'text-anchor="middle">{day.day[-2:]}</text>'
            )
    parts.append(
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}"/>'
    )
    # The legend; fills are attributes too, so the SVG keeps its colours when copied out.
    parts.append(
        f'<rect class="bar-local" fill="{_COLORS["local"]}" x="{left}" y="8" '
        'width="10" height="10"/>'
    )
    parts.append(f'<text x="{left + 14}" y="17">local</text>')
    parts.append(
        f'<rect class="bar-cloud" fill="{_COLORS["cloud"]}" x="{left + 60}" y="8" '
        'width="10" height="10"/>'
    )
    parts.append(f'<text x="{left + 74}" y="17">cloud</text>')
    if peak <= 0:
        parts.append(
            f'<text x="{left + plot_w / 2:.1f}" y="{top + plot_h / 2:.1f}" '
            'text-anchor="middle">no spend this month</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def _nice_ceiling(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above ``value``."""
    import math

    exponent = math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        candidate = step * 10.0**exponent
        if candidate >= value:
            return candidate
    return 10.0 ** (exponent + 1)


def _html_cell(
    bucket: Bucket, fmt: Callable[[Bucket], str], estimated: Callable[[Bucket], bool]
) -> str:
    text = html.escape(fmt(bucket))
    if not estimated(bucket):
        return f'<td class="num">{text}</td>'
    tip = f"includes {bucket.estimated_requests:,} requests with estimated token counts"
    return (
        f'<td class="num estimated" title="{html.escape(tip)}">'
        f"{html.escape(ESTIMATE_MARK)}{text}</td>"
    )


def render_html(report: MonthReport) -> str:
    e = html.escape
    body = [f"<h1>{e(_title(report))}</h1>", "<dl>"]
    for label, value in _summary_lines(report):
        body.append(f"<dt>{e(label)}</dt><dd>{e(value)}</dd>")
    body.append("</dl>")
    body.append("<h2>Daily spend, local and cloud</h2>")
    body.append(daily_chart_svg(report))
    columns = _columns(report)
    for label, attr in _SECTIONS:
        items = getattr(report, attr)
        if not items:
            continue
        body.append(f"<h2>By {e(label)}</h2>")
        head = "".join(f'<th class="num">{e(n)}</th>' for n, _, _ in columns)
        body.append(
            f'<table class="by-{e(label)}"><thead><tr><th>{e(label)}</th>{head}</tr></thead><tbody>'
        )
        for key, bucket in items:
            cells = "".join(_html_cell(bucket, fmt, est) for _, fmt, est in columns)
            body.append(f"<tr><td>{e(key)}</td>{cells}</tr>")
        body.append("</tbody></table>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f"<title>{e(_title(report))}</title>"
        f"<style>{PAGE_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
