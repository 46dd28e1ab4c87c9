"""Whether a model named on the command line (``ask --model``) can be had, and close names.

A name is known when it is a target of this config (``local``, ``refuse``, a configured
``local:<server>``, a cloud model the config names) or a model of LiteLLM's bundled map (a
provider key in the environment is enough for those). Anything else is a typo far more often
than a gateway's private model: the command stops with exit 2 and the closest names, instead
of sending it somewhere. ``difflib`` ranks the suggestions (the standard library's
similarity ratio is all this needs).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from ds4router.config.loader import LoadedConfig
from ds4router.targets import CloudModel, LocalEngine, LocalServer, Refuse, Target


def configured_names(loaded: LoadedConfig) -> list[str]:
    """The targets this config can send to, as ``--model`` spells them."""
    from ds4router.tui.setup import cloud_models_in

    names = ["local", "refuse"]
    names += [f"local:{server.name}" for server in _servers(loaded)]
    names += cloud_models_in(loaded)
    return list(dict.fromkeys(names))


def _servers(loaded: LoadedConfig) -> list[object]:
    return list(getattr(loaded.config.local, "servers", []) or [])


def catalog_names() -> set[str]:
    """Model ids of LiteLLM's bundled map (keys and ``provider/model`` names); read offline."""
    from pricing.litellm_map import canonical_name, map_path, read_map

    path = map_path()
    if path is None:
        return set()
    names: set[str] = set()
    for key, info in read_map(path).items():
        if key != "sample_spec" and isinstance(info, dict):
            names.add(key)
            names.add(canonical_name(key, str(info.get("litellm_provider") or "")))
    return names


def unknown_model(target: Target, configured: Iterable[str], catalog: set[str]) -> str | None:
    """Why ``target`` cannot be used (with close names), or None when it can."""
    known = list(configured)
    match target:
        case LocalEngine() | Refuse():
            return None
        case LocalServer(name=name):
            spelled = f"local:{name}"
            if spelled in known:
                return None
            pool = [k for k in known if k.startswith("local")]
            return _message(spelled, pool, "no local server of that name in local.servers")
        case CloudModel(model=model):
            if model in known or model in catalog:
                return None
            return _message(model, [*known, *catalog], "not configured and not in LiteLLM's map")


def _message(name: str, pool: list[str], why: str) -> str:
    close = difflib.get_close_matches(name, pool, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    return (
        f"--model {name}: unknown model ({why}){hint} "
        "(`ds4router config show` lists the configured ones)"
    )
