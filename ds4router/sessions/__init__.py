"""Answering a request: the pipeline that plans, runs and records a turn, conversations and
their context windows, history and exact local token counts.
"""
