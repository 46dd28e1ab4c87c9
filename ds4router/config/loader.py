"""Load the layered configuration: built-in default < user config < project file.

Each file is parsed with line marks and validated on its own, so an error names
the file, the line and the key (and the closest valid key for a typo). The
layers are then deep-merged (mappings merge, lists and scalars replace) and the
result validated once more. ``LoadedConfig.sources`` says which file each value
came from.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ds4router import paths
from ds4router.config.schema import Config
from ds4router.errors import ConfigError
from ds4router.textio import UnreadableInput, read_text_any

PROJECT_FILE = ".ds4router.yaml"
BUILTIN = "<built-in>"


@dataclass(frozen=True)
class ConfigLayer:
    path: Path
    data: dict[str, Any]


@dataclass(frozen=True)
class LoadedConfig:
    config: Config
    project_dir: Path | None
    layers: tuple[ConfigLayer, ...]
    sources: dict[str, str] = field(default_factory=dict)
    # The directory ds4router was started in (or --project): names a project that has no
    # .ds4router.yaml yet, so its rows are not all filed under "default".
    work_dir: Path | None = None

    @property
    def project_name(self) -> str:
        if self.config.project:
            return self.config.project
        for directory in (self.project_dir, self.work_dir):
            if directory is not None and directory.name:
                return directory.name
        return "default"

    @property
    def project_file(self) -> Path | None:
        return None if self.project_dir is None else self.project_dir / PROJECT_FILE


def find_project_dir(start: Path) -> Path | None:
    """The nearest directory at or above ``start`` holding a ``.ds4router.yaml``."""
    current = start.resolve()
    for directory in (current, *current.parents):
        if (directory / PROJECT_FILE).is_file():
            return directory
    return None


def load_config(
    project: str | Path | None = None,
    *,
    cwd: Path | None = None,
    user_file: Path | None = None,
) -> LoadedConfig:
    """The merged configuration for a project.

    ``project`` is a project directory (``--project DIR``); when None the
    project is found by walking up from ``cwd`` (default: the working directory).
    A project directory without a ``.ds4router.yaml`` is allowed: defaults apply.
    """
    if project is not None:
        project_dir: Path | None = Path(project).expanduser().resolve()
        assert project_dir is not None
        if not project_dir.is_dir():
            raise ConfigError(f"--project {project}: no such directory")
    else:
        project_dir = find_project_dir(cwd or Path.cwd())

    files: list[Path] = [paths.configs_dir() / "default.yaml"]
    user_path = user_file if user_file is not None else paths.user_config_file()
    if user_path.is_file():
        files.append(user_path)
    if project_dir is not None and (project_dir / PROJECT_FILE).is_file():
        files.append(project_dir / PROJECT_FILE)

    layers = tuple(ConfigLayer(path, read_config_file(path)) for path in files)
    merged: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for layer in layers:
        label = BUILTIN if layer.path == files[0] else str(layer.path)
        merged = deep_merge(merged, layer.data)
        for key in flatten_keys(layer.data):
            # A later layer's value replaces the whole subtree below a list or scalar.
            for old in [k for k in sources if k == key or k.startswith(key + ".")]:
                del sources[old]
            sources[key] = label
    try:
        config = Config.model_validate(merged)
    except ValidationError as exc:  # a cross-field rule broken by the merge
        raise ConfigError(_format_errors(exc, "the merged configuration", None)) from None
    config = _with_demo_model(config, sources)
    work_dir = project_dir or (cwd or Path.cwd()).resolve()
    return LoadedConfig(
        config=config, project_dir=project_dir, layers=layers, sources=sources, work_dir=work_dir
    )


DEMO_SOURCE = "<demo model: ds4router models pull demo>"


def _with_demo_model(config: Config, sources: dict[str, str]) -> Config:
    """With no local model configured, the pulled demo model (if any) is the local engine."""
    if config.local.engine.model_path:
        return config
    from ds4router.demo_model import installed_demo

    found = installed_demo()
    if found is None:
        return config
    engine = config.local.engine.model_copy(update={"kind": "mlx-lm", "model_path": str(found)})
    sources["local.engine.model_path"] = sources["local.engine.kind"] = DEMO_SOURCE
    local = config.local.model_copy(update={"engine": engine})
    return config.model_copy(update={"local": local})


def read_config_file(path: Path) -> dict[str, Any]:
    """Parse and validate one YAML file; raises ConfigError with file:line: key."""
    if not path.exists():
        raise ConfigError(f"{path}: no such file")
    try:
        text, _ = read_text_any(path)
    except UnreadableInput as exc:
        raise ConfigError(str(exc)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: the top level must be a mapping of keys (e.g. 'routes:')")
    try:
        Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path), node)) from None
    return data


def validate_file(path: Path) -> Config:
    """Check one file on its own (``ds4router config validate``)."""
    return Config.model_validate(read_config_file(path))


def deep_merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def flatten_keys(data: Mapping[str, Any], prefix: str = "") -> Iterator[str]:
    """Dotted keys of the leaves; a list counts as one leaf."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            yield from flatten_keys(value, dotted + ".")
        else:
            yield dotted


