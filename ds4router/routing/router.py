"""The router: ``decide(request, config, state) -> Decision``, a pure function.

Rules are tried in order and the first match wins; then the budget and backend
health may redirect along the configured fallbacks. Last, and on every path,
the privacy invariant: a request above ``privacy.cloud_max_privacy`` never gets
a cloud target and never a cloud fallback. When local cannot serve it, the
decision is ``refuse``, with the reason and the config change that would allow
it. The Decision says which rule matched and why each earlier rule did not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import assert_never

from ds4router.config.schema import Config, RouteRule
from ds4router.routing.levels import PrivacyLevel
from ds4router.routing.privacy import PrivacyResult, redaction_applies
from ds4router.routing.tasks import TaskResult
from ds4router.servers import may_send, server_limit
from ds4router.targets import (
    LOCAL_MODEL,
    CloudModel,
    LocalEngine,
    LocalServer,
    Refuse,
    Sendable,
    Target,
    leaves_machine,
    model_of,
)


@dataclass(frozen=True)
class RouterState:
    """What the router knows of the world: budget and backend health."""

    over_budget: bool = False
    budget_spent_usd: float | None = None
    budget_cap_usd: float | None = None
    local_available: bool = True
    cloud_available: bool = True
    local_detail: str = ""
    cloud_detail: str = ""


@dataclass(frozen=True)
class Classified:
    """A request after classification: what the router decides on."""

    privacy: PrivacyResult
    task: TaskResult
    tokens: int
    model: Target | None = None  # explicit target chosen by the user (`--model`)


@dataclass(frozen=True)
class RuleTrace:
    rule: str
    matched: bool
    why: str


@dataclass(frozen=True)
class Decision:
    target: Target
    model: str | None  # the cloud model id, the local model's id, or None when refused
    rule: str | None  # the rule that chose the target ("default", "budget", ...)
    privacy: PrivacyLevel
    task: str
    reasons: tuple[str, ...]
    fallbacks: tuple[Sendable, ...] = ()  # targets to try if this one fails before any token
    trace: tuple[RuleTrace, ...] = field(default=())
    fix: str | None = None  # for `refuse`: the change that would allow the request
    # privacy.on_detected: redact applies: a cloud target gets the request with each
    # finding replaced by a placeholder (``redactions`` of them); local gets it whole.
    redact: bool = False
    redactions: int = 0

    @property
    def chain(self) -> tuple[Sendable, ...]:
        """The targets to try, in order: the chosen one, then its fallbacks (none if refused)."""
        match self.target:
            case Refuse():
                return ()
            case LocalEngine() | LocalServer() | CloudModel() as chosen:
                return (chosen, *self.fallbacks)


def local_model_id(config: Config) -> str:
    """The model id the local target is recorded under: the engine's kind and model."""
    from ds4router.demo_model import MODEL_ID, is_demo

    engine = config.local.engine
    if engine.kind == "deepseek-v4" or not engine.model_path:
        return LOCAL_MODEL
    if is_demo(engine.model_path):
        return MODEL_ID
    return f"local/{Path(engine.model_path).stem}"


def match_rule(rule: RouteRule, request: Classified, state: RouterState) -> tuple[bool, str]:
    """Whether a rule's conditions all hold, and in words why (not)."""
    when = rule.when
    level = request.privacy.level
    task = request.task.task
    checks: list[tuple[bool, str]] = []
    if when.privacy is not None:
        names = ", ".join(str(p) for p in when.privacy)
        checks.append(
            (
                level in when.privacy,
                f"privacy {level} {'in' if level in when.privacy else 'not in'} [{names}]",
            )
        )
    if when.task is not None:
        names = ", ".join(when.task)
        checks.append(
            (task in when.task, f"task {task} {'in' if task in when.task else 'not in'} [{names}]")
        )
    if when.min_tokens is not None:
        ok = request.tokens >= when.min_tokens
        checks.append(
            (ok, f"~{request.tokens} tokens {'>=' if ok else '<'} min_tokens {when.min_tokens}")
        )
    if when.max_tokens is not None:
        ok = request.tokens <= when.max_tokens
        checks.append(
            (ok, f"~{request.tokens} tokens {'<=' if ok else '>'} max_tokens {when.max_tokens}")
        )
    if when.over_budget is not None:
        ok = state.over_budget == when.over_budget
        checks.append((ok, f"over_budget is {str(state.over_budget).lower()}"))
    if when.local_healthy is not None:
        ok = state.local_available == when.local_healthy
        checks.append(
            (ok, f"local engine {'available' if state.local_available else 'unavailable'}")
        )
    if when.cloud_healthy is not None:
        ok = state.cloud_available == when.cloud_healthy
        checks.append((ok, f"cloud {'available' if state.cloud_available else 'unavailable'}"))
    if not checks:
        return True, "no conditions"
    failed = [why for ok, why in checks if not ok]
    if failed:
        return False, "; ".join(failed)
    return True, "; ".join(why for _, why in checks)


