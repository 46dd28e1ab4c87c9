"""The error base of the local_engine package: one class, a message a user can act on.

Everything the engine raises on purpose (a bad checkpoint, a config it cannot
run, a cache that does not fit the model) is an ``EngineError`` or a subclass,
so callers catch one type and show its message without a traceback.
"""

from __future__ import annotations


class EngineError(Exception):
    """A local-engine failure whose message says what was wrong and what to do."""


class CheckpointError(EngineError):
    """A checkpoint directory, file or tensor is not what the model expects.

    The message names the file, the tensor and what was expected.
    """


class CacheError(EngineError):
    """A decode-state snapshot does not match the model or layer it is restored into."""
