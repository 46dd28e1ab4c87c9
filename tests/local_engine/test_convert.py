"""``convert``: official layout -> recipe, checked tensor by tensor, resumable, and careful
about what it writes over."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from safetensors import safe_open

from local_engine import load_model
from local_engine.checkpoint.convert import STATE_FILE, ConvertError, convert, expand_to_float
from local_engine.checkpoint.names import parse_name
from local_engine.checkpoint.quantize import dequantize_entries
from local_engine.checkpoint.random_weights import write_random_checkpoint
from local_engine.checkpoint.recipes import format_from, load_recipe
from local_engine.checkpoint.safetensors import SafetensorsFile, iter_tensors, list_shards
from local_engine.errors import CheckpointError
from local_engine.model.weights import QuantizedWeight

# Small enough that the tiny model (33 MB embedding, 17 MB head) spans two shards.
SHARD = 36_000_000
SEQ = 160  # > one HCA window of 128, 40 CSA windows


def tokens(n: int = SEQ, seed: int = 1) -> mx.array:
    return mx.array(np.random.default_rng(seed).integers(0, 129280, size=(1, n)).astype(np.int32))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def shard_digests(model_dir: Path) -> dict[str, str]:
    return {p.name: sha(p) for p in sorted(model_dir.glob("*.safetensors"))}


@pytest.fixture(scope="module")
def q2_dir(official_tiny: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("convert") / "q2"
    convert(official_tiny, out, load_recipe("q2"), max_shard_bytes=SHARD)
    return out


def test_output_is_mlx_safetensors_shards_with_the_recipe_recorded(q2_dir: Path) -> None:
    shards = list_shards(q2_dir)
    assert len(shards) == 2 and all(p.stat().st_size <= SHARD for p in shards)
    config = json.loads((q2_dir / "config.json").read_text())
    assert "quantization_config" not in config  # the release's FP8 note no longer applies
    section = config["quantization"]
    assert section["recipe"]["name"] == "q2"
    paths = section["paths"]
    assert paths["layers.1.ffn.experts.gate_up_proj"] == {
        "format": "affine",
        "bits": 2,
        "group_size": 64,
    }
    assert paths["layers.1.ffn.experts.down_proj"]["bits"] == 2
    assert paths["layers.1.attn.wq_a"] == {"format": "mxfp8"}
    assert paths["head"] == {"format": "affine", "bits": 8, "group_size": 64}
    assert "embed" not in paths  # bf16: its dtype is in the header
    index = json.loads((q2_dir / "model.safetensors.index.json").read_text())
    names = set()
    for shard in shards:  # the reference safetensors library reads every shard
        with safe_open(str(shard), framework="numpy") as f:
            names |= set(f.keys())
            assert all(index["weight_map"][k] == shard.name for k in f.keys())
    assert names == set(index["weight_map"])
    assert {"layers.1.ffn.experts.gate_up_proj.biases", "head.scales", "embed.weight"} <= names


def test_official_fp8_weights_are_copied_not_requantized(official_tiny: Path, q2_dir: Path) -> None:
    with SafetensorsFile(list_shards(official_tiny)[0]) as f:
        fp8 = f.read("layers.2.attn.wq_b.weight")
    found = None
    for shard in list_shards(q2_dir):
        with SafetensorsFile(shard) as f:
            if "layers.2.attn.wq_b.weight" in f.infos:
                found = f.read("layers.2.attn.wq_b.weight")
    assert found is not None and found.dtype == np.uint32
    assert np.array_equal(found.view(np.uint8).reshape(fp8.shape), fp8)


def _error_bound(fmt: dict, parts: dict[str, np.ndarray]) -> np.ndarray | float:
    """Worst-case |dequantized - source| of a format, per group (see quantize.encode_rows).

    Affine: MLX snaps the grid so zero is exact, which costs up to one step; the bf16
    scale and bias add their rounding. mx formats and floats here are exact copies.
    """
    if fmt.get("format") != "affine":
        return 0.0
    bits = fmt["bits"]
    scales = np.abs((parts["scales"].astype(np.uint32) << 16).view(np.float32))
    biases = np.abs((parts["biases"].astype(np.uint32) << 16).view(np.float32))
    bound = scales * (1 + 2**bits / 256) + biases / 128
    return np.repeat(bound, fmt["group_size"], axis=-1)


def test_every_converted_tensor_is_within_its_formats_error_of_the_source(
    official_tiny_twin: Path, q2_dir: Path
) -> None:
    source = {
        info.name: arr for s in list_shards(official_tiny_twin) for info, arr in iter_tensors(s)
    }
    stored = {info.name: arr for s in list_shards(q2_dir) for info, arr in iter_tensors(s)}
    formats = json.loads((q2_dir / "config.json").read_text())["quantization"]["paths"]
    covered: set[str] = set()
    for name, arr in stored.items():
        parsed = parse_name(name)
        assert parsed is not None
        if parsed.part != "weight":
            continue
        base = name.removesuffix(".weight")
        fmt = formats.get(base, {})
        if fmt:
            parts = {"weight": arr}
            parts.update(
                {p: stored[f"{base}.{p}"] for p in ("scales", "biases") if f"{base}.{p}" in stored}
            )
            values = dequantize_entries(parts, format_from(fmt, where=name))
        elif arr.dtype == np.uint16:  # bf16
            values, parts = (arr.astype(np.uint32) << 16).view(np.float32), {}
        else:
            values, parts = arr.astype(np.float32), {}
        layer = base.split(".")[1] if base.startswith("layers.") else ""
        experts = range(values.shape[0])
        if base.endswith("experts.gate_up_proj"):
            w1 = [f"layers.{layer}.ffn.experts.{k}.w1.weight" for k in experts]
            w3 = [f"layers.{layer}.ffn.experts.{k}.w3.weight" for k in experts]
            want = np.stack(
                [np.concatenate([source[a], source[b]]) for a, b in zip(w1, w3, strict=True)]
            )
            covered |= set(w1) | set(w3)
        elif base.endswith("experts.down_proj"):
            w2 = [f"layers.{layer}.ffn.experts.{k}.w2.weight" for k in experts]
            want = np.stack([source[n] for n in w2])
            covered |= set(w2)
        else:
            want = source[name]
            covered.add(name)
        err = np.abs(values - want.astype(np.float32))
        bound = _error_bound(fmt, parts)
        assert np.all(err <= bound), (name, float(err.max()))
        if fmt.get("format") == "affine":
            assert float(err.max()) > 0  # 2 and 8 bits do lose something
    assert covered == set(source)  # every tensor of the original is in the conversion


def test_loading_a_converted_directory_rebuilds_the_recipes_layers(q2_dir: Path) -> None:
    model = load_model(q2_dir)
    recipe = load_recipe("q2")
    for layer in model.weights.layers:
        for w, component in (
            (layer.moe.experts.gate_up, "routed_experts"),
            (layer.moe.experts.down, "routed_experts_down"),
            (layer.attn.wq_a, "attention"),
            (layer.attn.wo_a, "attention"),
            (layer.moe.shared_gate_up, "shared_experts"),
        ):
            fmt = recipe.format_for(component)
            assert isinstance(w, QuantizedWeight), component
            assert (w.mode, w.bits, w.group_size) == (fmt.mode, fmt.bits, fmt.group_size)
        assert layer.moe.experts.gate_up.biases is not None  # affine: gather_qmm with biases
    head = model.weights.head
    assert isinstance(head, QuantizedWeight) and (head.mode, head.bits) == ("affine", 8)
    assert not isinstance(model.weights.embed, QuantizedWeight)


def test_converted_logits_are_the_recipes_rounding_and_nothing_else(
    q2_dir: Path, official_tiny_twin: Path, tmp_path: Path
) -> None:
    """The q2 model (gather_qmm, quantized matmuls) computes what its dequantized weights do;
    against the original, the difference is the recipe's (reported as KL)."""
    dense = expand_to_float(q2_dir, tmp_path / "q2-dense")
    ids = tokens()
    q2, deq, f32 = (
        load_model(q2_dir)(ids),
        load_model(dense)(ids),
        load_model(official_tiny_twin)(ids),
    )
    delta = float(mx.abs(q2 - deq).max())
    logp = [x - mx.logsumexp(x, axis=-1, keepdims=True) for x in (f32, q2)]
    kl = float((mx.exp(logp[0]) * (logp[0] - logp[1])).sum(-1).mean())
    print(f"q2 vs its dequantized twin max|delta logit| {delta:.2e}; KL(f32 || q2) {kl:.4f} nats")
    assert delta <= 1e-3
    assert float(mx.abs(f32 - q2).max()) > 100 * delta  # the recipe's error dominates
    assert kl > 0


