"""Render an :class:`~pricing.estimator.Estimate` as table (Rich), json, csv, md or html.

The HTML is one self-contained page (like the report's): the heading, the table and an
inline SVG of monthly cost against output tokens a month (:mod:`pricing.estimate_plot`).
"""

from __future__ import annotations

import csv
import html
import io
import json
from collections.abc import Sequence

from pricing.errors import PricingError
from pricing.estimator import Estimate, EstimateRow
from pricing.report_render import tokens, usd

FORMATS: tuple[str, ...] = ("table", "json", "csv", "md", "html")

_HEADERS = (
    "model",
    "kind",
    "$/month",
    "$/1M out",
    "local wins above",
    "if owned",
    "note",
)


def _cells(row: EstimateRow) -> tuple[str, ...]:
    return (
        row.model,
        row.kind,
        usd(row.monthly_usd),
        usd(row.usd_per_mtok),
        row.crossover,
        row.crossover_marginal,
        row.note,
    )


def _heading(estimate: Estimate) -> list[str]:
    u = estimate.usage
    lines = [
        f"Usage a month: {tokens(u.output_tokens)} output tokens, {tokens(u.input_tokens)} input "
        f"({tokens(u.cached_input_tokens)} cached)",
    ]
    if estimate.profile is not None and estimate.local is not None:
        p, local = estimate.profile, estimate.local
        m = p.cost_model
        lines.append(
            f"Local profile {p.name}: {p.tokens_per_second:g} tok/s, {m.watts:g} W, "
            f"${m.electricity_usd_per_kwh:g}/kWh"
            + ("" if p.prefill_tokens_per_second else " (prompt time not counted)")
        )
        lines.append(
            f"  hardware {usd(m.hardware_price_usd)} over {m.lifetime_years:g} years = "
            f"{usd(local.hardware_usd)}/month fixed; energy {usd(local.energy_usd_per_mtok)} "
            "per 1M output tokens"
        )
        lines.append(
            f"  local this month: {usd(local.monthly_usd)} amortised, "
            f"{usd(local.electricity_usd)} marginal (hardware owned anyway: electricity only)"
        )
        lines.append(
            "  'local wins above': output tok/month above which local (amortised) is cheaper; "
            "'if owned': with the hardware owned anyway"
        )
    return lines


def render_estimate(estimate: Estimate, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(estimate.as_dict(), indent=2, allow_nan=False) + "\n"
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(
            [
                "model",
                "kind",
                "monthly_usd",
                "usd_per_mtok",
                "crossover_tokens_per_month",
                "crossover_marginal_tokens_per_month",
                "note",
            ]
        )
        for row in estimate.rows:
            writer.writerow(
                [
                    row.model,
                    row.kind,
                    "" if row.monthly_usd is None else row.monthly_usd,
                    "" if row.usd_per_mtok is None else row.usd_per_mtok,
                    "never"
                    if row.kind == "cloud" and row.crossover == "never"
                    else (
                        ""
                        if row.crossover_tokens_per_month is None
                        else row.crossover_tokens_per_month
                    ),
                    "never"
                    if row.kind == "cloud" and row.crossover_marginal == "never"
                    else (
                        ""
                        if row.crossover_marginal_tokens_per_month is None
                        else row.crossover_marginal_tokens_per_month
                    ),
                    row.note,
                ]
            )
        return out.getvalue()
    if fmt == "md":
        lines = [f"- {line}" for line in _heading(estimate)]
        lines += ["", "| " + " | ".join(_HEADERS) + " |", "|---|---|---:|---:|---:|---:|---|"]
        for row in estimate.rows:
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in _cells(row)) + " |")
        return "\n".join(lines) + "\n"
    if fmt == "table":
        from rich import box
        from rich.console import Console
        from rich.table import Table

        console = Console(
            file=io.StringIO(), width=120, record=True, color_system=None, force_terminal=False
        )
        for line in _heading(estimate):
            console.print(line, highlight=False)
        table = Table(box=box.SIMPLE_HEAD)
        for index, header in enumerate(_HEADERS):
            table.add_column(header, justify="right" if 2 <= index <= 5 else "left")
        for row in estimate.rows:
            table.add_row(*_cells(row), style="bold" if row.kind == "local" else None)
        console.print(table)
        return console.export_text()
    if fmt == "html":
        return render_html(estimate)
    raise PricingError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")


def render_html(estimate: Estimate, heading: Sequence[str] = ()) -> str:
    """One self-contained page: ``heading`` lines (where the usage came from), the
    estimate's own heading, the cost lines as SVG, the table."""
    from pricing.estimate_plot import cost_curves, curves_svg
    from pricing.report_render import PAGE_CSS

    e = html.escape
    lines = [*heading, *(line.strip() for line in _heading(estimate))]
    body = ["<h1>ds4router estimate: a month of usage, cloud and local</h1>"]
    body += [f"<p>{e(line)}</p>" for line in lines]
    body.append(curves_svg(cost_curves(estimate)))
    head = "".join(
        f'<th class="num">{e(h)}</th>' if 2 <= i <= 5 else f"<th>{e(h)}</th>"
        for i, h in enumerate(_HEADERS)
    )
    body.append(f"<table><thead><tr>{head}</tr></thead><tbody>")
    for row in estimate.rows:
        cells = "".join(
            f'<td class="num">{e(c)}</td>' if 2 <= i <= 5 else f"<td>{e(c)}</td>"
            for i, c in enumerate(_cells(row))
        )
        body.append(f'<tr class="{e(row.kind)}">{cells}</tr>')
    body.append("</tbody></table>")
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        "<title>ds4router estimate</title>"
        f"<style>{PAGE_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
