"""Test utilities: run the same computation in minicond and PyTorch and compare the output and
the gradient of every input; finite-difference gradient checks over all elements (both built
on ``minicond.testing``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import minicond as mc
from minicond.testing import assert_close


def random_cotangent(shape: tuple[int, ...], seed: int = 1) -> np.ndarray:
    """A fixed random ∂L/∂y, so gradients are checked against (f(x)·c).sum(), not .sum()."""
    return np.random.default_rng(seed).standard_normal(shape)


def compare_with_torch(mc_fn: Callable[..., mc.Tensor], torch_fn: Callable, inputs:
                       Sequence[np.ndarray | None], backend: str = "numpy",
                       rtol: float = 1e-9, atol: float = 1e-9) -> None:
    """Run ``mc_fn`` and ``torch_fn`` on float64 copies of ``inputs`` (None passes through)
    and assert that outputs and the gradients of every input agree."""
    import torch

    mc_in = [None if a is None else mc.tensor(a, dtype="float64", requires_grad=True,
                                              backend=backend) for a in inputs]
    th_in = [None if a is None else torch.tensor(a, dtype=torch.float64, requires_grad=True)
             for a in inputs]
    y_mc = mc_fn(*mc_in)
    y_th = torch_fn(*th_in)
    assert_close(y_mc, y_th.detach().numpy(), rtol=rtol, atol=atol,
                 equal_nan=True, msg="forward output differs from PyTorch")
    c = random_cotangent(y_th.shape)
    (y_mc * c).sum().backward()
    (y_th * torch.tensor(c)).sum().backward()
    for i, (a, b) in enumerate(zip(mc_in, th_in, strict=True)):
        if a is None:
            continue
        assert a.grad is not None, f"input {i}: minicond produced no gradient"
        assert_close(a.grad, b.grad.numpy(), rtol=rtol, atol=atol,
                     equal_nan=True, msg=f"gradient of input {i} differs from PyTorch")


def gradcheck(fn: Callable[..., mc.Tensor], inputs: Sequence[np.ndarray], backend: str = "numpy",
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """``minicond.testing.gradcheck`` on float64 arrays: central finite differences over
    **every** element of every input, with the suite's tighter default tolerances."""
    mc.testing.gradcheck(fn, *[np.asarray(a, dtype=np.float64) for a in inputs],
                         backend=backend, eps=eps, rtol=rtol, atol=atol)
