"""Widgets of the TUI: messages, the input, the sidebar and its parts."""

from __future__ import annotations
