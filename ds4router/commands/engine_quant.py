"""``ds4router engine convert | compare | plan``: quantize the local model and size it.

``convert SRC DST --recipe q2`` turns an official-layout checkpoint into MLX
safetensors under a recipe (``configs/recipes``), with a progress bar, resumable
(``--resume``) and refusing to write over anything else; it ends with the peak
memory it measured. ``compare A B`` reports per-position KL divergence and top-1
agreement of B against A on the same tokens. ``plan`` says what a recipe weighs
for a model, what a decoded token reads, what the KV cache takes at a context,
and whether it fits a Mac (128 GB by default). Engine errors become one line
and exit 2. mlx is imported inside the commands, never when the CLI starts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ds4router.commands.engine_run import engine_errors, random_note
from ds4router.errors import Ds4RouterError

if TYPE_CHECKING:
    from ds4router.backends.engine_port import Recipe

# local_engine.checkpoint.plan.PLAN_PRESETS, spelled out so `--help` imports nothing.
PLAN_PRESETS = ("deepseek-v4-flash", "full-layer", "small", "tiny")
EXIT_INTERRUPTED = 130
GB = 10**9
GIB = 1024**3


def _gb(n: float) -> str:
    return f"{n / GB:,.2f} GB" if n >= 10**8 else f"{n / 10**6:,.1f} MB"


def _recipe_options(func: Any) -> Any:
    for option in reversed(
        (
            click.option(
                "--recipe",
                default="q2",
                show_default=True,
                help="A built-in recipe (configs/recipes: q2, q4) or a recipe YAML file.",
            ),
            click.option(
                "--group-size",
                type=click.Choice(["32", "64", "128"]),
                default=None,
                help="Group size of the routed experts (default: the recipe's, 64).",
            ),
            click.option(
                "--down-bits",
                type=click.Choice(["3", "4"]),
                default=None,
                help="Bits of the experts' down projection (default: the recipe's).",
            ),
            click.option(
                "--eight-bit",
                type=click.Choice(["affine", "mxfp8"]),
                default=None,
                help="Format of the 8-bit components (default: the recipe's).",
            ),
        )
    ):
        func = option(func)
    return func


def _load_recipe(
    recipe: str, group_size: str | None, down_bits: str | None, eight_bit: str | None
) -> Recipe:
    from ds4router import paths
    from ds4router.backends.engine_port import load_recipe

    try:
        folder = paths.configs_dir() / "recipes"
    except FileNotFoundError:
        folder = None
    with engine_errors():
        return load_recipe(recipe, folder).with_options(
            group_size=int(group_size) if group_size else None,
            down_bits=int(down_bits) if down_bits else None,
            eight_bit=eight_bit,
        )


# --- convert ----------------------------------------------------------------------------------


class _Bar:
    """A click progress bar over source bytes, created once the total is known."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._bar: Any = None
        self._shown = 0

    def __call__(self, done: int, total: int, what: str) -> None:
        if not self.enabled:
            return
        if self._bar is None:
            self._bar = click.progressbar(
                length=max(total, 1),
                label="converting",
                show_eta=True,
                show_percent=True,
                file=sys.stderr,
                item_show_func=lambda item: item,
            )
            self._bar.__enter__()
        self._bar.current_item = what
        self._bar.update(done - self._shown)
        self._shown = done

    def close(self) -> None:
        if self._bar is not None:
            self._bar.__exit__(None, None, None)
            self._bar = None


@click.command("convert")
@click.argument("src", type=click.Path(file_okay=False, path_type=Path))
@click.argument("dst", type=click.Path(path_type=Path))
@_recipe_options
@click.option("--resume", is_flag=True, help="Continue (or verify) a conversion in DST.")
@click.option(
    "--shard-gb",
    type=click.FloatRange(min=0.01, max=5.0),
    default=5.0,
    show_default=True,
    help="Largest output shard, in GB.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object at the end.")
def convert_command(
    src: Path,
    dst: Path,
    recipe: str,
    group_size: str | None,
    down_bits: str | None,
    eight_bit: str | None,
    resume: bool,
    shard_gb: float,
    as_json: bool,
) -> None:
    """Convert the official-layout checkpoint in SRC to a recipe, into DST."""
    chosen = _load_recipe(recipe, group_size, down_bits, eight_bit)
    from ds4router.backends.engine_port import convert

    bar = _Bar(enabled=not as_json)
    try:
        with engine_errors():
            try:
                result = convert(
                    src.expanduser(),
                    dst.expanduser(),
                    chosen,
                    resume=resume,
                    max_shard_bytes=int(shard_gb * GB),
                    progress=bar,
                )
            except OSError as exc:
                raise Ds4RouterError(f"cannot convert into {dst}: {exc}") from None
    except KeyboardInterrupt:
        bar.close()
        click.echo(
            f"\ninterrupted; run the same command with --resume to continue in {dst}", err=True
        )
        sys.exit(EXIT_INTERRUPTED)
    finally:
        bar.close()
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    verdict = "within" if result.within_ram_bound else "ABOVE"
    click.echo(
        f"wrote {result.recipe} to {result.dst}: {len(result.shards)} "
        f"shard{'s' if len(result.shards) != 1 else ''}, "
        f"{_gb(result.file_bytes)} from {_gb(result.source_bytes)} in {result.seconds:.1f} s"
        + (
            f" ({result.shards_verified} finished shards verified)"
            if result.shards_verified
            else ""
        )
    )
    click.echo(
        f"peak RAM {_gb(result.peak_rss_bytes)}, {verdict} the bound of 3 x the largest tensor "
        f"({_gb(result.largest_source_tensor_bytes)}) + 1 GB = {_gb(result.ram_bound_bytes)}"
    )


