"""Live configuration: reload when a config file changes, keep the last good one on error.

The app polls :meth:`ConfigWatcher.changed` on a timer (a few ``stat`` calls)
and, when it says so, calls :meth:`ConfigWatcher.reload` in a worker thread.
An invalid file, or one that is not text (any encoding ``ds4router.textio``
reads is read), yields a :class:`ConfigProblem` (the loader's message names
file:line and key, or the file and why) while :attr:`ConfigWatcher.current`
stays the last good configuration: the app never exits on one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ds4router import paths
from ds4router.config.loader import (
    PROJECT_FILE,
    ConfigLayer,
    LoadedConfig,
    find_project_dir,
    load_config,
    read_config_file,
)
from ds4router.config.schema import Config
from ds4router.errors import ConfigError, Ds4RouterError

Stamp = tuple[tuple[str, float | None, int | None], ...]


@dataclass(frozen=True)
class ConfigProblem:
    """Why the newest files could not be used; ``message`` starts with file:line."""

    message: str

    @property
    def first_line(self) -> str:
        return self.message.splitlines()[0] if self.message else ""


class ConfigWatcher:
    """The project's merged configuration, reloaded when its files change."""

    def __init__(self, project: str | Path | None, cwd: Path | None = None) -> None:
        self.project = project
        self.cwd = (cwd or Path.cwd()).resolve()
        self.problem: ConfigProblem | None = None
        self.current: LoadedConfig = self._first_load()
        self._stamp = self._files_stamp()

    # --- files ----------------------------------------------------------------

    @property
    def project_dir(self) -> Path:
        """Where the project file lives (or would, once written)."""
        if self.project is not None:
            return Path(self.project).expanduser().resolve()
        found = find_project_dir(self.cwd)
        return found if found is not None else self.cwd

    @property
    def project_file(self) -> Path:
        return self.project_dir / PROJECT_FILE

    def watched(self) -> tuple[Path, ...]:
        return (paths.user_config_file(), self.project_file)

    def _files_stamp(self) -> Stamp:
        out: list[tuple[str, float | None, int | None]] = []
        for path in self.watched():
            try:
                st = path.stat()
            except OSError:
                out.append((str(path), None, None))
            else:
                out.append((str(path), st.st_mtime, st.st_size))
        return tuple(out)

    def changed(self) -> bool:
        """Whether a watched file appeared, vanished or changed since the last load."""
        return self._files_stamp() != self._stamp

    # --- loading --------------------------------------------------------------

    def _first_load(self) -> LoadedConfig:
        try:
            return load_config(self.project, cwd=self.cwd)
        except ConfigError as exc:
            if self.project is not None and not Path(self.project).expanduser().is_dir():
                raise  # a wrong --project is the user's to fix before anything opens
            self.problem = ConfigProblem(str(exc))
            return self._defaults()

    def _defaults(self) -> LoadedConfig:
        """The built-in defaults, for a start with an invalid file (nothing good yet)."""
        default = paths.configs_dir() / "default.yaml"
        data = read_config_file(default)
        return LoadedConfig(
            config=Config.model_validate(data),
            project_dir=self.project_dir,
            layers=(ConfigLayer(default, data),),
            sources={},
            work_dir=self.project_dir,
        )

    def reload(self) -> LoadedConfig | ConfigProblem:
        """Load again; on error keep :attr:`current` and return the problem."""
        self._stamp = self._files_stamp()
        try:
            loaded = load_config(self.project, cwd=self.cwd)
        except Ds4RouterError as exc:  # ConfigError, unreadable bytes: the loader's one line
            self.problem = ConfigProblem(str(exc))
            return self.problem
        except (OSError, ValueError) as exc:
            # A file caught mid-write or vanished between stat and read: still not fatal,
            # the app keeps the last good configuration (the next change reloads again).
            self.problem = ConfigProblem(f"{self.project_file}: could not be reloaded ({exc})")
            return self.problem
        self.problem = None
        self.current = loaded
        return loaded
