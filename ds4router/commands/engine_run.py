"""``ds4router engine info | generate | init-random``: run the local engine directly.

``info PATH`` loads a checkpoint and describes it (and says when its weights are random);
``generate PATH`` streams a reply to one prompt and reports the engine's figures (prompt
and generated tokens, prefill and decode tok/s, time to first token, peak memory); with
``--kv-cache DIR`` it restores the longest cached prefix of the prompt from DIR and saves
new states there (the figures then say how many prompt tokens were cached);
``init-random OUT`` writes a random-weight checkpoint in the official layout, for tests,
demos and benchmarks. Engine errors (missing directory, unknown ``model_type``, a tensor of
the wrong shape, a model that cannot fit) end the command with one line and exit 2.
mlx and numpy are imported inside the commands, never when the CLI starts.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds4router.errors import Ds4RouterError
from ds4router.textio import read_stdin, read_text_any

if TYPE_CHECKING:
    from ds4router.backends.engine_port import Done, Engine, GenerationParams

# local_engine.checkpoint.random_weights.PRESETS, spelled out so `--help` imports nothing heavy.
PRESETS = ("tiny", "small", "full-layer")
EXIT_CANCELLED = 130
MIB = 1024**2
GIB = 1024**3


@contextlib.contextmanager
def engine_errors() -> Iterator[None]:
    """Engine failures become one actionable line (exit 2), never a traceback."""
    from ds4router.backends.engine_port import EngineError

    try:
        yield
    except EngineError as exc:
        raise Ds4RouterError(str(exc)) from None


def _memory_option(func: Any) -> Any:
    return click.option(
        "--memory-limit-gb",
        type=click.FloatRange(min=0, min_open=True),
        default=None,
        help="Refuse to load unless the model fits in this many GiB "
        "(default: what this machine has free).",
    )(func)


def load_engine(path: str, memory_limit_gb: float | None) -> Engine:
    from ds4router.backends.engine_port import Engine

    limit = None if memory_limit_gb is None else int(memory_limit_gb * GIB)
    # A live progress line on a terminal only: piped stderr stays clean for scripts.
    progress = _progress_line if sys.stderr.isatty() else None
    try:
        with engine_errors():
            return Engine.load(path, available_memory_bytes=limit, progress=progress)
    finally:
        if progress is not None:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()


def _progress_line(p: Any) -> None:
    """One ``loading 42 % (shard 3/46)`` line, rewritten in place."""
    percent = int(p.fraction * 100)
    sys.stderr.write(f"\r\033[Kloading {percent} % ({p.step})")
    sys.stderr.flush()


def _size(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f} GiB" if nbytes >= GIB else f"{nbytes / MIB:.1f} MiB"


def _count(n: int) -> str:
    for scale, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def random_note(random_weights: Any) -> str:
    """What to say about a checkpoint whose weights are noise."""
    marker = dict(random_weights or {})
    what = ", ".join(f"{k} {marker[k]}" for k in ("preset", "seed") if k in marker)
    return (
        f"RANDOM WEIGHTS ({what or 'written by a test tool'}): made by `ds4router engine "
        "init-random`; its output is noise, for tests, demos and benchmarks only"
    )


# --- info -------------------------------------------------------------------------------------


@click.command("info")
@click.argument("path")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@_memory_option
def info_command(path: str, as_json: bool, memory_limit_gb: float | None) -> None:
    """Load the checkpoint in PATH and describe it: sizes, bytes by type, limits."""
    engine = load_engine(path, memory_limit_gb)
    with engine_errors():
        info = engine.info()
    if as_json:
        click.echo(json.dumps(info.to_dict(), indent=2))
        return
    by_type = ", ".join(
        f"{dtype} {_size(n)}"
        for dtype, n in sorted(info.bytes_by_dtype.items(), key=lambda kv: -kv[1])
    )
    click.echo(info.path)
    if info.is_random:
        click.echo(f"  {random_note(info.random_weights)}")
    rows = [
        ("model type", info.model_type),
        ("parameters", _count(info.parameters)),
        ("weights", f"{_size(info.weight_bytes)} ({by_type})"),
        ("layers", str(info.layers)),
        ("context limit", f"{info.context_limit:,} tokens"),
        ("vocabulary", f"{info.vocab_size:,}"),
        ("hidden size", str(info.hidden_size)),
        ("experts", f"{info.routed_experts} routed, {info.experts_per_token} per token"),
        ("tokenizer", info.tokenizer_path),
    ]
    for name, value in rows:
        click.echo(f"  {name:<14} {value}")


# --- generate ---------------------------------------------------------------------------------


def _prompt_text(prompt: str | None, prompt_file: str | None) -> str:
    if (prompt is None) == (prompt_file is None):
        raise Ds4RouterError("give the prompt with exactly one of --prompt TEXT or --prompt-file F")
    if prompt is not None:
        text = prompt
    elif prompt_file == "-":
        text = read_stdin()
    else:
        assert prompt_file is not None
        text, _ = read_text_any(Path(prompt_file).expanduser(), f"--prompt-file {prompt_file}")
    if not text.strip():
        raise Ds4RouterError("the prompt is empty; give some text to answer")
    return text


@contextlib.contextmanager
def _sigint_sets(event: threading.Event) -> Iterator[None]:
    """Ctrl-C stops the generation cleanly (its figures are still reported)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def handler(signum: int, frame: Any) -> None:
        if event.is_set():  # a second Ctrl-C: stop waiting
            signal.signal(signal.SIGINT, previous)
            raise KeyboardInterrupt
        event.set()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@click.command("generate")