def decide(request: Classified, config: Config, state: RouterState) -> Decision:
    level = request.privacy.level
    limit = config.privacy.cloud_max_privacy
    redact = redaction_applies(request.privacy, config.privacy)
    # With redaction the cloud sees no finding: the level it is judged by is the floor
    # (paths, default, tags), which redaction never lowers.
    judged = request.privacy.floor if redact else level
    cloud_allowed = judged <= limit
    reasons: list[str] = []
    trace: list[RuleTrace] = []

    # 1. The first matching rule, or the default (or the user's explicit model).
    target: Target
    if request.model is not None:
        target = request.model
        rule_name: str | None = "explicit model"
        reasons.append(f"model chosen explicitly: {target}")
    else:
        target, rule_name = config.default, "default"
        for rule in config.routes:
            matched, why = match_rule(rule, request, state)
            trace.append(RuleTrace(rule.name, matched, why))
            if matched:
                target, rule_name = rule.to, rule.name
                reasons.append(f"rule '{rule.name}' matched ({why}) -> {rule.to}")
                break
        else:
            reasons.append(f"no rule matched -> default {config.default}")

    # 2. The budget: an exhausted month keeps cloud traffic off.
    if isinstance(target, CloudModel) and state.over_budget:
        redirect = config.budget.when_exceeded
        if redirect != target:
            words = _budget_words(state)
            reasons.append(f"over the monthly budget{words} -> {redirect} (budget.when_exceeded)")
            target, rule_name = redirect, "budget"

    # 3. Backend health, along the configured fallbacks (at most one hop each way).
    for _ in range(2):
        hop = _health_hop(target, config, state)
        if hop is None:
            break
        target, reason = hop
        reasons.append(reason)
        rule_name = "fallback"

    # 4. The privacy invariant, whatever happened above.
    target, rule_name, fix = _enforce(target, rule_name, level, judged, state, reasons, config)
    count = len(request.privacy.findings)
    fallbacks = _fallbacks(target, config, level, cloud_allowed)
    if redact and any(map(leaves_machine, (target, *fallbacks))):
        reasons.append(
            f"privacy {level} comes only from {count} detector finding(s): a cloud model gets "
            f"them replaced by placeholders (privacy.on_detected: redact), leaving {judged}"
        )
    return Decision(
        target=target,
        model=model_of(target, local_model_id(config)),
        rule=rule_name,
        privacy=level,
        task=request.task.task,
        reasons=tuple(reasons),
        fallbacks=fallbacks,
        trace=tuple(trace),
        fix=fix,
        redact=redact,
        redactions=count if redact else 0,
    )


def _health_hop(target: Target, config: Config, state: RouterState) -> tuple[Target, str] | None:
    """The configured fallback for an unavailable backend, and why; None when none applies."""
    match target:
        case CloudModel() if not state.cloud_available and config.fallback.cloud_unavailable:
            nxt = config.fallback.cloud_unavailable
            why = _detail(state.cloud_detail)
            return nxt, f"cloud unavailable{why} -> {nxt} (fallback.cloud_unavailable)"
        case LocalEngine() if not state.local_available and config.fallback.local_unavailable:
            nxt = config.fallback.local_unavailable
            why = _detail(state.local_detail)
            return nxt, f"local engine unavailable{why} -> {nxt} (fallback.local_unavailable)"
        case _:
            return None


