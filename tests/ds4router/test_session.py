"""Sessions end to end: real router, real LiteLLM to a loopback server, real SQLite.

The local side is the scripted test backend (until the engine's LocalBackend
lands); the cloud side is the real ``CloudBackend`` talking to the loopback
OpenAI-compatible server, whose request count proves what was (not) sent.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml
from openai_server import OpenAIServer, Reply, error, ok
from scripted import ScriptedBackend, ScriptedReply, reply
from session_support import collect, factory, ledger_rows

from ds4router import paths
from ds4router.backends.cloud import CloudBackend
from ds4router.backends.health import Health
from ds4router.config.loader import LoadedConfig, deep_merge, load_config
from ds4router.events import (
    Done,
    Failed,
    FallbackTaken,
    Priced,
    Refused,
    Routed,
    TextDelta,
    TokenUsage,
)
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.router import Decision
from ds4router.sessions.history import History
from ds4router.sessions.session import (
    BackendUnavailable,
    Session,
    backend_for,
    compose_prompt,
)
from ds4router.targets import (
    LOCAL_MODEL,
    CloudModel,
    LocalEngine,
    Refuse,
)
from pricing.catalog import PriceCatalog
from pricing.ledger import Ledger, LedgerRow

KEY_ENV = "DS4_SESSION_TEST_KEY"
MODEL = "openai/gpt-4.1"
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-session-test-0000")


def project(tmp_path: Path, api_base: str, overrides: dict[str, Any] | None = None) -> LoadedConfig:
    """A project whose default route is gpt-4.1 at ``api_base``; local power as configured."""
    data: dict[str, Any] = {
        "project": "acme",
        "default": f"cloud:{MODEL}",
        "fallback": {"cloud_unavailable": "local", "local_unavailable": None},
        "cloud": {
            "models": [{"name": MODEL, "api_base": api_base, "api_key_env": KEY_ENV}],
            "timeouts": {"connect_s": 2, "first_token_s": 5, "total_s": 20},
            "retries": 1,
        },
        "local": {"power": {"watts": 90, "source": "configured"}},
    }
    data = deep_merge(data, overrides or {})
    directory = tmp_path / "acme"
    directory.mkdir(exist_ok=True)
    (directory / ".ds4router.yaml").write_text(yaml.safe_dump(data))
    return load_config(directory)


def text_of(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextDelta))


def catalog_rates(model: str) -> Any:
    rates = PriceCatalog.load(paths.configs_dir() / "prices").rates(model)
    assert rates is not None
    return rates


# --- the cloud path ---------------------------------------------------------------------


async def test_cloud_answer_is_streamed_priced_and_written_once(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    loaded = project(tmp_path, openai_server.base_url)
    session = Session(loaded, backend_factory=factory(ScriptedBackend()))
    events = await collect(session, "hello #internal /task explain")

    assert isinstance(events[0], Routed) and events[0].decision.target == CloudModel(MODEL)
    assert [type(e) for e in events[-3:]] == [TokenUsage, Done, Priced]
    assert text_of(events) == "Hello, world!"
    # Tags are for the router: the model gets the text without them.
    body = openai_server.requests[-1].body
    assert body is not None and body["messages"] == [{"role": "user", "content": "hello"}]

    rates = catalog_rates(MODEL)
    assert rates.sheet is not None and rates.sheet.startswith("litellm")  # the bundled map
    expected = (11 * rates.input + 4 * rates.output) / 1e6
    reference = catalog_rates(loaded.config.pricing.reference_model or "")
    counterfactual = (11 * reference.input + 4 * reference.output) / 1e6
    priced = events[-1]
    assert priced.cost_usd == pytest.approx(expected)
    assert priced.counterfactual_usd == pytest.approx(counterfactual)
    assert priced.saving_usd == pytest.approx(counterfactual - expected)
    assert (priced.route, priced.model, priced.rule, priced.status) == (
        "cloud",
        MODEL,
        "default",
        "ok",
    )
    assert (priced.input_tokens, priced.output_tokens) == (11, 4)
    assert priced.ttft_s is not None and priced.ttft_s > 0
    assert f"11 in x ${rates.input:g}/M" in priced.cost_detail
    assert f"4 out x ${rates.output:g}/M" in priced.cost_detail

    rows = ledger_rows()
    assert len(rows) == 1
    row = rows[0]
    assert (row.route, row.model, row.provider, row.status) == ("cloud", MODEL, "openai", "ok")
    assert row.cost_usd == pytest.approx(expected)
    assert (row.rate_input, row.rate_output) == (rates.input, rates.output)
    assert row.conversation_id == session.conversation_id
    assert (row.privacy, row.task) == ("internal", "explain")
    assert priced.ledger_id > 0 and openai_server.count == 1


async def test_attachments_travel_as_fenced_blocks_with_their_paths(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    loaded = project(tmp_path, openai_server.base_url)
    assert loaded.project_dir is not None
    source = loaded.project_dir / "src" / "util.py"
    source.parent.mkdir()
    source.write_text("def add(a, b):\n    return a + b\n```not a fence end\n")
    session = Session(loaded, backend_factory=factory(ScriptedBackend()))
    await collect(session, "explain @src/util.py please")

    body = openai_server.requests[-1].body
    assert body is not None
    content = body["messages"][-1]["content"]
    assert content.startswith("explain @src/util.py please\n\nFile `src/util.py`:\n````\n")
    assert content.endswith("```not a fence end\n````")
    assert "return a + b" in content


def test_compose_prompt_strips_tags_and_keeps_text_order() -> None:
    from ds4router.routing.request import Attachment

    prompt = compose_prompt("#secret fix /task debug this", (Attachment("a.txt", "x\n"),))
    assert prompt == "fix this\n\nFile `a.txt`:\n```\nx\n```"


async def test_unpriced_model_costs_null_not_zero(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    name = "openai/ds4-no-such-priced-model"
    loaded = project(
        tmp_path,
        openai_server.base_url,
        {
            "default": f"cloud:{name}",
            "cloud": {
                "models": [
                    {"name": name, "api_base": openai_server.base_url, "api_key_env": KEY_ENV}
                ]
            },
        },
    )
    session = Session(loaded, backend_factory=factory(ScriptedBackend()))
    priced = (await collect(session, "hello"))[-1]
    assert isinstance(priced, Priced)
    assert priced.unpriced and priced.cost_usd is None and priced.saving_usd is None
    assert "pricing.overrides" in priced.cost_detail
    assert ledger_rows()[0].cost_usd is None


# --- privacy -------------------------------------------------------------------------------


async def test_secret_is_served_locally_and_nothing_reaches_the_server(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend()
    loaded = project(tmp_path, openai_server.base_url)
    session = Session(loaded, backend_factory=factory(local))
    events = await collect(session, f"why does my token {GH} fail?")

    assert openai_server.count == 0
    routed = events[0]
    assert isinstance(routed, Routed)
    assert (routed.decision.target, routed.decision.privacy) == (LocalEngine(), PrivacyLevel.SECRET)
    assert text_of(events) == "Hello from the local engine."
    assert GH in local.requests[0].messages[-1]["content"]
    priced = events[-1]
    assert priced.route == "local" and priced.model == LOCAL_MODEL
    row = ledger_rows()[0]
    assert (row.route, row.privacy, row.status) == ("local", "secret", "ok")


async def test_secret_with_no_local_engine_is_refused_and_recorded(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    loaded = project(tmp_path, openai_server.base_url)
    session = Session(loaded, backend_factory=factory(None))
    events = await collect(session, f"deploy with {GH}")

    assert openai_server.count == 0
    assert [type(e) for e in events] == [Refused, Priced]
    refused = events[0].decision
    assert refused.target == Refuse() and refused.fix
    assert any("cloud_max_privacy" in reason for reason in refused.reasons)
    assert events[1].route == "refused" and events[1].cost_usd == 0.0
    row = ledger_rows()[0]
    assert (row.route, row.privacy, row.input_tokens) == ("refused", "secret", 0)
    with History(paths.database_path()) as history:
        messages = history.messages(session.conversation_id or "")
        (summary,) = history.list_conversations("acme")
    assert [m.role for m in messages] == ["user", "assistant"]
    assert messages[1].route == "refused" and messages[1].text is None
    # The conversation's title is on show in lists: the token is redacted there.
    assert summary.title is not None and GH not in summary.title and "redacted" in summary.title


async def test_a_secret_never_falls_back_to_the_cloud_when_local_fails(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend(reply(fail_kind="unavailable", fail_message="engine crashed"))
    loaded = project(
        tmp_path,
        openai_server.base_url,
        {"default": "local", "fallback": {"local_unavailable": f"cloud:{MODEL}"}},
    )
    session = Session(loaded, backend_factory=factory(local))
    events = await collect(session, f"rotate {GH}")

    assert openai_server.count == 0
    assert not any(isinstance(e, FallbackTaken) for e in events)
    failure = events[-2]
    assert isinstance(failure, Failed) and failure.kind == "unavailable"
    assert ledger_rows()[0].status == "error"

    # The same failure on an internal request does fall back to the cloud.
    local.script(reply(fail_kind="unavailable", fail_message="engine crashed"))
    events = await collect(session, "plain question")
    taken = [e for e in events if isinstance(e, FallbackTaken)]
    assert [(t.from_target, t.to_target) for t in taken] == [(LocalEngine(), CloudModel(MODEL))]
    assert openai_server.count == 1 and text_of(events) == "Hello, world!"


async def test_a_cloud_decision_above_the_limit_is_refused_even_if_the_router_erred(
    tmp_path: Path, openai_server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    import ds4router.sessions.plan as plan_module

    real_decide = plan_module.decide

    def careless(request: Any, config: Any, state: Any) -> Decision:
        decision = real_decide(request, config, state)
        return Decision(
            target=CloudModel(MODEL),
            model=MODEL,
            rule="buggy",
            privacy=decision.privacy,
            task=decision.task,
            reasons=("a buggy router",),
            fallbacks=(CloudModel(MODEL),),
        )

    monkeypatch.setattr(plan_module, "decide", careless)
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(None))
    events = await collect(session, f"token {GH}")
    assert openai_server.count == 0
    assert isinstance(events[0], Refused)
    assert "refusing to send it" in events[0].decision.reasons[-1]
    _, decision = session.preview(f"token {GH}")
    assert decision.target == Refuse()


async def test_an_earlier_secret_keeps_the_conversation_off_the_cloud(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend()
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(local))
    await collect(session, f"is {GH} still valid?")
    cid = session.conversation_id
    events = await collect(session, "and what about tomorrow?", conversation_id=cid)

    assert openai_server.count == 0
    routed = events[0]
    assert (
        routed.decision.target == LocalEngine() and routed.decision.privacy == PrivacyLevel.SECRET
    )
    assert any("earlier messages" in c.source for c in routed.request.privacy.contributions)
    assert session.preview("another one")[1].target == LocalEngine()
    # A new conversation starts afresh.
    events = await collect(session, "unrelated question")
    assert events[0].decision.target == CloudModel(MODEL) and openai_server.count == 1


# --- fallback and failures ------------------------------------------------------------------


async def test_429_before_the_first_token_is_retried_then_falls_back_to_local(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(error(429, retry_after="0"), error(429, retry_after="0"))
    local = ScriptedBackend()
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(local))
    events = await collect(session, "hello")

    assert openai_server.count == 2  # the request and one retry (cloud.retries: 1)
    (taken,) = [e for e in events if isinstance(e, FallbackTaken)]
    assert (taken.from_target, taken.to_target) == (CloudModel(MODEL), LocalEngine())
    assert "rate" in taken.reason.lower() or "429" in taken.reason
    assert not any(isinstance(e, Failed) for e in events)
    assert text_of(events) == "Hello from the local engine."
    priced = events[-1]
    assert (priced.route, priced.rule, priced.status) == ("local", "fallback", "ok")
    rows = ledger_rows()
    assert [(r.route, r.rule) for r in rows] == [("local", "fallback")]


async def test_failure_mid_stream_keeps_the_partial_answer_and_never_falls_back(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(Reply(text=("Part", "ial", " answer", "!"), disconnect_after=2))
    local = ScriptedBackend()
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(local))
    events = await collect(session, "hello")

    assert local.requests == [] and openai_server.count == 1
    assert text_of(events) == "Partial"
    failure = events[-2]
    assert isinstance(failure, Failed) and failure.after_tokens
    priced = events[-1]
    assert priced.status == "error" and priced.output_tokens > 0
    row = ledger_rows()[0]
    assert (row.status, row.error_kind, row.route) == ("error", failure.kind, "cloud")
    assert row.output_tokens == priced.output_tokens and row.cost_usd is not None
    assert row.cost_usd > 0
    with History(paths.database_path()) as history:
        answer = history.messages(session.conversation_id or "")[-1]
    assert (answer.text, answer.status, answer.error_kind) == ("Partial", "error", failure.kind)


async def test_no_fallback_left_ends_in_the_backends_failure(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(error(500), error(500))
    loaded = project(tmp_path, openai_server.base_url, {"fallback": {"cloud_unavailable": None}})
    session = Session(loaded, backend_factory=factory(ScriptedBackend()))
    events = await collect(session, "hello")
    failure = events[-2]
    assert isinstance(failure, Failed) and not failure.after_tokens
    assert failure.kind == "unavailable"
    row = ledger_rows()[0]
    assert (row.route, row.status, row.error_kind, row.output_tokens) == (
        "cloud",
        "error",
        "unavailable",
        0,
    )


async def test_offline_cloud_falls_back_at_once_without_a_request(tmp_path: Path) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    local = ScriptedBackend()
    loaded = project(tmp_path, f"http://127.0.0.1:{port}/v1")
    session = Session(loaded, backend_factory=factory(local))
    events = await collect(session, "hello")

    routed = events[0]
    assert isinstance(routed, Routed)
    assert (routed.decision.target, routed.decision.rule) == (LocalEngine(), "fallback")
    assert any("cloud unavailable" in r and "cannot reach" in r for r in routed.decision.reasons)
    assert not any(isinstance(e, FallbackTaken) for e in events)
    assert len(local.requests) == 1
    # The preview knows it too now, without dialing.
    assert session.preview("hello")[1].target == LocalEngine()


async def test_over_budget_routes_cloud_requests_to_local(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    loaded = project(
        tmp_path,
        openai_server.base_url,
        {"budget": {"monthly_usd": 0.01, "when_exceeded": "local"}},
    )
    with Ledger(paths.database_path()) as ledger:
        ledger.record(
            LedgerRow(
                time=dt.datetime.now(dt.UTC),
                project="acme",
                route="cloud",
                model=MODEL,
                cost_usd=0.02,
            )
        )
    local = ScriptedBackend()
    session = Session(loaded, backend_factory=factory(local))
    events = await collect(session, "hello")
    routed = events[0]
    assert (routed.decision.target, routed.decision.rule) == (LocalEngine(), "budget")
    assert openai_server.count == 0 and len(local.requests) == 1

    # Under the cap the same request goes to the cloud.
    other = project(tmp_path, openai_server.base_url, {"budget": {"monthly_usd": 1.0}})
    events = await collect(Session(other, backend_factory=factory(local)), "hello")
    assert events[0].decision.target == CloudModel(MODEL) and openai_server.count == 1


# --- cancellation ------------------------------------------------------------------------


async def test_cancel_mid_stream_records_cancelled_with_the_partial_text(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(ok("one", " two", " three", " four", chunk_delay_s=0.3))
    session = Session(
        project(tmp_path, openai_server.base_url), backend_factory=factory(ScriptedBackend())
    )
    events: list[Any] = []
    async for event in session.send("hello"):
        events.append(event)
        if isinstance(event, TextDelta):
            session.cancel()

    failure = events[-2]
    assert isinstance(failure, Failed) and failure.kind == "cancelled" and failure.after_tokens
    assert text_of(events) == "one"
    assert events[-1].status == "cancelled"
    row = ledger_rows()[0]
    assert (row.status, row.route, row.error_kind) == ("cancelled", "cloud", None)
    with History(paths.database_path()) as history:
        answer = history.messages(session.conversation_id or "")[-1]
    assert (answer.text, answer.status) == ("one", "cancelled")


async def test_cancel_before_the_first_token_stops_a_hung_local_backend(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend(ScriptedReply(hang_s=30))
    loaded = project(tmp_path, openai_server.base_url, {"default": "local"})
    session = Session(loaded, backend_factory=factory(local))

    async def cancel_soon() -> None:
        while not local.requests:
            await asyncio.sleep(0.01)
        session.cancel()

    canceller = asyncio.create_task(cancel_soon())
    events = await asyncio.wait_for(collect(session, "hello"), timeout=10)
    await canceller
    assert isinstance(events[-2], Failed) and events[-2].kind == "cancelled"
    row = ledger_rows()[0]
    assert (row.status, row.route, row.output_tokens) == ("cancelled", "local", 0)


async def test_a_cancelled_task_still_writes_its_row(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(ok("slow", " answer", chunk_delay_s=1))
    session = Session(
        project(tmp_path, openai_server.base_url), backend_factory=factory(ScriptedBackend())
    )
    seen = asyncio.Event()

    async def consume() -> None:
        async for event in session.send("hello"):
            if isinstance(event, TextDelta):
                seen.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(seen.wait(), timeout=10)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    (row,) = ledger_rows()
    assert (row.status, row.route) == ("cancelled", "cloud")
    assert row.output_tokens > 0  # the usage so far, counted locally


# --- local cost -----------------------------------------------------------------------------


async def test_local_cost_is_configured_watts_times_the_measured_seconds(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend(reply("a", "b", "c", delay_s=0.05))
    loaded = project(
        tmp_path,
        openai_server.base_url,
        {
            "default": "local",
            "local": {
                "electricity_usd_per_kwh": 0.5,
                "hardware": {"price_usd": 3000, "lifetime_years": 3, "hours_per_day": 8},
            },
        },
    )
    priced = (await collect(Session(loaded, backend_factory=factory(local)), "hello"))[-1]
    row = ledger_rows()[0]
    assert row.duration_s is not None and row.duration_s >= 0.1  # two 50 ms gaps
    assert row.energy_source == "configured"
    assert row.energy_j == pytest.approx(90 * row.duration_s)
    assert row.cost_electricity_usd == pytest.approx(row.energy_j / 3.6e6 * 0.5)
    per_second = 3000 / (3 * 365 * 8 * 3600)
    assert row.cost_amortization_usd == pytest.approx(per_second * row.duration_s)
    assert priced.cost_usd == pytest.approx(row.cost_usd)
    reference = catalog_rates(loaded.config.pricing.reference_model or "")
    expected_cf = (row.input_tokens * reference.input + 3 * reference.output) / 1e6
    assert priced.counterfactual_usd == pytest.approx(expected_cf)
    assert priced.saving_usd == pytest.approx(expected_cf - row.cost_usd)


# --- history ----------------------------------------------------------------------------


async def test_history_on_keeps_the_conversation_and_sends_it_as_context(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    session = Session(
        project(tmp_path, openai_server.base_url), backend_factory=factory(ScriptedBackend())
    )
    await collect(session, "first question")
    cid = session.conversation_id
    openai_server.script(ok("Second", " answer"))
    await collect(session, "second question", conversation_id=cid)

    body = openai_server.requests[-1].body
    assert body is not None
    assert body["messages"] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "Hello, world!"},
        {"role": "user", "content": "second question"},
    ]
    with History(paths.database_path()) as history:
        (summary,) = history.list_conversations("acme")
        messages = history.messages(cid or "")
    assert summary.id == cid and summary.title == "first question" and summary.messages == 4
    assert [(m.role, m.text) for m in messages] == [
        ("user", "first question"),
        ("assistant", "Hello, world!"),
        ("user", "second question"),
        ("assistant", "Second answer"),
    ]
    answer = messages[1]
    rows = ledger_rows()
    assert (answer.route, answer.model, answer.rule) == ("cloud", MODEL, "default")
    assert (answer.input_tokens, answer.output_tokens) == (11, 4)
    assert answer.cost_usd == pytest.approx(rows[0].cost_usd)
    assert answer.ledger_id is not None


async def test_a_conversation_created_elsewhere_is_continued(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    with History(paths.database_path()) as history:
        cid = history.new_conversation("acme")  # as the TUI does before sending
    session = Session(
        project(tmp_path, openai_server.base_url), backend_factory=factory(ScriptedBackend())
    )
    await collect(session, "first question", conversation_id=cid)
    with History(paths.database_path()) as history:
        (summary,) = history.list_conversations("acme")
    assert (summary.id, summary.title, summary.messages) == (cid, "first question", 2)


async def test_history_off_stores_no_conversation_but_keeps_context_in_memory(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    loaded = project(tmp_path, openai_server.base_url, {"history": "off"})
    session = Session(loaded, backend_factory=factory(ScriptedBackend()))
    await collect(session, "first question")
    await collect(session, "second question", conversation_id=session.conversation_id)

    body = openai_server.requests[-1].body
    assert body is not None and len(body["messages"]) == 3
    assert len(ledger_rows()) == 2
    with History(paths.database_path()) as history:
        assert history.list_conversations(None) == []
        count = history.conn.execute("SELECT COUNT(*) FROM messages").fetchone()[0]
    assert count == 0
    raw = paths.database_path().read_bytes()
    assert b"first question" not in raw and b"Hello, world!" not in raw


# --- factory and preview ------------------------------------------------------------------


def test_default_factory_reports_the_local_engine_unavailable_with_the_reason(
    tmp_path: Path,
) -> None:
    loaded = project(tmp_path, "http://127.0.0.1:9/v1")
    with pytest.raises(BackendUnavailable, match="local.engine.model_path"):
        backend_for(LocalEngine(), loaded)
    assert isinstance(backend_for(CloudModel(MODEL), loaded), CloudBackend)


def test_preview_routes_without_sending_or_writing(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    local = ScriptedBackend(health=Health("loading", "engine loading"))
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(local))
    classified, decision = session.preview("hello")
    assert (
        decision.target == CloudModel(MODEL) and classified.privacy.level == PrivacyLevel.INTERNAL
    )
    classified, decision = session.preview(f"key {GH}")
    assert decision.target == Refuse()  # local is loading: a secret has nowhere to go
    assert any("engine loading" in r for r in decision.reasons)
    assert openai_server.count == 0 and local.requests == []
    assert not paths.database_path().exists()


async def test_a_fallback_that_cannot_start_reports_the_first_failure(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    openai_server.script(error(500), error(500))
    session = Session(project(tmp_path, openai_server.base_url), backend_factory=factory(None))
    events = await collect(session, "hello")

    assert not any(isinstance(e, FallbackTaken) for e in events)
    failure = events[-2]
    assert isinstance(failure, Failed) and failure.kind == "unavailable"
    assert failure.message.startswith(f"{MODEL}: the provider is unavailable: scripted failure")
    assert failure.message.endswith("; local: no local engine in this test")
    row = ledger_rows()[0]
    assert (row.route, row.status, row.error_kind) == ("cloud", "error", "unavailable")


async def test_a_stream_closed_right_after_routing_sends_nothing_and_records_cancelled(
    tmp_path: Path, openai_server: OpenAIServer
) -> None:
    session = Session(
        project(tmp_path, openai_server.base_url), backend_factory=factory(ScriptedBackend())
    )
    stream = session.send("hello")
    first = await stream.__anext__()
    assert isinstance(first, Routed)
    await stream.aclose()  # type: ignore[attr-defined]
    assert openai_server.count == 0
    (row,) = ledger_rows()
    assert (row.route, row.status, row.model) == ("cloud", "cancelled", MODEL)
