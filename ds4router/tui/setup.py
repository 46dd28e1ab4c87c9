"""Whether anything can answer yet: a local model on disk, or a cloud model with its key.

The welcome view is shown when neither is there; it names what each needs.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from ds4router.config.loader import LoadedConfig
from ds4router.routing.state import local_engine_status
from ds4router.targets import CloudModel, Target


@dataclass(frozen=True)
class SetupStatus:
    local_ok: bool
    local_detail: str
    cloud_ok: bool
    cloud_detail: str

    @property
    def nothing_configured(self) -> bool:
        return not self.local_ok and not self.cloud_ok


def cloud_models_in(loaded: LoadedConfig) -> list[str]:
    """Cloud models the config names: in ``cloud.models``, routes, fallbacks and budget."""
    config = loaded.config
    chosen: list[Target | None] = [rule.to for rule in config.routes]
    chosen += [config.default, config.budget.when_exceeded]
    chosen += [config.fallback.cloud_unavailable, config.fallback.local_unavailable]
    names = [m.name for m in config.cloud.models]
    names += [target.model for target in chosen if isinstance(target, CloudModel)]
    return list(dict.fromkeys(names))


def setup_status(loaded: LoadedConfig, env: Mapping[str, str] | None = None) -> SetupStatus:
    from ds4router.backends.endpoints import PROVIDER_DEFAULTS, resolve

    env = os.environ if env is None else env
    local_ok, local_detail = local_engine_status(loaded)
    ready: list[str] = []
    missing: list[str] = []
    for model in cloud_models_in(loaded):
        target = resolve(model, loaded.config.cloud)
        if target.api_key_env is None or env.get(target.api_key_env):
            ready.append(model)
        else:
            missing.append(f"{model} needs {target.api_key_env}")
    if ready:
        more = f" +{len(ready) - 2}" if len(ready) > 2 else ""
        return SetupStatus(local_ok, local_detail, True, ", ".join(ready[:2]) + more)
    keys = sorted(var for _, var in PROVIDER_DEFAULTS.values() if env.get(var))
    if keys:
        return SetupStatus(
            local_ok, local_detail, True, "key in the environment: " + ", ".join(keys)
        )
    if missing:
        return SetupStatus(local_ok, local_detail, False, "; ".join(missing))
    return SetupStatus(
        local_ok,
        local_detail,
        False,
        "no cloud model configured and no provider key (e.g. OPENAI_API_KEY) in the environment",
    )