class Interrupt(Exception):
    pass


def _interrupt_after(limit: int):  # noqa: ANN202 - a progress callback
    def progress(done: int, total: int, what: str) -> None:
        if done >= limit:
            raise Interrupt(what)

    return progress


@pytest.mark.parametrize("fraction", [0.3, 0.8])  # inside the first shard, inside the second
def test_interrupted_conversion_resumes_to_identical_shards(
    official_tiny: Path, q2_dir: Path, tmp_path: Path, fraction: float
) -> None:
    out = tmp_path / "q2"
    recipe = load_recipe("q2")
    total = sum(p.stat().st_size for p in list_shards(official_tiny))
    with pytest.raises(Interrupt):
        convert(
            official_tiny,
            out,
            recipe,
            max_shard_bytes=SHARD,
            progress=_interrupt_after(int(total * fraction)),
        )
    assert list(out.glob("*.partial")) and not (out / "config.json").exists()
    with pytest.raises(CheckpointError, match="config.json not found"):
        load_model(out)
    with pytest.raises(ConvertError, match="pass --resume to continue"):
        convert(official_tiny, out, recipe, max_shard_bytes=SHARD)
    result = convert(official_tiny, out, recipe, max_shard_bytes=SHARD, resume=True)
    assert result.shards_verified == (1 if fraction > 0.5 else 0)
    assert result.shards_written == 2 - result.shards_verified
    assert not list(out.glob("*.partial"))
    assert shard_digests(out) == shard_digests(q2_dir)
    for name in ("config.json", "model.safetensors.index.json"):
        assert (out / name).read_bytes() == (q2_dir / name).read_bytes()


