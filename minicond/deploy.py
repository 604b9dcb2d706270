"""Inference copies of trained models: batch norms folded into the convolutions before them.

Layer (docs/architecture.md): above ``nn`` (beside ``models``). :func:`fold_batchnorm` is the one
entry point.

In eval mode a BatchNorm2d is a fixed per-channel affine map, so after a convolution it can be
merged into the convolution's kernel and bias, and the network skips one full pass over every
activation it normalised. For a CondConv2d the merge has to respect the routing; the
derivation is in :func:`fold_batchnorm` and in ``docs/models.md``.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from .autograd import enable_grad
from .nn import BatchNorm2d, CondConv2d, Conv2d, Module, Parameter
from .tensor import Tensor, tensor


class FoldedBatchNorm(Module):
    """What stays of a BatchNorm2d folded into the convolution before it: nothing (returns x),
    or, when that convolution cannot hold a static bias (a CondConv2d with per-expert biases),
    the static shift ``x + shift``, one value per channel (``shift`` [C], a buffer)."""

    def __init__(self, num_features: int, shift: Tensor | None = None) -> None:
        super().__init__()
        self.num_features = num_features
        self.register_buffer("shift", shift)

    def forward(self, x: Tensor) -> Tensor:
        if self.shift is None:
            return x
        return x + self.shift.reshape(1, self.num_features, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.num_features}" + (", shift" if self.shift is not None else "")


def _copy_model(model: Module) -> Module:
    """A deep copy of ``model`` whose tensors are fresh copies on their own backends (backend
    modules are shared, not copied; device arrays are copied through the backend)."""
    memo: dict[int, Any] = {}
    for m in model.modules():
        for value in list(m.__dict__.values()) + list(m._parameters.values()) + \
                list(m._buffers.values()):
            if isinstance(value, Tensor):
                memo[id(value.backend)] = value.backend
                memo[id(value.data)] = value.backend.from_numpy(value.numpy(), value.dtype)
    return copy.deepcopy(model, memo)


def _trace(model: Module, example: Tensor) -> tuple[dict[int, list[tuple[Any, Any]]], Any]:
    """Run ``model(example)`` with the graph recorded, noting through forward hooks the
    (input, output) of every call of a convolution or batch norm; returns the calls by module
    id and the model's output."""
    calls: dict[int, list[tuple[Any, Any]]] = {}

    def record(module: Module, args: tuple[Any, ...], output: Any) -> None:
        calls.setdefault(id(module), []).append((args[0] if args else None, output))

    handles = [m.register_forward_hook(record) for m in model.modules()
               if isinstance(m, (Conv2d, CondConv2d, BatchNorm2d))]
    try:
        with enable_grad():
            out = model(example)
    finally:
        for handle in handles:
            handle.remove()
    return calls, out


def _uses(root: Tensor, stop: Tensor | None = None) -> dict[int, int]:
    """How many recorded operations take each tensor as an input, over the graph that leads
    to ``root`` (not continuing past ``stop``)."""
    uses: dict[int, int] = {}
    seen: set[int] = set()
    stack = [root]
    while stack:
        t = stack.pop()
        if id(t) in seen or t is stop or t._node is None:
            continue
        seen.add(id(t))
        for parent in t._node.inputs:
            if isinstance(parent, Tensor):
                uses[id(parent)] = uses.get(id(parent), 0) + 1
                stack.append(parent)
    return uses


def _example_input(model: Module, example_input: Any) -> Tensor:
    param = next(model.parameters(), None)
    if param is None:
        raise ValueError("fold_batchnorm: the model has no parameters")
    if example_input is None:
        cfg = getattr(model, "pretrained_cfg", None)
        if not cfg or "input_size" not in cfg:
            raise ValueError("fold_batchnorm: example_input=None, and the model has no "
                             "pretrained_cfg['input_size']; pass an input of the shape the "
                             "model takes, e.g. example_input=(1, C, H, W)")
        example_input = (1, *cfg["input_size"])
    if isinstance(example_input, Tensor):
        return example_input.detach().to(backend=param.backend.name, dtype=param.dtype)
    if isinstance(example_input, tuple) and all(isinstance(n, int) for n in example_input):
        array = np.random.default_rng(0).standard_normal(example_input)
    else:
        array = np.asarray(example_input)
    if array.dtype.kind not in "biuf":
        raise TypeError(f"fold_batchnorm: example_input has dtype {array.dtype}; expected a "
                        "Tensor, an array of real numbers or a shape tuple")
    return tensor(array, dtype=param.dtype, backend=param.backend)


def _set_child(model: Module, name: str, new: Module) -> None:
    """Replace the submodule at dotted ``name`` in place (keeping its position in the parent's
    child order, which Sequential runs in)."""
    parent_name, _, leaf = name.rpartition(".")
    parent = dict(model.named_modules())[parent_name]
    parent._modules[leaf] = new


