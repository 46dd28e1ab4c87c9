"""``ds4router serve``: the router as a local OpenAI- and Anthropic-compatible HTTP gateway.

Coding agents (Claude Code, Codex, aider, opencode, Continue) point their base URL here, so
their traffic goes through the same pipeline as ``ask`` and the TUI: the whole conversation is
classified (system prompt, every message, tool definitions, tool-call arguments, tool
results), the project's rules decide, the privacy invariant holds, and every request is
priced into the ledger with the client that sent it.

Modules: :mod:`.wire` (the parsed request both dialects become), :mod:`.openai_api` and
:mod:`.anthropic_api` (each dialect's request parsing, response and stream encoding, errors),
:mod:`.auth` (keys and projects), :mod:`.app` (the Starlette routes and lifecycle).

Why Starlette + uvicorn: the endpoints are a handful of JSON and SSE routes, Starlette is the
small, maintained ASGI core under FastAPI (no validation layer we would not use: the dialect
modules parse and answer errors in each client's own error shape), and uvicorn is the
standard ASGI server. SSE frames are written by ``sse-starlette``'s ``EventSourceResponse``,
which handles client disconnects (the request is cancelled, its ledger row says so) and
keep-alive pings.
"""
