"""Layers with parameters (``torch.nn``-like): Module, Parameter, Linear, Conv2d, Dropout,
Router and CondConv2d; activations, pooling, BatchNorm2d, Sequential, Flatten, and the
MBConv blocks (CondConvBlock with one shared router, MBConvBlock its static twin).

Layer: above ``functional``.
"""

from . import init
from .activation import ReLU, Sigmoid, SiLU
from .batchnorm import BatchNorm2d
from .blocks import CondConvBlock, MBConvBlock
from .condconv import CondConv2d, Router
from .container import Flatten, Sequential
from .layers import Conv2d, Dropout, Linear
from .module import Module, Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d

__all__ = ["CondConv2d", "Conv2d", "Dropout", "Linear", "Module", "Parameter", "Router", "init",
           "AdaptiveAvgPool2d", "AvgPool2d", "BatchNorm2d", "CondConvBlock", "Flatten",
           "MBConvBlock", "MaxPool2d", "ReLU", "Sequential", "SiLU", "Sigmoid"]
