"""Where a request can go: the ``Target`` values, parsed once from the config's spelling.

YAML (and ``--model``) spell a target as ``local`` (the in-process engine),
``local:<name>`` (an OpenAI-compatible server on loopback: local for the privacy
invariant), ``cloud:<model id>`` (a LiteLLM model) or ``refuse``. The config
boundary (:mod:`ds4router.config.schema`) turns that string into one of the
values below; everything after it dispatches on their types with ``match`` (mypy
checks the cases are exhaustive with ``assert_never``). ``str(target)`` renders
the YAML spelling back, so the ledger, history and JSON output keep the strings
they always had.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, assert_never

# The model name the ledger and the badge give the in-process engine.
LOCAL_MODEL = "local/deepseek-v4-flash"

_SERVER_NAME = re.compile(r"[A-Za-z0-9_.\-]+")
_CLOUD_MODEL = re.compile(r"[A-Za-z0-9_.\-/:@]+")
SPELLINGS = "'local', 'local:<server>', 'refuse' or 'cloud:<model id>'"


@dataclass(frozen=True)
class LocalEngine:
    """The in-process DeepSeek V4 Flash engine (``local``)."""

    def __str__(self) -> str:
        return "local"


@dataclass(frozen=True)
class LocalServer:
    """An OpenAI-compatible server on loopback, by its configured name (``local:<name>``)."""

    name: str

    def __str__(self) -> str:
        return f"local:{self.name}"


@dataclass(frozen=True)
class CloudModel:
    """A cloud model by its LiteLLM id (``cloud:<model>``): the one kind that leaves the machine."""

    model: str

    def __str__(self) -> str:
        return f"cloud:{self.model}"


@dataclass(frozen=True)
class Refuse:
    """Send nothing (``refuse``)."""

    def __str__(self) -> str:
        return "refuse"


Target = LocalEngine | LocalServer | CloudModel | Refuse
# A target a request is actually sent to (a decision's target unless refused, its fallbacks).
Sendable = LocalEngine | LocalServer | CloudModel
# The ledger's and history's route column.
Route = Literal["local", "cloud"]


def parse_target(spec: str) -> Target:
    """The target ``spec`` spells; ValueError (a line a user can act on) for anything else."""
    kind, sep, rest = spec.partition(":")
    if not sep and kind == "local":
        return LocalEngine()
    if not sep and kind == "refuse":
        return Refuse()
    if sep and kind == "local" and _SERVER_NAME.fullmatch(rest):
        return LocalServer(rest)
    if sep and kind == "cloud" and _CLOUD_MODEL.fullmatch(rest):
        return CloudModel(rest)
    raise ValueError(
        f"{spec!r} is not a target; use {SPELLINGS} (for example 'cloud:openai/gpt-4.1')"
    )


def explicit_target(model: str) -> Target:
    """The target of a model named on the command line: a target's spelling, or a bare
    cloud model id (``--model openai/gpt-4.1`` means ``cloud:openai/gpt-4.1``)."""
    try:
        return parse_target(model)
    except ValueError:
        return CloudModel(model)


def model_of(target: Target, local_model: str = LOCAL_MODEL) -> str | None:
    """The model id the ledger records for ``target`` (None: refused, nothing ran);
    ``local_model``: the in-process engine's, which its configuration decides."""
    match target:
        case LocalEngine():
            return local_model
        case LocalServer(name=name):
            return name
        case CloudModel(model=model):
            return model
        case Refuse():
            return None
        case _:
            assert_never(target)


def route_of(target: Sendable) -> Route:
    """Where ``target`` runs, as the ledger's route column says it."""
    match target:
        case LocalEngine() | LocalServer():
            return "local"
        case CloudModel():
            return "cloud"
        case _:
            assert_never(target)


def leaves_machine(target: Target) -> bool:
    """Whether sending to ``target`` leaves this machine: what the privacy invariant guards."""
    match target:
        case CloudModel():
            return True
        case LocalEngine() | LocalServer() | Refuse():
            return False
        case _:
            assert_never(target)


__all__ = [
    "LOCAL_MODEL",
    "CloudModel",
    "LocalEngine",
    "LocalServer",
    "Refuse",
    "Route",
    "Sendable",
    "Target",
    "explicit_target",
    "leaves_machine",
    "model_of",
    "parse_target",
    "route_of",
]
