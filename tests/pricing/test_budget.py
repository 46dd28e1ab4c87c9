"""Budget state from plain numbers: cap, warnings crossed, projection."""

from __future__ import annotations

import datetime as dt

import pytest

from pricing.budget import budget_for_month, budget_state, month_progress


def test_under_budget_with_warnings_crossed_and_a_projection() -> None:
    state = budget_state(40.0, 25.0, (0.5, 0.8, 1.0), elapsed_days=10.0, days_in_month=30)
    assert state.remaining_usd == pytest.approx(15.0)
    assert state.fraction == pytest.approx(0.625)
    assert state.warnings_crossed == [0.5]
    assert not state.over_budget
    assert state.projected_month_end_usd == pytest.approx(75.0)  # $2.50 a day x 30


def test_reaching_the_cap_is_over_budget() -> None:
    state = budget_state(40.0, 40.0, (0.5, 0.8, 1.0), elapsed_days=20.0, days_in_month=30)
    assert state.over_budget
    assert state.remaining_usd == 0.0
    assert state.warnings_crossed == [0.5, 0.8, 1.0]
    assert state.highest_warning == 1.0


def test_no_cap_is_never_over_budget_but_still_projects() -> None:
    state = budget_state(None, 12.0, (0.5,), elapsed_days=3.0, days_in_month=30)
    assert (state.monthly_usd, state.remaining_usd, state.fraction) == (None, None, None)
    assert not state.over_budget and state.warnings_crossed == []
    assert state.projected_month_end_usd == pytest.approx(120.0)


def test_a_zero_cap_means_no_cloud_spend_at_all() -> None:
    assert budget_state(0.0, 0.0, (0.5, 1.0), elapsed_days=1, days_in_month=30).over_budget


def test_the_first_hours_of_a_month_count_as_one_day() -> None:
    state = budget_state(100.0, 2.0, (), elapsed_days=0.05, days_in_month=31)
    assert state.projected_month_end_usd == pytest.approx(62.0)


def test_month_progress_in_utc() -> None:
    now = dt.datetime(2026, 2, 15, 12, 0, tzinfo=dt.UTC)
    assert month_progress("2026-02", now) == (pytest.approx(14.5), 28)
    assert month_progress("2026-01", now) == (31.0, 31)  # a past month is over
    assert month_progress("2026-03", now) == (0.0, 31)
    past = budget_for_month(50.0, 31.0, (0.5,), "2026-01", now)
    assert past.projected_month_end_usd == pytest.approx(31.0)