def fold_batchnorm(model: Module, example_input: Any = None) -> Module:
    """An inference copy of ``model`` (in eval mode; ``model`` itself is left untouched) in
    which every BatchNorm2d applied to the output of a Conv2d or CondConv2d is folded into
    that convolution.

    Which batch norm follows which convolution is read from one traced forward pass of
    ``example_input`` (a Tensor, an array, or a shape tuple such as ``(1, 3, 32, 32)``; by
    default ``(1, *model.pretrained_cfg["input_size"])``). A pair is folded when the batch
    norm (with running statistics) takes exactly the convolution's output, each is called
    once, and nothing else uses that output; every other batch norm is kept.

    Derivation. In eval mode, per output channel o, with the running mean μ and variance
    var and istd = (var + ε)^(-1/2),

        BN(y)_o = γ_o (y_o − μ_o) istd_o + β_o = (γ_o istd_o) y_o + (β_o − γ_o istd_o μ_o).

    A convolution is linear in its kernel, so (γ_o istd_o) · conv(x, K)_o = conv(x, K')_o
    with K' = (γ ⊙ istd) ⊙ K, output channel o of K scaled by γ_o istd_o. For a static
    convolution y = conv(x, K) + bias:

        BN(y) = conv(x, (γ ⊙ istd) ⊙ K) + [(γ ⊙ istd) ⊙ bias + β − (γ ⊙ istd) ⊙ μ]

    For a CondConv2d, K_b = Σ_e r_be Θ_e and the bias is static, or mixed Σ_e r_be bias_e:

        (γ ⊙ istd) ⊙ K_b = Σ_e r_be ((γ ⊙ istd) ⊙ Θ_e)           every expert is scaled
        (γ ⊙ istd) ⊙ Σ_e r_be bias_e = Σ_e r_be ((γ ⊙ istd) ⊙ bias_e)   and every expert bias

    while the shift β − (γ ⊙ istd) ⊙ μ must stay static: pushing it into the experts' biases
    would multiply it by Σ_e r_be, which is not 1 for sigmoid routing. So a CondConv2d with a
    static (or no) bias gets the static bias (γ ⊙ istd) ⊙ bias + β − (γ ⊙ istd) ⊙ μ, and one
    with per-expert biases keeps them scaled and leaves the shift to a
    :class:`FoldedBatchNorm` in the batch norm's place. The routing is untouched: it is
    computed from the convolution's input, not its output.

    The folded values are computed in float64 and stored in each parameter's own dtype.
    """
    if not isinstance(model, Module):
        raise TypeError(f"fold_batchnorm: model must be a minicond Module, got "
                        f"{type(model).__name__}")
    folded = _copy_model(model).eval()
    example = _example_input(folded, example_input)
    calls, out = _trace(folded, example)
    producer = {}  # id(output tensor) -> conv module
    for m in folded.modules():
        if isinstance(m, (Conv2d, CondConv2d)) and len(calls.get(id(m), ())) == 1:
            producer[id(calls[id(m)][0][1])] = m
    total_uses = _uses(out) if isinstance(out, Tensor) else {}
    for name, bn in list(folded.named_modules()):
        if not isinstance(bn, BatchNorm2d) or bn.running_mean is None:
            continue
        bn_calls = calls.get(id(bn), ())
        if len(bn_calls) != 1:
            continue
        z, y = bn_calls[0]
        conv = producer.get(id(z))
        if conv is None or not isinstance(y, Tensor):
            continue
        if total_uses.get(id(z), 0) != _uses(y, stop=z).get(id(z), 0):
            continue  # the convolution's output also feeds something other than this BN
        _set_child(folded, name, _fold_pair(conv, bn))
    return folded


def _fold_pair(conv: Conv2d | CondConv2d, bn: BatchNorm2d) -> FoldedBatchNorm:
    """Fold ``bn`` into ``conv`` in place; the module that takes the batch norm's place."""
    C = bn.num_features
    mu = bn.running_mean.numpy().astype(np.float64)
    var = bn.running_var.numpy().astype(np.float64)
    gamma = bn.weight.numpy().astype(np.float64) if bn.weight is not None else np.ones(C)
    beta = bn.bias.numpy().astype(np.float64) if bn.bias is not None else np.zeros(C)
    scale = gamma / np.sqrt(var + bn.eps)   # γ ⊙ istd
    shift = beta - scale * mu

    w = conv.weight.numpy().astype(np.float64)
    # The output channel is axis 0 of a Conv2d weight [Cout, ...] and axis 1 of the experts
    # [E, Cout, ...]; a per-expert bias [E, Cout] scales along its last axis.
    channel_axis = 1 if isinstance(conv, CondConv2d) else 0
    per_channel = scale.reshape((1,) * channel_axis + (C,) + (1,) * (w.ndim - channel_axis - 1))
    _assign(conv, "weight", w * per_channel)
    expert_bias = isinstance(conv, CondConv2d) and conv.expert_bias and conv.bias is not None
    if expert_bias:
        _assign(conv, "bias", conv.bias.numpy().astype(np.float64) * scale)
        like = conv.weight
        return FoldedBatchNorm(C, tensor(shift, dtype=like.dtype, backend=like.backend))
    bias = shift if conv.bias is None else scale * conv.bias.numpy().astype(np.float64) + shift
    if isinstance(conv, CondConv2d):
        conv.expert_bias = False
    _assign(conv, "bias", bias)
    return FoldedBatchNorm(C)


def _assign(conv: Module, name: str, value: np.ndarray) -> None:
    like = conv.weight
    conv.register_parameter(name, Parameter(tensor(value, dtype=like.dtype,
                                                   backend=like.backend)))
