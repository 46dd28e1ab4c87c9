"""Classification and the router: first match wins, reasons are given, privacy fails closed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ds4router.config import Config, validate_file
from ds4router.config.schema import TASK_TYPES, ClassifierConfig
from ds4router.errors import Ds4RouterError
from ds4router.routing.classify import classify, load_attachments
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.privacy import classify_privacy
from ds4router.routing.request import Attachment, Request
from ds4router.routing.router import RouterState, decide
from ds4router.routing.tasks import classify_task
from ds4router.targets import (
    CloudModel,
    LocalEngine,
    Refuse,
    explicit_target,
)

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = validate_file(REPO / "configs" / "examples" / "acme-billing.yaml")
DEFAULTS = (
    __import__("ds4router.config", fromlist=["load_config"]).load_config(cwd=Path("/")).config
)
GH = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"


def with_defaults(**overrides: object) -> Config:
    data = DEFAULTS.model_dump(mode="json")
    data.update(overrides)
    return Config.model_validate(data)


def route(text: str, config: Config = EXAMPLE, state: RouterState | None = None, files=()):
    request = classify(Request(text, tuple(files)), config)
    return request, decide(request, config, state or RouterState())


# --- privacy ---


def test_level_is_the_maximum_of_contributions() -> None:
    cfg = EXAMPLE.privacy
    assert classify_privacy("hello", [], cfg).level is PrivacyLevel.INTERNAL
    assert classify_privacy("hello #confidential", [], cfg).level is PrivacyLevel.CONFIDENTIAL
    result = classify_privacy("see the file", [Attachment("src/payments/charge.py", "x = 1")], cfg)
    assert result.level is PrivacyLevel.SECRET
    assert any("src/payments/**" in c.source for c in result.contributions)
    assert classify_privacy(f"token {GH}", [], cfg).level is PrivacyLevel.SECRET
    assert classify_privacy("mail jane@acme-corp.io", [], cfg).level is PrivacyLevel.CONFIDENTIAL
    # A secret inside an attached file counts as much as one in the text.
    assert (
        classify_privacy("look", [Attachment("docs/x.md", f"k={GH}")], cfg).level
        is PrivacyLevel.SECRET
    )


def test_downgrade_needs_the_project_to_allow_it() -> None:
    strict = EXAMPLE.privacy
    result = classify_privacy("#public what is a monad", [], strict)
    assert result.level is PrivacyLevel.INTERNAL
    assert "allow_downgrade" in result.notes[0]
    loose = strict.model_copy(update={"allow_downgrade": True})
    assert classify_privacy("#public what is a monad", [], loose).level is PrivacyLevel.PUBLIC
    # Even when allowed, a tag cannot hide what a detector found.
    assert classify_privacy(f"#public {GH}", [], loose).level is PrivacyLevel.SECRET


def test_at_path_mentions_attach_files(tmp_path: Path) -> None:
    (tmp_path / "src" / "payments").mkdir(parents=True)
    (tmp_path / "src" / "payments" / "charge.py").write_text("def charge(): ...\n")
    attachments = load_attachments("review @src/payments/charge.py please", [], tmp_path, tmp_path)
    assert [a.path for a in attachments] == ["src/payments/charge.py"]
    request = classify(Request("review it", attachments), EXAMPLE)
    assert request.privacy.level is PrivacyLevel.SECRET


# --- tasks ---


def test_task_tag_wins_and_unknown_tags_are_user_errors() -> None:
    cfg = DEFAULTS.classifier
    assert classify_task("/task tests please explain this", cfg).task == "tests"
    with pytest.raises(Ds4RouterError, match="unknown task type"):
        classify_task("/task poetry", cfg)


@pytest.mark.parametrize(
    ("text", "task"),
    [
        ("Write pytest unit tests for the invoice parser", "tests"),
        ("Why does this crash?\nTraceback (most recent call last):\nValueError: x", "debug"),
        ("Refactor this module: extract a function and simplify the loop", "refactor"),
        ("Explain what this regex does", "explain"),
        ("Design the sharding scheme and replication for our event store", "architecture"),
        ("Scaffold a CRUD endpoint with a dataclass model", "boilerplate"),
        ("For each file in src/, translate all comments in bulk", "batch"),
        ("good morning", "chat"),
    ],
)
def test_classifier_picks_the_task_and_says_why(text: str, task: str) -> None:
    result = classify_task(text, DEFAULTS.classifier)
    assert result.task == task
    if result.source == "classifier":
        assert result.features_of(task)


def test_project_can_add_features_and_tasks() -> None:
    cfg = ClassifierConfig.model_validate(
        {"tasks": {"migration": {"keywords": ["alembic", "flyway"], "weight": 3}}}
    )
    assert classify_task("write an alembic migration", cfg).task == "migration"


# --- rules ---


def test_first_match_wins_with_trace_of_earlier_rules() -> None:
    _, decision = route("/task architecture design the sharding")
    assert (decision.target, decision.model, decision.rule) == (
        CloudModel("anthropic/claude-opus-4-7"),
        "anthropic/claude-opus-4-7",
        "hard-thinking",
    )
    assert decision.trace[0].rule == "private-stays-local" and not decision.trace[0].matched
    assert "privacy internal not in [confidential, secret]" in decision.trace[0].why
    assert decision.fallbacks == (LocalEngine(),)


def test_default_and_refuse_targets() -> None:
    _, decision = route("hello there")
    assert (decision.target, decision.rule) == (LocalEngine(), "default")
    refusing = with_defaults(
        routes=[{"name": "no-batch", "when": {"task": ["batch"]}, "to": "refuse"}]
    )
    _, decision = route("/task batch go", refusing)
    assert decision.target == Refuse() and decision.rule == "no-batch" and decision.fix


def test_size_budget_and_health_conditions() -> None:
    cfg = with_defaults(
        routes=[
            {"name": "big", "when": {"min_tokens": 1000}, "to": "cloud:openai/gpt-4.1"},
            {"name": "small", "when": {"max_tokens": 999}, "to": "cloud:openai/gpt-4.1-mini"},
        ]
    )
    assert route("x " * 5000, cfg)[1].rule == "big"
    assert route("short", cfg)[1].rule == "small"
    over = RouterState(over_budget=True, budget_spent_usd=41.0, budget_cap_usd=40.0)
    decision = route("short", cfg, over)[1]
    assert decision.target == LocalEngine() and decision.rule == "budget"
    assert "$41.00 of $40.00" in decision.reasons[-1]
    offline = RouterState(cloud_available=False, cloud_detail="offline")
    decision = route("short", cfg, offline)[1]
    assert decision.target == LocalEngine() and decision.rule == "fallback"


def test_local_unavailable_falls_back_to_cloud_only_when_privacy_allows() -> None:
    down = RouterState(local_available=False, local_detail="not configured")
    decision = route("/task tests write tests", EXAMPLE, down)[1]
    assert (decision.target, decision.model) == (
        CloudModel("deepseek/deepseek-v4-flash"),
        "deepseek/deepseek-v4-flash",
    )
    request, decision = route(f"/task tests write tests for {GH}", EXAMPLE, down)
    assert decision.target == Refuse()
    assert "cloud_max_privacy" in (decision.fix or "")
    assert all(GH not in r for r in decision.reasons)


def test_explicit_model_is_still_bound_by_privacy() -> None:
    request = classify(Request(f"fix {GH}", model=explicit_target("openai/gpt-4.1")), EXAMPLE)
    decision = decide(request, EXAMPLE, RouterState())
    assert decision.target == LocalEngine() and decision.rule == "privacy"


# --- the privacy invariant, as a property ---

LEVELS = list(PrivacyLevel)
targets = st.one_of(
    st.just("local"), st.just("refuse"), st.sampled_from(["cloud:openai/gpt-4.1", "cloud:x/y"])
)
rule = st.fixed_dictionaries(
    {
        "name": st.uuids().map(str),
        "when": st.fixed_dictionaries(
            {},
            optional={
                "privacy": st.lists(st.sampled_from([lv.value for lv in LEVELS]), max_size=4),
                "task": st.lists(st.sampled_from(TASK_TYPES), max_size=3),
                "min_tokens": st.integers(0, 50),
                "over_budget": st.booleans(),
                "local_healthy": st.booleans(),
                "cloud_healthy": st.booleans(),
            },
        ),
        "to": targets,
    }
)
SECRETS = [
    GH,
    "AKIA" + "IOSFODNN7Q2XZ4LM",
    "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----",
    'password = "Zq8#kP2mX9vL"',
    "postgres://app:S3cretPass99@db:5432/x",
]
PII = ["jane.doe@acme-corp.io", "4111 1111 1111 1111", "DE89 3704 0044 0532 0130 00", "123-45-6789"]


# Derandomized so CI is reproducible. To search harder locally:
# DS4_PROPERTY_EXAMPLES=5000 python -m pytest tests/ds4router/test_router.py -k property
_SEARCH = int(os.environ.get("DS4_PROPERTY_EXAMPLES", "0"))


@settings(
    max_examples=_SEARCH or 300,
    deadline=None,
    derandomize=not _SEARCH,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rules=st.lists(rule, max_size=6),
    default=targets,
    cloud_fallback=st.one_of(st.none(), targets),
    local_fallback=st.one_of(st.none(), targets),
    when_exceeded=targets,
    cloud_max=st.sampled_from([PrivacyLevel.PUBLIC, PrivacyLevel.INTERNAL]),
    project_default=st.sampled_from(LEVELS),
    over_budget=st.booleans(),
    local_ok=st.booleans(),
    cloud_ok=st.booleans(),
    sensitive=st.sampled_from(SECRETS + PII),
    before=st.text(max_size=40),
    after=st.text(max_size=40),
    tag=st.sampled_from(["", "#public ", "#internal ", "/task architecture ", "/task chat "]),
    explicit=st.one_of(st.none(), st.just("openai/gpt-4.1")),
)
def test_property_secrets_and_pii_above_the_limit_never_get_a_cloud_target(
    rules, default, cloud_fallback, local_fallback, when_exceeded, cloud_max, project_default,
    over_budget, local_ok, cloud_ok, sensitive, before, after, tag, explicit,
) -> None:  # fmt: skip
    names = set()
    rules = [r for r in rules if not (r["name"] in names or names.add(r["name"]))]
    config = with_defaults(
        routes=rules,
        default=default,
        fallback={"cloud_unavailable": cloud_fallback, "local_unavailable": local_fallback},
        budget={"monthly_usd": 1, "when_exceeded": when_exceeded},
        privacy={
            "default": project_default.value,
            "cloud_max_privacy": cloud_max.value,
            "allow_downgrade": True,
            "detectors": {"secrets": "secret", "pii": "confidential"},
        },
    )
    text = f"{tag}{before} {sensitive} {after}"
    request = classify(
        Request(text, model=None if explicit is None else explicit_target(explicit)), config
    )
    assert request.privacy.level > cloud_max  # the detector saw it whatever surrounds it
    state = RouterState(over_budget=over_budget, local_available=local_ok, cloud_available=cloud_ok)
    decision = decide(request, config, state)
    assert not isinstance(decision.target, CloudModel)
    assert not any(isinstance(f, CloudModel) for f in decision.fallbacks)
    assert all(sensitive not in reason for reason in decision.reasons)
    if decision.target == Refuse() and not local_ok:
        assert decision.fix


@settings(
    max_examples=_SEARCH or 200,
    deadline=None,
    derandomize=not _SEARCH,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    rules=st.lists(rule, max_size=4),
    default=targets,
    cloud_fallback=st.one_of(st.none(), targets),
    cloud_max=st.sampled_from([PrivacyLevel.PUBLIC, PrivacyLevel.INTERNAL]),
    project_default=st.sampled_from(LEVELS),
    local_ok=st.booleans(),
    sensitive=st.sampled_from(SECRETS + PII),
    before=st.text(max_size=30),
    tag=st.sampled_from(["", "#public ", "#confidential ", "#secret "]),
    secret_path=st.booleans(),
)
def test_property_redaction_never_lowers_below_paths_tags_or_the_default(
    rules, default, cloud_fallback, cloud_max, project_default, local_ok, sensitive, before,
    tag, secret_path,
) -> None:  # fmt: skip
    names = set()
    rules = [r for r in rules if not (r["name"] in names or names.add(r["name"]))]
    config = with_defaults(
        routes=rules,
        default=default,
        fallback={"cloud_unavailable": cloud_fallback, "local_unavailable": "cloud:x/y"},
        privacy={
            "default": project_default.value,
            "cloud_max_privacy": cloud_max.value,
            "on_detected": "redact",
            "paths": [{"glob": "vault/**", "level": "secret"}],
        },
    )
    files = (Attachment("vault/a.txt" if secret_path else "docs/a.txt", "notes"),)
    request = classify(Request(f"{tag}{before} {sensitive}", files), config)
    decision = decide(request, config, RouterState(local_available=local_ok))
    floor = PrivacyLevel.SECRET if secret_path else project_default
    if tag.strip("# "):
        floor = max(floor, PrivacyLevel(tag.strip("# ")))
    chain = (decision.target, *decision.fallbacks)
    if any(isinstance(t, CloudModel) for t in chain):
        assert decision.redact and decision.redactions >= 1
        assert floor <= cloud_max and request.privacy.floor <= cloud_max
    assert all(sensitive not in reason for reason in decision.reasons)
