"""Pooling layers: MaxPool2d, AvgPool2d and AdaptiveAvgPool2d(1).

Layer (docs/architecture.md): ``nn``. Arguments are checked at construction (with the same rules and
messages as the functions in ``minicond.functional.pooling``, which check them again against the
input).
"""

from __future__ import annotations

from typing import Any

from .. import functional as F
from .._validate import check_int, check_pair
from ..tensor import Tensor
from .module import Module


def _check_window(owner: str, kernel_size: Any, stride: Any, padding: Any) -> tuple:
    kernel = check_pair(owner, "kernel_size", kernel_size, 1)
    stride = kernel if stride is None else check_pair(owner, "stride", stride, 1)
    pads = check_pair(owner, "padding", padding, 0)
    if pads[0] > kernel[0] // 2 or pads[1] > kernel[1] // 2:
        raise ValueError(f"{owner}: padding={padding!r} must be at most half the kernel size "
                         f"{kernel}")
    return kernel, stride, pads


class MaxPool2d(Module):
    """The maximum over each kernel window (``torch.nn.MaxPool2d`` with ``ceil_mode=False``)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 dilation: Any = 1) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = _check_window(
            "MaxPool2d", kernel_size, stride, padding)
        self.dilation = check_pair("MaxPool2d", "dilation", dilation, 1)

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding, self.dilation)

    def extra_repr(self) -> str:
        return (f"kernel_size={self.kernel_size}, stride={self.stride}, "
                f"padding={self.padding}, dilation={self.dilation}")


class AvgPool2d(Module):
    """The mean over each kernel window (``torch.nn.AvgPool2d`` with ``ceil_mode=False``)."""

    def __init__(self, kernel_size: Any, stride: Any = None, padding: Any = 0,
                 count_include_pad: bool = True, divisor_override: int | None = None) -> None:
        super().__init__()
        self.kernel_size, self.stride, self.padding = _check_window(
            "AvgPool2d", kernel_size, stride, padding)
        self.count_include_pad = bool(count_include_pad)
        self.divisor_override = (None if divisor_override is None else
                                 check_int("AvgPool2d", "divisor_override", divisor_override, 1))

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding,
                            self.count_include_pad, self.divisor_override)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AdaptiveAvgPool2d(Module):
    """Global average pooling, [B, C, H, W] -> [B, C, 1, 1]; only ``output_size=1``."""

    def __init__(self, output_size: Any = 1) -> None:
        super().__init__()
        if check_pair("AdaptiveAvgPool2d", "output_size", output_size, 1) != (1, 1):
            raise ValueError(f"AdaptiveAvgPool2d: output_size={output_size!r} is not "
                             "supported; only 1 (global average pooling) is")
        self.output_size = 1

    def forward(self, x: Tensor) -> Tensor:
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self) -> str:
        return "output_size=1"
