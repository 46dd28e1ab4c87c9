"""Time-of-day windows, dated aliases and dated sheets: a request is priced by its UTC
start time, under what its model name meant on that date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from pricing.catalog import PriceCatalog
from pricing.errors import PricingError
from pricing.ledger import Ledger, LedgerRow
from pricing.usage import TokenUsage

TWO_WINDOWS = """\
as_of: 2026-08-16
source: test sheet
models:
  deepseek/deepseek-v4-flash:
    input: 0.30
    output: 1.20
    windows:
      - {name: off-peak, utc: "16:30-00:30", input: 0.15, output: 0.60}
      - {name: weekend, utc: "00:00-24:00", days: [sat, sun], input: 0.10, output: 0.40}
"""
USAGE = TokenUsage(input_tokens=1_000_000, output_tokens=1_000_000)


def utc(day: int, hour: int, minute: int = 0) -> dt.datetime:
    return dt.datetime(2026, 11, day, hour, minute, tzinfo=dt.UTC)


@pytest.fixture
def windows(tmp_path: Path) -> PriceCatalog:
    (tmp_path / "2026-08.yaml").write_text(TWO_WINDOWS)
    return PriceCatalog.load(tmp_path, use_litellm=False)


@pytest.mark.parametrize(
    ("at", "window", "usd"),
    [
        (utc(3, 9), None, 1.50),  # Tuesday morning: base (peak) rates
        (utc(3, 16, 30), "off-peak", 0.75),  # the window's first minute
        (utc(4, 0, 29), "off-peak", 0.75),  # after midnight, still the wrapping window
        (utc(4, 0, 30), None, 1.50),  # its end is exclusive
        (utc(7, 9), "weekend", 0.50),  # Saturday
        (utc(9, 0, 10), "off-peak", 0.75),  # Monday 00:10: Sunday's wrapping window
    ],
)
def test_the_same_request_is_priced_by_the_window_its_start_falls_in(
    windows: PriceCatalog, at: dt.datetime, window: str | None, usd: float
) -> None:
    cost = windows.price("deepseek-v4-flash", USAGE, at)
    assert cost.window == window
    assert cost.total_usd == pytest.approx(usd)


def test_a_request_without_a_start_time_is_priced_at_the_base_rates(
    windows: PriceCatalog,
) -> None:
    cost = windows.price("deepseek-v4-flash", USAGE)
    assert (cost.window, cost.total_usd) == (None, pytest.approx(1.50))


def test_the_ledger_row_says_which_window_applied(windows: PriceCatalog, tmp_path: Path) -> None:
    at = utc(3, 20)
    with Ledger(tmp_path / "l.db") as ledger:
        ledger.record(
            LedgerRow.for_cloud(
                time=at, project="p", cost=windows.price("deepseek-v4-flash", USAGE, at)
            )
        )
        (row,) = ledger.month_rows("2026-11")
    assert (row.price_window, row.rate_input, row.cost_usd) == ("off-peak", 0.15, 0.75)


def test_a_dated_alias_prices_a_request_by_what_the_name_meant_that_day(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text(
        "as_of: 2026-11-01\nsource: test\nmodels:\n"
        "  deepseek/deepseek-v3: {input: 0.27, output: 1.10}\n"
        "  deepseek/deepseek-v4-flash: {input: 0.30, output: 1.20}\n"
        "  deepseek/deepseek-v4.1-flash: {input: 0.40, output: 1.60}\n"
        "aliases:\n"
        "  deepseek-chat:\n"
        "    - {from: 2026-07-24, model: deepseek/deepseek-v4-flash}\n"
        "    - {from: 2026-10-17, model: deepseek/deepseek-v4.1-flash}\n"
        "  old-chat: deepseek/deepseek-v3\n"
    )
    catalog = PriceCatalog.load(tmp_path, use_litellm=False)
    june = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
    august = dt.datetime(2026, 8, 1, tzinfo=dt.UTC)
    november = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    assert catalog.rates("deepseek-chat", june) is None  # meant nothing we price yet
    assert (
        catalog.resolve("deepseek/deepseek-chat", on=august.date()) == "deepseek/deepseek-v4-flash"
    )
    assert catalog.price("deepseek-chat", USAGE, august).total_usd == pytest.approx(1.50)
    assert catalog.price("deepseek-chat", USAGE, november).total_usd == pytest.approx(2.00)
    assert catalog.resolve("deepseek-chat") == "deepseek/deepseek-v4.1-flash"  # today
    assert catalog.resolve("old-chat", on=june.date()) == "deepseek/deepseek-v3"


def test_a_request_is_priced_by_the_sheets_in_effect_on_its_date(tmp_path: Path) -> None:
    (tmp_path / "2026-05.yaml").write_text(
        "as_of: 2026-05-01\nsource: t\nmodels:\n  acme/m: {input: 1, output: 2}\n"
    )
    (tmp_path / "2026-09.yaml").write_text(
        "as_of: 2026-09-20\neffective_from: 2026-09-01\nsource: t\nmodels:\n  acme/m: {input: 3}\n"
    )
    catalog = PriceCatalog.load(tmp_path, use_litellm=False)
    one = TokenUsage(1_000_000, 0, 0, 1_000_000, 0)
    assert catalog.price("acme/m", one, dt.datetime(2026, 6, 1, tzinfo=dt.UTC)).total_usd == 3.0
    assert catalog.price("acme/m", one, dt.datetime(2026, 9, 1, tzinfo=dt.UTC)).total_usd == 5.0
    # A sheet without effective_from holds at every date, even before its as_of.
    assert catalog.price("acme/m", one, dt.datetime(2026, 1, 1, tzinfo=dt.UTC)).total_usd == 3.0
    assert catalog.price("acme/m", one).total_usd == 5.0


@pytest.mark.parametrize(
    ("window", "message", "line"),
    [
        ('{name: x, utc: "25:00-26:00", input: 1}', r"windows\[0\].utc: .* not a time of day", 7),
        ('{name: x, utc: "9-10", input: 1}', r"windows\[0\].utc: a UTC span like", 7),
        ('{name: x, utc: "01:00-02:00", days: [funday], input: 1}', "not a day", 7),
        ('{name: x, utc: "01:00-02:00"}', "at least one rate", 7),
        ('{utc: "01:00-02:00", input: 1}', r"windows\[0\].name", 7),
    ],
)
def test_a_bad_window_names_the_file_line_and_key(
    tmp_path: Path, window: str, message: str, line: int
) -> None:
    sheet = tmp_path / "bad.yaml"
    sheet.write_text(
        "as_of: 2026-11-01\nsource: test\nmodels:\n  a/b:\n    input: 1\n    output: 1\n"
        f"    windows: [{window}]\n"
    )
    with pytest.raises(PricingError, match=message) as info:
        PriceCatalog.load(tmp_path, use_litellm=False)
    assert str(info.value).startswith(f"{sheet}:{line}: ")


def test_a_bad_dated_alias_names_its_line(tmp_path: Path) -> None:
    sheet = tmp_path / "bad.yaml"
    sheet.write_text(
        "as_of: 2026-11-01\nsource: t\nmodels: {}\naliases:\n  x:\n    - {from: soon, model: a/b}\n"
    )
    with pytest.raises(PricingError, match=r"aliases.x\[0\].from: a date") as info:
        PriceCatalog.load(tmp_path, use_litellm=False)
    assert str(info.value).startswith(f"{sheet}:6: ")
