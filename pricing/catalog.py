"""The price catalog: which rates apply to a model name, and where they came from.

Layers, later wins (per model, per rate key):

1. LiteLLM's bundled model map, read offline (:mod:`pricing.litellm_map`);
2. dated sheets in ``configs/prices/*.yaml`` in ``as_of`` order (:mod:`pricing.sheets`),
   then any sheet given explicitly (``estimate --prices FILE``);
3. user and project overrides from the configuration (USD per 1M tokens).

A model that no layer prices is **unpriced**: :meth:`PriceCatalog.rates` returns
None, never zero rates. Names resolve across provider prefixes, aliases and
separators: ``deepseek-v4-flash``, ``deepseek/deepseek-v4-flash`` and
``DeepSeek-V4-Flash`` are one model; ``google/gemini-2.5-pro`` is
``gemini/gemini-2.5-pro``; ``claude-opus-4.7`` is ``anthropic/claude-opus-4-7``.
A bare name that is itself a LiteLLM model id means what LiteLLM bills for it
(bare ``gemini-2.5-pro`` is Vertex AI's entry; ``gemini/gemini-2.5-pro`` the
Gemini API's). An ambiguous bare name (offered by several resellers and no
model owner) stays unresolved rather than picking a price at random.

The catalog also answers what LiteLLM's map says of a model's context window
(:meth:`PriceCatalog.context_limits`), through the same names: windows are not
prices, so they come from the installed map whatever layers priced the catalog.
"""

from __future__ import annotations

import datetime as dt
import difflib
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pricing.cost import CloudCost, price_request
from pricing.errors import PricingError
from pricing.litellm_map import (
    ContextLimit,
    context_limits_index,
    load_entries,
    map_path,
    map_version,
)
from pricing.rates import RATE_KEYS, Rates, rates_from_mapping
from pricing.sheets import PriceSheet, load_sheet, sheet_files
from pricing.usage import TokenUsage
from pricing.windows import DatedAlias, alias_target, group_aliases

# Model owners: when a bare name is offered by many hosts, the owner's price is
# the one a user means.
FIRST_PARTY: tuple[str, ...] = (
    "openai",
    "anthropic",
    "gemini",
    "deepseek",
    "xai",
    "mistral",
    "moonshot",
    "dashscope",
    "zai",
    "cohere_chat",
)

# Names people write for a provider -> the prefix LiteLLM's map uses.
PROVIDER_ALIASES: dict[str, str] = {
    "google": "gemini",
    "claude": "anthropic",
    "x-ai": "xai",
    "grok": "xai",
    "mistralai": "mistral",
    "deepseek-ai": "deepseek",
    "moonshotai": "moonshot",
    "kimi": "moonshot",
    "qwen": "dashscope",
    "alibaba": "dashscope",
    "zhipu": "zai",
    "z-ai": "zai",
    "cohere": "cohere_chat",
}

_CHAT_MODES = {"chat", "responses", "completion", ""}
# Names that are not what a person means by "a chat model" in a price list.
_NOT_FEATURED = re.compile(
    r"(^|[/:\-.])(ft|audio|realtime|search|tts|transcribe|image|embed|embedding|vision|"
    r"computer-use|moderation|rerank|guard|safeguard|exp|experimental|preview|latest|"
    r"deep-research|robotics|lyria|instruct)([/:\-.]|$)"
    r"|-\d{4}-?\d{2}-?\d{2}$|-\d{4}$|@"
)


@dataclass(frozen=True)
class PriceLayer:
    """One source the catalog was built from (shown by reports and the estimator)."""

    name: str
    as_of: str | None
    source: str


