"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for tests.

It runs in a background thread (stdlib ``ThreadingHTTPServer``), answers
``POST /v1/chat/completions`` with SSE streaming (HTTP/1.1 chunked transfer, a
final usage chunk, ``data: [DONE]``) or a plain JSON body when ``stream`` is
false, and plays back a script of replies, one per request, so a test can make
the N-th request fail in a chosen way: an HTTP error with ``Retry-After``, a
hang before the first byte, a hang mid-stream, a malformed chunk, an early
disconnect, a stream without usage. Every request is recorded (path, headers,
JSON body), so privacy tests can assert that nothing was sent.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """How the server answers one request.

    ``status`` other than 200 sends ``error`` as an OpenAI-style error body.
    Stream faults are counted in content chunks sent: ``hang_after=1`` sends
    one text chunk, then hangs for ``hang_s``; ``hang_after=0`` hangs before
    any byte of the response (headers included).
    """

    text: tuple[str, ...] = ("Hello", ", ", "world", "!")
    reasoning: tuple[str, ...] = ()
    finish_reason: str = "stop"
    usage: dict[str, Any] | None = field(
        default_factory=lambda: {"prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15}
    )
    status: int = 200
    error: dict[str, Any] | None = None
    headers: tuple[tuple[str, str], ...] = ()
    hang_after: int | None = None
    hang_s: float = 30.0
    malformed_after: int | None = None
    disconnect_after: int | None = None
    chunk_delay_s: float = 0.0
    # (id, name, arguments JSON text) per call; the arguments stream in ``tool_pieces`` parts.
    tool_calls: tuple[tuple[str, str, str], ...] = ()
    tool_pieces: int = 3


def tool_call(call_id: str, name: str, arguments: str, **kwargs: Any) -> Reply:
    """A reply that calls ``name`` with ``arguments`` (JSON text), streamed in pieces."""
    return Reply(
        text=(), tool_calls=((call_id, name, arguments),), finish_reason="tool_calls", **kwargs
    )


def _pieces(text: str, n: int) -> list[str]:
    size = max(1, -(-len(text) // max(1, n)))
    return [text[i : i + size] for i in range(0, len(text), size)] or [""]


def ok(*text: str, usage: dict[str, Any] | None = None, **kwargs: Any) -> Reply:
    """A successful reply streaming ``text`` pieces (default ``Hello, world!``)."""
    pieces = text or Reply.text
    if usage is None:
        usage = {
            "prompt_tokens": 11,
            "completion_tokens": len(pieces),
            "total_tokens": 11 + len(pieces),
        }
    return Reply(text=tuple(pieces), usage=usage, **kwargs)


def error(
    status: int,
    message: str = "scripted failure",
    *,
    type_: str = "server_error",
    code: str | None = None,
    retry_after: str | None = None,
) -> Reply:
    """An HTTP error reply with an OpenAI-style error body."""
    headers: tuple[tuple[str, str], ...] = ()
    if retry_after is not None:
        headers = (("Retry-After", retry_after),)
    return Reply(
        status=status,
        error={"error": {"message": message, "type": type_, "param": None, "code": code}},
        headers=headers,
    )


def no_usage(*text: str) -> Reply:
    """A successful stream that never sends a usage chunk."""
    return Reply(text=tuple(text) or Reply.text, usage=None)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as received; ``headers`` keys are lower-case."""

    method: str
    path: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    at: float


class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients that hang up (cancelled streams, probes) are part of the script.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class OpenAIServer:
    """The server plus its script and its record of requests.

    Replies are taken from the script in order; when it is empty, ``default``
    answers. Use as a context manager, or call ``start()``/``stop()``.
    """

    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or ok()
        self.models: list[str] = []  # what GET /v1/models lists
        self._script: deque[Reply] = deque()
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        # Set on stop() so a scripted hang ends and the handler thread exits.
        self._stopping = threading.Event()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- script and record -------------------------------------------------
    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def _next_reply(self) -> Reply:
        with self._lock:
            return self._script.popleft() if self._script else self.default

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        """How many chat-completion requests reached the server."""
        with self._lock:
            return sum(1 for r in self._requests if r.path.endswith("/chat/completions"))

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()
            self._script.clear()

    # -- lifecycle ---------------------------------------------------------
    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """What a client passes as ``api_base``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self, port: int = 0) -> OpenAIServer:
        """Listen on ``port`` (0: any free port) of 127.0.0.1."""
        handler = _make_handler(self)
        httpd = _QuietServer(("127.0.0.1", port), handler)
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> OpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _sleep(self, seconds: float) -> bool:
        """Sleep, but wake at stop(); True when stopped meanwhile."""
        return self._stopping.wait(seconds)


def _chunk(
    model: str, delta: dict[str, Any], finish: str | None = None, created: int = 0
) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def _stream_events(reply: Reply, model: str, include_usage: bool) -> Iterator[tuple[bool, bytes]]:
    """(is_content, SSE event bytes) in order; content events count toward fault positions."""
    created = int(time.time())

    def event(obj: dict[str, Any]) -> bytes:
        return f"data: {json.dumps(obj)}\n\n".encode()

    yield False, event(_chunk(model, {"role": "assistant", "content": ""}, created=created))
    for piece in reply.reasoning:
        yield True, event(_chunk(model, {"reasoning_content": piece}, created=created))
    for piece in reply.text:
        yield True, event(_chunk(model, {"content": piece}, created=created))
    for index, (call_id, name, arguments) in enumerate(reply.tool_calls):
        head = {
            "index": index,
            "id": call_id,
            "type": "function",
            "function": {"name": name, "arguments": ""},
        }
        yield True, event(_chunk(model, {"tool_calls": [head]}, created=created))
        for piece in _pieces(arguments, reply.tool_pieces):
            part = {"index": index, "function": {"arguments": piece}}
            yield True, event(_chunk(model, {"tool_calls": [part]}, created=created))
    yield False, event(_chunk(model, {}, reply.finish_reason, created=created))
    if include_usage and reply.usage is not None:
        usage_chunk = _chunk(model, {}, created=created)
        usage_chunk["choices"] = []
        usage_chunk["usage"] = reply.usage
        yield False, event(usage_chunk)
    yield False, b"data: [DONE]\n\n"


def _make_handler(server: OpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Small SSE chunks go out at once (no Nagle wait for the client's delayed ACK).
        disable_nagle_algorithm = True
        # A stuck client must not pin a thread forever.
        timeout = 60

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
            pass  # keep test output clean

        def _headers(self) -> dict[str, str]:
            return {name.lower(): value for name, value in self.headers.items()}

        def _read_body(self) -> dict[str, Any] | None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            if not raw:
                return None
            try:
                parsed = json.loads(raw)
            except json.JSONDecodeError:
                return {"_raw": raw.decode("utf-8", "replace")}
            return parsed if isinstance(parsed, dict) else {"_raw": parsed}

        def _send_json(
            self, status: int, obj: dict[str, Any], headers: tuple[tuple[str, str], ...] = ()
        ) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802
            server._record(RecordedRequest("GET", self.path, self._headers(), None, time.time()))
            if self.path.rstrip("/").endswith("/models"):
                listed = [{"id": name, "object": "model"} for name in server.models]
                self._send_json(200, {"object": "list", "data": listed})
            else:
                self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})

        def do_POST(self) -> None:  # noqa: N802
            body = self._read_body()
            server._record(RecordedRequest("POST", self.path, self._headers(), body, time.time()))
            if not self.path.rstrip("/").endswith("/chat/completions"):
                self._send_json(404, {"error": {"message": "not found", "type": "not_found"}})
                return
            reply = server._next_reply()
            if reply.hang_after == 0:
                server._sleep(reply.hang_s)
                self.close_connection = True
                return
            if reply.status != 200:
                self._send_json(reply.status, reply.error or {}, reply.headers)
                return
            body = body or {}
            model = str(body.get("model", "test-model"))
            if body.get("stream"):
                options = body.get("stream_options") or {}
                self._stream(reply, model, bool(options.get("include_usage")))
            else:
                self._complete(reply, model)

        def _complete(self, reply: Reply, model: str) -> None:
            message: dict[str, Any] = {"role": "assistant", "content": "".join(reply.text)}
            if reply.reasoning:
                message["reasoning_content"] = "".join(reply.reasoning)
            if reply.tool_calls:
                message["tool_calls"] = [
                    {"id": i, "type": "function", "function": {"name": n, "arguments": a}}
                    for i, n, a in reply.tool_calls
                ]
            obj: dict[str, Any] = {
                "id": "chatcmpl-test",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [{"index": 0, "message": message, "finish_reason": reply.finish_reason}],
            }
            if reply.usage is not None:
                obj["usage"] = reply.usage
            self._send_json(200, obj, reply.headers)

        def _write_chunk(self, data: bytes) -> None:
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        def _stream(self, reply: Reply, model: str, include_usage: bool) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Cache-Control", "no-cache")
            self.send_header("Transfer-Encoding", "chunked")
            for name, value in reply.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.flush()
            sent = 0
            try:
                for is_content, data in _stream_events(reply, model, include_usage):
                    if is_content:
                        if reply.hang_after is not None and sent == reply.hang_after:
                            server._sleep(reply.hang_s)
                            self._abort()
                            return
                        if reply.malformed_after is not None and sent == reply.malformed_after:
                            self._write_chunk(b'data: {"id": "chatcmpl-test", "choices": [{\n\n')
                        if reply.disconnect_after is not None and sent == reply.disconnect_after:
                            self._abort()
                            return
                        if reply.chunk_delay_s:
                            if server._sleep(reply.chunk_delay_s):
                                self._abort()
                                return
                        sent += 1
                    self._write_chunk(data)
                self._write_chunk(b"")  # the zero-length chunk ends the chunked body
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        def _abort(self) -> None:
            """Drop the connection mid-body, without the terminating chunk."""
            self.close_connection = True
            try:
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    return Handler
