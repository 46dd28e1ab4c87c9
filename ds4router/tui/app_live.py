"""The app's live state: the sidebar's month figures, the local engine's load, cloud health,
the configuration reloaded when its files change (and the session replaced with it)."""

from __future__ import annotations

import time
from typing import Any

from textual import work

from ds4router.config.loader import LoadedConfig
from ds4router.tui.app_base import AppBase
from ds4router.tui.config_watch import ConfigProblem
from ds4router.tui.engine_loader import EngineStatus, initial_status, load_engine
from ds4router.tui.threads import ui_call


class LivePart(AppBase):
    """The live-state part of ``Ds4RouterApp``."""

    # --- sidebar figures, engine, cloud ------------------------------------------------------

    @work(thread=True, exclusive=True, group="figures")
    def refresh_figures(self) -> None:
        from ds4router.tui.figures import month_figures

        try:
            figures = month_figures(self.loaded, self.clock(), self.db_path)
        except Exception as exc:
            ui_call(self, self.notify, f"ledger: {exc}", severity="error")
            return
        ui_call(self, self.sidebar.show_figures, figures)

    def _maybe_load_engine(self) -> None:
        status = initial_status(self.loaded)
        self._set_engine(status)
        path = self.loaded.config.local.engine.model_path
        if status.state == "loading" and self.load_local_engine and path != self._engine_path:
            self._engine_path = path
            self._engine_started = time.monotonic()
            self._load_engine()

    @work(thread=True, exclusive=True, group="engine")
    def _load_engine(self) -> None:
        from textual.worker import get_current_worker

        worker = get_current_worker()

        def report(status: EngineStatus) -> None:
            ui_call(self, self._set_engine, status)

        def stop() -> bool:  # quitting, or a newer load (another model_path) took over
            return worker.is_cancelled or not self.is_running

        final = load_engine(self.loaded, report, stop)
        if not stop():
            ui_call(self, self._set_engine, final)

    def _set_engine(self, status: EngineStatus) -> None:
        self.engine_status = status
        if status.state != "loading":
            self._engine_started = None
        self.sidebar.show_engine(status)

    def _tick_engine(self) -> None:
        status = self.engine_status
        if status.state == "loading" and status.fraction is None and self._engine_started:
            elapsed = time.monotonic() - self._engine_started
            self._set_engine(EngineStatus("loading", status.detail, elapsed_s=elapsed))

    @work(thread=True, exclusive=True, group="cloud-health")
    def _cloud_health(self) -> None:
        from ds4router.backends.cloud import CloudBackend

        try:
            health = CloudBackend(self.loaded.config.cloud, env=self.env).health()
            status: str = health.status
            detail = health.detail
        except Exception as exc:
            status, detail = "unknown", str(exc)
        if status == "not_configured" and self._setup is not None and self._setup.cloud_ok:
            # Keys in the environment, no cloud.models: the provider defaults apply.
            status, detail = "ready", self._setup.cloud_detail
        ui_call(self, self.sidebar.show_cloud, status, detail)

    # --- live configuration ----------------------------------------------------------------------

    def _poll_config(self) -> None:
        if self.watcher.changed():
            self._reload_config()

    def action_reload_config(self) -> None:
        self._reload_config()

    def action_pull_demo(self) -> None:
        self.notify("fetching the demo-size model (about 93 MB)…", timeout=5)
        self._pull_demo()

    @work(thread=True, exclusive=True, group="pull-demo")
    def _pull_demo(self) -> None:
        from ds4router.demo_model import LABEL, pull_demo
        from ds4router.errors import Ds4RouterError

        try:
            pull_demo()
        except Ds4RouterError as exc:
            ui_call(self, self.notify, str(exc), severity="error", timeout=15)
            return
        ui_call(self, self.notify, f"the {LABEL} is ready: ask away", timeout=5)
        ui_call(self, self._reload_config)  # the loader now finds it: a new session answers

    @work(thread=True, exclusive=True, group="config")
    def _reload_config(self) -> None:
        from ds4router.tui.setup import setup_status

        result = self.watcher.reload()
        if isinstance(result, ConfigProblem):
            ui_call(self, self._show_problem, result)
            return
        setup = setup_status(result, self.env)
        ui_call(self, self._config_reloaded, result, setup)

    def _config_reloaded(self, loaded: LoadedConfig, setup: Any) -> None:
        self._show_problem(None)
        self._setup = setup
        self._apply_keymap(loaded)
        self.sidebar.show_config(loaded)
        self._topbar("generating…  Esc cancels" if self.generating else "ready")
        if self.generating:
            self._session_stale = True  # swap once the answer in flight is done
        else:
            self._replace_session()
        self._update_welcome()
        self.refresh_figures()
        self._maybe_load_engine()
        if self.check_cloud_health:
            self._cloud_health()
        self.notify("configuration reloaded", timeout=3)

    def _replace_session(self) -> None:
        self._session_stale = False
        old = self.session
        if old is not None and hasattr(old, "close"):
            old.close()
        try:
            self.session = self.session_factory(self.loaded)
        except Exception as exc:
            self.notify(f"cannot start a session: {exc}", severity="error")
            return
        if self.composer.text.strip():
            self.preview(self.composer.text)
