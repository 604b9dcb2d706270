"""Derive ∂L/∂r, the gradient of the routing weights, by hand, and check it three ways.

With K_b = Σ_e r_be Θ_e and y_b = conv2d(x_b, K_b), the chain rule through the mixing gives

    ∂L/∂r_be = Σ ∂L/∂K_b ⊙ ∂K_b/∂r_be = ⟨gK_b, Θ_e⟩,

where gK_b = ∂L/∂K_b is the ordinary weight gradient of the conv for example b. Linearity
gives a second form, ⟨gy_b, conv2d(x_b, Θ_e)⟩ (gy = ∂L/∂y), which needs E convolutions; the first
needs one weight gradient and a GEMM. Both must equal autograd and a finite difference.
Then the sigmoid: r = σ(z) gives ∂L/∂z = ∂L/∂r · r (1 − r).
"""

import numpy as np

import minicond as mc
import minicond.functional as F
from minicond.testing import assert_close, numerical_gradient

rng = np.random.default_rng(0)
B, Cin, Cout, E = 2, 3, 4, 3
x_np = rng.standard_normal((B, Cin, 6, 6))
W_np = rng.standard_normal((E, Cout, Cin, 3, 3))
z_np = rng.standard_normal((B, E))
g_np = rng.standard_normal((B, Cout, 6, 6))      # the cotangent: L = Σ gy ⊙ y, so ∂L/∂y = gy

x = mc.tensor(x_np, dtype="float64")
W = mc.tensor(W_np, dtype="float64")


def loss_of_r(r_values: np.ndarray) -> float:
    with mc.no_grad():
        r = mc.tensor(r_values, dtype="float64")
        return float((F.cond_conv2d(x, r, W, padding=1) * g_np).sum().item())


def loss_of_z(z_values: np.ndarray) -> float:
    with mc.no_grad():
        return loss_of_r(F.sigmoid(mc.tensor(z_values, dtype="float64")).numpy())


# Autograd's answer. r is an intermediate (its gradient is not kept), so ask for ∂L/∂r
# through a leaf with r's values.
z = mc.tensor(z_np, dtype="float64", requires_grad=True)
r = F.sigmoid(z)
r_leaf = mc.tensor(r.numpy(), dtype="float64", requires_grad=True)
(F.cond_conv2d(x, r_leaf, W, padding=1) * g_np).sum().backward()
gr_autograd = r_leaf.grad.numpy()

# By hand, form 1: ⟨gK_b, Θ_e⟩, with gK_b the weight gradient of example b's conv.
gr_hand = np.zeros((B, E))
for b in range(B):
    K_b = mc.tensor(np.einsum("e,eoikl->oikl", r.numpy()[b], W_np), dtype="float64",
                    requires_grad=True)
    (F.conv2d(x[[b]], K_b, padding=1) * g_np[[b]]).sum().backward()
    gK_b = K_b.grad.numpy()
    gr_hand[b] = [np.sum(gK_b * W_np[e]) for e in range(E)]

# By hand, form 2: ⟨gy_b, conv2d(x_b, Θ_e)⟩ (E convolutions; what minicond avoids).
gr_linear = np.array([[np.sum(g_np[b] * F.conv2d(x[[b]], W[e], padding=1).numpy()[0])
                       for e in range(E)] for b in range(B)])

# Central differences on r itself: (L(r + h·e_be) − L(r − h·e_be)) / 2h for every (b, e).
r_np = r.numpy()
gr_numeric = numerical_gradient(loss_of_r, r_np)

print("∂L/∂r by hand, ⟨gK_b, Θ_e⟩:\n", np.round(gr_hand, 6))
for name, other in (("autograd", gr_autograd), ("⟨gy_b, conv2d(x_b, Θ_e)⟩", gr_linear),
                    ("finite difference", gr_numeric)):
    print(f"vs {name}: max |difference| {np.max(np.abs(gr_hand - other)):.2e}")

# Through the sigmoid: ∂L/∂z = ∂L/∂r · r (1 − r), checked against autograd on z.
(F.cond_conv2d(x, r, W, padding=1) * g_np).sum().backward()
gz_hand = gr_hand * r_np * (1 - r_np)
gz_numeric = numerical_gradient(loss_of_z, z_np)
print(f"∂L/∂z = ∂L/∂r · r(1 − r) vs autograd: max |difference| "
      f"{np.max(np.abs(gz_hand - z.grad.numpy())):.2e}, vs finite difference "
      f"{np.max(np.abs(gz_hand - gz_numeric)):.2e}")

# Each assert_close raises, naming the worst element, if the hand-derived gradient is wrong.
assert_close(gr_hand, gr_autograd, rtol=0, atol=1e-10, msg="∂L/∂r vs autograd")
assert_close(gr_hand, gr_linear, rtol=0, atol=1e-10, msg="∂L/∂r vs E convolutions")
assert_close(gr_hand, gr_numeric, rtol=0, atol=1e-6, msg="∂L/∂r vs finite differences")
assert_close(gz_hand, z.grad.numpy(), rtol=0, atol=1e-10, msg="∂L/∂z vs autograd")
assert_close(gz_hand, gz_numeric, rtol=0, atol=1e-6, msg="∂L/∂z vs finite differences")
print("verdict: the hand-derived routing gradient matches autograd and finite differences")
