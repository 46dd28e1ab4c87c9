"""Turning LiteLLM's exceptions into ``Failed`` kinds and one-line messages.

LiteLLM raises OpenAI-style exception classes for every provider; the kind is
read from the class first and from the HTTP status second, so a provider
LiteLLM maps loosely still lands on the right kind. Nothing here imports
litellm: classes are matched by name along the MRO, which keeps this module
cheap and testable without a provider.
"""

from __future__ import annotations

import email.utils
import re
import time
from typing import Any

from ds4router.events import ErrorKind

# Most specific first: ContextWindowExceededError is also a BadRequestError.
_BY_CLASS: tuple[tuple[str, ErrorKind], ...] = (
    ("ContextWindowExceededError", "context_window"),
    ("ContentPolicyViolationError", "content_policy"),
    ("AuthenticationError", "auth"),
    ("PermissionDeniedError", "auth"),
    ("RateLimitError", "rate_limit"),
    ("Timeout", "timeout"),
    ("APITimeoutError", "timeout"),
    ("TimeoutException", "timeout"),
    ("TimeoutError", "timeout"),
    ("ServiceUnavailableError", "unavailable"),
    ("InternalServerError", "unavailable"),
    ("BadGatewayError", "unavailable"),
    ("APIConnectionError", "unavailable"),
    ("ConnectError", "unavailable"),
    ("ClientConnectionError", "unavailable"),
    ("RemoteProtocolError", "unavailable"),
    ("ConnectionError", "unavailable"),
    ("NotFoundError", "bad_request"),
    ("UnprocessableEntityError", "bad_request"),
    ("UnsupportedParamsError", "bad_request"),
    ("BadRequestError", "bad_request"),
)

# Class names that mean the connection itself failed (no HTTP answer).
_CONNECTION_CLASSES = frozenset(
    {"APIConnectionError", "ConnectError", "ClientConnectionError", "ConnectionError"}
)


def _class_names(exc: BaseException) -> list[str]:
    return [cls.__name__ for cls in type(exc).__mro__]


def status_code(exc: BaseException) -> int | None:
    code = getattr(exc, "status_code", None)
    if isinstance(code, int):
        return code
    response = getattr(exc, "response", None)
    code = getattr(response, "status_code", None)
    return code if isinstance(code, int) else None


def classify(exc: BaseException) -> ErrorKind:
    names = _class_names(exc)
    # A mid-stream wrapper says little; the exception it wraps says what happened.
    inner = getattr(exc, "original_exception", None)
    if "MidStreamFallbackError" in names and isinstance(inner, BaseException) and inner is not exc:
        return classify(inner)
    for name, kind in _BY_CLASS:
        if name in names:
            return _refine(exc, kind)
    code = status_code(exc)
    if code is not None:
        if code in (401, 403):
            return "auth"
        if code == 429:
            return "rate_limit"
        if code in (408, 504):
            return "timeout"
        if code >= 500:
            return "unavailable"
        if code >= 400:
            return _refine(exc, "bad_request")
    if isinstance(exc, OSError):
        return "unavailable"
    return "internal"


_POLICY_CODES = frozenset({"content_policy_violation", "content_filter"})
_POLICY_WORDS = ("safety system", "content policy", "content management policy", "usage policy")
_CONTEXT_CODES = frozenset({"context_length_exceeded", "string_above_max_length"})


def _refine(exc: BaseException, kind: ErrorKind) -> ErrorKind:
    """A plain bad request whose error code or words say policy or context window.

    LiteLLM recognises only some providers' phrasings; the error ``code`` the
    provider sent is the surer sign.
    """
    if kind != "bad_request":
        return kind
    code = str(getattr(exc, "code", "") or "").lower()
    if code in _CONTEXT_CODES:
        return "context_window"
    if code in _POLICY_CODES:
        return "content_policy"
    text = str(getattr(exc, "message", "") or exc).lower()
    if any(words in text for words in _POLICY_WORDS):
        return "content_policy"
    return kind


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and the exceptions it was raised from, outermost first."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and all(current is not e for e in seen) and len(seen) < 20:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


def is_connection_error(exc: BaseException) -> bool:
    """True when no HTTP answer came back at all (refused, reset, DNS, connect timeout).

    LiteLLM reports a refused connection as an ``InternalServerError`` (HTTP
    500, synthesized); the exceptions it was raised from tell the truth.
    """
    for link in _chain(exc):
        if isinstance(link, ConnectionError | TimeoutError):
            return True
        if set(_class_names(link)) & _CONNECTION_CLASSES:
            return True
    return False


def connection_detail(exc: BaseException) -> str | None:
    """The OS's reason for a failed connection (``Connection refused``), when there is one."""
    for link in _chain(exc):
        if isinstance(link, OSError) and link.strerror:
            return str(link.strerror)
    return None


def retry_after_s(exc: BaseException, now: float | None = None) -> float | None:
    """The provider's ``Retry-After`` (seconds or an HTTP date), when it sent one."""
    headers: Any = getattr(exc, "litellm_response_headers", None)
    if headers is None:
        headers = getattr(getattr(exc, "response", None), "headers", None)
    if headers is None:
        return None
    try:
        value = headers.get("retry-after") or headers.get("Retry-After")
    except Exception:  # a foreign headers object; treat as absent
        return None
    if not value:
        return None
    value = str(value).strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


_PREFIX = re.compile(r"^(?:(?:litellm\.)?[A-Za-z_]*(?:Error|Exception|Timeout)\s*(?::|-)\s*)+")


def clean_detail(exc: BaseException, *, limit: int = 240) -> str:
    """The provider's words without LiteLLM's layers of class-name prefixes, on one line."""
    text = " ".join(str(exc).split())
    text = text.split(" Original exception:")[0]
    text = text.split(" Error_str:")[0]
    text = text.split(" Received Model Group=")[0]
    text = _PREFIX.sub("", text).strip()
    if not text:
        text = type(exc).__name__
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """``text`` with every secret (an API key) replaced; short values are left alone."""
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    return text


def describe(
    kind: ErrorKind,
    model: str,
    detail: str,
    *,
    code: int | None = None,
    key_env: str | None = None,
) -> str:
    """One line a user can act on."""
    http = f" (HTTP {code})" if code else ""
    if kind == "auth":
        source = f" from {key_env}" if key_env else ""
        return f"{model}: the provider rejected the API key{source}{http}: {detail}"
    if kind == "rate_limit":
        return f"{model}: rate limited by the provider{http}; try again later: {detail}"
    if kind == "context_window":
        return (
            f"{model}: the request is longer than the model's context window; "
            f"shorten it or pick a model with a larger window: {detail}"
        )
    if kind == "content_policy":
        return f"{model}: the provider refused the request under its content policy: {detail}"
    if kind == "unavailable":
        return f"{model}: the provider is unavailable{http}: {detail}"
    if kind == "bad_request":
        return f"{model}: the provider rejected the request{http}: {detail}"
    if kind == "timeout":
        return f"{model}: the provider timed out: {detail}"
    return f"{model}: unexpected error: {detail}"
