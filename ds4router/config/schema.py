"""The configuration's shape: pydantic v2 models, strict (unknown keys are errors).

Only the config boundary uses pydantic; the rest of the code reads these models
or plain values taken from them.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from ds4router import targets
from ds4router.routing.levels import PrivacyLevel

TASK_TYPES: tuple[str, ...] = (
    "boilerplate",
    "explain",
    "refactor",
    "tests",
    "debug",
    "architecture",
    "agent",
    "batch",
    "chat",
)


def check_target(value: object) -> targets.Target:
    """A route target from its YAML spelling (:func:`ds4router.targets.parse_target`)."""
    if isinstance(value, targets.LocalEngine | targets.LocalServer | targets.CloudModel):
        return value  # a default, or a model built in code
    if isinstance(value, targets.Refuse):
        return value
    if not isinstance(value, str):
        raise ValueError(f"{value!r} is not a target; use {targets.SPELLINGS}")
    return targets.parse_target(value)


def check_regexes(patterns: list[str]) -> list[str]:
    """Every pattern compiles (so a typo fails at load, with the pattern named)."""
    for pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"pattern {pattern!r} is not a regex: {exc}") from exc
    return patterns


# Parsed once, here; dumped (config show, the settings screen) as its YAML spelling.
Target = Annotated[
    targets.Target,
    PlainValidator(check_target),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {"type": "string", "description": "local | local:<server> | refuse | cloud:<model>"}
    ),
]
Fraction = Annotated[float, Field(ge=0.0)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PathRule(Strict):
    glob: str
    level: PrivacyLevel


class DetectorLevels(Strict):
    secrets: PrivacyLevel = PrivacyLevel.SECRET
    pii: PrivacyLevel = PrivacyLevel.CONFIDENTIAL
    disabled: list[str] = Field(default_factory=list)


class PrivacyConfig(Strict):
    default: PrivacyLevel = PrivacyLevel.INTERNAL
    cloud_max_privacy: PrivacyLevel = PrivacyLevel.INTERNAL
    # The most a `trust: on_prem` server (a team's vLLM/SGLang inside its network) may get.
    on_prem_max_privacy: PrivacyLevel = PrivacyLevel.CONFIDENTIAL
    allow_downgrade: bool = False
    paths: list[PathRule] = Field(default_factory=list)
    detectors: DetectorLevels = Field(default_factory=DetectorLevels)
    allowlist: list[str] = Field(
        default_factory=list, description="regexes; a finding whose text matches is ignored"
    )
    unreadable: PrivacyLevel = Field(
        PrivacyLevel.CONFIDENTIAL,
        description="the level of content that cannot be read as text (binary, image, archive)",
    )
    on_detected: Literal["keep_local", "redact"] = Field(
        "keep_local",
        description="redact: a request private only by detector findings may go to the cloud "
        "with each finding replaced by a placeholder",
    )

    _allowlist = field_validator("allowlist")(lambda value: check_regexes(value))


class RuleWhen(Strict):
    privacy: list[PrivacyLevel] | None = None
    task: list[str] | None = None
    min_tokens: int | None = Field(default=None, ge=0)
    max_tokens: int | None = Field(default=None, ge=0)
    over_budget: bool | None = None
    local_healthy: bool | None = None
    cloud_healthy: bool | None = None


class RouteRule(Strict):
    name: str
    when: RuleWhen = Field(default_factory=RuleWhen)
    to: Target


class FallbackConfig(Strict):
    cloud_unavailable: Target | None = targets.LocalEngine()
    local_unavailable: Target | None = None


class BudgetConfig(Strict):
    monthly_usd: float | None = Field(default=None, ge=0)
    warn_at: list[Fraction] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    when_exceeded: Target = targets.LocalEngine()


class PriceRates(Strict):
    """USD per 1M tokens."""

    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    reasoning: float | None = Field(default=None, ge=0)


class PricingConfig(Strict):
    reference_model: str | None = "anthropic/claude-opus-4-7"
    overrides: dict[str, PriceRates] = Field(default_factory=dict)


class CloudModel(Strict):
    name: str
    api_base: str | None = None
    api_key_env: str | None = None
    # For models LiteLLM's map does not know (a gateway, a private deployment), or to
    # override it: conversations are fitted to this window (ds4router.sessions.context_window).
    context_window: int | None = Field(
        default=None, gt=0, strict=True, description="tokens the model accepts, prompt included"
    )
    max_output_tokens: int | None = Field(
        default=None, gt=0, strict=True, description="tokens kept for the answer"
    )

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", value):
            raise ValueError(
                "api_key_env takes the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                "never the key itself"
            )
        return value


class CloudTimeouts(Strict):
    connect_s: float = Field(default=10.0, gt=0)
    first_token_s: float = Field(default=60.0, gt=0)
    total_s: float = Field(default=600.0, gt=0)


class CloudConfig(Strict):
    models: list[CloudModel] = Field(default_factory=list)
    timeouts: CloudTimeouts = Field(default_factory=CloudTimeouts)
    retries: int = Field(default=2, ge=0, le=10)


class EngineConfig(Strict):
    # deepseek-v4: our DeepSeek V4 Flash engine; mlx-lm: any model mlx-lm loads (an MLX
    # model directory, or a llama .gguf file such as the demo model).
    kind: Literal["deepseek-v4", "mlx-lm"] = "deepseek-v4"
    model_path: str | None = None
    max_tokens: int = Field(default=1024, ge=1, description="output cap for requests setting none")
    kv_cache_dir: str | None = None
    kv_ram_gb: float = Field(default=8.0, ge=0)
    kv_disk_gb: float = Field(default=64.0, ge=0)


class PowerConfig(Strict):
    watts: float = Field(default=90.0, ge=0)
    source: Literal["auto", "configured"] = "auto"


class HardwareConfig(Strict):
    price_usd: float = Field(default=0.0, ge=0)
    lifetime_years: float = Field(default=3.0, gt=0)
    hours_per_day: float = Field(default=8.0, gt=0, le=24)
    inference_share: float = Field(default=1.0, ge=0, le=1)


class ServerConfig(Strict):
    """An OpenAI-compatible server (ds4 server, llama.cpp, Ollama, LM Studio, mlx_lm.server,
    vLLM), targeted as ``local:<name>``. On loopback it is local for the privacy invariant;
    elsewhere it is a cloud target unless ``trust: on_prem`` (capped by
    ``privacy.on_prem_max_privacy``)."""

    name: str = Field(pattern=r"^[A-Za-z0-9_.\-]+$")
    api_base: str = Field(
        pattern=r"^(https?://|unix://)", description="e.g. http://127.0.0.1:8080/v1"
    )
    model: str = Field(min_length=1, description="the model name the server expects")
    api_key_env: str | None = None
    power: float | None = Field(default=None, ge=0, description="watts; default local.power")
    trust: Literal["on_prem"] | None = None


class LocalConfig(Strict):
    engine: EngineConfig = Field(default_factory=EngineConfig)
    servers: list[ServerConfig] = Field(default_factory=list)
    power: PowerConfig = Field(default_factory=PowerConfig)
    electricity_usd_per_kwh: float = Field(default=0.17, ge=0)
    hardware: HardwareConfig = Field(default_factory=HardwareConfig)


class TaskSpec(Strict):
    """Features of one task type: each keyword or regex that matches adds its weight."""

    keywords: list[str] = Field(default_factory=list)
    patterns: list[str] = Field(default_factory=list)
    weight: float = Field(default=1.0, gt=0)

    _patterns = field_validator("patterns")(lambda value: check_regexes(value))


class ClassifierConfig(Strict):
    min_score: float = Field(default=1.0, ge=0)
    fallback: str = "chat"
    tasks: dict[str, TaskSpec] = Field(default_factory=dict)


class ServeKey(Strict):
    """A key agents present to ``ds4router serve``, held in an environment variable."""

    name: str = Field(min_length=1, description="the client's name in the ledger")
    key_env: str = Field(min_length=1, description="environment variable holding the key")
    project: str | None = Field(default=None, description="project directory for this key")


class ServeConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=8787, ge=0, le=65535, description="0: any free port")
    keys: list[ServeKey] = Field(default_factory=list)


class Config(Strict):
    project: str | None = None
    privacy: PrivacyConfig = Field(default_factory=PrivacyConfig)
    routes: list[RouteRule] = Field(default_factory=list)
    default: Target = targets.LocalEngine()
    fallback: FallbackConfig = Field(default_factory=FallbackConfig)
    budget: BudgetConfig = Field(default_factory=BudgetConfig)
    pricing: PricingConfig = Field(default_factory=PricingConfig)
    cloud: CloudConfig = Field(default_factory=CloudConfig)
    local: LocalConfig = Field(default_factory=LocalConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    history: Literal["on", "off"] = "on"
    keymap: dict[str, str] = Field(default_factory=dict)
    serve: ServeConfig = Field(default_factory=ServeConfig)

    @field_validator("history", mode="before")
    @classmethod
    def _yaml_bool(cls, value: object) -> object:
        # YAML 1.1 reads a bare `on`/`off` as a boolean.
        if value is True:
            return "on"
        if value is False:
            return "off"
        return value

    @model_validator(mode="after")
    def _unique_rule_names(self) -> Config:
        seen: set[str] = set()
        for rule in self.routes:
            if rule.name in seen:
                raise ValueError(f"two routes are named {rule.name!r}; names must be unique")
            seen.add(rule.name)
        return self