@click.argument("path")
@click.option("--prompt", default=None, help="The user message.")
@click.option(
    "--prompt-file",
    type=click.Path(dir_okay=False, allow_dash=True),
    default=None,
    help="Read the user message from a file (- for stdin).",
)
@click.option("--system", default=None, help="A system message before the prompt.")
@click.option("--think", is_flag=True, help="Thinking mode: reasoning first (to stderr).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option(
    "--temperature",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="0 is greedy.",
)
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0)
@click.option("--seed", type=int, default=None, help="Make sampling repeatable.")
@click.option(
    "--kv-cache",
    "kv_cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Reuse cached prompt prefixes from this directory and save new ones there.",
)
@click.option(
    "--kv-disk-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Byte budget of the --kv-cache directory in GiB (default: no limit).",
)
@click.option(
    "--kv-ram-gb",
    type=click.FloatRange(min=0),
    default=None,
    help="Keep at most this many GiB of decode state in RAM; older compressed rows go "
    "to memory-mapped files (default: all in RAM).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end only.")
@_memory_option
def generate_command(
    path: str,
    prompt: str | None,
    prompt_file: str | None,
    system: str | None,
    think: bool,
    max_tokens: int,
    temperature: float,
    top_p: float,
    seed: int | None,
    kv_cache: Path | None,
    kv_disk_gb: float | None,
    kv_ram_gb: float | None,
    as_json: bool,
    memory_limit_gb: float | None,
) -> None:
    """Stream a reply to one prompt from the model in PATH, then its figures.

    With --kv-cache DIR the longest prefix of the prompt already in DIR is restored
    instead of prefilled, and the new states are saved there for the next run.
    """
    text = _prompt_text(prompt, prompt_file)
    from ds4router.backends.engine_port import GenerationParams

    engine = load_engine(path, memory_limit_gb)
    with engine_errors():
        engine.use_kv_cache(
            kv_cache,
            disk_bytes=None if kv_disk_gb is None else int(kv_disk_gb * GIB),
            ram_bytes=None if kv_ram_gb is None else int(kv_ram_gb * GIB),
        )
    messages: list[dict[str, str]] = []
    if system:
        messages.append({"role": "system", "content": system})
    messages.append({"role": "user", "content": text})
    if engine.config.is_random and not as_json:
        click.secho(f"note: {random_note(engine.config.random_weights)}", err=True, dim=True)
    with engine_errors():
        params = GenerationParams(
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, thinking=think
        )
    reply = _stream(engine, messages, params, echo=not as_json)
    # Snapshots are written off the decode thread: let them land before the process ends.
    if not engine.flush_kv_cache(timeout=600):
        click.secho("warning: the KV cache is still writing; some states were not saved", err=True)
    if reply.done is None:
        raise Ds4RouterError("the engine stopped without finishing; this is a bug, report it")
    if as_json:
        click.echo(
            json.dumps(_json_result(engine, reply, think, kv_cache), indent=2, ensure_ascii=False)
        )
    else:
        _print_figures(reply)
    if reply.done.finish_reason == "cancelled":
        sys.exit(EXIT_CANCELLED)


@dataclass
class _Reply:
    """What one generation streamed: answer and reasoning pieces, and its Done event."""

    answer: list[str] = field(default_factory=list)
    reasoning: list[str] = field(default_factory=list)
    done: Done | None = None


def _stream(
    engine: Engine, messages: list[dict[str, str]], params: GenerationParams, *, echo: bool
) -> _Reply:
    """Run the generation (Ctrl-C cancels it); the answer to stdout, reasoning dim to stderr."""
    from ds4router.backends.engine_port import Done, ReasoningDelta, TextDelta

    reply = _Reply()
    stop = threading.Event()
    with engine_errors(), _sigint_sets(stop):
        for event in engine.generate(messages, params, cancel=stop):
            if isinstance(event, TextDelta):
                if echo:
                    if reply.reasoning and not reply.answer:  # the reasoning's line ends here
                        click.echo("", err=True)
                    click.echo(event.text, nl=False)
                reply.answer.append(event.text)
            elif isinstance(event, ReasoningDelta):
                reply.reasoning.append(event.text)
                if echo:
                    click.secho(event.text, nl=False, err=True, dim=True, italic=True)
            elif isinstance(event, Done):
                reply.done = event
    return reply


