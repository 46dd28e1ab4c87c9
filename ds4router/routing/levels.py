"""Privacy levels, ordered: public < internal < confidential < secret."""

from __future__ import annotations

from enum import StrEnum


class PrivacyLevel(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    CONFIDENTIAL = "confidential"
    SECRET = "secret"

    @property
    def rank(self) -> int:
        return _ORDER.index(self)

    # str's own comparisons would order the names alphabetically: define all four.
    def __lt__(self, other: object) -> bool:
        return _rank(self) < _rank(other)

    def __le__(self, other: object) -> bool:
        return _rank(self) <= _rank(other)

    def __gt__(self, other: object) -> bool:
        return _rank(self) > _rank(other)

    def __ge__(self, other: object) -> bool:
        return _rank(self) >= _rank(other)

    def __hash__(self) -> int:
        return str.__hash__(self)

    @classmethod
    def parse(cls, value: str) -> PrivacyLevel:
        try:
            return cls(value.lower())
        except ValueError:
            names = ", ".join(level.value for level in _ORDER)
            raise ValueError(f"unknown privacy level {value!r}; use one of {names}") from None

    def __str__(self) -> str:
        return self.value


_ORDER: list[PrivacyLevel] = [
    PrivacyLevel.PUBLIC,
    PrivacyLevel.INTERNAL,
    PrivacyLevel.CONFIDENTIAL,
    PrivacyLevel.SECRET,
]


def _rank(value: object) -> int:
    if not isinstance(value, PrivacyLevel):
        raise TypeError(f"cannot compare a privacy level with {type(value).__name__}")
    return _ORDER.index(value)


def max_level(*levels: PrivacyLevel) -> PrivacyLevel:
    """The highest of the given levels (public when none)."""
    return max(levels, key=lambda level: level.rank, default=PrivacyLevel.PUBLIC)
