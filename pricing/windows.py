"""When a price applies: UTC time-of-day windows and dated aliases of a price sheet.

```yaml
models:
  deepseek/deepseek-v4-flash:
    input: 0.30                      # the base rates: outside every window
    output: 1.20
    windows:                         # first match wins; UTC; a window may wrap midnight
      - {name: off-peak, utc: "16:30-00:30", input: 0.15, output: 0.60}
      - {name: weekend, utc: "00:00-24:00", days: [sat, sun], input: 0.15, output: 0.60}
aliases:
  deepseek-flash: deepseek/deepseek-v4-flash          # always
  deepseek-chat:                                      # dated: what the name meant when
    - {from: 2026-07-24, model: deepseek/deepseek-v4-flash}
```

A window replaces the rates it names for requests that *start* inside it; prompt-size
tiers still apply on top (a long prompt pays its tier whatever the hour). A dated alias
points at the model of the latest ``from`` on or before the request's UTC date; before
the first ``from`` the name means what it means without the alias.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pricing.errors import PricingError
from pricing.rates import RATE_KEYS, RateValues, rate_values

DAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")


@dataclass(frozen=True)
class Window:
    """Rates for requests starting between ``start`` and ``end`` (minutes after UTC
    midnight, ``end`` exclusive, wrapping midnight when ``end <= start``) on ``days``
    (0 = Monday; empty: every day, the day being the one the window starts on)."""

    name: str
    start: int
    end: int
    days: frozenset[int]
    values: RateValues

    def contains(self, at: dt.datetime) -> bool:
        utc = at.astimezone(dt.UTC) if at.tzinfo is not None else at.replace(tzinfo=dt.UTC)
        minute = utc.hour * 60 + utc.minute
        weekday = utc.weekday()
        if self.start < self.end:
            inside = self.start <= minute < self.end
        elif minute >= self.start:
            inside = True
        elif minute < self.end:
            # After midnight of a wrapping window: it started the day before.
            inside, weekday = True, (weekday - 1) % 7
        else:
            inside = False
        return inside and (not self.days or weekday in self.days)


@dataclass(frozen=True)
class DatedAlias:
    """From UTC date ``since`` on (None: always), ``name`` means ``model``."""

    name: str
    since: dt.date | None
    model: str


def parse_windows(model: str, raw: Any, *, where: str) -> tuple[Window, ...]:
    if not isinstance(raw, list):
        raise PricingError(
            f"{where}: {model}.windows: a list like "
            '[{name: off-peak, utc: "16:30-00:30", input: 0.15, output: 0.6}]'
        )
    windows: list[Window] = []
    for i, item in enumerate(raw):
        key = f"{model}.windows[{i}]"
        if not isinstance(item, dict):
            raise PricingError(f"{where}: {key}: a mapping with name, utc and rates")
        extra = sorted(set(item) - set(RATE_KEYS) - {"name", "utc", "days"})
        if extra:
            raise PricingError(f"{where}: {key}: unknown key {extra[0]!r}; use name, utc, days")
        name = item.get("name")
        if not isinstance(name, str) or not name.strip():
            raise PricingError(f"{where}: {key}.name: give the window a name, e.g. off-peak")
        start, end = _span(item.get("utc"), where=where, key=f"{key}.utc")
        days = _days(item.get("days"), where=where, key=f"{key}.days")
        values = rate_values(key, item, where=where)
        if not values:
            raise PricingError(f"{where}: {key}: a window needs at least one rate")
        windows.append(Window(name.strip(), start, end, days, values))
    return tuple(windows)


def _span(raw: Any, *, where: str, key: str) -> tuple[int, int]:
    match = _SPAN.match(raw.strip()) if isinstance(raw, str) else None
    if match is None:
        raise PricingError(f'{where}: {key}: a UTC span like "16:30-00:30", got {raw!r}')
    h1, m1, h2, m2 = (int(g) for g in match.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise PricingError(f"{where}: {key}: {raw!r} is not a time of day (00:00 to 24:00)")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise PricingError(f"{where}: {key}: {raw!r} is empty; use 00:00-24:00 for all day")
    return start, end


def _days(raw: Any, *, where: str, key: str) -> frozenset[int]:
    if raw is None:
        return frozenset()
    if not isinstance(raw, list) or not all(isinstance(d, str) for d in raw):
        raise PricingError(f"{where}: {key}: a list of days like [mon, tue, wed, thu, fri]")
    out: set[int] = set()
    for day in raw:
        low = day.strip().lower()[:3]
        if low not in DAYS:
            raise PricingError(f"{where}: {key}: {day!r} is not a day; use {', '.join(DAYS)}")
        out.add(DAYS.index(low))
    return frozenset(out)


def parse_aliases(raw: Any, *, where: str) -> tuple[DatedAlias, ...]:
    """``aliases:`` of a sheet: ``name: model`` or ``name: [{from: DATE, model: M}, ...]``."""
    if not isinstance(raw, dict):
        raise PricingError(f"{where}: 'aliases' must map a name to a model")
    out: list[DatedAlias] = []
    for name, target in raw.items():
        if isinstance(target, str):
            out.append(DatedAlias(str(name), None, target))
            continue
        if not isinstance(target, list) or not target:
            raise PricingError(
                f"{where}: aliases.{name}: a model name, or a list like "
                "[{from: 2026-07-24, model: deepseek/deepseek-v4-flash}]"
            )
        for i, item in enumerate(target):
            key = f"aliases.{name}[{i}]"
            if not isinstance(item, dict) or set(item) != {"from", "model"}:
                raise PricingError(f"{where}: {key}: give exactly 'from' (a date) and 'model'")
            since = _date(item["from"], where=where, key=f"{key}.from")
            if not isinstance(item["model"], str) or not item["model"].strip():
                raise PricingError(f"{where}: {key}.model: a model name")
            out.append(DatedAlias(str(name), since, item["model"].strip()))
    return tuple(out)


def _date(raw: Any, *, where: str, key: str) -> dt.date:
    if isinstance(raw, dt.datetime):
        return raw.date()
    if isinstance(raw, dt.date):
        return raw
    if isinstance(raw, str):
        try:
            return dt.date.fromisoformat(raw.strip())
        except ValueError:
            pass
    raise PricingError(f"{where}: {key}: a date like 2026-07-24, got {raw!r}")


def alias_target(aliases: Sequence[DatedAlias], on: dt.date | None) -> str | None:
    """The model a name's aliases point at on UTC date ``on`` (None: today's meaning,
    the latest); None when no alias applies yet."""
    best: DatedAlias | None = None
    for alias in aliases:
        if alias.since is not None and on is not None and alias.since > on:
            continue
        if best is None or _key(alias) >= _key(best):
            best = alias
    return None if best is None else best.model


def _key(alias: DatedAlias) -> dt.date:
    return alias.since or dt.date.min


def group_aliases(aliases: Sequence[DatedAlias]) -> Mapping[str, tuple[DatedAlias, ...]]:
    grouped: dict[str, list[DatedAlias]] = {}
    for alias in aliases:
        grouped.setdefault(alias.name.lower(), []).append(alias)
    return {name: tuple(items) for name, items in grouped.items()}
