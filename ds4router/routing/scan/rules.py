"""Credential rules as data: ``credentials.toml`` (shipped with the package) and how to run them.

A rule is tried only where it can match, so a hundred rules cost little more than one:

- ``prefixes``: tried where a long token starts with one of them. Tokens are found
  by translating the text to bytes and searching for runs of token characters
  (``bytes.find`` is far faster than a regex that tries every position); a
  two-character index then names the few rules to try at each run's start.
- ``literals``: ``str.find`` for each literal, then the regex near it.
- ``near``: for values that have no prefix of their own (a Heroku key is a UUID, a
  Twilio auth token 32 hex digits): tried on long tokens that hold a digit, only when
  the rule's context pattern occurs in the 100 characters before the token.

Written here rather than running gitleaks itself: it is a Go binary, and the scan
must run in-process on every keystroke of the TUI's preview.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from ds4router.routing.scan.findings import shannon_entropy
from ds4router.routing.scan.keywords import KeywordIndex, register

RULES_FILE = "credentials.toml"
_NEAR_WINDOW = 100
_TOKEN_MIN = 16  # the shortest prefixed credential below is at least this long


@dataclass(frozen=True)
class Rule:
    id: str
    kind: str
    regex: re.Pattern[str]
    prefixes: tuple[str, ...] = ()
    literals: tuple[str, ...] = ()
    back: int = 0
    near: re.Pattern[str] | None = None
    group: int | str = 0
    entropy: float = 0.0
    allow: tuple[re.Pattern[str], ...] = ()

    def accepts(self, value: str) -> bool:
        if self.entropy and shannon_entropy(value) < self.entropy:
            return False
        return not any(p.search(value) for p in self.allow)


@dataclass(frozen=True)
class Hit:
    rule: Rule
    start: int
    end: int


class RulesError(ValueError):
    """A rule in the data file that cannot be used (names the rule and the key)."""


def parse_rules(data: Mapping[str, Any], source: str = RULES_FILE) -> tuple[Rule, ...]:
    rules: list[Rule] = []
    seen: set[str] = set()
    for i, raw in enumerate(data.get("rule", ())):
        rid = str(raw.get("id", f"#{i + 1}"))
        if rid in seen:
            raise RulesError(f"{source}: rule {rid}: the id is used twice")
        seen.add(rid)
        try:
            rule = Rule(
                id=rid,
                kind=str(raw["kind"]),
                regex=re.compile(raw["regex"]),
                prefixes=tuple(raw.get("prefixes", ())),
                literals=tuple(raw.get("literals", ())),
                back=int(raw.get("back", 0)),
                near=re.compile(raw["near"], re.IGNORECASE) if "near" in raw else None,
                group=raw.get("group", 0),
                entropy=float(raw.get("entropy", 0.0)),
                allow=tuple(re.compile(p) for p in raw.get("allow", ())),
            )
        except KeyError as exc:
            raise RulesError(f"{source}: rule {rid}: missing key {exc.args[0]}") from None
        except re.error as exc:
            raise RulesError(f"{source}: rule {rid}: bad regex ({exc})") from None
        if sum(bool(x) for x in (rule.prefixes, rule.literals, rule.near)) != 1:
            raise RulesError(f"{source}: rule {rid}: give exactly one of prefixes, literals, near")
        rules.append(rule)
    return tuple(rules)


@lru_cache(maxsize=1)
def default_rules() -> RuleSet:
    data = tomllib.loads(resources.files(__package__).joinpath(RULES_FILE).read_text("utf-8"))
    return RuleSet(parse_rules(data))


def _table(chars: str) -> bytes:
    return bytes(97 if chr(i) in chars else 32 for i in range(256))


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
TOKEN_TABLE = _table(_ALNUM + "_-")
_DOTTED = frozenset(_ALNUM + "_-.")
_DIGITS = frozenset("0123456789")


def runs(text: str, table: bytes, min_len: int) -> Iterator[tuple[int, int]]:
    """Spans of runs of the characters ``table`` maps to 'a' (all others map to ' '), at
    least ``min_len`` long. ``bytes.find`` for the start and the end of each run: faster
    than a regex, which would retry at every position inside a run."""
    mapped = text.encode("ascii", "replace").translate(table)  # one byte a code point
    needle = b"a" * min_len
    pos = mapped.find(needle)
    while pos != -1:
        end = mapped.find(b" ", pos + min_len)
        if end == -1:
            end = len(mapped)
        yield pos, end
        pos = mapped.find(needle, end)


class RuleSet:
    """Rules indexed for the three ways of finding where to try them."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.rules = tuple(rules)
        self.kinds = frozenset(r.kind for r in rules)
        self._by_prefix: dict[str, list[tuple[str, Rule]]] = {}
        for rule in rules:
            for literal in rule.prefixes:
                self._by_prefix.setdefault(literal[:2], []).append((literal, rule))
        self._literal = [(lit, r) for r in rules for lit in r.literals]
        register(lit for lit, _ in self._literal)
        self._near = [r for r in rules if r.near is not None]
        patterns = [r.near.pattern for r in self._near if r.near is not None]
        self._any_near = re.compile("|".join(f"(?:{p})" for p in patterns), re.IGNORECASE)

    def scan(self, text: str, kw: KeywordIndex, off: frozenset[str] = frozenset()) -> Iterator[Hit]:
        tokens = list(runs(text, TOKEN_TABLE, _TOKEN_MIN))
        yield from self._prefixed(text, tokens, off)
        yield from self._literals(text, kw, off)
        yield from self._nearby(text, tokens, off)

    def _hit(self, rule: Rule, match: re.Match[str] | None) -> Hit | None:
        if match is None:
            return None
        start, end = match.span(rule.group)
        if start < 0 or not rule.accepts(match.string[start:end]):
            return None
        return Hit(rule, start, end)

    def _prefixed(
        self, text: str, tokens: Sequence[tuple[int, int]], off: frozenset[str]
    ) -> Iterator[Hit]:
        index = self._by_prefix
        for start, _end in tokens:
            if start > 0 and text[start - 1] == ".":
                # "SG.xxx", "hvs.xxx": a dotted prefix sits before the run of token characters.
                begin = start - 1
                while begin > 0 and start - begin < 8 and text[begin - 1] in _DOTTED:
                    begin -= 1
                start = next(
                    (i for i in range(begin, start) if text[i - 1 : i] not in _DOTTED), begin
                )
            for literal, rule in index.get(text[start : start + 2], ()):
                if rule.kind in off or not text.startswith(literal, start):
                    continue
                hit = self._hit(rule, rule.regex.match(text, start))
                if hit is not None:
                    yield hit
                    break

    def _literals(self, text: str, kw: KeywordIndex, off: frozenset[str]) -> Iterator[Hit]:
        for literal, rule in self._literal:
            if rule.kind in off:
                continue
            done = -1
            for pos in kw.positions(literal.lower()):
                if pos < done or not text.startswith(literal, pos):
                    continue
                match = rule.regex.search(text, max(0, pos - rule.back), pos + 8192)
                hit = self._hit(rule, match)
                if hit is not None and match is not None and match.end() > pos:
                    yield hit
                    done = match.end()

    def _nearby(
        self, text: str, tokens: Sequence[tuple[int, int]], off: frozenset[str]
    ) -> Iterator[Hit]:
        rules = [r for r in self._near if r.kind not in off]
        if not rules:
            return
        for start, end in tokens:
            if _DIGITS.isdisjoint(text[start:end]):
                continue
            window = text[max(0, start - _NEAR_WINDOW) : start]
            if not self._any_near.search(window):
                continue
            for rule in rules:
                if rule.near is not None and rule.near.search(window):
                    hit = self._hit(rule, rule.regex.match(text, start))
                    if hit is not None:
                        yield hit
                        break
