"""The cloud backend: any model LiteLLM can reach, streamed as ds4router events.

One ``litellm.acompletion(stream=True)`` call per attempt, in two steps: open (send
it and wait for the provider's stream) and drain (its chunks as events). Timeouts: connect
(handed to the HTTP client), first token, and total (enforced here, so a hung
provider cannot hold a request longer than configured); after the first token a
stall longer than the first-token timeout also ends the stream. Failures before
the first token on 429, 5xx and connection errors are retried with exponential
backoff (honouring ``Retry-After``); once a token has streamed nothing is
retried, because the user has already seen part of the answer.

API keys are read from the environment by variable name at call time, passed
to LiteLLM for that call only, and scrubbed from every message this module
produces. LiteLLM is imported on first use, with its remote price-map fetch
and its own logging turned off.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

from ds4router.backends import cloud_errors
from ds4router.backends.base import BackendRequest
from ds4router.backends.endpoints import ModelTarget, resolve
from ds4router.backends.flights import Flight, Flights
from ds4router.backends.health import FailureWindow, Health, Reachability
from ds4router.config.schema import CloudConfig
from ds4router.events import (
    BackendEvent,
    Done,
    Failed,
    ReasoningDelta,
    TextDelta,
    TokenUsage,
    ToolCallDelta,
    ToolCallStart,
    failed,
)

T = TypeVar("T")

# Sent as the key to a model with its own api_base and no api_key_env, so the
# client library does not go looking for (and forward) a provider's real key.
KEYLESS_PLACEHOLDER = "ds4router-no-key"

# BackendRequest.extra may not override what this module controls.
_RESERVED = frozenset(
    {
        "model",
        "messages",
        "stream",
        "stream_options",
        "api_key",
        "api_base",
        "base_url",
        "timeout",
        "max_retries",
        "num_retries",
    }
)

# Retried before the first token: 429, 5xx, connection errors, and LiteLLM's own
# timeout, which fires here only on connect (first-token and total are ours).
_RETRIED = frozenset({"rate_limit", "unavailable", "timeout"})

_quiet_lock = threading.Lock()
_quieted = False


def load_litellm() -> Any:
    """Import LiteLLM offline and silent (its first import takes seconds: call lazily)."""
    global _quieted
    # Without this LiteLLM downloads its model price map at import time.
    os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    import litellm

    with _quiet_lock:
        if not _quieted:
            litellm.suppress_debug_info = True
            litellm.set_verbose = False
            # Message bodies must never land in LiteLLM's logs or callbacks.
            litellm.turn_off_message_logging = True
            # Its success logging and cost callbacks cost ~10 ms of CPU a request (measured
            # by bench/serve.py); the ledger prices usage itself, from the provider's chunks.
            litellm.disable_streaming_logging = True
            litellm.logging = False
            for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "LiteLLM Proxy.stdout"):
                logging.getLogger(name).setLevel(logging.CRITICAL + 1)
            _quieted = True
    return litellm


class _Cancelled(Exception):
    pass


class _TimedOut(Exception):
    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


@dataclass
class _Answer:
    text: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    finish_reason: str | None = None
    usage: Any = None
    # provider's tool-call index -> ours (0, 1, ... in the order the calls began)
    tool_calls: dict[int, int] = field(default_factory=dict)
    tool_arguments: list[str] = field(default_factory=list)

    @property
    def started(self) -> bool:
        return bool(self.text or self.reasoning or self.tool_calls)


@dataclass
class _Call:
    """One stream's fixed parts across its attempts (and the current first-token deadline)."""

    request: BackendRequest
    target: ModelTarget
    flight: Flight
    kwargs: dict[str, Any]
    secrets: tuple[str, ...]
    deadline: float
    token_deadline: float = 0.0


