"""Weight containers and the matmuls that read them: dense arrays or MLX-quantized ones.

A projection's weight is either a plain ``mx.array`` ``[out, in]`` or a
:class:`QuantizedWeight` in one of MLX's packed formats (``mxfp4`` for the
official FP4 experts, ``mxfp8`` for its FP8 projections, ``affine`` for 2-8 bit
re-quantized weights). Every matmul here dispatches on that, so the model code
never cares which one a checkpoint gave it. Routed experts are stacked
``[experts, out, in]`` and read with ``gather_mm`` / ``gather_qmm``.
"""

from __future__ import annotations

from dataclasses import dataclass

import mlx.core as mx


@dataclass(frozen=True, eq=False)
class QuantizedWeight:
    """A weight ``[..., out, in]`` packed by MLX: ``mx.quantize``'s outputs plus its settings."""

    weight: mx.array
    scales: mx.array
    biases: mx.array | None
    group_size: int
    bits: int
    mode: str

    @property
    def shape(self) -> tuple[int, ...]:
        """Logical (unpacked) shape."""
        packed = self.weight.shape
        return (*packed[:-1], packed[-1] * 32 // self.bits)

    @property
    def nbytes(self) -> int:
        total = self.weight.nbytes + self.scales.nbytes
        return total + (self.biases.nbytes if self.biases is not None else 0)

    @property
    def size(self) -> int:
        """Number of logical parameters."""
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def dtype_name(self) -> str:
        return self.mode if self.mode != "affine" else f"affine{self.bits}"

    def dequantize(self, dtype: mx.Dtype = mx.float32) -> mx.array:
        return mx.dequantize(
            self.weight,
            self.scales,
            self.biases,
            group_size=self.group_size,
            bits=self.bits,
            mode=self.mode,
            dtype=dtype,
        )

    def take_rows(self, index: mx.array) -> QuantizedWeight:
        """The sub-weight of some leading-axis entries (e.g. grouped projection groups)."""
        return QuantizedWeight(
            self.weight[index],
            self.scales[index],
            None if self.biases is None else self.biases[index],
            self.group_size,
            self.bits,
            self.mode,
        )

    def reshape_leading(self, *lead: int) -> QuantizedWeight:
        """Split the row axis, e.g. ``[G*o, in]`` -> ``[G, o, in]``."""

        def r(a: mx.array) -> mx.array:
            return a.reshape(*lead, a.shape[-1])

        return QuantizedWeight(
            r(self.weight),
            r(self.scales),
            None if self.biases is None else r(self.biases),
            self.group_size,
            self.bits,
            self.mode,
        )


@dataclass(frozen=True, eq=False)
class TransposedWeight:
    """A dense weight stored as ``[..., in, out]`` (the transpose of its logical shape).

    MLX's CPU backend multiplies ``x @ w`` much faster than ``x @ w.T``
    (measured 1.5-2x on this project's CPU machine), so CPU models keep their
    projections this way; GPU models keep the usual ``[out, in]``.
    """

    wt: mx.array

    @property
    def shape(self) -> tuple[int, ...]:
        s = self.wt.shape
        return (*s[:-2], s[-1], s[-2])

    @property
    def nbytes(self) -> int:
        return int(self.wt.nbytes)

    @property
    def size(self) -> int:
        return int(self.wt.size)

    @property
    def dtype(self) -> mx.Dtype:
        return self.wt.dtype

    @classmethod
    def of(cls, w: mx.array) -> TransposedWeight:
        return cls(mx.contiguous(w.swapaxes(-1, -2)))


Weight = mx.array | QuantizedWeight | TransposedWeight


def quantize(
    w: mx.array, *, mode: str = "affine", bits: int = 4, group_size: int = 64
) -> QuantizedWeight:
    """Quantize a dense ``[..., out, in]`` weight with MLX (used for re-quantizing)."""
    if mode in ("mxfp4", "mxfp8"):
        bits, group_size = (4 if mode == "mxfp4" else 8), 32
    parts = mx.quantize(w, group_size=group_size, bits=bits, mode=mode)
    biases = parts[2] if len(parts) > 2 else None
    return QuantizedWeight(parts[0], parts[1], biases, group_size, bits, mode)


def weight_nbytes(w: Weight) -> int:
    return int(w.nbytes)


def weight_size(w: Weight) -> int:
    return int(w.size)


def weight_dtype_name(w: Weight) -> str:
    if isinstance(w, QuantizedWeight):
        return w.dtype_name
    return str(w.dtype).removeprefix("mlx.core.")  # TransposedWeight has .dtype too


def linear(x: mx.array, w: Weight) -> mx.array:
    """``x @ w.T`` for a dense or quantized ``[out, in]`` weight (batched weights broadcast)."""
    if isinstance(w, QuantizedWeight):
        return mx.quantized_matmul(
            x,
            w.weight,
            w.scales,
            w.biases,
            transpose=True,
            group_size=w.group_size,
            bits=w.bits,
            mode=w.mode,
        )
    if isinstance(w, TransposedWeight):
        return x @ w.wt
    return x @ w.swapaxes(-1, -2)


@dataclass(frozen=True, eq=False)
class ExpertWeights:
    """A layer's routed experts, stacked: gate and up fused ``[E, 2I, D]``, down ``[E, D, I]``.

    Dense stacks are kept pre-transposed (``[E, D, 2I]`` and ``[E, I, D]``)
    because ``gather_mm`` reads its right-hand side as ``[K, N]`` and a
    transposed view would be copied on every call.
    """

    gate_up: Weight
    down: Weight
    num_experts: int
    intermediate: int
    hidden: int

    @property
    def nbytes(self) -> int:
        return weight_nbytes(self.gate_up) + weight_nbytes(self.down)

    @property
    def size(self) -> int:
        return weight_size(self.gate_up) + weight_size(self.down)


def expert_matmul(
    x: mx.array, w: Weight, indices: mx.array, *, sorted_indices: bool = False
) -> mx.array:
    """Per-token expert matmul: ``x`` ``[..., 1, in]`` times expert ``indices``' weights."""
    if isinstance(w, QuantizedWeight):
        return mx.gather_qmm(
            x,
            w.weight,
            w.scales,
            w.biases,
            rhs_indices=indices,
            transpose=True,
            group_size=w.group_size,
            bits=w.bits,
            mode=w.mode,
            sorted_indices=sorted_indices,
        )
    # Dense stacks are stored [E, in, out] already (see ExpertWeights).
    dense = w.wt if isinstance(w, TransposedWeight) else w
    # On CUDA (MLX 0.32) the sorted dense kernel computes float32 at TF32 precision
    # (4.6e-4 relative on an H200, even with NVIDIA_TF32_OVERRIDE=0) while the unsorted
    # one is exact; dense stacks only serve float32 checks, so exactness wins there.
    if sorted_indices and _on_cuda():
        sorted_indices = False
    return mx.gather_mm(x, dense, rhs_indices=indices, sorted_indices=sorted_indices)


def _on_cuda() -> bool:
    if mx.default_device() != mx.gpu or mx.metal.is_available():
        return False
    cuda = getattr(mx, "cuda", None)
    return cuda is not None and bool(cuda.is_available())


def one_expert(w: Weight, e: int) -> Weight:
    """Expert ``e`` of a stack, as a weight :func:`linear` multiplies (``x @ w_e.T``)."""
    if isinstance(w, QuantizedWeight):
        biases = None if w.biases is None else w.biases[e]
        return QuantizedWeight(w.weight[e], w.scales[e], biases, w.group_size, w.bits, w.mode)
    # Dense stacks are stored [E, in, out] (see ExpertWeights): one slice is [in, out].
    return TransposedWeight(w.wt[e] if isinstance(w, TransposedWeight) else w[e])


def dense_expert_stack(stacked_out_in: mx.array) -> mx.array:
    """Lay a dense ``[E, out, in]`` stack out as ``[E, in, out]`` for ``gather_mm``."""
    return mx.contiguous(stacked_out_in.swapaxes(-1, -2))
