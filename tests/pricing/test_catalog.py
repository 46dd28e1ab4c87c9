"""The price catalog: LiteLLM's map read offline, dated sheets, overrides, name resolution."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from pricing.catalog import PriceCatalog
from pricing.errors import PricingError
from pricing.litellm_map import map_path

REPO = Path(__file__).resolve().parents[2]
SHEETS = REPO / "configs" / "prices"


@pytest.fixture(scope="module")
def catalog() -> PriceCatalog:
    return PriceCatalog.load(SHEETS)


def bundled_map() -> dict[str, dict[str, object]]:
    path = map_path()
    assert path is not None, "litellm's bundled price map must be installed"
    data: dict[str, dict[str, object]] = json.loads(path.read_text())
    return data


def write_sheet(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_litellm_rates_are_read_from_the_bundled_file_per_million(catalog: PriceCatalog) -> None:
    entry = bundled_map()["gpt-4.1"]
    rates = catalog.rates("openai/gpt-4.1")
    assert rates is not None
    assert rates.input == pytest.approx(float(entry["input_cost_per_token"]) * 1e6)  # type: ignore[arg-type]
    assert rates.output == pytest.approx(float(entry["output_cost_per_token"]) * 1e6)  # type: ignore[arg-type]
    assert rates.cached_input == pytest.approx(
        float(entry["cache_read_input_token_cost"]) * 1e6  # type: ignore[arg-type]
    )
    assert rates.sheet.startswith("litellm-")


def test_loading_the_catalog_does_not_import_litellm() -> None:
    code = (
        "import sys; from pathlib import Path; from pricing.catalog import PriceCatalog; "
        f"c = PriceCatalog.load(Path({str(SHEETS)!r})); assert len(c) > 1000; "
        "print('litellm' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("deepseek-v4-flash", "deepseek/deepseek-v4-flash"),
        ("deepseek/deepseek-v4-flash", "deepseek/deepseek-v4-flash"),
        ("DeepSeek-V4-Flash", "deepseek/deepseek-v4-flash"),
        ("cloud:deepseek/deepseek-v4-flash", "deepseek/deepseek-v4-flash"),
        ("claude-opus-4-7", "anthropic/claude-opus-4-7"),
        ("claude-opus-4.7", "anthropic/claude-opus-4-7"),
        ("anthropic/claude-opus-4.7", "anthropic/claude-opus-4-7"),
        ("claude-opus", "anthropic/claude-opus-4-7"),  # an alias from the 2026-11 sheet
        ("gpt-5", "openai/gpt-5"),
        ("google/gemini-2.5-pro", "gemini/gemini-2.5-pro"),
        ("grok-4.3", "xai/grok-4.3"),
    ],
)
def test_names_resolve_across_prefixes_aliases_and_separators(
    catalog: PriceCatalog, name: str, canonical: str
) -> None:
    assert catalog.resolve(name) == canonical
    assert catalog.rates(name) is catalog.rates(canonical)


def test_an_unknown_model_is_unpriced_and_close_names_are_suggested(catalog: PriceCatalog) -> None:
    assert catalog.rates("gpt5") is None
    assert catalog.resolve("acme/nonexistent-model-9") is None
    assert catalog.suggest("gpt5")[0] == "openai/gpt-5"
    assert "anthropic/claude-opus-4-7" in catalog.suggest("claude-opus-4-77")


def test_a_bare_name_sold_only_by_resellers_stays_unresolved(catalog: PriceCatalog) -> None:
    # Many hosts price gpt-oss-120b differently and no model owner sells it in the map:
    # picking one at random would be a made-up price.
    hosts = [k for k in bundled_map() if k.endswith("/gpt-oss-120b")]
    assert len(hosts) > 2
    assert catalog.resolve("gpt-oss-120b") is None
    assert catalog.resolve(hosts[0]) is not None


def test_the_dated_sheet_overrides_the_map(catalog: PriceCatalog) -> None:
    rates = catalog.rates("anthropic/claude-opus-4-7")
    assert rates is not None
    assert (rates.sheet, rates.as_of) == ("2026-11", "2026-11-15")
    assert (rates.input, rates.cached_input, rates.cache_write, rates.output) == (
        5.0,
        0.5,
        6.25,
        25.0,
    )
    assert "anthropic/claude-opus-4-7" in catalog.unverified


def test_later_sheets_win_and_as_of_ignores_newer_ones(tmp_path: Path) -> None:
    write_sheet(
        tmp_path / "2026-01.yaml",
        "as_of: 2026-01-10\nsource: test\nmodels:\n  acme/m1: {input: 1, output: 2}\n",
    )
    write_sheet(
        tmp_path / "2026-03.yaml",
        "as_of: 2026-03-10\nsource: test\nmodels:\n  acme/m1: {output: 3}\n",
    )
    now = PriceCatalog.load(tmp_path, use_litellm=False)
    rates = now.rates("acme/m1")
    assert rates is not None and (rates.input, rates.output, rates.sheet) == (1.0, 3.0, "2026-03")
    then = PriceCatalog.load(tmp_path, use_litellm=False, as_of=dt.date(2026, 2, 1))
    old = then.rates("acme/m1")
    assert old is not None and (old.output, old.sheet, old.as_of) == (2.0, "2026-01", "2026-01-10")


def test_overrides_win_over_sheets_and_may_set_one_rate(tmp_path: Path) -> None:
    catalog = PriceCatalog.load(
        SHEETS,
        {"deepseek-v4-flash": {"output": 0.5}, "acme/private-gw": {"input": 0.1, "output": 0.2}},
    )
    flash = catalog.rates("deepseek/deepseek-v4-flash")
    assert flash is not None
    assert (flash.input, flash.output, flash.sheet) == (0.30, 0.5, "override")
    assert catalog.rates("acme/private-gw") is not None


def test_an_override_for_an_unknown_model_needs_input_and_output() -> None:
    with pytest.raises(PricingError, match="'input' is required"):
        PriceCatalog.load(None, {"acme/new": {"output": 1.0}}, use_litellm=False)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("source: x\nmodels: {}\n", "as_of"),
        ("as_of: 2026-01-01\nmodels: {}\n", "source"),
        ("as_of: 2026-01-01\nsource: x\nmodels:\n  a/b: {inptu: 1, output: 1}\n", "inptu"),
        (
            "as_of: 2026-01-01\nsource: x\nmodels:\n  a/b: {input: cheap, output: 1}\n",
            "not a number",
        ),
        ("as_of: 2026-01-01\nsource: x\nmodels:\n  a/b: {input: -1, output: 1}\n", ">= 0"),
        ("as_of: 2026-01-01\nsource: x\nprices: {}\n", "unknown key 'prices'"),
    ],
)
def test_a_bad_sheet_names_the_file_and_the_problem(
    tmp_path: Path, text: str, message: str
) -> None:
    sheet = write_sheet(tmp_path / "bad.yaml", text)
    with pytest.raises(PricingError, match=message) as info:
        PriceCatalog.load(tmp_path, use_litellm=False)
    assert str(sheet) in str(info.value)


def test_featured_models_are_well_known_chat_models(catalog: PriceCatalog) -> None:
    top = catalog.featured(40)
    assert len(top) == 40 == len(set(top))
    providers = {name.split("/")[0] for name in top}
    assert {"openai", "anthropic", "gemini", "deepseek", "xai", "mistral"} <= providers
    assert all(catalog.mode(name) in ("chat", "responses") for name in top)
    assert all(catalog.rates(name) is not None for name in top)
    # Beyond the sheet's list the map fills in, still without dated snapshots or fine-tunes.
    more = catalog.featured(80)
    assert len(more) == 80
    assert not [n for n in more if "ft:" in n or "embedding" in n or n[-8:].isdigit()]
