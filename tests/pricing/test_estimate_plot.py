"""The estimator's cost lines (local amortised and marginal, cloud models) and the HTML
page that draws them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pricing.catalog import PriceCatalog
from pricing.estimate_plot import cost_curves, curves_svg
from pricing.estimate_render import render_estimate
from pricing.estimator import Estimate, estimate, usage_from_profile
from pricing.profiles import load_profile

REPO = Path(__file__).resolve().parents[2]
MODELS = ["deepseek-v4-flash", "deepseek-v4-pro", "claude-opus-4-7", "openai/gpt-5.4"]


@pytest.fixture(scope="module")
def result() -> Estimate:
    catalog = PriceCatalog.load(REPO / "configs" / "prices")
    profile = load_profile("m3-max-q2", REPO / "configs" / "local_profiles")
    usage = usage_from_profile(5_000_000, 50_000_000, 0.5)
    return estimate(catalog, MODELS, usage, profile)


def _at(points: tuple[tuple[float, float], ...], x: float) -> float:
    (x0, y0), (x1, y1) = points[0], points[-1]
    return y0 + (y1 - y0) * (x - x0) / (x1 - x0)


def test_amortised_local_meets_each_cloud_line_at_its_crossover(result: Estimate) -> None:
    plot = cost_curves(result)
    local = next(c for c in plot.curves if c.kind == "local")
    marginal = next(c for c in plot.curves if c.kind == "marginal")
    assert result.local is not None
    assert local.points[0] == (0.0, pytest.approx(result.local.hardware_usd))
    assert marginal.points[0] == (0.0, 0.0)
    crossing = [r for r in result.rows if r.kind == "cloud" and r.crossover_tokens_per_month]
    assert crossing, "some model must cross the local line in this mix"
    for row in crossing:
        cloud = next(c for c in plot.curves if c.label == row.model)
        t = row.crossover_tokens_per_month
        assert t is not None and t <= plot.x_max
        assert _at(cloud.points, t) == pytest.approx(_at(local.points, t), rel=1e-6)
        # With the hardware owned anyway, local is cheaper at every volume.
        assert row.crossover_marginal == "always"
        assert _at(marginal.points, t) < _at(cloud.points, t)


def test_this_months_local_costs_both_ways_are_on_the_lines(result: Estimate) -> None:
    plot = cost_curves(result)
    t = result.usage.output_tokens
    local = next(c for c in plot.curves if c.kind == "local")
    marginal = next(c for c in plot.curves if c.kind == "marginal")
    assert result.local is not None
    assert _at(local.points, t) == pytest.approx(result.local.monthly_usd)
    assert _at(marginal.points, t) == pytest.approx(result.local.electricity_usd)


def test_the_html_estimate_is_one_page_with_the_lines_as_svg(result: Estimate) -> None:
    page = render_estimate(result, "html")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert not re.search(r"(src|href)=", page)  # nothing to fetch: self-contained
    labels = re.findall(r'<polyline[^>]*data-label="([^"]+)"', page)
    assert "local:m3-max-q2 amortised" in labels and "local:m3-max-q2 if owned" in labels
    assert {"deepseek/deepseek-v4-flash", "anthropic/claude-opus-4-7"} <= set(labels)
    assert "if owned" in page and "local wins above" in page
    assert curves_svg(cost_curves(result)) in page