# The figures of a generation that `--json` reports, as GenerationStats.to_dict() names them.
_JSON_STATS = (
    "prompt_tokens",
    "cached_prompt_tokens",
    "kv_restore_s",
    "generated_tokens",
    "prefill_tok_s",
    "decode_tok_s",
    "ttft_s",
    "peak_memory_bytes",
    "prefill_s",
    "decode_s",
    "total_s",
)


def _json_result(
    engine: Engine, reply: _Reply, think: bool, kv_cache: Path | None
) -> dict[str, Any]:
    assert reply.done is not None
    stats = reply.done.stats.to_dict()
    return {
        "text": "".join(reply.answer),
        "reasoning": "".join(reply.reasoning) if think else None,
        **{key: value for key, value in stats.items() if key in _JSON_STATS},
        "finish_reason": reply.done.finish_reason,
        "model": str(engine.path),
        "is_random": bool(engine.config.is_random),
        "kv_cache": None if kv_cache is None else str(kv_cache.expanduser()),
    }


def _print_figures(reply: _Reply) -> None:
    """End the streamed text's line, then one dim line of figures on stderr."""
    done = reply.done
    assert done is not None
    stats = done.stats
    if reply.answer and not reply.answer[-1].endswith("\n"):
        click.echo("")
    elif reply.reasoning and not reply.answer:
        click.echo("", err=True)
    cached = (
        f" ({stats.cached_prompt_tokens} cached, restored in {stats.kv_restore_s:.2f} s)"
        if stats.cached_prompt_tokens
        else ""
    )
    click.secho(
        f"── {stats.prompt_tokens} prompt tok{cached} · {stats.generated_tokens} generated · "
        f"prefill {stats.prefill_tok_s:.1f} tok/s · TTFT {stats.ttft_s:.2f} s · "
        f"decode {stats.decode_tok_s:.1f} tok/s · peak {_size(stats.peak_memory_bytes)} · "
        f"{done.finish_reason}",
        err=True,
        dim=True,
    )


# --- init-random ------------------------------------------------------------------------------


def _prepare_out_dir(out: Path) -> None:
    """OUT must be new, empty, or an earlier random checkpoint (replaced, nothing else)."""
    from ds4router.backends.engine_port import RANDOM_MARKER_KEY

    if out.exists() and not out.is_dir():
        raise Ds4RouterError(f"{out} is a file; give a directory to write the checkpoint in")
    if not out.is_dir() or not any(out.iterdir()):
        return
    config = out / "config.json"
    try:
        marked = RANDOM_MARKER_KEY in json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        marked = False
    if not marked:
        raise Ds4RouterError(
            f"{out} is not empty and does not hold a random checkpoint; "
            "choose a new or empty directory"
        )
    # An earlier random checkpoint: its shards go, so none of them lingers beside the new ones.
    for old in (*out.glob("*.safetensors"), out / "model.safetensors.index.json", config):
        old.unlink(missing_ok=True)


@click.command("init-random")
@click.argument("out", type=click.Path(file_okay=True, path_type=Path))
@click.option("--preset", type=click.Choice(PRESETS), default="tiny", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--layers",
    type=click.IntRange(min=1),
    default=None,
    help="Number of layers (default: the preset's).",
)
def init_random_command(out: Path, preset: str, seed: int, layers: int | None) -> None:
    """Write a random-weight checkpoint (official layout) to OUT, for tests and demos."""
    out = out.expanduser()
    _prepare_out_dir(out)
    from ds4router.backends.engine_port import write_random_checkpoint

    with engine_errors():
        try:
            written = write_random_checkpoint(out, preset=preset, seed=seed, num_layers=layers)
        except OSError as exc:
            raise Ds4RouterError(f"cannot write the checkpoint to {out}: {exc}") from None
    files = sorted(p for p in written.iterdir() if p.is_file())
    total = sum(p.stat().st_size for p in files)
    click.echo(
        f"wrote a random {preset} checkpoint (seed {seed}) to {written}: {len(files)} files, "
        f"{_size(total)}; its weights are noise, for tests, demos and benchmarks"
    )


commands = [info_command, generate_command, init_random_command]

__all__ = ["PRESETS", "commands", "engine_errors", "load_engine", "random_note"]