def source_of(sources: Mapping[str, str], dotted: str) -> str:
    """The file a (possibly nested) key's value came from."""
    key = dotted
    while key:
        if key in sources:
            return sources[key]
        key = key.rpartition(".")[0]
    return BUILTIN


# --- error messages ---------------------------------------------------------


def _format_errors(exc: ValidationError, where: str, node: yaml.Node | None) -> str:
    lines = []
    for error in exc.errors():
        loc = tuple(error["loc"])
        line = _line_of(node, loc) if node is not None else None
        key = _dotted(loc)
        prefix = f"{where}:{line}" if line is not None else where
        message = _message(error, loc)
        lines.append(f"{prefix}: {key}: {message}" if key else f"{prefix}: {message}")
    first, *rest = lines
    if rest:
        return first + "\n" + "\n".join("  " + line for line in rest)
    return first


def _message(error: Mapping[str, Any], loc: tuple[Any, ...]) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        name = str(loc[-1])
        valid = _valid_keys(loc[:-1])
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        listed = ", ".join(sorted(valid)) if valid else ""
        tail = f" (valid keys: {listed})" if listed and not close else ""
        return f"unknown key '{name}'{hint}{tail}"
    message = str(error["msg"])
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if kind == "enum" and "expected" in error.get("ctx", {}):
        message = f"must be one of {error['ctx']['expected']}"
    if kind == "missing":
        message = "is required"
    return message


def _valid_keys(loc: tuple[Any, ...]) -> list[str]:
    model: Any = Config
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            return []
        info = model.model_fields.get(str(part))
        if info is None:
            return []
        model = _model_in(info.annotation)
    if isinstance(model, type) and issubclass(model, BaseModel):
        return list(model.model_fields)
    return []


def _model_in(annotation: Any) -> Any:
    """The BaseModel inside ``X``, ``list[X]``, ``X | None`` or ``dict[str, X]``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()) or ():
        found = _model_in(arg)
        if found is not None:
            return found
    return None


def _dotted(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not str(part).startswith("function-") and "[" not in str(part):
            out += ("." if out else "") + str(part)
    return out


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int | None:
    """The 1-based line of the deepest YAML node on the error's path."""
    best = node.start_mark.line + 1 if node is not None else None
    current = node
    for part in loc:
        if isinstance(current, yaml.MappingNode):
            nxt = None
            for key_node, value_node in current.value:
                if key_node.value == str(part):
                    best = key_node.start_mark.line + 1
                    nxt = value_node
                    break
            if nxt is None:
                return best
            current = nxt
        elif isinstance(current, yaml.SequenceNode) and isinstance(part, int):
            if part >= len(current.value):
                return best
            current = current.value[part]
            best = current.start_mark.line + 1
        else:
            return best
    return best
