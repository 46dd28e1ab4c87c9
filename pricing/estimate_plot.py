"""Monthly cost against output tokens a month: the estimator's lines, and their SVG.

Each line is straight in ``T`` (output tokens a month, the usage mix scaled):
``cloud_m(T) = c_m T / 1e6``, local amortised ``H + e T / 1e6`` and local marginal
(hardware owned anyway) ``e T / 1e6`` (see :mod:`pricing.estimator`). The local lines
stop at the machine's monthly capacity. :func:`cost_curves` picks the range and the
cloud models shown; :func:`curves_svg` draws them (the HTML estimate) and the TUI's
estimator screen plots the same points.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from dataclasses import dataclass

from pricing.estimator import Estimate, EstimateRow

_PER_M = 1_000_000
MAX_CLOUD_LINES = 6
_PALETTE = ("#3569b8", "#b8553a", "#8a4fb8", "#b89a35", "#3a9fb8", "#b83a7e")
LOCAL_COLOR, MARGINAL_COLOR = "#2f8f5b", "#7fbf8f"


@dataclass(frozen=True)
class Curve:
    """One line: its label, kind (``cloud``, ``local``, ``marginal``) and points
    (output tokens a month, USD a month)."""

    label: str
    kind: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class CostCurves:
    curves: tuple[Curve, ...]
    x_max: float
    y_max: float
    usage_tokens: int  # this month's output tokens (marked on the plot)


def chosen_models(rows: Sequence[EstimateRow], n: int = MAX_CLOUD_LINES) -> list[EstimateRow]:
    """At most ``n`` priced cloud rows, spread from the cheapest to the dearest."""
    priced = [r for r in rows if r.kind == "cloud" and r.usd_per_mtok is not None]
    if len(priced) <= n:
        return priced
    step = (len(priced) - 1) / (n - 1)
    return [priced[round(i * step)] for i in range(n)]


def cost_curves(estimate: Estimate, n: int = MAX_CLOUD_LINES) -> CostCurves:
    """The lines of ``estimate`` from 0 to past the furthest crossover shown (at least
    twice this month's output), local lines cut at the machine's capacity."""
    usage = estimate.usage.output_tokens
    rows = chosen_models(estimate.rows, n)
    crossovers = [r.crossover_tokens_per_month for r in rows if r.crossover_tokens_per_month]
    x_max = float(max([2 * usage, *(1.5 * c for c in crossovers)]))
    local = estimate.local
    if local is not None:
        x_max = min(x_max, max(local.capacity_output_tokens, usage))
    curves: list[Curve] = []
    for row in rows:
        per_m = row.usd_per_mtok or 0.0
        curves.append(Curve(row.model, "cloud", ((0.0, 0.0), (x_max, per_m * x_max / _PER_M))))
    if local is not None and estimate.profile is not None:
        name, e, h = estimate.profile.name, local.energy_usd_per_mtok, local.hardware_usd
        end = min(x_max, local.capacity_output_tokens)
        curves.append(
            Curve(f"local:{name} amortised", "local", ((0.0, h), (end, h + e * end / _PER_M)))
        )
        curves.append(
            Curve(f"local:{name} if owned", "marginal", ((0.0, 0.0), (end, e * end / _PER_M)))
        )
    y_max = max((y for c in curves for _, y in c.points), default=1.0) or 1.0
    return CostCurves(tuple(curves), x_max, y_max, usage)


def curve_color(curve: Curve, index: int) -> str:
    if curve.kind == "local":
        return LOCAL_COLOR
    if curve.kind == "marginal":
        return MARGINAL_COLOR
    return _PALETTE[index % len(_PALETTE)]


def curves_svg(plot: CostCurves, width: int = 900, height: int = 360) -> str:
    """Inline SVG: one line per curve, axes in output tokens a month and USD a month."""
    from pricing.report_render import tokens, usd

    left, right, top, bottom = 72, 220, 16, 40
    plot_w, plot_h = width - left - right, height - top - bottom

    def x_of(x: float) -> float:
        return left + plot_w * x / plot.x_max

    def y_of(y: float) -> float:
        return top + plot_h - plot_h * y / plot.y_max

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" id="cost-curves" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        "<title>Monthly cost against output tokens a month: cloud models, local amortised "
        "and local with the hardware owned anyway</title>",
    ]
    for i in range(5):
        y, x = top + plot_h * i / 4, left + plot_w * i / 4
        parts.append(
            f'<line class="grid" x1="{left}" y1="{y:.1f}" x2="{left + plot_w}" y2="{y:.1f}"/>'
        )
        label = html.escape(usd(plot.y_max * (4 - i) / 4))
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
        tick = html.escape(tokens(round(plot.x_max * i / 4)))
        parts.append(
            f'<text x="{x:.1f}" y="{top + plot_h + 16}" text-anchor="middle">{tick}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2:.1f}" y="{height - 6}" text-anchor="middle">'
        "output tokens a month</text>"
    )
    now = x_of(min(plot.usage_tokens, plot.x_max))
    parts.append(
        f'<line class="axis" stroke-dasharray="4 3" x1="{now:.1f}" y1="{top}" '
        f'x2="{now:.1f}" y2="{top + plot_h}"><title>this month</title></line>'
    )
    for index, curve in enumerate(plot.curves):
        color = curve_color(curve, index)
        points = " ".join(f"{x_of(x):.1f},{y_of(y):.1f}" for x, y in curve.points)
        dash = ' stroke-dasharray="6 4"' if curve.kind == "marginal" else ""
        label = html.escape(curve.label)
        parts.append(
            f'<polyline fill="none" stroke="{color}" stroke-width="2"{dash} '
            f'data-kind="{curve.kind}" data-label="{label}" points="{points}">'
            f"<title>{label}</title></polyline>"
        )
        legend_y = top + 14 * index + 8
        parts.append(
            f'<line x1="{width - right + 12}" y1="{legend_y}" '
            f'x2="{width - right + 32}" y2="{legend_y}" stroke="{color}" '
            f'stroke-width="2"{dash}/>'
        )
        parts.append(f'<text x="{width - right + 36}" y="{legend_y + 4}">{label}</text>')
    parts.append(
        f'<line class="axis" x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" '
        f'y2="{top + plot_h}"/>'
    )
    parts.append("</svg>")
    return "\n".join(parts)