def test_resume_of_a_finished_conversion_verifies_it(
    official_tiny: Path, q2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(q2_dir, out)
    with pytest.raises(ConvertError, match="already holds this conversion"):
        convert(official_tiny, out, load_recipe("q2"), max_shard_bytes=SHARD)
    result = convert(official_tiny, out, load_recipe("q2"), max_shard_bytes=SHARD, resume=True)
    assert (result.shards_verified, result.shards_written) == (2, 0)


def test_a_corrupt_shard_is_refused_until_deleted(
    official_tiny: Path, q2_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(q2_dir, out)
    victim = sorted(out.glob("*.safetensors"))[1]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ConvertError, match=rf"{victim.name} is corrupt.*delete that file"):
        convert(official_tiny, out, load_recipe("q2"), max_shard_bytes=SHARD, resume=True)
    victim.unlink()
    result = convert(official_tiny, out, load_recipe("q2"), max_shard_bytes=SHARD, resume=True)
    assert (result.shards_verified, result.shards_written) == (1, 1)
    assert shard_digests(out) == shard_digests(q2_dir)


def test_refuses_to_write_over_a_different_model(q2_dir: Path, tmp_path: Path) -> None:
    other = write_random_checkpoint(tmp_path / "other", preset="tiny", seed=8, num_layers=2)
    out = tmp_path / "copy"
    shutil.copytree(q2_dir, out)
    before = shard_digests(out)
    with pytest.raises(ConvertError, match="conversion of a different model"):
        convert(other, out, load_recipe("q2"), max_shard_bytes=SHARD, resume=True)
    assert shard_digests(out) == before


def test_refuses_to_mix_recipes(official_tiny: Path, q2_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy"
    shutil.copytree(q2_dir, out)
    with pytest.raises(ConvertError, match="with other options .*recipe q2"):
        convert(official_tiny, out, load_recipe("q4"), max_shard_bytes=SHARD, resume=True)


def test_refuses_a_directory_it_did_not_write(official_tiny: Path, tmp_path: Path) -> None:
    out = tmp_path / "model"
    shutil.copytree(official_tiny, out)
    with pytest.raises(ConvertError, match="did not write; refusing to write over it"):
        convert(official_tiny, out, load_recipe("q2"), resume=True)
    assert not (out / STATE_FILE).exists()
    state = tmp_path / "bad"
    state.mkdir()
    (state / STATE_FILE).write_text("{not json")
    with pytest.raises(ConvertError, match="unreadable"):
        convert(official_tiny, state, load_recipe("q2"), resume=True)


def test_refuses_an_already_converted_source(q2_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConvertError, match="already converted"):
        convert(q2_dir, tmp_path / "again", load_recipe("q2"))


def test_a_replaced_config_is_caught_when_loading(
    q2_dir: Path, official_tiny: Path, tmp_path: Path
) -> None:
    out = tmp_path / "copy"
    shutil.copytree(q2_dir, out)
    shutil.copyfile(official_tiny / "config.json", out / "config.json")
    with pytest.raises(CheckpointError, match="quantization' section does not list"):
        load_model(out)