# --- compare ----------------------------------------------------------------------------------


@click.command("compare")
@click.argument("model_a", metavar="A", type=click.Path(file_okay=False, path_type=Path))
@click.argument("model_b", metavar="B", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--prompts",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Prompts file: one per line, or blocks separated by blank lines.",
)
@click.option(
    "--max-tokens",
    type=click.IntRange(min=1),
    default=128,
    show_default=True,
    help="Tokens per prompt.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (per position too).")
def compare_command(
    model_a: Path, model_b: Path, prompts: Path | None, max_tokens: int, as_json: bool
) -> None:
    """KL divergence and top-1 agreement of model B against model A, position by position."""
    from ds4router.backends.engine_port import compare_models, load_config, read_prompts_file

    with engine_errors():
        texts = read_prompts_file(prompts) if prompts is not None else None
        result = compare_models(
            model_a.expanduser(), model_b.expanduser(), texts, max_tokens=max_tokens
        )
        random_a = load_config(model_a.expanduser()).random_weights
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(
        f"B = {result.model_b}\n  against A = {result.model_a}\n"
        f"  {result.positions} positions over {len(result.prompt_lengths)} prompts"
    )
    click.echo(
        f"  KL(A||B) nats: mean {result.mean_kl:.4g}, median {result.kl_quantile(0.5):.4g}, "
        f"p95 {result.kl_quantile(0.95):.4g}, max {result.max_kl:.4g}"
    )
    click.echo(f"  top-1 agreement: {100 * result.top1_agreement:.1f} %")
    if random_a:
        click.secho(
            f"note: {random_note(random_a)}; its distributions are nearly flat, so read KL, "
            "not top-1",
            err=True,
            dim=True,
        )


# --- plan -------------------------------------------------------------------------------------


@click.command("plan")
@click.option(
    "--preset",
    type=click.Choice(PLAN_PRESETS),
    default="deepseek-v4-flash",
    show_default=True,
    help="The model's shape (deepseek-v4-flash: the released model).",
)
@click.option(
    "--model",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Plan for the config.json in this checkpoint directory instead of a preset.",
)
@_recipe_options
@click.option(
    "--context",
    type=click.IntRange(min=0),
    default=65536,
    show_default=True,
    help="Tokens in the KV cache.",
)
@click.option(
    "--memory-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=128.0,
    show_default=True,
    help="The Mac's memory (Apple's GB: 2^30 bytes).",
)
@click.option(
    "--usable-gb",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Memory the GPU may use (default: 84 % of it, the stock Metal limit).",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def plan_command(
    preset: str,
    model_dir: Path | None,
    recipe: str,
    group_size: str | None,
    down_bits: str | None,
    eight_bit: str | None,
    context: int,
    memory_gb: float,
    usable_gb: float | None,
    as_json: bool,
) -> None:
    """Weight bytes, bytes read per token, KV bytes and fit of a model under a recipe."""
    chosen = _load_recipe(recipe, group_size, down_bits, eight_bit)
    from ds4router.backends.engine_port import load_config, memory_plan, preset_model_config

    with engine_errors():
        if model_dir is not None:
            cfg = load_config(model_dir.expanduser())
            name = str(model_dir)
        else:
            cfg = preset_model_config(preset)
            name = preset
        plan = memory_plan(
            cfg,
            chosen,
            preset=name,
            context=context,
            memory_gb=memory_gb,
            usable_gb=usable_gb,
        )
    if as_json:
        click.echo(json.dumps(plan.to_dict(), indent=2))
        return
    click.echo(f"{name} with recipe {plan.recipe}: {plan.parameters / 1e9:.2f} B parameters")
    click.echo(
        f"  {'component':<20} {'format':<13} {'params':>9} {'stored':>11} {'read/token':>11}"
    )
    for c in plan.components:
        click.echo(
            f"  {c.component:<20} {c.format:<13} {c.parameters / 1e9:>8.3f}B "
            f"{_gb(c.stored_bytes):>11} {_gb(c.read_per_token_bytes):>11}"
        )
    click.echo(
        f"  {'total':<20} {'':<13} {'':>9} {_gb(plan.total_weight_bytes):>11} "
        f"{_gb(plan.bytes_read_per_token):>11}"
    )
    click.echo(f"  resident at bf16 compute: {_gb(plan.resident_weight_bytes)}")
    kv = plan.kv
    kinds = ", ".join(
        f"{kind.split('_')[0]} x{kv.layers_by_type[kind]} {_gb(kv.by_layer_type[kind])}"
        for kind in kv.by_layer_type
        if kv.layers_by_type[kind]
    )
    click.echo(f"  KV at {kv.context:,} tokens: {_gb(kv.total_bytes)} ({kinds})")
    verdict = "fits" if plan.fits else "does NOT fit"
    click.echo(
        f"  needs {plan.needed_bytes / GIB:.1f} GiB (weights + KV + "
        f"{plan.overhead_bytes / GIB:.1f} GiB for activations): {verdict} in "
        f"{plan.usable_bytes / GIB:.1f} GiB usable of {plan.memory_bytes / GIB:.0f} GiB"
    )
    for note in plan.notes:
        click.secho(f"  note: {note}", dim=True)


commands = [convert_command, compare_command, plan_command]

__all__ = ["PLAN_PRESETS", "commands"]
