"""Deciding where a request goes: privacy levels, detectors, the privacy invariant, task
classification, the router and its explanation. Pure functions of (request, config, state).
"""
