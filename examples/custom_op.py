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
4. Test it: hypothesis draws shapes and values; the output and the gradient (for a random
   cotangent, not ``.sum()``) must equal PyTorch's in float64; a finite-difference check
   covers every element. Needs the test extra: ``pip install -e ".[test]"``.
"""

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minicond as mc
from minicond.autograd import Function


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
@given(shape=hnp.array_shapes(min_dims=1, max_dims=4, max_side=5),
       scale=st.floats(0.1, 30.0), seed=st.integers(0, 2**32 - 1))
def test_softplus_matches_torch(shape, scale, seed):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal(shape) * scale   # large scales reach the sigmoid's flat tails
    cotangent = rng.standard_normal(shape)

    x = mc.tensor(a, dtype="float64", requires_grad=True)
    y = softplus(x)
    (y * cotangent).sum().backward()

    xt = torch.tensor(a, dtype=torch.float64, requires_grad=True)
    # torch.nn.functional.softplus returns a itself above a threshold (20 by default), an
    # approximation off by e⁻²⁰; logaddexp(0, a) is the exact log(1 + eᵃ).
    yt = torch.logaddexp(torch.zeros_like(xt), xt)
    (yt * torch.tensor(cotangent)).sum().backward()

    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(x.grad.numpy(), xt.grad.numpy(), rtol=1e-12, atol=1e-12)
    examples_run.append(shape)


def finite_difference_check(shape=(3, 4), h=1e-6):
    """Central differences on every element of a small input."""
    rng = np.random.default_rng(0)
    a, cotangent = rng.standard_normal(shape), rng.standard_normal(shape)
    x = mc.tensor(a, dtype="float64", requires_grad=True)
    (softplus(x) * cotangent).sum().backward()
    numeric = np.zeros(shape)
    for idx in np.ndindex(shape):
        plus, minus = a.copy(), a.copy()
        plus[idx] += h
        minus[idx] -= h
        with mc.no_grad():
            lp = (softplus(mc.tensor(plus)) * cotangent).sum().item()
            lm = (softplus(mc.tensor(minus)) * cotangent).sum().item()
        numeric[idx] = (lp - lm) / (2 * h)
    return float(np.max(np.abs(x.grad.numpy() - numeric)))


if __name__ == "__main__":
    test_softplus_matches_torch()   # runs every drawn example; raises on the first mismatch
    print(f"softplus matches PyTorch (output and gradient) on "
          f"{len(examples_run)} drawn shapes, e.g. {examples_run[:3]}")
    error = finite_difference_check()
    print(f"finite-difference check over every element: max |error| {error:.2e}")
    assert error < 1e-7, "the hand-derived softplus gradient is wrong"
    print("verdict: the new op's forward and backward are correct")
