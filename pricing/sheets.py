"""Dated price sheets: ``configs/prices/*.yaml``, USD per 1M tokens.

```yaml
as_of: 2026-11-15                 # the date the prices were read
source: "where they come from"    # required: a sheet without a source is not trusted
effective_from: 2026-08-16        # optional: requests before this UTC date keep the
                                  # earlier layers' prices (default: every date)
models:
  deepseek/deepseek-v4-flash: {input: 0.30, cached_input: 0.006, output: 1.20}
  some/model: {input: 1, output: 2, verified: false, note: "why"}
  long/model:                     # tiers: the whole request at these rates past 200k
    {input: 3, output: 15, tiers: [{above: 200000, input: 6, output: 22.5}]}
aliases:                          # optional: other names for a model
  deepseek-flash: deepseek/deepseek-v4-flash
  deepseek-chat: [{from: 2026-07-24, model: deepseek/deepseek-v4-flash}]
featured: [openai/gpt-5, ...]     # optional: the models ``estimate --top`` starts with
```

Time-of-day ``windows`` and dated aliases are described in :mod:`pricing.windows`.
An error names the file, the line and the key (``configs/prices/x.yaml:7: ...``).
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
from pricing.windows import DatedAlias, parse_aliases

_SHEET_KEYS = {"as_of", "source", "models", "aliases", "featured", "notes", "effective_from"}


@dataclass(frozen=True)
class PriceSheet:
    name: str
    path: Path | None
    as_of: str
    source: str
    models: Mapping[str, Mapping[str, Any]]
    unverified: frozenset[str]
    aliases: tuple[DatedAlias, ...]
    featured: tuple[str, ...]
    effective_from: dt.date | None = None

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
    try:
        return parse_sheet(data, name=path.stem, path=path)
    except PricingError as exc:
        raise PricingError(_with_line(str(exc), path, text)) from None


def _with_line(message: str, path: Path, text: str) -> str:
    """``FILE: models.a/b.input: ...`` -> ``FILE:LINE: ...``: the line of the deepest key
    of the sheet that the message names (the file alone when none is found)."""
    prefix = f"{path}: "
    if not message.startswith(prefix):
        return message
    rest = message[len(prefix) :]
    lines = _key_lines(text)
    named = [key for key in lines if rest.startswith(key) or f" {key}" in rest]
    if not named:
        return message
    return f"{path}:{lines[max(named, key=len)]}: {rest}"


def _key_lines(text: str) -> dict[str, int]:
    """Every key path of the YAML (``a/b.windows[0].utc``; model names without the
    ``models.`` prefix, as messages write them) -> its 1-based line."""
    try:
        root = yaml.compose(text)
    except yaml.YAMLError:
        return {}
    out: dict[str, int] = {}

    def walk(node: yaml.Node, key: str) -> None:
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                name = f"{key}.{k.value}" if key else str(k.value)
                out.setdefault(name, k.start_mark.line + 1)
                walk(v, name)
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                name = f"{key}[{i}]"
                out.setdefault(name, item.start_mark.line + 1)
                walk(item, name)

    if root is not None:
        walk(root, "")
    for key, line in list(out.items()):
        if key.startswith("models."):
            out.setdefault(key[len("models.") :], line)
    return out


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
    models: dict[str, dict[str, Any]] = {}
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
    aliases = parse_aliases(data.get("aliases") or {}, where=where)
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
        effective_from=(
            None
            if data.get("effective_from") is None
            else dt.date.fromisoformat(_as_of(data["effective_from"], where, "effective_from"))
        ),
    )


def _as_of(value: Any, where: str, key: str = "as_of") -> str:
    if isinstance(value, dt.datetime):
        return value.date().isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, str) and re.fullmatch(r"\d{4}-\d{2}-\d{2}", value.strip()):
        try:
            return dt.date.fromisoformat(value.strip()).isoformat()
        except ValueError:
            pass
    raise PricingError(f"{where}: '{key}' must be a date like 2026-11-15, got {value!r}")