class CloudBackend:
    """``Backend`` for cloud models through LiteLLM.

    ``env`` is where keys are read (default ``os.environ``, read at each call).
    ``backoff_base_s``/``backoff_max_s``/``jitter_s`` shape the retry delays and
    ``retry_after_max_s`` caps a provider's ``Retry-After``; tests pass small
    values to stay fast.
    """

    def __init__(
        self,
        config: CloudConfig | None = None,
        *,
        env: Mapping[str, str] | None = None,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 8.0,
        jitter_s: float = 0.25,
        retry_after_max_s: float = 30.0,
        reachability: Reachability | None = None,
        failures: FailureWindow | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config or CloudConfig()
        self._env: Mapping[str, str] = os.environ if env is None else env
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.jitter_s = jitter_s
        self.retry_after_max_s = retry_after_max_s
        self.reachability = reachability or Reachability()
        self.failures = failures or FailureWindow()
        self._rng = rng or random.Random()
        self._flights = Flights()

    # -- protocol ----------------------------------------------------------
    def cancel(self) -> None:
        """End every stream in flight with ``Failed(kind="cancelled")``; thread-safe."""
        self._flights.cancel_all()

    def health(self, model: str | None = None) -> Health:
        """Health of ``model`` (what the router should ask), or of the configured models.

        Blocks for at most the connectivity check's timeout when the cached
        result is stale; the check opens a TCP connection and sends nothing.
        """
        if model is not None:
            return self._target_health(resolve(model, self.config))
        if not self.config.models:
            return Health(
                "not_configured",
                "no cloud models in the config (cloud.models); ask health(model) for a model "
                "reached through its provider's defaults",
            )
        results = [self._target_health(resolve(m.name, self.config)) for m in self.config.models]
        order = ("ready", "degraded", "offline", "not_configured", "loading")
        best = min(results, key=lambda h: order.index(h.status))
        return best

    def _target_health(self, target: ModelTarget) -> Health:
        problem = self._key_problem(target)
        if problem is not None:
            return Health("not_configured", problem)
        if target.endpoint is not None:
            probe = self.reachability.check(target.endpoint)
            if not probe.reachable:
                return Health("offline", f"cannot reach {probe.endpoint}: {probe.detail}")
        return self.failures.health(target.model)

    async def stream(self, request: BackendRequest) -> AsyncIterator[BackendEvent]:
        target = resolve(request.model, self.config)
        problem = self._key_problem(target)
        if problem is not None:
            yield failed("auth", problem)
            return
        if target.endpoint is not None:
            probe = self.reachability.cached(target.endpoint)
            if probe is not None and not probe.reachable:
                # Known offline a moment ago: fail now so the session falls back at once.
                age = time.monotonic() - probe.at
                yield failed(
                    "unavailable",
                    f"{request.model}: offline, cannot reach {probe.endpoint} "
                    f"({probe.detail}, checked {age:.0f}s ago); nothing was sent",
                )
                return
        with self._flights.track() as flight:
            async for event in self._run(request, target, flight):
                yield event

    # -- keys ----------------------------------------------------------------
    def _key(self, target: ModelTarget) -> str | None:
        if target.api_key_env is not None:
            value = self._env.get(target.api_key_env)
            return value or None
        return None

    def _key_problem(self, target: ModelTarget) -> str | None:
        if target.api_key_env is None or self._key(target) is not None:
            return None
        where = (
            "named in cloud.models[].api_key_env"
            if target.configured
            else f"the default for {target.model.split('/', 1)[0]} models"
        )
        return (
            f"{target.model}: environment variable {target.api_key_env} is not set "
            f"({where}); export it with your API key"
        )

    # -- the request -----------------------------------------------------------
    def _kwargs(self, request: BackendRequest, target: ModelTarget, key: str | None) -> dict:
        import httpx  # a LiteLLM dependency; imported with it

        timeouts = self.config.timeouts
        kwargs: dict[str, Any] = {
            key_: value for key_, value in request.extra.items() if key_ not in _RESERVED
        }
        kwargs.update(
            model=request.model,
            messages=request.messages,
            stream=True,
            stream_options={"include_usage": True},
            # Retries are ours (only before the first token); LiteLLM's and the
            # OpenAI client's own retries would multiply them.
            max_retries=0,
            num_retries=0,
            timeout=httpx.Timeout(timeouts.total_s, connect=timeouts.connect_s),
            drop_params=True,
        )
        if target.api_base:
            kwargs["api_base"] = target.api_base
        if key is not None:
            kwargs["api_key"] = key
        elif target.keyless:
            kwargs["api_key"] = KEYLESS_PLACEHOLDER
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.temperature is not None:
            kwargs["temperature"] = request.temperature
        if request.top_p is not None:
            kwargs["top_p"] = request.top_p
        if request.stop:
            kwargs["stop"] = list(request.stop)
        if request.tools:
            kwargs["tools"] = [dict(tool) for tool in request.tools]
        return kwargs

    async def _run(
        self, request: BackendRequest, target: ModelTarget, flight: Flight
    ) -> AsyncIterator[BackendEvent]:
        """Open the request, drain its stream, and retry while nothing was streamed yet."""
        call = self._call(request, target, flight)
        answer = _Answer()
        attempt = 0
        while True:
            response: Any = None
            retry_in: float | None = None
            try:
                response = await self._open(call)
                async for event in self._drain(call, response, answer):
                    yield event
                provider_usage = _provider_usage(response, answer.usage)
                self.failures.record_success(request.model)
                yield provider_usage or self._estimate(request, answer)
                yield Done(answer.finish_reason or "stop")
                return
            except _Cancelled:
                outcome = failed(
                    "cancelled", f"{request.model}: cancelled", after_tokens=answer.started
                )
            except _TimedOut as exc:
                outcome = self._timed_out(call, exc, answer)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # every provider error becomes an event
                outcome, retry_in = await self._provider_failure(call, exc, answer, attempt)
            finally:
                if response is not None:
                    await _close(response)
            if retry_in is not None:
                try:
                    await self._wait(asyncio.sleep(retry_in), call.deadline, flight, "total")
                except _Cancelled:
                    outcome = failed("cancelled", f"{request.model}: cancelled")
                except _TimedOut:
                    pass
                else:
                    attempt += 1
                    continue
            self.failures.record_failure(request.model, outcome.kind, outcome.message)
            if answer.started:
                yield self._estimate(request, answer)
            if attempt and outcome.kind != "cancelled":
                outcome = replace(
                    outcome, message=f"{outcome.message} (after {attempt + 1} attempts)"
                )
            yield outcome
            return

    def _call(self, request: BackendRequest, target: ModelTarget, flight: Flight) -> _Call:
        key = self._key(target)
        return _Call(
            request=request,
            target=target,
            flight=flight,
            kwargs=self._kwargs(request, target, key),
            secrets=tuple(s for s in (key,) if s),
            deadline=time.monotonic() + self.config.timeouts.total_s,
        )

    async def _open(self, call: _Call) -> Any:
        """Send the request: the provider's stream, once it answers (within the first-token
        timeout); the first-token clock keeps running into the drain."""
        litellm = load_litellm()
        call.token_deadline = min(
            call.deadline, time.monotonic() + self.config.timeouts.first_token_s
        )
        return await self._wait(
            litellm.acompletion(**call.kwargs), call.token_deadline, call.flight, "first token"
        )

    async def _drain(
        self, call: _Call, response: Any, answer: _Answer
    ) -> AsyncIterator[BackendEvent]:
        """The stream's chunks as events, each within its timeout. Holds nothing to clean
        up: ``_run`` closes the response however this ends."""
        timeouts = self.config.timeouts
        iterator = response.__aiter__()
        while True:
            if answer.started:
                until = min(call.deadline, time.monotonic() + timeouts.first_token_s)
                what = "total" if until == call.deadline else "next token"
            else:
                until, what = call.token_deadline, "first token"
            more, chunk = await self._wait(_next(iterator), until, call.flight, what)
            if not more:
                return
            for event in _events(chunk, answer):
                yield event

    def _timed_out(self, call: _Call, exc: _TimedOut, answer: _Answer) -> Failed:
        timeouts = self.config.timeouts
        limit = {
            "first token": f"no first token within {timeouts.first_token_s:g}s "
            "(cloud.timeouts.first_token_s)",
            "next token": f"the stream stalled for {timeouts.first_token_s:g}s "
            "(cloud.timeouts.first_token_s)",
            "total": f"no complete answer within {timeouts.total_s:g}s (cloud.timeouts.total_s)",
        }[exc.what]
        return failed("timeout", f"{call.request.model}: {limit}", after_tokens=answer.started)

    async def _provider_failure(
        self, call: _Call, exc: Exception, answer: _Answer, attempt: int
    ) -> tuple[Failed, float | None]:
        """A provider's error as a ``Failed`` (no key in it), and the delay before a retry
        (None: no retry: something was streamed, the host is offline, or none is left)."""
        timeouts = self.config.timeouts
        kind = cloud_errors.classify(exc)
        detail = cloud_errors.redact(cloud_errors.clean_detail(exc), call.secrets)
        reason = cloud_errors.connection_detail(exc)
        if reason and cloud_errors.is_connection_error(exc):
            detail = f"could not connect ({reason})"
        if kind == "timeout":
            # The HTTP client's timeout: ours (first token, total) fire first.
            detail = f"{detail} (cloud.timeouts.connect_s is {timeouts.connect_s:g}s)"
        message = cloud_errors.describe(
            kind,
            call.request.model,
            detail,
            code=cloud_errors.status_code(exc) if kind not in ("unavailable", "timeout") else None,
            key_env=call.target.api_key_env,
        )
        outcome = failed(
            kind, cloud_errors.redact(message, call.secrets), after_tokens=answer.started
        )
        retry_in: float | None = None
        note = ""
        if not answer.started:
            note = await self._offline_note(exc, call.target)
            if not note and attempt < self.config.retries and kind in _RETRIED:
                retry_in, note = self._retry_delay(exc, attempt, call.deadline)
        if note:
            outcome = replace(outcome, message=f"{outcome.message}; {note}")
        return outcome, retry_in

    async def _offline_note(self, exc: BaseException, target: ModelTarget) -> str:
        """After a failed connection, check the host: say so when it cannot be reached.

        The probe's result is cached, so the next request fails at once (and the
        router sees ``offline``) instead of each one waiting for its own error;
        retrying an unreachable host would only delay the fallback.
        """
        if target.endpoint is None or not cloud_errors.is_connection_error(exc):
            return ""
        probe = await asyncio.to_thread(self.reachability.check, target.endpoint, fresh=True)
        if probe.reachable:
            return ""
        return f"offline: cannot reach {probe.endpoint} ({probe.detail})"

    def _retry_delay(
        self, exc: BaseException, attempt: int, deadline: float
    ) -> tuple[float | None, str]:
        """Seconds to wait before the next attempt (None: don't retry), and why not."""
        hinted = cloud_errors.retry_after_s(exc)
        if hinted is not None:
            delay = min(hinted, self.retry_after_max_s)
        else:
            delay = min(self.backoff_max_s, self.backoff_base_s * (2**attempt))
        delay += self._rng.uniform(0, self.jitter_s)
        if time.monotonic() + delay >= deadline:
            return None, "no time left to retry within cloud.timeouts.total_s"
        return delay, ""

    async def _wait(self, awaitable: Awaitable[T], until: float, flight: Flight, what: str) -> T:
        """Await ``awaitable`` unless ``until`` passes or the stream is cancelled first."""
        task = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(flight.cancelled.wait())
        try:
            done, _ = await asyncio.wait(
                {task, stop},
                timeout=max(0.0, until - time.monotonic()),
                return_when=asyncio.FIRST_COMPLETED,
            )
        except BaseException:
            task.cancel()
            stop.cancel()
            raise
        stop.cancel()
        if task in done:
            return task.result()
        task.cancel()
        await asyncio.wait({task})
        if not task.cancelled():
            task.exception()  # retrieved, so asyncio does not warn about it
        if flight.cancelled.is_set():
            raise _Cancelled()
        raise _TimedOut(what)

    def _estimate(self, request: BackendRequest, answer: _Answer) -> TokenUsage:
        """Usage counted locally with LiteLLM's tokenizer, marked estimated."""
        litellm = load_litellm()
        text = "".join(answer.text) + "".join(answer.tool_arguments)
        reasoning = "".join(answer.reasoning)

        def count(**kwargs: Any) -> int:
            try:
                return int(litellm.token_counter(model=request.model, **kwargs))
            except Exception:  # an odd message shape: a rough count beats none
                chars = len(str(kwargs.get("text") or kwargs.get("messages") or ""))
                return (chars + 3) // 4

        output_reasoning = count(text=reasoning) if reasoning else 0
        output_text = count(text=text) if text else 0
        return TokenUsage(
            input_tokens=count(messages=request.messages),
            output_tokens=output_text + output_reasoning,
            reasoning_tokens=output_reasoning,
            estimated=True,
        )


async def _next(iterator: Any) -> tuple[bool, Any]:
    try:
        return True, await iterator.__anext__()
    except StopAsyncIteration:
        return False, None


async def _close(response: Any) -> None:
    close = getattr(response, "aclose", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # closing a broken stream may fail again; nothing left to do
        pass


def _events(chunk: Any, answer: _Answer) -> list[BackendEvent]:
    events: list[BackendEvent] = []
    usage = getattr(chunk, "usage", None)
    if usage is not None:
        answer.usage = usage
    choices = getattr(chunk, "choices", None) or []
    if not choices:
        return events
    choice = choices[0]
    if getattr(choice, "finish_reason", None):
        answer.finish_reason = str(choice.finish_reason)
    delta = getattr(choice, "delta", None)
    if delta is None:
        return events
    reasoning = getattr(delta, "reasoning_content", None)
    if isinstance(reasoning, str) and reasoning:
        answer.reasoning.append(reasoning)
        events.append(ReasoningDelta(reasoning))
    content = getattr(delta, "content", None)
    if isinstance(content, str) and content:
        answer.text.append(content)
        events.append(TextDelta(content))
    for call in getattr(delta, "tool_calls", None) or []:
        events.extend(_tool_events(call, answer))
    return events


def _tool_events(call: Any, answer: _Answer) -> list[BackendEvent]:
    """One streamed tool-call piece: a start the first time its index is seen, then the
    arguments' text as it comes (providers send the id and name once, first)."""
    events: list[BackendEvent] = []
    raw_index = getattr(call, "index", None)
    key = raw_index if isinstance(raw_index, int) else len(answer.tool_calls)
    function = getattr(call, "function", None)
    name = getattr(function, "name", None) if function is not None else None
    arguments = getattr(function, "arguments", None) if function is not None else None
    if key not in answer.tool_calls:
        ours = len(answer.tool_calls)
        answer.tool_calls[key] = ours
        answer.tool_arguments.append("")
        call_id = getattr(call, "id", None) or f"call_{ours}"
        events.append(ToolCallStart(ours, str(call_id), str(name or "")))
    ours = answer.tool_calls[key]
    if isinstance(arguments, str) and arguments:
        answer.tool_arguments[ours] += arguments
        events.append(ToolCallDelta(ours, arguments))
    return events


def _provider_usage(response: Any, usage: Any) -> TokenUsage | None:
    """The provider's own usage, or None when it sent none.

    LiteLLM fills in a usage chunk from its tokenizer when the provider omitted
    one; the provider's chunks (kept on the stream wrapper) tell the two apart.
    """
    if usage is None:
        return None
    chunks = getattr(response, "chunks", None)
    if isinstance(chunks, list) and not any(getattr(c, "usage", None) for c in chunks):
        return None
    prompt = _int(getattr(usage, "prompt_tokens", 0))
    completion = _int(getattr(usage, "completion_tokens", 0))
    prompt_details = getattr(usage, "prompt_tokens_details", None)
    completion_details = getattr(usage, "completion_tokens_details", None)
    cached = _int(getattr(prompt_details, "cached_tokens", 0))
    cache_write = _int(getattr(usage, "cache_creation_input_tokens", 0)) or _int(
        getattr(prompt_details, "cache_creation_tokens", 0)
    )
    reasoning = _int(getattr(completion_details, "reasoning_tokens", 0))
    return TokenUsage(
        input_tokens=prompt,
        cached_input_tokens=min(cached, prompt),
        cache_write_tokens=min(cache_write, prompt - min(cached, prompt)),
        output_tokens=completion,
        reasoning_tokens=min(reasoning, completion),
        estimated=False,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and value > 0 else 0


__all__ = ["CloudBackend", "KEYLESS_PLACEHOLDER", "load_litellm"]
