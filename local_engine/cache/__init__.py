"""Decode state and its caches: per-layer KV state, RAM/SSD tiering, the on-disk KV store and
prefix reuse.
"""
