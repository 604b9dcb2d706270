"""Quickstart: build a CondConv2d, run forward and backward, and check its gradients against
central finite differences with minicond.testing.gradcheck."""

import numpy as np

import minicond as mc

mc.manual_seed(0)
layer = mc.nn.CondConv2d(4, 8, kernel_size=3, padding=1, num_experts=3).double().eval()
x = mc.tensor(np.random.default_rng(0).standard_normal((2, 4, 8, 8)), requires_grad=True)
cotangent = np.random.default_rng(1).standard_normal((2, 8, 8, 8))

y = layer(x)
loss = (y * cotangent).sum()
loss.backward()
print(f"output shape {y.shape}, loss {loss.item():.6f}, ‖∂L/∂x‖ "
      f"{np.linalg.norm(x.grad.numpy()):.6f}, ‖∂L/∂experts‖ "
      f"{np.linalg.norm(layer.weight.grad.numpy()):.6f}")

# gradcheck perturbs every element of every input by ±h and compares (L(x+h) − L(x−h)) / 2h
# with what backward computed. On a smaller input, to keep the forward passes few: the
# layer's input, then its experts (a parameter, passed in as an input of its own).
small = np.random.default_rng(2).standard_normal((1, 4, 4, 4))
mc.testing.gradcheck(layer, small)
print(f"∂L/∂x: all {small.size} elements match central differences")


def with_experts(inp: mc.Tensor, experts: mc.Tensor) -> mc.Tensor:
    routing = layer.routing(inp)
    return mc.functional.cond_conv2d(inp, routing, experts, layer.bias, padding=1)


mc.testing.gradcheck(with_experts, small, layer.weight.numpy())
print(f"∂L/∂experts: all {layer.weight.numpy().size} elements match central differences")
print("gradient check passed")
