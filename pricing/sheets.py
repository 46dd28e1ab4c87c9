"""Dated price sheets: ``configs/prices/*.yaml``, USD per 1M tokens.

```yaml
as_of: 2026-11-15                 # the date the prices were read
source: "where they come from"    # required: a sheet without a source is not trusted
models:
  deepseek/deepseek-v4-flash: {input: 0.30, cached_input: 0.006, output: 1.20}
  some/model: {input: 1, output: 2, verified: false, note: "why"}
aliases:                          # optional: other names for a model
  deepseek-flash: deepseek/deepseek-v4-flash
featured: [openai/gpt-5, ...]     # optional: the models ``estimate --top`` starts with
```
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from pricing.errors import PricingError
from pricing.rates import rates_from_mapping
from pricing.textio import read_text_any

_SHEET_KEYS = {"as_of", "source", "models", "aliases", "featured", "notes"}


@dataclass(frozen=True)
class PriceSheet:
    name: str
    path: Path | None
    as_of: str
    source: str
    models: Mapping[str, Mapping[str, float | None]]
    unverified: frozenset[str]
    aliases: Mapping[str, str]
    featured: tuple[str, ...]

    @property
    def as_of_date(self) -> dt.date:
        return dt.date.fromisoformat(self.as_of)


def sheet_files(sheets_dir: Path) -> list[Path]:
    if not sheets_dir.is_dir():
        return []
    return sorted(p for p in sheets_dir.glob("*.yaml") if p.is_file())


def load_sheet(path: Path) -> PriceSheet:
    try:
        text, _ = read_text_any(path)
    except OSError as exc:
        raise PricingError(f"cannot read price sheet {path}: {exc.strerror or exc}") from None
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PricingError(f"{path}: invalid YAML: {exc}") from None
    return parse_sheet(data, name=path.stem, path=path)


def parse_sheet(data: Any, *, name: str, path: Path | None = None) -> PriceSheet:
    where = str(path) if path is not None else name
    if not isinstance(data, dict):
        raise PricingError(f"{where}: a price sheet is a mapping with as_of, source and models")
    unknown = sorted(set(data) - _SHEET_KEYS)
    if unknown:
        raise PricingError(
            f"{where}: unknown key {unknown[0]!r}; a sheet has as_of, source, models, "
            "aliases, featured"
        )
    as_of = _as_of(data.get("as_of"), where)
    source = data.get("source")
    if not isinstance(source, str) or not source.strip():
        raise PricingError(f"{where}: 'source' is required: say where these prices come from")
    models_raw = data.get("models") or {}
    if not isinstance(models_raw, dict):
        raise PricingError(f"{where}: 'models' must map model names to rates")
    models: dict[str, dict[str, float | None]] = {}
    unverified: set[str] = set()
    for model, values in models_raw.items():
        if not isinstance(values, dict):
            raise PricingError(
                f"{where}: {model}: rates must be a mapping like {{input: 1, output: 2}}"
            )
        models[str(model)] = rates_from_mapping(
            str(model), values, sheet=name, as_of=as_of, where=where
        )
        if values.get("verified") is False:
            unverified.add(str(model))
    aliases_raw = data.get("aliases") or {}
    if not isinstance(aliases_raw, dict):
        raise PricingError(f"{where}: 'aliases' must map a name to a model")
    aliases = {str(k): str(v) for k, v in aliases_raw.items()}
    featured_raw = data.get("featured") or []
    if not isinstance(featured_raw, list):
        raise PricingError(f"{where}: 'featured' must be a list of model names")
    return PriceSheet(
        name=name,
        path=path,
        as_of=as_of,
        source=source.strip(),
        models=models,
        unverified=frozenset(unverified),
        aliases=aliases,
        featured=tuple(str(m) for m in featured_raw),
    )


def _as_of(value: Any, where: str) -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise PricingError(f"{where}: 'as_of' must be a date like 2026-11-15, got {value!r}")
