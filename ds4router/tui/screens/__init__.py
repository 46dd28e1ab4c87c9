"""Screens over the chat: report, estimator, explain, settings, and small dialogs."""

from __future__ import annotations