class PriceCatalog:
    """Rates per canonical model name (``provider/model``), built from the layers above."""

    def __init__(
        self,
        rates: Mapping[str, Rates],
        *,
        modes: Mapping[str, str] | None = None,
        lookup: Mapping[str, str] | None = None,
        aliases: Iterable[DatedAlias] | Mapping[str, str] | None = None,
        featured: Sequence[str] = (),
        layers: Sequence[PriceLayer] = (),
        unverified: Iterable[str] = (),
        history: Mapping[str, Sequence[tuple[dt.date | None, Rates]]] | None = None,
    ) -> None:
        self._rates: dict[str, Rates] = dict(rates)
        self._modes: dict[str, str] = dict(modes or {})
        self._lookup: dict[str, str] = {k.lower(): v for k, v in (lookup or {}).items()}
        for name in self._rates:
            self._lookup.setdefault(name.lower(), name)
        if isinstance(aliases, Mapping):
            aliases = [DatedAlias(k, None, v) for k, v in aliases.items()]
        grouped = group_aliases(list(aliases or ()))
        # Undated aliases yield to a model of that name; dated ones say what the name
        # meant from their date on, whatever else is called that.
        self._aliases = {k: v for k, v in grouped.items() if all(a.since is None for a in v)}
        self._dated = {k: v for k, v in grouped.items() if k not in self._aliases}
        # Per model, the rates after each dated layer (a sheet's as_of; None: undated).
        self._history = {k: tuple(v) for k, v in (history or {}).items()}
        self._featured = tuple(featured)
        self.layers: tuple[PriceLayer, ...] = tuple(layers)
        self.unverified: frozenset[str] = frozenset(unverified)
        self._by_norm: dict[str, list[str]] = {}
        self._by_bare: dict[str, list[str]] = {}
        for key, canonical in self._lookup.items():
            self._by_norm.setdefault(_norm(key), []).append(canonical)
        for canonical in self._rates:
            self._by_bare.setdefault(_norm(_bare(canonical)), []).append(canonical)

    # --- building -------------------------------------------------------------

    @classmethod
    def load(
        cls,
        sheets_dir: Path | None,
        overrides: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        extra_sheets: Sequence[Path] = (),
        as_of: dt.date | None = None,
        use_litellm: bool = True,
        overrides_source: str = "config overrides",
    ) -> PriceCatalog:
        """Build the catalog.

        ``sheets_dir`` holds the dated sheets (None: none); ``as_of`` ignores
        sheets dated after it (re-pricing an old month); ``extra_sheets`` are
        applied after the dated ones; ``overrides`` last.
        """
        builder = _Builder()
        if use_litellm:
            path = map_path()
            if path is not None:
                builder.add_litellm(path)
        sheets = [load_sheet(p) for p in sheet_files(sheets_dir)] if sheets_dir else []
        if as_of is not None:
            sheets = [s for s in sheets if s.as_of_date <= as_of]
        sheets.sort(key=lambda s: (s.as_of, s.name))
        for sheet in [*sheets, *(load_sheet(Path(p)) for p in extra_sheets)]:
            builder.add_sheet(sheet)
        if overrides:
            builder.add_overrides(overrides, overrides_source)
        return builder.build()

    # --- queries --------------------------------------------------------------

    def rates(self, model: str, at: dt.datetime | None = None) -> Rates | None:
        """The rates for a model name, or None when it is unpriced.

        ``at`` (a request's UTC start): the name as it was meant on that date (dated
        aliases) and the rates without the sheets whose ``effective_from`` is after it;
        None: today's.
        The result still carries its tiers and windows (see :meth:`Rates.for_request`).
        """
        on = None if at is None else _utc_date(at)
        canonical = self.resolve(model, on=on)
        if canonical is None:
            return None
        if on is None:
            return self._rates[canonical]
        history = self._history.get(canonical, ())
        # Older than every layer that priced it: the earliest rates known.
        chosen = history[0][1] if history else self._rates[canonical]
        for since, rates in history:
            if since is None or since <= on:
                chosen = rates
        return chosen

    def resolve(self, model: str, *, on: dt.date | None = None, _depth: int = 0) -> str | None:
        """The canonical name a model name refers to (on UTC date ``on``), or None."""
        query = model.strip()
        if not query or _depth > 8:
            return None
        low = query.lower()
        if low.startswith("cloud:"):
            low = low[len("cloud:") :]
        prefix, _, rest = low.partition("/")
        dated = self._dated.get(low) or (self._dated.get(rest) if prefix in FIRST_PARTY else None)
        if dated:
            target = alias_target(dated, on)
            if target is not None and target.lower() != low:
                return self.resolve(target, on=on, _depth=_depth + 1)
        found = self._lookup.get(low)
        if found is not None:
            return found
        target = alias_target(self._aliases.get(low, ()), on)
        if target is not None and target.lower() != low:
            return self.resolve(target, on=on, _depth=_depth + 1)
        if rest and prefix in PROVIDER_ALIASES:
            return self.resolve(f"{PROVIDER_ALIASES[prefix]}/{rest}", on=on, _depth=_depth + 1)
        unique = _unique(self._by_norm.get(_norm(low), []))
        if unique is not None:
            return unique
        # A bare name, or an owner's prefix with a differently spelled model part.
        if rest and prefix not in FIRST_PARTY:
            return None
        candidates = self._by_bare.get(_norm(_bare(low)), [])
        if rest:
            candidates = [c for c in candidates if _provider(c) == prefix]
        owned = [c for c in candidates if _provider(c) in FIRST_PARTY and c.count("/") == 1]
        return _unique(owned) or _unique(candidates)

    def context_limits(self, model: str) -> ContextLimit | None:
        """(context window, output limit or None) in tokens, from LiteLLM's map: for the
        name as written, else for the model it resolves to (aliases, provider spellings).
        None when litellm is not installed or its map does not know the model."""
        path = map_path()
        if path is None:
            return None
        index = context_limits_index(path)
        name = model.strip()
        if name.lower().startswith("cloud:"):
            name = name[len("cloud:") :]
        found = index.get(name.lower())
        if found is None:
            resolved = self.resolve(name)
            found = index.get(resolved.lower()) if resolved else None
        return found

    def suggest(self, model: str, n: int = 5) -> list[str]:
        """Close names for an unknown model, chat models of the owners first."""
        low = model.strip().lower()
        bare = _norm(_bare(low))
        scored: dict[str, float] = {}
        bare_names = list(self._by_bare)
        for hit in difflib.get_close_matches(bare, bare_names, n=n * 3, cutoff=0.6):
            score = difflib.SequenceMatcher(None, bare, hit).ratio()
            for canonical in self._by_bare[hit]:
                scored[canonical] = max(scored.get(canonical, 0.0), score)
        if len(bare) >= 3:
            for name, canonicals in self._by_bare.items():
                if bare in name:
                    for canonical in canonicals:
                        scored.setdefault(canonical, 0.5)

        def rank(name: str) -> tuple[float, int, int, str]:
            owner = _provider(name) in FIRST_PARTY and name.count("/") == 1
            chat = self._modes.get(name, "") in _CHAT_MODES
            return (-scored[name], 0 if owner else 1, 0 if chat else 1, name)

        return sorted(scored, key=rank)[:n]

    def models(self) -> list[str]:
        """Every priced model, by canonical name."""
        return sorted(self._rates)

    def mode(self, model: str) -> str | None:
        canonical = self.resolve(model)
        return None if canonical is None else self._modes.get(canonical, "chat")

    def featured(self, n: int) -> list[str]:
        """``n`` well-known chat models: the newest sheet's ``featured`` list first,
        then first-party chat models from the map (no dated snapshots, fine-tunes,
        audio, image or preview variants), owners in :data:`FIRST_PARTY` order."""
        chosen: list[str] = []
        for name in self._featured:
            canonical = self.resolve(name)
            if canonical is not None and canonical not in chosen:
                chosen.append(canonical)
            if len(chosen) >= n:
                return chosen
        owner_rank = {p: i for i, p in enumerate(FIRST_PARTY)}
        extra = [
            name
            for name in self._rates
            if name not in chosen
            and _provider(name) in owner_rank
            and name.count("/") == 1
            and self._modes.get(name, "chat") in ("chat", "responses")
            and not _NOT_FEATURED.search(name.lower())
        ]
        extra.sort(key=lambda name: (owner_rank[_provider(name)], name))
        return (chosen + extra)[:n]

    def price(
        self,
        model: str,
        usage: TokenUsage,
        at: dt.datetime | None = None,
        *,
        one_request: bool = True,
    ) -> CloudCost:
        """:func:`pricing.cost.price_request` on this model's rates (unpriced: None) as
        of ``at``, the request's UTC start. ``one_request`` False: ``usage`` sums many
        requests, so no prompt-size tier can be told (base rates)."""
        return price_request(
            usage, self.rates(model, at), model=model, at=at, one_request=one_request
        )

    def __contains__(self, model: object) -> bool:
        return isinstance(model, str) and self.resolve(model) is not None

    def __len__(self) -> int:
        return len(self._rates)


