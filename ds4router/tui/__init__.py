"""The Textual TUI: the chat app users live in (``ds4router`` with no sub-command).

The package sits on top of the core (config, router, session, history, pricing);
nothing in the core imports it. Start it with
:func:`ds4router.commands.tui_cmd.run_tui`. Heavy libraries (litellm, mlx,
torch) are imported only after the first paint, inside workers.
"""

from __future__ import annotations
