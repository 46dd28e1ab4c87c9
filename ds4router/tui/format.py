"""Words and numbers as the TUI shows them: badges, stats lines, money, budget levels.

Pure functions over plain values (no Textual), so they are tested directly and
shared by the widgets and the screens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pricing.report_render import tokens as _tokens
from pricing.report_render import usd


def money(value: float | None) -> str:
    """$1.23, $0.0042, $0.000062 below a cent, or 'unpriced' for a missing price (never $0)."""
    if value is not None and 0 < abs(value) < 0.01:
        return f"${value:.6f}"
    return usd(value)


def count(value: int) -> str:
    return _tokens(value)


def short_model(model: str | None) -> str:
    """The part after the provider, for tight places (``anthropic/x`` -> ``x``)."""
    if not model:
        return "-"
    return model.split("/", 1)[1] if "/" in model else model


@dataclass(frozen=True)
class BadgeParts:
    """What the badge under an answer says."""

    where: str  # LOCAL | CLOUD | REFUSED
    model: str
    rule: str
    privacy: str
    task: str

    @property
    def text(self) -> str:
        parts = [self.where] + ([self.model] if self.model != "-" else []) + [f"rule {self.rule}"]
        if self.privacy:
            parts.append(self.privacy)
        if self.task:
            parts.append(self.task)
        return " · ".join(parts)


def badge_parts(
    target: str, model: str | None, rule: str | None, privacy: str = "", task: str = ""
) -> BadgeParts:
    where = {"local": "LOCAL", "cloud": "CLOUD"}.get(target, "REFUSED")
    return BadgeParts(where, model or "-", rule or "-", privacy, task)


def stats_line(priced: Any) -> str:
    """Tokens in/out, TTFT, tok/s, cost and saving of one answer (a session ``Priced``)."""
    parts = [f"in {count(int(priced.input_tokens))} · out {count(int(priced.output_tokens))} tok"]
    ttft = getattr(priced, "ttft_s", None)
    if ttft is not None:
        parts.append(f"TTFT {ttft:.2f} s")
    tok_s = getattr(priced, "tok_s", None)
    if tok_s is not None:
        parts.append(f"{tok_s:.1f} tok/s")
    cost = getattr(priced, "cost_usd", None)
    if getattr(priced, "unpriced", False) or cost is None:
        parts.append("unpriced")
    else:
        parts.append(money(cost))
    parts.append(saving_words(getattr(priced, "saving_usd", None), priced.reference_model))
    return " · ".join(p for p in parts if p)


def saving_words(saving: float | None, reference_model: str | None) -> str:
    if not reference_model:
        return ""
    ref = short_model(reference_model)
    if saving is None:
        return f"saving vs {ref} unknown"
    if saving >= 0:
        return f"saved {money(saving)} vs {ref}"
    return f"{money(-saving)} more than {ref}"


def history_stats_line(
    input_tokens: int | None, output_tokens: int | None, cost_usd: float | None, route: str | None
) -> str:
    """The stats of a message resumed from history (no timings are kept there)."""
    parts = [f"in {count(input_tokens or 0)} · out {count(output_tokens or 0)} tok"]
    if route in ("local", "cloud"):
        parts.append(money(cost_usd))
    return " · ".join(parts)


def budget_level(
    spent: float, cap: float | None, warn_at: Sequence[float]
) -> tuple[str, float | None]:
    """The bar's colour class and fill fraction.

    ``ok`` below the first threshold; then one step per threshold crossed
    (``warn``, ``high``), and ``over`` once the cap is reached; ``none`` when
    there is no cap.
    """
    if cap is None:
        return "none", None
    if cap <= 0:
        return ("over", 1.0) if spent > 0 else ("ok", 0.0)
    fraction = spent / cap
    if spent >= cap:
        return "over", fraction
    crossed = [t for t in sorted(warn_at) if t < 1.0 and fraction >= t]
    if not crossed:
        return "ok", fraction
    return ("warn" if len(crossed) == 1 else "high"), fraction


def bar(fraction: float | None, width: int) -> str:
    """A text bar of ``width`` cells, eighth-blocks at the edge."""
    if width <= 0:
        return ""
    value = 0.0 if fraction is None else min(max(fraction, 0.0), 1.0)
    eighths = round(value * width * 8)
    full, part = divmod(eighths, 8)
    partial = " ▏▎▍▌▋▊▉"[part] if part else ""
    text = "█" * full + partial
    return text + "░" * (width - len(text))


BLOCKS = " ▁▂▃▄▅▆▇█"


def column_chart(values: Sequence[float], height: int) -> list[str]:
    """Rows (top first) of a column chart: one character a value, eighth-block tops."""
    top = max(values, default=0.0)
    rows: list[list[str]] = [[" "] * len(values) for _ in range(height)]
    if top <= 0 or height <= 0:
        return ["".join(r) for r in rows]
    for x, value in enumerate(values):
        eighths = round(max(value, 0.0) / top * height * 8)
        if value > 0:
            eighths = max(eighths, 1)  # a day with any spend is visible
        for y in range(height):
            level = min(max(eighths - y * 8, 0), 8)
            rows[height - 1 - y][x] = BLOCKS[level]
    return ["".join(r) for r in rows]
