"""Quickstart: build a CondConv2d, run forward and backward, and check one gradient entry
against a central finite difference."""

import numpy as np

import minicond as mc

mc.manual_seed(0)
layer = mc.nn.CondConv2d(4, 8, kernel_size=3, padding=1, num_experts=3).double().eval()
x = mc.tensor(np.random.default_rng(0).standard_normal((2, 4, 8, 8)), requires_grad=True)
cotangent = np.random.default_rng(1).standard_normal((2, 8, 8, 8))


def loss_of(inp: mc.Tensor) -> mc.Tensor:
    return (layer(inp) * cotangent).sum()


loss = loss_of(x)
loss.backward()
print(f"output shape {layer(x).shape}, loss {loss.item():.6f}")

# Central difference on one input element: (L(x + h) - L(x - h)) / 2h.
index, h = (1, 2, 3, 4), 1e-6
x_np = x.numpy()
plus, minus = x_np.copy(), x_np.copy()
plus[index] += h
minus[index] -= h
with mc.no_grad():
    numeric = (loss_of(mc.tensor(plus)).item() - loss_of(mc.tensor(minus)).item()) / (2 * h)
analytic = x.grad.numpy()[index]
print(f"dL/dx{list(index)}: autograd {analytic:.8f}, finite difference {numeric:.8f}, "
      f"|difference| {abs(analytic - numeric):.2e}")
assert abs(analytic - numeric) < 1e-6, "gradient check failed"
print("gradient check passed")
