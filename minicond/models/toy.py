"""Small image classifiers for the toy datasets: a CondConv network and its static twin.

Layer (docs/architecture.md): above ``nn``. Both networks have the same layout and the same
activation shapes:

    stem      Conv2d 3×3 (C → w), BatchNorm2d, ReLU                   [B, w, S, S]
    block 1   inverted residual, stride 2 (w → 1.5w), expand ×2       [B, 1.5w, S/2, S/2]
    block 2   inverted residual, stride 2 (1.5w → 2w), expand ×2      [B, 2w, S/4, S/4]
    block 3   inverted residual, stride 1 (2w → 2w), expand ×2, residual
    head      global average pool, Linear (2w → classes)

In ``"condconv"`` the blocks are ``nn.CondConvBlock`` (three CondConv2d layers sharing one
router per block, as in the paper's EfficientNet models); in ``"static"`` they are
``nn.MBConvBlock``. Both are the inverted residuals the EfficientNets use, so the state-dict
keys are timm's (``blocks.0.conv_pw.weight``, ``blocks.0.routing_fn.weight``, …). The CondConv
network holds about E times the block weights for a few percent more multiply-adds. In the
registry the two are ``toy_condconv`` and ``toy_static``.
"""

from __future__ import annotations

from typing import Any

from .. import nn
from .._validate import check_choice, check_int
from ..tensor import Tensor

MODELS: tuple[str, ...] = ("condconv", "static")

# Block module names before the blocks took timm's names; a state dict holding them was
# written by an earlier minicond and cannot be mapped safely (bn1 changed meaning).
_OLD_BLOCK_NAMES = (".expand_conv.", ".depthwise_conv.", ".project_conv.", ".routing.fc.")


class ToyNet(nn.Module):
    """Stem, three inverted-residual blocks and a linear classifier (see module docstring)."""

    def __init__(self, kind: str, in_channels: int, num_classes: int, experts: int = 4,
                 width: int = 16, backend: Any = None, dtype: Any = None) -> None:
        super().__init__()
        self.kind = check_choice("ToyNet", "kind", kind, MODELS)
        check_int("ToyNet", "in_channels", in_channels, 1)
        check_int("ToyNet", "num_classes", num_classes, 2)
        self.experts = check_int("ToyNet", "experts", experts, 1)
        width = check_int("ToyNet", "width", width, 2)
        w1, w2 = width * 3 // 2, width * 2
        opts = {"dtype": dtype, "backend": backend}
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False, **opts),
            nn.BatchNorm2d(width, **opts), nn.ReLU())

        def block(cin: int, cout: int, stride: int) -> nn.Module:
            if self.kind == "condconv":
                return nn.CondConvBlock(cin, cout, 3, stride=stride, expand_ratio=2,
                                        num_experts=self.experts, activation="relu", **opts)
            return nn.MBConvBlock(cin, cout, 3, stride=stride, expand_ratio=2,
                                  activation="relu", **opts)

        self.blocks = nn.Sequential(block(width, w1, 2), block(w1, w2, 2), block(w2, w2, 1))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(w2, num_classes, **opts)

    pretrained_cfg: dict[str, Any] | None = None  # trained here, on inputs of any size

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.flatten(self.pool(self.blocks(self.stem(x)))))

    def load_state_dict(self, state_dict: dict[str, Any], strict: bool = True) -> None:
        old = sorted(k for k in state_dict if any(n in k for n in _OLD_BLOCK_NAMES))
        if old:
            raise ValueError(
                f"ToyNet.load_state_dict: key {old[0]!r} uses the block names of an earlier "
                "minicond (expand_conv/depthwise_conv/project_conv/routing.fc); the blocks now "
                "use timm's names (conv_pw/conv_dw/conv_pwl/routing_fn) and such a checkpoint "
                "cannot be loaded: train the model again")
        super().load_state_dict(state_dict, strict)

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}" + (f", experts={self.experts}"
                                        if self.kind == "condconv" else "")


def build_model(name: str, image_shape: tuple[int, ...], num_classes: int, experts: int = 4,
                width: int = 16, backend: Any = None, dtype: Any = None) -> ToyNet:
    """The ``"condconv"`` or ``"static"`` network for images of ``image_shape`` (C, H, W)."""
    check_choice("build_model", "name", name, MODELS)
    return ToyNet(name, image_shape[0], num_classes, experts=experts, width=width,
                  backend=backend, dtype=dtype)
