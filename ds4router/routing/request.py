"""A request as the user wrote it, its inline tags, and the estimate of its size."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ds4router.routing.levels import PrivacyLevel
from ds4router.targets import Target

PRIVACY_TAG = re.compile(r"(?<!\S)#(public|internal|confidential|secret)\b", re.IGNORECASE)
TASK_TAG = re.compile(r"(?<!\S)/task[ \t]+([A-Za-z][\w\-]*)")
PATH_TAG = re.compile(r"(?<!\S)@((?:[\w.\-~]+/)*[\w.\-]+)")


@dataclass(frozen=True)
class Attachment:
    """A file sent with the request: its path relative to the project, and its text.

    ``resolved`` is where the path leads after symlinks (``privacy.paths`` globs are
    matched on both); ``unreadable`` says the bytes could not be read as text (what
    could be read, if anything, is in ``text``), which raises the level to
    ``privacy.unreadable``.
    """

    path: str
    text: str
    resolved: str | None = None
    unreadable: bool = False


@dataclass(frozen=True)
class Request:
    text: str
    attachments: tuple[Attachment, ...] = ()
    model: Target | None = None  # an explicit `--model`: still subject to the privacy invariant


def privacy_tags(text: str) -> list[PrivacyLevel]:
    return [PrivacyLevel(m.group(1).lower()) for m in PRIVACY_TAG.finditer(text)]


def task_tag(text: str) -> str | None:
    """The last ``/task NAME`` in the text, if any."""
    found = TASK_TAG.findall(text)
    return found[-1].lower() if found else None


def path_mentions(text: str) -> list[str]:
    """``@path`` mentions, in order, without duplicates (e-mail addresses are not mentions)."""
    seen: dict[str, None] = {}
    for match in PATH_TAG.finditer(text):
        seen.setdefault(match.group(1), None)
    return list(seen)


def strip_tags(text: str) -> str:
    """The text a model should see: privacy and task tags removed (``@path`` kept)."""
    text = PRIVACY_TAG.sub("", text)
    text = TASK_TAG.sub("", text)
    return re.sub(r"[ \t]{2,}", " ", text).strip()


def estimate_tokens(text: str) -> int:
    """The old quick estimate (3.6 characters a token), which reads as low as 0.27x a
    real count: nothing decides on it any more (see :mod:`ds4router.token_count`); it
    stays as the baseline the measurements in the tests compare against."""
    return (len(text) * 10 + 35) // 36 if text else 0
