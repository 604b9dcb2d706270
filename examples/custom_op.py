"""How to add an op to minicond: a Function with its backward, tested against PyTorch.

The op here is softplus, y = log(1 + eᵃ), a smooth ReLU. The recipe is the one every op in
``minicond/functional`` follows:

1. Derive the gradient on paper:  ∂y/∂a = eᵃ/(1 + eᵃ) = σ(a),  so  ∂L/∂a = g·σ(a).
   Choose a stable forward: log(1 + eᵃ) overflows for large a, but
       log(1 + eᵃ) = max(a, 0) + log(1 + e^(−|a|))
   only ever exponentiates a non-positive number (and |a| = relu(a) + relu(−a)).
2. Write a Function whose ``forward`` and ``backward`` sit side by side and call only the
   backend's kernels (``ctx.backend``), so it runs unchanged on every backend. Save in
   ``forward`` what ``backward`` needs (here a; σ(a) is one kernel call).
3. Wrap it in a function that checks its arguments in Python before any kernel runs.
4. Test it with ``minicond.testing``: hypothesis draws shapes and values
   (``minicond.testing.strategies``); on each, ``gradcheck`` compares the backward with
   central finite differences on every element (float64, random cotangent), and
   ``assert_close`` compares the output with NumPy's exact ``logaddexp``. When PyTorch is
   installed, the output and gradient are also compared with PyTorch's. Needs hypothesis
   (the test extra: ``pip install -e ".[test]"``); PyTorch is optional.
"""

import importlib.util

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicond as mc
from minicond.autograd import Function
from minicond.testing import assert_close, gradcheck
from minicond.testing.strategies import arrays


class Softplus(Function):
    """y = log(1 + eᵃ) = max(a, 0) + log(1 + e^(−|a|));  ∂L/∂a = g·σ(a)."""

    @staticmethod
    def forward(ctx, a):
        be = ctx.backend
        positive, negative = be.relu(a), be.relu(be.neg(a))
        magnitude = be.add(positive, negative)                       # |a|
        one = be.full((), 1.0, a.dtype)
        ctx.save_for_backward(a)
        return be.add(positive, be.log(be.add(one, be.exp(be.neg(magnitude)))))

    @staticmethod
    def backward(ctx, g):
        (a,) = ctx.saved
        return (ctx.backend.mul(g, ctx.backend.sigmoid(a)),)


def softplus(x: mc.Tensor) -> mc.Tensor:
    """Softplus, elementwise: log(1 + eˣ)."""
    if not isinstance(x, mc.Tensor):
        raise TypeError(f"softplus: x must be a minicond Tensor, got {type(x).__name__}")
    return Softplus.apply(x)


examples_run = []


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(data=st.data(), shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
       scale=st.floats(0.1, 30.0))
def test_softplus(data, shape, scale):
    a = data.draw(arrays(shape, scale=scale))    # large scales reach the sigmoid's flat tails
    # np.logaddexp(0, a) = log(e⁰ + eᵃ) = log(1 + eᵃ), computed stably by NumPy
    assert_close(softplus(mc.tensor(a)), np.logaddexp(0.0, a), rtol=1e-12, atol=1e-12,
                 msg="softplus vs numpy.logaddexp")
    gradcheck(softplus, a)                       # every element, central differences
    examples_run.append(shape)


def compare_with_torch(seed=0, shape=(3, 4, 5)):
    """Output and gradient against PyTorch in float64, for a random cotangent."""
    import torch

    rng = np.random.default_rng(seed)
    a, cotangent = rng.standard_normal(shape) * 10, rng.standard_normal(shape)
    x = mc.tensor(a, dtype="float64", requires_grad=True)
    y = softplus(x)
    (y * cotangent).sum().backward()
    xt = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    # torch.nn.functional.softplus returns a itself above a threshold (20 by default), an
    # approximation off by e⁻²⁰; logaddexp(0, a) is the exact log(1 + eᵃ).
    yt = torch.logaddexp(torch.zeros_like(xt), xt)
    (yt * torch.tensor(cotangent)).sum().backward()
    assert_close(y, yt.detach().numpy(), rtol=1e-12, atol=1e-12, msg="output vs PyTorch")
    assert_close(x.grad, xt.grad.numpy(), rtol=1e-12, atol=1e-12, msg="gradient vs PyTorch")


if __name__ == "__main__":
    test_softplus()   # runs every drawn example; raises on the first mismatch
    print(f"softplus matches numpy.logaddexp and passes gradcheck (every element) on "
          f"{len(examples_run)} drawn shapes, e.g. {examples_run[:3]}")
    if importlib.util.find_spec("torch") is not None:
        compare_with_torch()
        print("softplus matches PyTorch in float64 (output and gradient)")
    else:
        print("PyTorch is not installed: the comparison with it is skipped")
    print("verdict: the new op's forward and backward are correct")
