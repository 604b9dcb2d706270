"""Layers with parameters (``torch.nn``-like): Module, Parameter, Linear, Conv2d, Dropout,
Router and CondConv2d, ConvTranspose2d; activations, pooling, Upsample, BatchNorm2d, LayerNorm,
GroupNorm, containers (Sequential, ModuleList, ModuleDict), Flatten, Identity, loss modules,
SqueezeExcite, DropPath and EfficientNet's blocks (DepthwiseSeparable, InvertedResidual,
CondConvInvertedResidual with one shared router; CondConvBlock and MBConvBlock configure the
last two for the toy networks).

Layer (docs/architecture.md): above ``functional``.
"""

from . import init
from .activation import (
    GELU,
    Hardswish,
    Identity,
    LeakyReLU,
    LogSoftmax,
    ReLU,
    Sigmoid,
    SiLU,
    Softmax,
    Softplus,
    Tanh,
)
from .batchnorm import BatchNorm2d
from .blocks import (
    CondConvBlock,
    CondConvInvertedResidual,
    DepthwiseSeparable,
    InvertedResidual,
    MBConvBlock,
)
from .condconv import CondConv2d, Router
from .container import Flatten, ModuleDict, ModuleList, Sequential
from .conv_transpose import ConvTranspose2d
from .drop_path import DropPath
from .layers import Conv2d, Dropout, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, L1Loss, MSELoss, NLLLoss
from .module import Module, Parameter
from .normalization import GroupNorm, LayerNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .squeeze_excite import SqueezeExcite
from .upsample import Upsample

__all__ = ["CondConv2d", "Conv2d", "Dropout", "Linear", "Module", "Parameter", "Router", "init",
           "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "CondConvBlock", "Flatten",
           "MBConvBlock", "MaxPool2d", "ReLU", "Sequential", "SiLU", "Sigmoid",
           "BCEWithLogitsLoss", "CrossEntropyLoss", "GELU", "Hardswish", "Identity", "L1Loss",
           "LeakyReLU", "LogSoftmax", "MSELoss", "ModuleDict", "ModuleList", "NLLLoss",
           "Softmax", "Softplus", "Tanh", "CondConvInvertedResidual", "DepthwiseSeparable",
           "DropPath", "InvertedResidual", "SqueezeExcite", "ConvTranspose2d", "GroupNorm",
           "LayerNorm", "Upsample"]
