"""The app's screens: report, estimator, settings, explain, and the config file in $EDITOR."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Any

from textual import on, work

from ds4router import paths
from ds4router.tui.app_base import AppBase
from ds4router.tui.threads import ui_call
from ds4router.tui.widgets.messages import AssistantMessage


class ScreensPart(AppBase):
    """The screens part of ``Ds4RouterApp``."""

    # --- screens --------------------------------------------------------------------------------

    def action_report(self) -> None:
        from ds4router.tui.screens.report import ReportScreen

        loaded = self.loaded
        self.push_screen(
            ReportScreen(
                db_path=self.db_path,
                project=loaded.project_name,
                project_dir=self.watcher.project_dir,
                cap=loaded.config.budget.monthly_usd,
                warn_at=loaded.config.budget.warn_at,
                now=self.clock(),
            )
        )

    def action_estimator(self) -> None:
        from ds4router.tui.screens.estimator import EstimatorScreen

        overrides = {
            name: rates.model_dump(exclude_none=True)
            for name, rates in self.loaded.config.pricing.overrides.items()
        }
        self.push_screen(EstimatorScreen(configs=paths.configs_dir(), overrides=overrides))

    def action_settings(self) -> None:
        from ds4router.tui.screens.settings import SettingsScreen

        problem = self.watcher.problem.first_line if self.watcher.problem else None
        self.push_screen(
            SettingsScreen(self.loaded, self.watcher.project_file, self.key_rows(), problem)
        )

    def action_explain(self) -> None:
        draft = self.composer.text.strip()
        if draft:
            self._explain(draft, None, "the draft")
            return
        answers = list(self.query(AssistantMessage))
        if not answers:
            self.notify("nothing to explain: type a message first")
            return
        self.explain_message(answers[-1])

    @on(AssistantMessage.ExplainRequested)
    def _badge_clicked(self, event: AssistantMessage.ExplainRequested) -> None:
        self.explain_message(event.message)

    def explain_message(self, last: AssistantMessage) -> None:
        """The Explain screen for a sent message: as routed, or re-evaluated if not known."""
        if last.decision is not None and last.request is not None:
            from ds4router.tui.screens.explain import ExplainScreen

            self.push_screen(
                ExplainScreen(last.decision, last.request, f"message of {last.stamp}, as routed")
            )
        elif last.prompt:
            self._explain(last.prompt, None, f"message of {last.stamp}, re-evaluated now")
        else:
            self.notify("no routing record for that message")

    @work(thread=True, exclusive=True, group="explain")
    def _explain(self, text: str, _unused: Any, subject: str) -> None:
        from ds4router.tui.screens.explain import ExplainScreen

        session = self.session
        if session is None:
            ui_call(self, self.notify, "still starting", severity="warning")
            return
        try:
            request, decision = session.preview(text)
        except Exception as exc:
            ui_call(self, self.notify, f"cannot explain: {exc}", severity="error")
            return
        ui_call(self, self.push_screen, ExplainScreen(decision, request, subject))

    def action_edit_config(self) -> None:
        path = self.watcher.project_file
        editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
        command = shlex.split(editor)
        if not command or shutil.which(command[0]) is None:
            self.notify(
                f"editor {editor!r} not found; set $EDITOR (e.g. export EDITOR=nano)",
                severity="error",
            )
            return
        if not path.exists():
            path.write_text(
                PROJECT_TEMPLATE.format(name=self.loaded.project_name), encoding="utf-8"
            )
        from textual.app import SuspendNotSupported

        try:
            with self.suspend():
                subprocess.call([*command, str(path)])
        except SuspendNotSupported:
            self.notify(f"this terminal cannot hand over to an editor; edit {path}")
            return
        self._poll_config()


PROJECT_TEMPLATE = """\
# ds4router project settings (see the README). Saved changes apply at once.
project: {name}
privacy:
  default: internal
  cloud_max_privacy: internal
routes: []
default: local
"""
