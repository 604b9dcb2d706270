# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # CondConv by hand
#
# This walkthrough takes one `CondConv2d` layer apart and rebuilds every number it computes
# with plain NumPy: the routing, the mixed kernels, the convolution through im2col, and the
# whole backward pass, each compared with minicond. It ends by training a small model for a
# moment and plotting how it routes.
#
# It is a plain script (`python docs/walkthrough.py`) and a notebook
# (`jupytext --to notebook docs/walkthrough.py`). The symbols are those of the notation table
# in `docs/math/README.md`: experts $\Theta$ `[E, Cout, Cin/G, kh, kw]`, routing weights $r$
# `[B, E]`, pooled input $\bar x$, router weight $R$ and bias $\rho$, and $gX$ for
# $\partial L/\partial X$.
#
# The environment variable `MINICOND_WALKTHROUGH_STEPS` sets the number of training steps of
# the last part (default 1500, about 15 s of CPU time); `MINICOND_WALKTHROUGH_OUT` the folder
# the routing plot is written to (default: the current folder).

# %%
import os
import sys
from pathlib import Path

import numpy as np

import minicond as mc
import minicond.functional as F
from minicond.data import SHAPE_CLASSES, make_shapes


def same(name, ours, theirs):
    """Print how far apart two arrays are, and stop if they differ."""
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    print(f"{name:32s} max difference {np.max(np.abs(ours - theirs)):.1e}")
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12), name


# %% [markdown]
# ## 1. A layer and an input
#
# Two examples of 3 channels, 6×6 pixels; 4 output channels, 3×3 kernels, padding 1 and
# three experts. float64 on the readable NumPy backend, so that "by hand" and "minicond" agree
# to the last digits. `eval()` turns the router's dropout off.

# %%
mc.manual_seed(0)
layer = mc.nn.CondConv2d(3, 4, kernel_size=3, padding=1, num_experts=3, dtype="float64",
                         backend="numpy").eval()
rng = np.random.default_rng(0)
x_np = rng.standard_normal((2, 3, 6, 6))
x = mc.tensor(x_np, dtype="float64", backend="numpy", requires_grad=True)

Theta = layer.weight.numpy()             # [E, Cout, Cin, kh, kw] = [3, 4, 3, 3, 3]
bias = layer.bias.numpy()                # [Cout]
R = layer.routing.fc.weight.numpy()      # [E, Cin]
rho = layer.routing.fc.bias.numpy()      # [E]
B, Cin, H, W = x_np.shape
E, Cout, _, kh, kw = Theta.shape
print(layer)
print("experts", Theta.shape, "router", R.shape, rho.shape)

# %% [markdown]
# ## 2. Routing
#
# $\bar x_b = \operatorname{mean}_{h,w} x_b$, $z_b = R\,\bar x_b + \rho$,
# $r_b = \sigma(z_b)$: one weight in $(0, 1)$ per example and expert.

# %%
x_bar = x_np.mean(axis=(2, 3))                       # [B, Cin]
z = x_bar @ R.T + rho                                # [B, E]
r = 1 / (1 + np.exp(-z))                             # [B, E]
same("routing weights r", r, layer.routing(x).numpy())
print(np.round(r, 3))

# %% [markdown]
# ## 3. Mixing the experts
#
# Each example gets its own kernel $K_b = \sum_e r_{be}\,\Theta_e$: flatten the experts to
# rows and it is one small matrix product, $K = r\,\Theta$.

# %%
K = (r @ Theta.reshape(E, -1)).reshape(B, Cout, Cin, kh, kw)
r_tensor = mc.tensor(r, dtype="float64", backend="numpy")
same("mixed kernels K", K, F.mix_experts(r_tensor, layer.weight).numpy())

# %% [markdown]
# ## 4. The convolution through im2col
#
# Pad, copy every 3×3 window into a column, and the convolution of example $b$ is
# $y_b = K_b \cdot \mathrm{cols}_b + \mathrm{bias}$, a `[Cout, Cin·kh·kw] × [Cin·kh·kw, Ho·Wo]`
# matrix product. Stride 1, padding 1: $Ho \times Wo = 6 \times 6$.

