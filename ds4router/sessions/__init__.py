"""Answering a request: the pipeline that plans, runs and records a turn, conversations and
their context windows, history and exact local token counts.

``plan`` (pure: classify -> decide -> enforce), ``runner`` (attempts, fallbacks, window
fitting, metering) and ``recorder`` (ledger + history) are the three steps; ``session``
composes them for every front end, ``backend_pool`` keeps the backends they use.
"""
