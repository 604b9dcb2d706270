"""EfficientNet-B0/B1 and their CondConv versions, built exactly as timm builds them, so a
timm state dict maps onto the parameters one to one (same names, same shapes).

Layer (docs/architecture.md): above ``nn``. The network, for an image [B, 3, H, W] (B0 channel
widths):

    conv_stem  3×3, stride 2, 3 → 32, bn1, SiLU                          H/2
    blocks.0   DepthwiseSeparable k3 s1, 32 → 16, SE                      H/2    ×1
    blocks.1   InvertedResidual  k3 s2, expand 6, → 24, SE                H/4    ×2
    blocks.2   InvertedResidual  k5 s2, expand 6, → 40, SE                H/8    ×2
    blocks.3   InvertedResidual  k3 s2, expand 6, → 80, SE                H/16   ×3
    blocks.4   InvertedResidual  k5 s1, expand 6, → 112, SE   (CondConv)  H/16   ×3
    blocks.5   InvertedResidual  k5 s2, expand 6, → 192, SE   (CondConv)  H/32   ×4
    blocks.6   InvertedResidual  k3 s1, expand 6, → 320, SE   (CondConv)  H/32   ×1
    conv_head  1×1, 320 → 1280, bn2, SiLU; global average pool; dropout; classifier

Only the first block of a stage has the stride. The CondConv models replace the blocks of the
last three stages by CondConv inverted residuals with 4 experts (``_4e``) or 8 (``_8e``); the
other stages stay static, as in the paper. B1 repeats each stage ceil(1.1·r) times (the
"depth multiplier"), with the same widths. Squeeze-and-excitation reduces to a quarter of the
*block input* width (round(M·0.25/expand)). The ``tf_`` variants are ports of the TensorFlow
weights: BatchNorm eps 1e-3 instead of 1e-5 and TensorFlow's SAME padding for the strided
convolutions (``padding="tf_same"``: computed from the input size at run time, the odd pixel
at the bottom/right), so that those weights give TensorFlow's outputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import functional as F
from .. import nn
from .._validate import check_float, check_int
from ..nn.blocks import make_divisible
from ..tensor import Tensor

# One row per stage: block kind, repeats, kernel, stride, expansion, output channels, and the
# base number of experts in the CondConv models (0: a static stage in every model).
STAGES: tuple[tuple[str, int, int, int, int, int, int], ...] = (
    ("ds", 1, 3, 1, 1, 16, 0),
    ("ir", 2, 3, 2, 6, 24, 0),
    ("ir", 2, 5, 2, 6, 40, 0),
    ("ir", 3, 3, 2, 6, 80, 0),
    ("ir", 3, 5, 1, 6, 112, 4),
    ("ir", 4, 5, 2, 6, 192, 4),
    ("ir", 1, 3, 1, 6, 320, 4),
)
SE_RATIO = 0.25
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
BN_EPS_TF = 1e-3  # TensorFlow's default; PyTorch's is 1e-5

_IMAGENET_MEAN = (0.485, 0.456, 0.406)
_IMAGENET_STD = (0.229, 0.224, 0.225)
_HALF = (0.5, 0.5, 0.5)


def _cfg(size: int, crop_pct: float, mean: tuple[float, ...], std: tuple[float, ...],
         tag: str) -> dict[str, Any]:
    return {"input_size": (3, size, size), "crop_pct": crop_pct, "crop_mode": "center",
            "interpolation": "bicubic", "mean": mean, "std": std, "tag": tag,
            "num_classes": 1000, "first_conv": "conv_stem", "classifier": "classifier"}


# name: (depth multiplier, experts multiplier (0: static), TensorFlow port?, preprocessing of
# timm's default weights for that name).
VARIANTS: dict[str, tuple[float, int, bool, dict[str, Any]]] = {
    "efficientnet_cc_b0_4e": (1.0, 1, False,
                              _cfg(224, 0.875, _IMAGENET_MEAN, _IMAGENET_STD, "untrained")),
    "efficientnet_cc_b0_8e": (1.0, 2, False,
                              _cfg(224, 0.875, _IMAGENET_MEAN, _IMAGENET_STD, "untrained")),
    "efficientnet_cc_b1_8e": (1.1, 2, False,
                              _cfg(240, 0.882, _IMAGENET_MEAN, _IMAGENET_STD, "untrained")),
    "tf_efficientnet_cc_b0_4e": (1.0, 1, True, _cfg(224, 0.875, _HALF, _HALF, "in1k")),
    "tf_efficientnet_cc_b0_8e": (1.0, 2, True, _cfg(224, 0.875, _HALF, _HALF, "in1k")),
    "tf_efficientnet_cc_b1_8e": (1.1, 2, True, _cfg(240, 0.882, _HALF, _HALF, "in1k")),
    "efficientnet_b0": (1.0, 0, False,
                        _cfg(224, 0.875, _IMAGENET_MEAN, _IMAGENET_STD, "ra_in1k")),
    "efficientnet_b1": (1.1, 0, False, _cfg(240, 0.9, _HALF, _HALF, "ra4_e3600_r240_in1k")),
    "tf_efficientnet_b0": (1.0, 0, True,
                           _cfg(224, 0.875, _IMAGENET_MEAN, _IMAGENET_STD, "ns_jft_in1k")),
    "tf_efficientnet_b1": (1.1, 0, True,
                           _cfg(240, 0.882, _IMAGENET_MEAN, _IMAGENET_STD, "ns_jft_in1k")),
}


def round_channels(channels: int, multiplier: float = 1.0) -> int:
    """A stage width scaled by the width multiplier and rounded to a multiple of 8."""
    return make_divisible(channels * multiplier, 8)


def stage_repeats(repeats: int, depth_multiplier: float) -> int:
    """Blocks in a stage of the scaled network: ceil(r·depth multiplier)."""
    return int(math.ceil(repeats * depth_multiplier))


class EfficientNet(nn.Module):
    """An EfficientNet or CondConv-EfficientNet (module docstring); build it with
    ``minicond.models.create_model``. ``pretrained_cfg`` holds the preprocessing of timm's
    default weights for the name: input size, crop_pct, interpolation, mean and std."""

    def __init__(self, name: str, num_classes: int = 1000, in_chans: int = 3,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, dtype: Any = None,
                 backend: Any = None) -> None:
        super().__init__()
        if name not in VARIANTS:
            raise ValueError(f"EfficientNet: name={name!r} is not supported; expected one of "
                             f"{', '.join(map(repr, VARIANTS))}")
        self.name = name
        depth_multiplier, experts_multiplier, tf_port, cfg = VARIANTS[name]
        self.num_classes = check_int(name, "num_classes", num_classes, 1)
        self.in_chans = check_int(name, "in_chans", in_chans, 1)
        self.drop_rate = check_float(name, "drop_rate", drop_rate, 0.0, 1.0, high_open=True)
        drop_path_rate = check_float(name, "drop_path_rate", drop_path_rate, 0.0, 1.0,
                                     high_open=True)
        self.pretrained_cfg = dict(cfg, num_classes=self.num_classes)
        padding = "tf_same" if tf_port else "symmetric"
        bn = {"bn_eps": BN_EPS_TF if tf_port else 1e-5, "bn_momentum": 0.1}
        opts = {"dtype": dtype, "backend": backend}

        stem = round_channels(STEM_CHANNELS)
        self.conv_stem = nn.Conv2d(self.in_chans, stem, 3, stride=2, bias=False,
                                   padding="tf_same" if tf_port else 1, **opts)
        self.bn1 = nn.BatchNorm2d(stem, eps=bn["bn_eps"], **opts)
        self.act = nn.SiLU()

        plan = [(stage, stage_repeats(stage[1], depth_multiplier)) for stage in STAGES]
        total = sum(n for _, n in plan)
        index = 0
        cin = stem
        stages = []
        for (kind, _, k, stride, expand, cout, experts), repeats in plan:
            cout = round_channels(cout)
            blocks = []
            for i in range(repeats):
                # Stochastic depth grows linearly with the block's position in the network.
                common = {"stride": stride if i == 0 else 1, "activation": "silu",
                          "padding": padding, "drop_path_rate": drop_path_rate * index / total,
                          **bn, **opts}
                if kind == "ds":
                    blocks.append(nn.DepthwiseSeparable(
                        cin, cout, k, se_channels=round(cin * SE_RATIO), **common))
                else:
                    mid = make_divisible(cin * expand, 8)
                    se = round(mid * (SE_RATIO / expand))
                    if experts and experts_multiplier:
                        blocks.append(nn.CondConvInvertedResidual(
                            cin, cout, k, expand_ratio=expand,
                            num_experts=experts * experts_multiplier, se_channels=se,
                            channel_divisor=8, **common))
                    else:
                        blocks.append(nn.InvertedResidual(
                            cin, cout, k, expand_ratio=expand, se_channels=se,
                            channel_divisor=8, **common))
                cin = cout
                index += 1
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.Sequential(*stages)

        self.num_features = round_channels(HEAD_CHANNELS)
        self.conv_head = nn.Conv2d(cin, self.num_features, 1, bias=False, **opts)
        self.bn2 = nn.BatchNorm2d(self.num_features, eps=bn["bn_eps"], **opts)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Linear(self.num_features, self.num_classes, **opts)

    def forward_features(self, x: Tensor) -> Tensor:
        """The feature map [B, 1280, H/32, W/32] before pooling."""
        x = self.act(self.bn1(self.conv_stem(x)))
        x = self.blocks(x)
        return self.act(self.bn2(self.conv_head(x)))

    def forward_head(self, x: Tensor) -> Tensor:
        """Pool, dropout (training only) and classify: [B, 1280, h, w] -> [B, num_classes]."""
        x = self.flatten(self.global_pool(x))
        return self.classifier(F.dropout(x, self.drop_rate, self.training))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))

    def routing_weights(self) -> dict[str, np.ndarray]:
        """The routing weights [B, E] each CondConv block used in the last forward, by the
        block's name (``"blocks.4.0"``, …); empty for a static model."""
        return {name: m.last_routing_weights.numpy() for name, m in self.named_modules()
                if isinstance(m, nn.CondConvInvertedResidual)
                and m.last_routing_weights is not None}

    def extra_repr(self) -> str:
        return f"{self.name!r}, num_classes={self.num_classes}, in_chans={self.in_chans}"