# %%
pad = 1
Ho, Wo = H + 2 * pad - kh + 1, W + 2 * pad - kw + 1
x_pad = np.pad(x_np, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
cols = np.empty((B, Cin * kh * kw, Ho * Wo))
for oh in range(Ho):
    for ow in range(Wo):
        window = x_pad[:, :, oh:oh + kh, ow:ow + kw]              # [B, Cin, kh, kw]
        cols[:, :, oh * Wo + ow] = window.reshape(B, -1)           # rows ordered (c, i, j)
K_mat = K.reshape(B, Cout, -1)                                     # [B, Cout, Cin·kh·kw]
y_np = (K_mat @ cols + bias[:, None]).reshape(B, Cout, Ho, Wo)
y = layer(x)
same("output y", y_np, y.numpy())

# %% [markdown]
# And the mixture-of-experts identity: the same output is the routing-weighted sum of the
# three expert convolutions, $y_b = \sum_e r_{be}\,\mathrm{conv}(x_b, \Theta_e) + \mathrm{bias}$.

# %%
experts_out = np.stack([Theta[e].reshape(Cout, -1) @ cols for e in range(E)])  # [E, B, Cout, L]
mixture = np.einsum("be,ebol->bol", r, experts_out).reshape(y_np.shape) + bias[:, None, None]
same("mixture of E convolutions", mixture, y_np)

# %% [markdown]
# ## 5. The backward pass, step by step
#
# Take $L = \sum y \odot c$ for a random $c$, so $gy = c$. minicond's autograd fills `.grad`;
# below, each gradient is derived by hand in the order the chain rule visits them.

# %%
gy = rng.standard_normal(y.shape)
(y * mc.tensor(gy, dtype="float64", backend="numpy")).sum().backward()
gy_mat = gy.reshape(B, Cout, Ho * Wo)

# the bias: summed over examples and output pixels
same("g bias", gy.sum(axis=(0, 2, 3)), layer.bias.grad.numpy())

# the per-example kernel gradient, gK_b = gy_b · cols_bᵀ (the matrix product sums over pixels)
gK = gy_mat @ cols.transpose(0, 2, 1)                            # [B, Cout, Cin·kh·kw]

# mixing backward: gΘ = rᵀ gK and gr = gK Θᵀ, two small matrix products
g_Theta = (r.T @ gK.reshape(B, -1)).reshape(Theta.shape)
gr = gK.reshape(B, -1) @ Theta.reshape(E, -1).T                  # [B, E]
same("g Theta (experts)", g_Theta, layer.weight.grad.numpy())

# the convolution's input gradient: gcols_b = K_bᵀ gy_b, then col2im adds each column entry
# back to the pixel it was copied from
g_cols = K_mat.transpose(0, 2, 1) @ gy_mat                       # [B, Cin·kh·kw, L]
g_x_pad = np.zeros_like(x_pad)
for oh in range(Ho):
    for ow in range(Wo):
        g_x_pad[:, :, oh:oh + kh, ow:ow + kw] += g_cols[:, :, oh * Wo + ow].reshape(B, Cin, kh, kw)
gx_conv = g_x_pad[:, :, pad:pad + H, pad:pad + W]                # crop the padding

# the routing path: sigmoid, linear layer, average pool
gz = gr * r * (1 - r)
same("g R (router weight)", gz.T @ x_bar, layer.routing.fc.weight.grad.numpy())
same("g rho (router bias)", gz.sum(axis=0), layer.routing.fc.bias.grad.numpy())
g_x_bar = gz @ R                                                 # [B, Cin]
gx_route = np.broadcast_to(g_x_bar[:, :, None, None] / (H * W), x_np.shape)

# x was used twice, so its gradient is the sum of both paths
same("g x = conv path + routing path", gx_conv + gx_route, x.grad.numpy())

# %% [markdown]
# The routing gradient came from $gr_{be} = \langle gK_b, \Theta_e\rangle$, without running the
# $E$ expert convolutions. It equals $\langle gy_b, \mathrm{conv}(x_b, \Theta_e)\rangle$, the
# derivative of the mixture form:

# %%
same("gr, two ways", gr, np.einsum("bol,ebol->be", gy_mat, experts_out))

# %% [markdown]
# ## 6. Routing after a little training
#
# A small network learns the six procedural shapes of `minicond.data` for 1500
# steps: an ordinary 3×3 convolution, then a CondConv layer with four experts, pooling and a
# linear classifier. The CondConv layer's router sees the pooled features of the first
# convolution, so it can tell shapes apart (on the raw grey image it would see only the mean
# brightness). Then we look at the mean routing weight of each expert for each class.
#
# Sigmoid routing weights need not sum to one, and many saturate near 1 as training goes on;
# what shows conditioning is an expert whose weight differs from class to class. The last
# line printed is the largest such difference per expert: after a few steps (as in the
# tests) it is close to 0, after the default 1500 steps at least one expert is used
# noticeably more for some shapes than for others.

# %%
steps = int(os.environ.get("MINICOND_WALKTHROUGH_STEPS", "1500"))
mc.manual_seed(0)
images, labels = make_shapes(2048, image_size=12, seed=0)
condconv = mc.nn.CondConv2d(8, 16, 3, padding=1, num_experts=4)
model = mc.nn.Sequential(mc.nn.Conv2d(1, 8, 3, padding=1), mc.nn.ReLU(), condconv, mc.nn.ReLU(),
                         mc.nn.AdaptiveAvgPool2d(1), mc.nn.Flatten(),
                         mc.nn.Linear(16, len(SHAPE_CLASSES)))
optimizer = mc.optim.Adam(model.parameters(), lr=0.01)
batch = 64
for step in range(steps):
    i = (step * batch) % len(images)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(mc.tensor(images[i:i + batch])), labels[i:i + batch])
    loss.backward()
    optimizer.step()
    if step % 50 == 0 or step == steps - 1:
        print(f"step {step:4d}  loss {loss.item():.3f}")

model.eval()
with mc.no_grad():
    features = model[1](model[0](mc.tensor(images)))                 # the CondConv layer's input
    routing = condconv.routing(features).numpy()                      # [N, E]
per_class = np.stack([routing[labels == k].mean(axis=0) for k in range(len(SHAPE_CLASSES))])
print("mean routing weight per class (rows) and expert (columns):")
for name, row in zip(SHAPE_CLASSES, per_class, strict=True):
    print(f"  {name:9s}", " ".join(f"{v:.2f}" for v in row))
spread = per_class.max(axis=0) - per_class.min(axis=0)
print("largest difference between two classes, per expert:", np.round(spread, 2))

# %%
try:
    import matplotlib
except ImportError:
    print("matplotlib is not installed: no plot")
else:
    if "ipykernel" not in sys.modules:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    image = ax.imshow(per_class, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(per_class.shape[1]), [f"expert {e}" for e in range(per_class.shape[1])])
    ax.set_yticks(range(len(SHAPE_CLASSES)), SHAPE_CLASSES)
    ax.set_title(f"mean routing weight after {steps} steps")
    fig.colorbar(image, ax=ax)
    out = Path(os.environ.get("MINICOND_WALKTHROUGH_OUT", "."))
    fig.savefig(out / "walkthrough_routing.png", dpi=100, bbox_inches="tight")
    print("routing plot written to", out / "walkthrough_routing.png")
