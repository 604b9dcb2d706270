"""Differentiable operations: one Function per op, forward and backward side by side.

Layer (docs/architecture.md): above ``autograd``/``tensor``, below ``nn``. Each public function
validates its arguments in Python, then applies its Function, whose docstring states the forward
formula and the hand-derived gradient.
"""

from .activation import (
    GELU,
    Hardswish,
    LeakyReLU,
    SiLU,
    Softplus,
    Tanh,
    gelu,
    hardswish,
    leaky_relu,
    silu,
    softplus,
    tanh,
)
from .basic import (
    Add,
    Amax,
    Div,
    Exp,
    Log,
    LogSoftmax,
    MatMul,
    Mean,
    Mul,
    Neg,
    Permute,
    Pow,
    Relu,
    Reshape,
    Sigmoid,
    Softmax,
    Sub,
    Sum,
    amax,
    exp,
    flatten,
    log,
    log_softmax,
    matmul,
    mean,
    permute,
    relu,
    reshape,
    sigmoid,
    softmax,
    sum,
    transpose,
)
from .condconv import CondConv2d, MixExperts, cond_conv2d, mix_experts
from .conv import Conv2d, conv2d
from .conv_transpose import ConvTranspose2d, conv_transpose2d
from .elementwise import Maximum, Minimum, maximum, minimum, one_hot
from .indexing import Index, Where, argmax, compare, eq, ge, gt, index, le, lt, ne, where
from .joining import Cat, cat, chunk, split, stack
from .loss import (
    BCEWithLogits,
    CrossEntropy,
    L1Loss,
    MSELoss,
    NLLLoss,
    binary_cross_entropy_with_logits,
    cross_entropy,
    l1_loss,
    mse_loss,
    nll_loss,
)
from .math_ops import (
    Abs,
    Amin,
    Clamp,
    MinAlongDim,
    MinResult,
    PowTensor,
    Sqrt,
    Std,
    Var,
    abs,
    clamp,
    min,
    pow,
    sqrt,
    squeeze,
    std,
    transpose_all,
    unsqueeze,
    var,
)
from .normalization import BatchNorm, Normalize, batch_norm, group_norm, layer_norm
from .pad import PAD_MODES, Pad, pad
from .pooling import AvgPool2d, MaxPool2d, adaptive_avg_pool2d, avg_pool2d, max_pool2d
from .resample import Interpolate, interpolate
from .routing import Dropout, GlobalAvgPool2d, Linear, dropout, global_avg_pool2d, linear

__all__ = [
    "Add", "Amax", "CondConv2d", "Conv2d", "Div", "Dropout", "Exp", "GlobalAvgPool2d", "Linear",
    "Log", "LogSoftmax", "MatMul", "Mean", "MixExperts", "Mul", "Neg", "PAD_MODES", "Pad",
    "Permute", "Pow", "Relu", "Reshape", "Sigmoid", "Softmax", "Sub", "Sum",
    "amax", "cond_conv2d", "conv2d", "dropout", "exp", "flatten", "global_avg_pool2d",
    "linear", "log", "log_softmax", "matmul", "mean", "mix_experts", "pad",
    "permute", "relu", "reshape", "sigmoid", "softmax", "sum", "transpose",
    "AvgPool2d", "BatchNorm", "CrossEntropy", "MSELoss", "MaxPool2d", "SiLU",
    "adaptive_avg_pool2d", "avg_pool2d", "batch_norm", "cross_entropy", "max_pool2d",
    "mse_loss", "silu",
    "BCEWithLogits", "GELU", "Hardswish", "L1Loss", "LeakyReLU", "Maximum", "Minimum",
    "NLLLoss", "Softplus", "Tanh", "binary_cross_entropy_with_logits", "gelu", "hardswish",
    "l1_loss", "leaky_relu", "maximum", "minimum", "nll_loss", "one_hot", "softplus", "tanh",
    "Abs", "Amin", "Clamp", "MinAlongDim", "MinResult", "Sqrt", "Std", "Var", "abs", "clamp",
    "min", "pow", "PowTensor", "sqrt", "squeeze", "std", "transpose_all", "unsqueeze", "var",
    "Index", "Where", "argmax", "compare", "eq", "ge", "gt", "index", "le", "lt", "ne", "where",
    "Cat", "ConvTranspose2d", "Interpolate", "Normalize", "cat", "chunk", "conv_transpose2d",
    "group_norm", "interpolate", "layer_norm", "split", "stack",
]
