"""The kernel table: the names and signatures every backend implements.

Layer (docs/architecture.md): the bottom of the stack. Functions in ``minicond.functional`` call
``x.backend.<kernel>(...)`` and never ask which backend they hold. A backend is a module that
defines every name in :data:`KERNELS` with the signature documented here; ``numpy_ref`` is the
readable oracle the other backends are tested against.

Conventions shared by every kernel:

* Arrays are the backend's own (``numpy.ndarray`` on the CPU backends, device arrays on CUDA);
  kernels return new arrays and never write into their inputs.
* float32 and float64 are supported; a kernel returns the dtype of its floating inputs.
  ``from_numpy``, ``to_numpy``, ``full``, ``astype``, ``compare``, ``where``, ``gather``,
  ``reshape``, ``permute``, ``broadcast_to`` and ``argmax`` also take int64 and bool arrays.
* ``stride``, ``padding``, ``dilation`` are ``(h, w)`` pairs of Python ints; ``pads`` is
  ``(top, bottom, left, right)``. Arguments are validated by the caller, in Python, before a
  kernel runs.

Creation and transfer
    ``from_numpy(a, dtype)``          copy of a NumPy array onto the backend
    ``to_numpy(a)``                   copy of a backend array as a NumPy array
    ``full(shape, value, dtype)``     array filled with ``value``
    ``astype(a, dtype)``              copy converted to ``dtype`` (float32, float64, int64,
                                      bool): to int64 truncates toward zero, to bool is a ≠ 0
    ``dropout_mask(shape, p, dtype, seed)``  0 with probability ``p``, else ``1/(1-p)``

Elementwise (binary kernels broadcast like NumPy)
    ``add sub mul div gt eq maximum minimum`` (a, b);  ``power(a, p)`` (a number p);
    ``power_tensor(a, b)`` (aᵇ elementwise)
    ``neg exp log log1p sqrt relu sigmoid tanh erf`` (a)
    ``gt``/``eq`` return 1.0 where true and 0.0 elsewhere, in the inputs' dtype;
    ``maximum``/``minimum`` return NaN where either input is NaN (as NumPy's).
    ``compare(a, b, op)``             bool array of a op b, op in lt le gt ge eq ne; a and b
                                      have one dtype (any of the four)
    ``where(cond, a, b)``             a where the bool array ``cond`` holds, else b; a and b of
                                      one dtype; all three broadcast

Reductions and shape
    ``sum(a, axes, keepdims)``, ``max(a, axes, keepdims)``, ``argmax(a, axis)`` (int64)
    ``reshape(a, shape)``, ``permute(a, axes)``, ``broadcast_to(a, shape)``
    ``gather(a, index)``              out[k] = a.flat[index[k]]: ``index`` an int64 NumPy array of
                                      flat positions (any shape, the output's shape)
    ``scatter_add(shape, index, g)``  zeros of ``shape`` with g[k] added at flat position
                                      index[k] (repeated positions accumulate): gather's
                                      transpose

Linear algebra and activations
    ``matmul(a, b)``                  NumPy's ``a @ b`` (batch dims broadcast)
    ``softmax(a, axis)``, ``log_softmax(a, axis)``  numerically stable
    ``softmax_backward(y, gy, axis)``      y * (gy - Σ gy·y)
    ``log_softmax_backward(y, gy, axis)``  gy - exp(y) · Σ gy

Convolution family (NCHW)
    ``pad(x, pads, mode)``            mode in zeros | reflect | replicate | circular
    ``pad_backward(g, pads, mode)``   the transpose of ``pad``
    ``im2col(x, kernel, stride, padding, dilation)``  [B, C, H, W] -> [B, C·kh·kw, Ho·Wo]
    ``col2im(cols, x_shape, kernel, stride, padding, dilation)``  the transpose of ``im2col``
    ``conv2d_forward(x, weight, stride, padding, dilation, groups, bias=None)``
        weight [Cout, Cin/g, kh, kw] (shared) or [B, Cout, Cin/g, kh, kw] (one per example);
        bias None, [Cout] (shared) or [B, Cout] (one per example), added to every output pixel
        of its channel
    ``conv2d_backward_input(gy, weight, x_shape, stride, padding, dilation, groups)``
    ``conv2d_backward_weight(x, gy, weight_shape, stride, padding, dilation, groups)``
        returns a 4-D gradient summed over the batch, or a 5-D one per example, as
        ``weight_shape`` asks
    ``mix_experts(r, W)``             K_b = Σ_e r_be W_e:  r [B, E], W [E, ...] -> [B, ...]
    ``mix_experts_backward(r, W, gK)`` -> (gr, gW) with gr = gK·Wᵀ, gW = rᵀ·gK

Training (fused: one call where a composition of the kernels above would make many passes
over the data; ``numpy_ref`` states each as that composition)
    ``batch_norm_forward(x, weight, bias, mean, var, eps)`` -> (y, mean, var, inv_std)
        x [B, C, ...] standardised per channel c over its N = (all but axis 1) values.
        ``mean``/``var`` None: the batch statistics μ = Σ x/N, σ² = Σ (x − μ)²/N (biased)
        are used and returned; else the given [C] statistics are used and returned as
        given. inv_std = 1/√(var + eps) and y = (x − μ)·inv_std·γ + β with ``weight`` γ and
        ``bias`` β [C], or None for 1 and 0. The three statistics are [C].
    ``batch_norm_backward(g, x, weight, mean, inv_std, batch_stats)`` -> (gx, gweight, gbias)
        with x̂ = (x − μ)·inv_std recomputed from x and sums over all axes but 1:
        gbias = Σ g, gweight = Σ g·x̂, and gx = γ·inv_std·(g − (gbias + x̂·gweight)/N) when
        ``batch_stats`` (μ and σ² were computed from x), else γ·inv_std·g; weight None is
        γ = 1 (gweight is still returned)
    ``silu(a)`` -> (y, s)             s = sigmoid(a) and y = a·s, in one call (SiLU's forward
                                      keeps s for its backward)
    ``relu_backward(a, g)``           g where a > 0, else 0: 0 at a = 0 and where a is NaN,
                                      whatever g holds (a select, not g·[a > 0])
    ``adam_update(p, g, m, v, step, lr, beta1, beta2, eps, weight_decay, decoupled)``
        -> (p, m, v), one Adam step of ``torch.optim.Adam``/``AdamW`` at step t = ``step``
        (from 1), elementwise, hyper-parameters Python floats:
            decoupled: p ← p·(1 − lr·λ), d = g;  else d = g + λ·p   (neither when λ = 0)
            m ← m + (d − m)·(1 − β₁),  v ← v·β₂ + d²·(1 − β₂)
            p ← p − m / (√v / √(1 − β₂ᵗ) + ε) · (lr/(1 − β₁ᵗ))
        Each per-call constant (1 − lr·λ, 1 − β₁, 1 − β₂, √(1 − β₂ᵗ), lr/(1 − β₁ᵗ)) is
        computed in float64 and rounded to the dtype once; the rest runs in the dtype in this
        order, so every backend gives PyTorch's float64 result to rounding.
"""

from .geometry import conv_output_size  # noqa: F401 - the conv geometry, re-exported

KERNELS: tuple[str, ...] = (
    # creation and transfer
    "from_numpy", "to_numpy", "full", "astype", "dropout_mask",
    # elementwise
    "add", "sub", "mul", "div", "gt", "eq", "neg", "exp", "log", "sqrt", "relu", "sigmoid",
    "power", "maximum", "minimum", "log1p", "tanh", "erf", "compare", "where",
    "power_tensor",
    # reductions and shape
    "sum", "max", "argmax", "reshape", "permute", "broadcast_to", "gather", "scatter_add",
    # linear algebra and activations
    "matmul", "softmax", "log_softmax", "softmax_backward", "log_softmax_backward",
    # convolution family
    "pad", "pad_backward", "im2col", "col2im", "conv2d_forward", "conv2d_backward_input",
    "conv2d_backward_weight", "mix_experts", "mix_experts_backward",
    # training
    "batch_norm_forward", "batch_norm_backward", "relu_backward", "adam_update", "silu",
)
