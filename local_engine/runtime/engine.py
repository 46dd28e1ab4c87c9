"""The engine: a loaded model + tokenizer that turns chat messages into streamed events.

``Engine.load(path)`` checks the directory before touching the weights (config.json, a known
``model_type``, safetensors present), estimates the memory the weights need from the
safetensors headers and compares it with what the machine has, refusing clearly when the
model cannot fit. It then loads the tokenizer (a mismatch fails before any weight is read)
and the model (shape mismatches name the tensor), reporting how far the weights are to an
optional ``progress`` callback (:class:`local_engine.checkpoint.loader.LoadProgress`). Engines are
cached per process by resolved path: loading an 80 GB model twice would be a disaster, so
every caller shares one.

``Engine.generate`` renders the messages with the DeepSeek V4 chat encoding (tools
included), tokenizes, and streams ``local_engine.runtime.generate`` events. Generations run
on the engine's scheduler (``local_engine.runtime.scheduler``): several callers share the
model a step (one token or prefill chunk) at a time, so a long answer does not starve a
short one. A ``session`` id keeps that conversation's decode states in RAM between turns
(``local_engine.cache.sessions``, within ``kv_ram_bytes``, spilled to the disk cache).

``Engine.use_kv_cache(dir, disk_bytes=, ram_bytes=)`` turns on prefix reuse through the KV
cache on disk (keyed by ``Engine.fingerprint``) and, with a RAM budget, tiered decode state
(old compressed CSA rows in memory-mapped files). Chat turns are saved at the prompt's end
and at the turn's end (the next request's prompt starts with both); in thinking mode the
next prompt re-renders this one's closing ``<think>`` as ``</think>``, so the state just
before it is saved instead and the turn's end is not.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from local_engine.errors import CheckpointError, EngineError
from local_engine.runtime.chat import ChatEncodingError, render_prompt
from local_engine.runtime.generate import (
    Event,
    GenerationParams,
    PrefillProgress,
    StateCache,
    generation_steps,
)
from local_engine.runtime.scheduler import Scheduler
from local_engine.runtime.tokenizer import ASSISTANT, THINK_END, THINK_START, Tokenizer

if TYPE_CHECKING:
    from local_engine.cache.prefix_cache import PrefixCache
    from local_engine.cache.sessions import LiveSessions
    from local_engine.checkpoint.loader import LoadCallback

GIB = 1024**3
# Beyond the weights: activations, the decode state and MLX's allocator slack. The decode
# state of V4 grows by ~7 KB a token (ENGINE.md), so 10 % + 512 MiB covers long chats
# without pretending to precision we do not have.
OVERHEAD_FRACTION = 0.10
OVERHEAD_FIXED = 512 * 1024**2

# safetensors dtype names -> bytes per element (F8 variants and packed ints included).
_DTYPE_BYTES = {
    "F64": 8, "I64": 8, "U64": 8,
    "F32": 4, "I32": 4, "U32": 4,
    "F16": 2, "BF16": 2, "I16": 2, "U16": 2,
    "F8_E4M3": 1, "F8_E5M2": 1, "F8_E8M0": 1, "I8": 1, "U8": 1, "BOOL": 1,
}  # fmt: skip


class InsufficientMemoryError(EngineError):
    """The model would not fit in the memory this machine has."""


@dataclass(frozen=True)
class MemoryEstimate:
    """What loading a checkpoint needs, and what the machine offers, in bytes."""

    weights_bytes: int
    overhead_bytes: int
    available_bytes: int | None
    available_source: str

    @property
    def needed_bytes(self) -> int:
        return self.weights_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.available_bytes is None or self.needed_bytes <= self.available_bytes


@dataclass(frozen=True)
class EngineInfo:
    """What a loaded model is: sizes, bytes by storage type, limits, provenance."""

    path: str
    model_type: str
    parameters: int
    weight_bytes: int
    bytes_by_dtype: Mapping[str, int]
    layers: int
    context_limit: int
    vocab_size: int
    hidden_size: int
    routed_experts: int
    experts_per_token: int
    is_random: bool
    tokenizer_path: str
    random_weights: Mapping[str, Any] | None = field(default=None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "model_type": self.model_type,
            "parameters": self.parameters,
            "weight_bytes": self.weight_bytes,
            "bytes_by_dtype": dict(self.bytes_by_dtype),
            "layers": self.layers,
            "context_limit": self.context_limit,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "routed_experts": self.routed_experts,
            "experts_per_token": self.experts_per_token,
            "is_random": self.is_random,
            "random_weights": dict(self.random_weights) if self.random_weights else None,
            "tokenizer_path": self.tokenizer_path,
        }


def checkpoint_bytes_by_dtype(model_dir: str | Path) -> dict[str, int]:
    """Bytes of tensor data per safetensors dtype, read from headers only (no weights)."""
    # Imported here: the reader needs numpy, and importing this module must not.
    from local_engine.checkpoint.safetensors import read_header, shard_files

    totals: dict[str, int] = {}
    for file in shard_files(Path(model_dir)):
        infos, _ = read_header(file)
        for info in infos.values():
            totals[info.dtype] = totals.get(info.dtype, 0) + info.end - info.start
    return totals


def machine_memory() -> tuple[int | None, str]:
    """Memory the model can use here, and where that figure came from."""
    try:
        import mlx.core as mx

        info = mx.device_info()
    except Exception:  # an MLX without device_info: fall back to the OS
        info = {}
    # Metal: the GPU's recommended working set (unified memory, below physical RAM).
    # CUDA: what is free on the card now (others may hold some). CPU: none of these.
    for key in ("max_recommended_working_set_size", "free_memory", "memory_size", "total_memory"):
        value = info.get(key)
        if isinstance(value, int) and value > 0:
            return value, f"mlx device_info {key}"
    if sys.platform.startswith("linux"):
        try:
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "/proc/meminfo MemAvailable"
        except OSError:
            pass
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "physical memory"
    except (ValueError, OSError, AttributeError):
        return None, "unknown"


_FLOAT_DTYPES = {"F32": 4, "BF16": 2, "F16": 2}


def _compute_dtype_bytes() -> int:
    """Bytes per element of the loader's default compute dtype: float32 on CPU (bf16 is
    ~10x slower there), bfloat16 on a GPU."""
    import mlx.core as mx

    return 4 if mx.default_device() == mx.cpu else 2


def resident_weight_bytes(stored: Mapping[str, int], compute_bytes: int) -> int:
    """Weight bytes once loaded: float tensors widen to the compute dtype (never narrow,
    to stay conservative); FP8/FP4 blocks load as MLX mxfp8/mxfp4 at their stored size."""
    total = 0
    for dtype, nbytes in stored.items():
        own = _FLOAT_DTYPES.get(dtype)
        total += nbytes * max(own, compute_bytes) // own if own else nbytes
    return total


def estimate_memory(model_dir: str | Path, available_bytes: int | None = None) -> MemoryEstimate:
    """Memory needed to load and run a checkpoint, from its headers, against this machine."""
    weights = resident_weight_bytes(checkpoint_bytes_by_dtype(model_dir), _compute_dtype_bytes())
    overhead = int(weights * OVERHEAD_FRACTION) + OVERHEAD_FIXED
    if available_bytes is None:
        available, source = machine_memory()
    else:
        available, source = available_bytes, "given limit"
    return MemoryEstimate(weights, overhead, available, source)


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def _preflight(model_dir: Path) -> Any:
    """Check the directory without loading weights; returns the parsed model config."""
    from local_engine.model.config import load_config

    if not model_dir.exists():
        raise CheckpointError(f"model directory {model_dir} does not exist")
    if not model_dir.is_dir():
        raise CheckpointError(f"{model_dir} is a file; pass the model directory instead")
    from local_engine.checkpoint.safetensors import shard_files

    config = load_config(model_dir)  # missing config.json, unknown model_type
    if not shard_files(model_dir):
        raise CheckpointError(
            f"{model_dir} has no *.safetensors weight files; convert or download the model "
            "there, or create a test model with `ds4router engine init-random`"
        )
    return config


_ENGINES: dict[Path, Engine] = {}
_ENGINES_LOCK = threading.Lock()
_LOAD_LOCKS: dict[Path, threading.Lock] = {}


class Engine:
    """A loaded model and its tokenizer. Get one with ``Engine.load``."""

    def __init__(
        self, path: Path, model: Any, tokenizer: Tokenizer, config: Any, graph: Any = None
    ) -> None:
        self.path = path
        self.model = model
        self.tokenizer = tokenizer
        self.config = config
        self.graph = graph
        self.scheduler = Scheduler()
        self._sessions: LiveSessions | None = None
        # The KV cache on disk (prefix reuse) and the RAM budget of the decode state
        # (tiered long context); both off until ``use_kv_cache``.
        self.prefix_cache: PrefixCache | None = None
        self.kv_ram_bytes: int | None = None
        self._tier_dir: Path | None = None
        self._fingerprint: str | None = None

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        check_memory: bool = True,
        available_memory_bytes: int | None = None,
        graph: Any = None,
        progress: LoadCallback | None = None,
    ) -> Engine:
        """The engine for a model directory, loaded once per process and shared.

        ``available_memory_bytes`` overrides what the machine reports (e.g. to keep room
        for other work); ``check_memory=False`` skips the fit check entirely. ``graph``
        (a ``GraphOptions``) defaults to the official graph's FP8/FP4 round-trips for real
        weights and to the plain (transformers-exact) graph for random test checkpoints.
        ``progress`` gets a ``LoadProgress`` per tensor and step while this call reads
        the weights, ending with phase ``done``; it is not called when the engine was
        loaded already (or another caller loaded it meanwhile).
        """
        model_dir = Path(path).expanduser().resolve()
        with _ENGINES_LOCK:
            engine = _ENGINES.get(model_dir)
            if engine is None:
                path_lock = _LOAD_LOCKS.setdefault(model_dir, threading.Lock())
        if engine is None:
            # One loader per path: a second caller for the same model waits and shares the
            # result; callers for other models (and `loaded()`) are not held up meanwhile.
            with path_lock:
                with _ENGINES_LOCK:
                    engine = _ENGINES.get(model_dir)
                if engine is None:
                    engine = cls._load_uncached(
                        model_dir, check_memory, available_memory_bytes, graph, progress
                    )
                    with _ENGINES_LOCK:
                        _ENGINES[model_dir] = engine
                    return engine
        if graph is not None and graph != engine.graph:
            raise EngineError(
                f"{model_dir} is already loaded with graph options {engine.graph}; "
                "unload it first to load it with other options"
            )
        return engine

    @classmethod
    def _load_uncached(
        cls,
        model_dir: Path,
        check_memory: bool,
        available_memory_bytes: int | None,
        graph: Any,
        progress: LoadCallback | None,
    ) -> Engine:
        config = _preflight(model_dir)
        if check_memory:
            estimate = estimate_memory(model_dir, available_memory_bytes)
            if not estimate.fits:
                assert estimate.available_bytes is not None
                raise InsufficientMemoryError(
                    f"the model in {model_dir} needs about {_gib(estimate.needed_bytes)} "
                    f"({_gib(estimate.weights_bytes)} of weights) but only "
                    f"{_gib(estimate.available_bytes)} is available "
                    f"({estimate.available_source}); use a smaller quantization "
                    "(e.g. 2-bit experts), free memory, or run on a larger machine"
                )
        from local_engine import GraphOptions, load_model

        if graph is None:
            graph = GraphOptions() if config.is_random else GraphOptions.official()
        # The tokenizer first: a mismatch should not cost a read of all the weights.
        tokenizer = Tokenizer.load(model_dir)
        vocab = int(config.vocab_size)
        if tokenizer.vocab_size > vocab:
            raise CheckpointError(
                f"the tokenizer ({tokenizer.source}) has {tokenizer.vocab_size} ids but "
                f"the model's vocab_size is {vocab}; put the model's own tokenizer.json "
                f"in {model_dir}"
            )
        model = load_model(model_dir, graph=graph, progress=progress)
        return cls(model_dir, model, tokenizer, config, graph)

    @staticmethod
    def loaded() -> list[Path]:
        """Model directories loaded in this process."""
        with _ENGINES_LOCK:
            return list(_ENGINES)

    @staticmethod
    def unload(path: str | Path) -> bool:
        """Forget a loaded engine (its memory is freed once no generation holds it)."""
        with _ENGINES_LOCK:
            return _ENGINES.pop(Path(path).expanduser().resolve(), None) is not None

    @property
    def context_limit(self) -> int:
        return int(self.config.max_position_embeddings)

    # -- the KV cache ----------------------------------------------------------------------
    @property
    def fingerprint(self) -> str:
        """What a saved decode state must match: weights, recipe, graph switches, numerics."""
        if self._fingerprint is None:
            from local_engine.checkpoint.fingerprint import fingerprint_of

            self._fingerprint = fingerprint_of(self.model, self.path)
        return self._fingerprint

    def use_kv_cache(
        self,
        directory: str | Path | None,
        *,
        disk_bytes: int | None = None,
        ram_bytes: int | None = None,
        snapshot_every: int | None = None,
    ) -> None:
        """Reuse prompt prefixes through the cache in ``directory`` (None: no disk cache).

        ``disk_bytes`` bounds the directory (least valuable entries are evicted);
        ``ram_bytes`` bounds the decode state in RAM: beyond it, compressed CSA rows go
        to memory-mapped files (under ``directory/tier``, else a temp dir). Settings
        apply from the next generation on.
        """
        from local_engine.cache.kv_store import KVStore
        from local_engine.cache.prefix_cache import DEFAULT_SNAPSHOT_EVERY, PrefixCache

        if ram_bytes is not None and ram_bytes < 0:
            raise EngineError(f"the KV RAM budget must be >= 0 bytes, got {ram_bytes}")
        if disk_bytes is not None and disk_bytes < 0:
            raise EngineError(f"the KV disk budget must be >= 0 bytes, got {disk_bytes}")
        self.kv_ram_bytes = ram_bytes
        if directory is None:
            self.prefix_cache = None
            self._tier_dir = None
            return
        root = Path(directory).expanduser()
        current = self.prefix_cache
        if current is not None and current.root == root:
            current.store.budget_bytes = disk_bytes
            if snapshot_every is not None:
                current.snapshot_every = snapshot_every
        else:
            store = KVStore(root, budget_bytes=disk_bytes)
            every = DEFAULT_SNAPSHOT_EVERY if snapshot_every is None else snapshot_every
            self.prefix_cache = PrefixCache(store, self.fingerprint, snapshot_every=every)
        self._tier_dir = root / "tier"

    def flush_kv_cache(self, timeout: float | None = None) -> bool:
        """Spill live sessions and wait until queued snapshots are on disk (e.g. before the
        process exits)."""
        if self._sessions is not None:
            self._sessions.flush()
        cache = self.prefix_cache
        return True if cache is None else cache.flush(timeout)

    def make_cache(self) -> Any:
        """An empty decode state for this engine's model (tiered when a RAM budget is set)."""
        cache = self.model.make_cache()
        if self.kv_ram_bytes is not None:
            cache.enable_tiering(self.kv_ram_bytes, self._tier_dir)
        return cache

    def info(self) -> EngineInfo:
        """Sizes, bytes by storage type, limits, and whether the weights are random."""
        by_dtype = _model_bytes_by_dtype(self.model) or checkpoint_bytes_by_dtype(self.path)
        c = self.config
        return EngineInfo(
            path=str(self.path),
            model_type="deepseek_v4",
            parameters=_model_parameters(self.model),
            weight_bytes=sum(by_dtype.values()),
            bytes_by_dtype=by_dtype,
            layers=int(c.num_hidden_layers),
            context_limit=self.context_limit,
            vocab_size=int(c.vocab_size),
            hidden_size=int(c.hidden_size),
            routed_experts=int(c.n_routed_experts),
            experts_per_token=int(c.num_experts_per_tok),
            is_random=bool(c.is_random),
            random_weights=c.random_weights,
            tokenizer_path=str(self.tokenizer.source),
        )

    def encode_messages(self, messages: Sequence[Any], params: GenerationParams) -> list[int]:
        """Prompt ids for ``messages`` as ``generate`` would feed them."""
        prompt = render_prompt(
            messages,
            thinking=params.thinking,
            reasoning_effort=params.reasoning_effort,
            tools=params.tools,
            response_format=params.response_format,
        )
        if not prompt.endswith((ASSISTANT + THINK_END, ASSISTANT + THINK_START)):
            # E.g. a conversation ending with an assistant turn: the prompt would end after
            # end-of-sentence, and whatever the model wrote next would not be a reply.
            raise ChatEncodingError(
                "the conversation must end with a user (or tool) message for the model to reply to"
            )
        return self.tokenizer.encode(prompt)

    def generate(
        self,
        messages: Sequence[Any],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
        on_prefill_progress: PrefillProgress | None = None,
        session: str | None = None,
    ) -> Iterator[Event]:
        """Stream events for a reply to ``messages``.

        Encoding errors (bad tools, bad roles) are raised here, before the first event;
        generation starts when the iterator is first advanced. ``session`` (a conversation
        or agent id) keeps its decode states in RAM for its next turn.
        """
        params = params or GenerationParams()
        started = time.perf_counter()
        prompt_ids = self.encode_messages(messages, params)
        keeps_reasoning = bool(params.tools) or any(_has_tools(m) for m in messages)
        return self._run(
            prompt_ids, params, cancel, on_prefill_progress, started, session, keeps_reasoning
        )

    def generate_ids(
        self,
        prompt_ids: Sequence[int],
        params: GenerationParams | None = None,
        *,
        cancel: threading.Event | None = None,
        on_prefill_progress: PrefillProgress | None = None,
        session: str | None = None,
    ) -> Iterator[Event]:
        """Like ``generate`` for an already tokenized prompt (benchmarks, raw completions)."""
        params = params or GenerationParams()
        started = time.perf_counter()
        return self._run(
            list(prompt_ids), params, cancel, on_prefill_progress, started, session, False
        )

    @property
    def sessions(self) -> LiveSessions:
        """Live sessions' decode states in RAM (within ``kv_ram_bytes``), spilling to the
        disk cache when there is one."""
        from local_engine.cache.sessions import DEFAULT_SESSION_RAM_BYTES, LiveSessions

        budget = DEFAULT_SESSION_RAM_BYTES if self.kv_ram_bytes is None else self.kv_ram_bytes
        if self._sessions is None:
            self._sessions = LiveSessions(budget, self.prefix_cache)
        self._sessions.ram_bytes, self._sessions.disk = budget, self.prefix_cache
        return self._sessions

    def _run(
        self,
        prompt_ids: list[int],
        params: GenerationParams,
        cancel: threading.Event | None,
        on_prefill_progress: PrefillProgress | None,
        started: float,
        session: str | None,
        keeps_reasoning: bool,
    ) -> Iterator[Event]:
        eos = self.config.eos_token_id
        eos_ids = tuple(eos) if isinstance(eos, tuple) else (() if eos is None else (int(eos),))
        # Thinking mode: the next turn re-renders this prompt's closing <think> as </think>
        # (earlier reasoning is dropped), so the state just before it is the reusable one,
        # and a thinking turn's end is never a prefix of the next prompt -- unless the
        # conversation has tools: then the official encoding keeps every turn's reasoning.
        think_start = self.tokenizer.special.think_start
        thinking_close = params.thinking and bool(prompt_ids) and prompt_ids[-1] == think_start
        save_points = (len(prompt_ids) - 1,) if thinking_close and not keeps_reasoning else ()
        state_cache: StateCache | None = (
            self.sessions.session(session) if session is not None else self.prefix_cache
        )

        def start(cancelled: Any) -> Iterator[Event | None]:
            return generation_steps(
                self.model,
                self.tokenizer,
                prompt_ids,
                params,
                eos_token_ids=eos_ids,
                context_limit=self.context_limit,
                cancel=cancelled,
                on_prefill_progress=on_prefill_progress,
                started_at=started,
                prefix_cache=state_cache,
                make_cache=self.make_cache,
                save_points=save_points,
                save_turn_end=not params.thinking or keeps_reasoning,
            )

        return self.scheduler.run(start, cancel)


def _has_tools(message: Any) -> bool:
    tools = (
        message.get("tools") if isinstance(message, Mapping) else getattr(message, "tools", None)
    )
    return bool(tools)


def _model_parameters(model: Any) -> int:
    counter = getattr(model, "num_parameters", None)
    if callable(counter):
        return int(counter())
    from mlx.utils import tree_flatten

    leaves: Any = tree_flatten(model.parameters())
    return sum(int(leaf.size) for _, leaf in leaves)


def _model_bytes_by_dtype(model: Any) -> dict[str, int]:
    for name in ("weight_bytes_by_dtype", "bytes_by_dtype"):
        getter = getattr(model, name, None)
        if callable(getter):
            return {str(k): int(v) for k, v in dict(getter()).items()}
    return {}