def _enforce(
    target: Target,
    rule_name: str | None,
    level: PrivacyLevel,
    judged: PrivacyLevel,
    state: RouterState,
    reasons: list[str],
    config: Config,
) -> tuple[Target, str | None, str | None]:
    """The privacy invariant and the local engine's availability: (target, rule, fix).

    ``judged`` is the level a cloud model is judged by (the floor when detector findings
    will be redacted for it); a server gets the request unredacted, so ``level`` counts."""
    limit = config.privacy.cloud_max_privacy
    match target:
        case LocalServer(name=name) if not may_send(target, level, config):
            why = (
                f"privacy {level} is above what {target} may receive "
                f"({server_limit(config, name)}: it is not on this machine)"
            )
            return _keep_on_machine(why, level, state, reasons)
        case CloudModel() if judged > limit:
            why = (
                f"privacy {judged} is above cloud_max_privacy {limit}: it never leaves this machine"
            )
            return _keep_on_machine(why, judged, state, reasons)
        case LocalEngine() if not state.local_available:
            reasons.append(
                f"the local engine is unavailable{_detail(state.local_detail)} and no fallback "
                "applies"
            )
            fix = _local_fix(config, state) if judged <= limit else _privacy_fix(judged)
            return Refuse(), rule_name, fix
        case Refuse():
            return target, rule_name, "change or remove the rule that refuses, in .ds4router.yaml"
        case CloudModel() | LocalEngine() | LocalServer():
            return target, rule_name, None
        case _:
            assert_never(target)


def _keep_on_machine(
    why: str, level: PrivacyLevel, state: RouterState, reasons: list[str]
) -> tuple[Target, str | None, str | None]:
    """A target too public for the request: the local engine instead, else a refusal."""
    if state.local_available:
        reasons.append(f"{why} -> local")
        return LocalEngine(), "privacy", None
    reasons.append(f"{why}, and the local engine is unavailable{_detail(state.local_detail)}")
    return Refuse(), "privacy", _privacy_fix(level)


def _fallbacks(
    target: Target, config: Config, level: PrivacyLevel, cloud_allowed: bool
) -> tuple[Sendable, ...]:
    """What to try if the chosen backend fails before any token: never cloud above the limit."""
    candidate: Target | None
    match target:
        case Refuse():
            return ()
        case CloudModel():
            candidate = config.fallback.cloud_unavailable
        case LocalEngine() | LocalServer():
            candidate = config.fallback.local_unavailable
        case _:
            assert_never(target)
    match candidate:
        case None | Refuse():
            return ()
        case LocalEngine() | LocalServer() | CloudModel() if candidate != target:
            allowed = (
                cloud_allowed
                if isinstance(candidate, CloudModel)
                else may_send(candidate, level, config)
            )
            return (candidate,) if allowed else ()
        case _:
            return ()


def _detail(text: str) -> str:
    return f" ({text})" if text else ""


def _budget_words(state: RouterState) -> str:
    if state.budget_spent_usd is None or state.budget_cap_usd is None:
        return ""
    return f" (${state.budget_spent_usd:.2f} of ${state.budget_cap_usd:.2f})"


def _local_fix(config: Config, state: RouterState) -> str:
    """What would let a request the local engine cannot serve run: only changes that can
    work with this config (no cloud fallback to suggest when no cloud model can answer)."""
    local = (
        "run `ds4router models pull demo` (a demo-size model) or set local.engine.model_path"
        if not config.local.engine.model_path
        else f"make the model at {config.local.engine.model_path} loadable"
    )
    cloud = [m.name for m in config.cloud.models]
    if cloud and state.cloud_available:
        return (
            f"{local}, or send it to the cloud when local is down: "
            f"fallback.local_unavailable: 'cloud:{cloud[0]}' in .ds4router.yaml"
        )
    return (
        f"{local}; or add a cloud model (cloud.models with its api_key_env, and the key "
        "exported) and a route to it"
    )


def _privacy_fix(level: PrivacyLevel) -> str:
    return (
        "configure and start the local engine (local.engine.model_path) so it can serve "
        f"{level} requests; or, if this content may leave the machine, raise "
        f"privacy.cloud_max_privacy to {level} in .ds4router.yaml (not recommended), or add an "
        "allowlist pattern for a false positive (privacy.allowlist)"
    )
