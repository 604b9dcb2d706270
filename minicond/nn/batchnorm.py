"""BatchNorm2d: per-channel normalisation with running statistics.

Layer (docs/architecture.md): ``nn``. The math is in
``minicond.functional.normalization.BatchNorm``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import functional as F
from .._validate import check_float, check_int, check_tensor
from ..tensor import Tensor, tensor
from .module import Module, Parameter


class BatchNorm2d(Module):
    """``torch.nn.BatchNorm2d``: y = γ·(x − μ)/√(σ² + ε) + β per channel of [B, C, H, W].

    In ``train()`` mode the batch's statistics normalise and are blended into the buffers
    ``running_mean`` and ``running_var`` with ``momentum`` (``None``: a cumulative average
    over ``num_batches_tracked`` batches); in ``eval()`` mode the running statistics
    normalise. ``affine=False`` drops γ and β; ``track_running_stats=False`` keeps no buffers
    and always uses the batch's statistics. The state-dict keys are PyTorch's.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1,
                 affine: bool = True, track_running_stats: bool = True, dtype: Any = None,
                 backend: Any = None) -> None:
        super().__init__()
        owner = "BatchNorm2d"
        self.num_features = check_int(owner, "num_features", num_features, 1)
        self.eps = check_float(owner, "eps", eps, 0.0, float("inf"), low_open=True,
                               high_open=True)
        self.momentum = None if momentum is None else check_float(owner, "momentum", momentum,
                                                                  0.0, 1.0)
        self.affine = bool(affine)
        self.track_running_stats = bool(track_running_stats)
        dt = dtype if dtype is not None else np.float32

        def filled(shape: tuple[int, ...], value: float) -> Tensor:
            return tensor(np.full(shape, value), dtype=dt, backend=backend)

        C = self.num_features
        self.register_parameter("weight", Parameter(filled((C,), 1.0)) if affine else None)
        self.register_parameter("bias", Parameter(filled((C,), 0.0)) if affine else None)
        if self.track_running_stats:
            self.register_buffer("running_mean", filled((C,), 0.0))
            self.register_buffer("running_var", filled((C,), 1.0))
            self.register_buffer("num_batches_tracked", filled((), 0.0))
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            for name, value in (("running_mean", 0.0), ("running_var", 1.0),
                                ("num_batches_tracked", 0.0)):
                buf = getattr(self, name)
                buf.data = buf.backend.full(buf.shape, value, buf.dtype)

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor("BatchNorm2d", "x", x, ndim=4)
        if x.shape[1] != self.num_features:
            raise ValueError(f"BatchNorm2d: x has {x.shape[1]} channels (shape {x.shape}); "
                             f"expected num_features={self.num_features}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            counter = self.num_batches_tracked
            be = counter.backend
            counter.data = be.add(counter.data, be.full((), 1.0, counter.dtype))
            if self.momentum is None:  # cumulative moving average: weight 1/n for batch n
                momentum = 1.0 / counter.item()
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}")
