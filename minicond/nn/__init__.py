"""Layers with parameters (``torch.nn``-like): Module, Parameter, Linear, Conv2d, Dropout,
Router and CondConv2d.

Layer: above ``functional``.
"""

from . import init
from .condconv import CondConv2d, Router
from .layers import Conv2d, Dropout, Linear
from .module import Module, Parameter

__all__ = ["CondConv2d", "Conv2d", "Dropout", "Linear", "Module", "Parameter", "Router", "init"]
