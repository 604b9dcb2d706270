"""CondConv is a mixture of E convolutions, computed with one.

Convolution is linear in its kernel, so mixing the experts first and convolving once,

    y_b = conv2d(x_b, Σ_e r_be Θ_e),

gives the same output as running every expert and mixing the outputs,

    y_b = Σ_e r_be conv2d(x_b, Θ_e).

The second form costs E convolutions; minicond computes the first. This script checks the
identity numerically, and its special case: one-hot routing is a static conv with that expert.
"""

import numpy as np

import minicond as mc
import minicond.functional as F
from minicond.testing import assert_close

rng = np.random.default_rng(0)
B, Cin, Cout, E, H, W = 3, 4, 6, 5, 9, 9
x = mc.tensor(rng.standard_normal((B, Cin, H, W)), dtype="float64")
experts = mc.tensor(rng.standard_normal((E, Cout, Cin, 3, 3)), dtype="float64")
r = mc.tensor(rng.uniform(0.0, 1.0, (B, E)), dtype="float64")  # any routing weights work

# One convolution: minicond mixes the kernels per example, then convolves once.
y_cond = F.cond_conv2d(x, r, experts, stride=2, padding=1).numpy()

# E convolutions: run each expert on the whole batch, then mix the outputs per example.
outputs = np.stack([F.conv2d(x, experts[e], stride=2, padding=1).numpy() for e in range(E)])
y_mix = np.einsum("be,eboij->boij", r.numpy(), outputs)   # Σ_e r_be · conv2d(x_b, Θ_e)

gap = np.max(np.abs(y_cond - y_mix))
print(f"output shape {y_cond.shape}: one conv with mixed kernels vs {E} convs mixed after")
print(f"max |difference| {gap:.2e}")

# One-hot routing picks a single expert: CondConv becomes an ordinary conv2d.
chosen = 2
one_hot = mc.tensor(np.eye(E)[[chosen] * B], dtype="float64")
y_one_hot = F.cond_conv2d(x, one_hot, experts, stride=2, padding=1).numpy()
gap_one_hot = np.max(np.abs(y_one_hot - outputs[chosen]))
print(f"one-hot routing on expert {chosen} vs conv2d with that expert: max |difference| "
      f"{gap_one_hot:.2e}")

# assert_close raises, naming the worst element, if the identity does not hold.
assert_close(y_cond, y_mix, rtol=0, atol=1e-12, msg="one conv vs the mixture of E convs")
assert_close(y_one_hot, outputs[chosen], rtol=0, atol=1e-12, msg="one-hot routing vs conv2d")
print("verdict: CondConv equals the mixture of its experts' convolutions")
