"""Test utilities: run the same computation in minicond and PyTorch and compare the output and
the gradient of every input; finite-difference gradient checks over all elements."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

import minicond as mc


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
    np.testing.assert_allclose(y_mc.numpy(), y_th.detach().numpy(), rtol=rtol, atol=atol,
                               err_msg="forward output differs from PyTorch")
    c = random_cotangent(y_th.shape)
    (y_mc * c).sum().backward()
    (y_th * torch.tensor(c)).sum().backward()
    for i, (a, b) in enumerate(zip(mc_in, th_in, strict=True)):
        if a is None:
            continue
        assert a.grad is not None, f"input {i}: minicond produced no gradient"
        np.testing.assert_allclose(a.grad.numpy(), b.grad.numpy(), rtol=rtol, atol=atol,
                                   err_msg=f"gradient of input {i} differs from PyTorch")


def gradcheck(fn: Callable[..., mc.Tensor], inputs: Sequence[np.ndarray], backend: str = "numpy",
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-7) -> None:
    """Central finite differences over **every** element of every input (float64).

    With a random cotangent c, L(x) = Σ f(x)·c; the analytic ∂L/∂x from backward must equal
    (L(x + h·eᵢ) − L(x − h·eᵢ)) / 2h for each element i.
    """
    arrays = [np.array(a, dtype=np.float64) for a in inputs]
    tensors = [mc.tensor(a, dtype="float64", requires_grad=True, backend=backend)
               for a in arrays]
    y = fn(*tensors)
    c = random_cotangent(y.shape)
    (y * c).sum().backward()

    def loss(vals: list[np.ndarray]) -> float:
        with mc.no_grad():
            out = fn(*[mc.tensor(v, dtype="float64", backend=backend) for v in vals])
        return float(np.sum(out.numpy() * c))

    for k, a in enumerate(arrays):
        assert tensors[k].grad is not None, f"input {k}: no gradient"
        analytic = tensors[k].grad.numpy()
        numeric = np.zeros_like(a)
        for idx in np.ndindex(a.shape):
            plus = [v.copy() for v in arrays]
            minus = [v.copy() for v in arrays]
            plus[k][idx] += eps
            minus[k][idx] -= eps
            numeric[idx] = (loss(plus) - loss(minus)) / (2 * eps)
        np.testing.assert_allclose(analytic, numeric, rtol=rtol, atol=atol,
                                   err_msg=f"gradcheck failed for input {k}")