class _Builder:
    def __init__(self) -> None:
        self.rates: dict[str, Rates] = {}
        self.modes: dict[str, str] = {}
        self.lookup: dict[str, str] = {}
        self.aliases: list[DatedAlias] = []
        self.history: dict[str, list[tuple[dt.date | None, Rates]]] = {}
        self.featured: tuple[str, ...] = ()
        self.layers: list[PriceLayer] = []
        self.unverified: set[str] = set()

    def add_litellm(self, path: Path) -> None:
        name = f"litellm-{map_version()}"
        entries = load_entries(path)
        # Explicitly prefixed keys first, so their rates win over bare duplicates.
        entries.sort(key=lambda e: 0 if e.key == e.canonical else 1)
        for entry in entries:
            canonical = _route_prefix(entry.canonical, entry.provider)
            if canonical not in self.rates:
                self.rates[canonical] = Rates(
                    model=canonical, sheet=name, as_of=None, **_full(entry.rates)
                )
                self.modes[canonical] = entry.mode
            self.lookup.setdefault(entry.key.lower(), canonical)
            self.lookup.setdefault(entry.canonical.lower(), canonical)
        self.layers.append(PriceLayer(name, None, f"LiteLLM {map_version()} bundled model map"))

    def add_sheet(self, sheet: PriceSheet) -> None:
        for model, values in sheet.models.items():
            canonical = self._set(model, values, sheet.name, sheet.as_of, str(sheet.path or ""))
            if model in sheet.unverified:
                self.unverified.add(canonical)
            else:
                self.unverified.discard(canonical)
            self.history.setdefault(canonical, []).append(
                (sheet.effective_from, self.rates[canonical])
            )
        self.aliases.extend(sheet.aliases)
        if sheet.featured:
            self.featured = sheet.featured
        self.layers.append(PriceLayer(sheet.name, sheet.as_of, sheet.source))

    def add_overrides(self, overrides: Mapping[str, Mapping[str, Any]], source: str) -> None:
        for model, values in overrides.items():
            if not isinstance(values, Mapping):
                raise PricingError(
                    f"{source}: {model}: rates must be a mapping like {{input: 1, output: 2}}"
                )
            checked = rates_from_mapping(model, values, sheet="override", as_of=None, where=source)
            canonical = self._set(model, checked, "override", None, source)
            self.unverified.discard(canonical)
            # An override holds at every date (on top of the newest sheet).
            self.history.setdefault(canonical, []).append((None, self.rates[canonical]))
        self.layers.append(PriceLayer("override", None, source))

    def _set(
        self,
        model: str,
        values: Mapping[str, Any],
        sheet: str,
        as_of: str | None,
        where: str,
    ) -> str:
        canonical = self._resolve(model) or model
        current = self.rates.get(canonical)
        if current is not None:
            self.history.setdefault(canonical, [(None, current)])
            self.rates[canonical] = current.updated(values, sheet=sheet, as_of=as_of)
        else:
            missing = [key for key in ("input", "output") if values.get(key) is None]
            if missing:
                raise PricingError(
                    f"{where}: {model}: no known price to start from, so '{missing[0]}' "
                    "is required (USD per 1M tokens)"
                )
            self.rates[canonical] = Rates(
                model=canonical, sheet=sheet, as_of=as_of, **_full(values)
            )
            self.modes.setdefault(canonical, "chat")
        self.lookup.setdefault(model.lower(), canonical)
        return canonical

    def _resolve(self, model: str) -> str | None:
        low = model.lower()
        if low in self.lookup:
            return self.lookup[low]
        prefix, _, rest = low.partition("/")
        if rest and prefix in PROVIDER_ALIASES:
            return self.lookup.get(f"{PROVIDER_ALIASES[prefix]}/{rest}")
        return None

    def build(self) -> PriceCatalog:
        return PriceCatalog(
            self.rates,
            modes=self.modes,
            lookup=self.lookup,
            aliases=self.aliases,
            featured=self.featured,
            layers=self.layers,
            unverified=self.unverified,
            history=self.history,
        )


def _full(values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {key: values.get(key) for key in RATE_KEYS}
    out["tiers"] = values.get("tiers", ())
    out["windows"] = values.get("windows", ())
    return out


def _utc_date(at: dt.datetime) -> dt.date:
    return (at.astimezone(dt.UTC) if at.tzinfo is not None else at).date()


def _route_prefix(canonical: str, provider: str) -> str:
    """``vertex_ai-language-models/x`` -> ``vertex_ai/x``: the prefix LiteLLM routes by."""
    head, sep, rest = canonical.partition("/")
    if sep and head == provider:
        if provider.startswith("vertex_ai-"):
            return f"vertex_ai/{rest}"
        if provider == "bedrock_converse":
            return f"bedrock/{rest}"
    return canonical


def _provider(canonical: str) -> str:
    return canonical.partition("/")[0] if "/" in canonical else ""


def _bare(name: str) -> str:
    return name.rsplit("/", 1)[-1]


def _norm(name: str) -> str:
    return re.sub(r"[._\s]+", "-", name.lower())


def _unique(candidates: Sequence[str]) -> str | None:
    distinct = list(dict.fromkeys(candidates))
    return distinct[0] if len(distinct) == 1 else None
