"""MAC counts against values computed by hand."""

from __future__ import annotations

import pytest

import minicond as mc
from minicond import functional as F
from minicond.profile import count_macs


class _Net(mc.nn.Module):
    """conv 1→4 (3×3, pad 1) · CondConv 4→8 (3×3, stride 2, pad 1, E=3) · pool · linear 8→6."""

    def __init__(self, expert_bias: bool = False) -> None:
        super().__init__()
        self.conv = mc.nn.Conv2d(1, 4, 3, padding=1)
        self.cond = mc.nn.CondConv2d(4, 8, 3, stride=2, padding=1, num_experts=3,
                                     expert_bias=expert_bias)
        self.fc = mc.nn.Linear(8, 6)

    def forward(self, x):
        return self.fc(F.global_avg_pool2d(self.cond(self.conv(x).relu())))


def test_conv_condconv_router_linear_by_hand():
    report = count_macs(_Net(), (1, 8, 8))
    conv = 4 * 8 * 8 * (1 * 3 * 3)                    # Cout·Ho·Wo · Cin·kh·kw = 2304
    router = 4 * 8 * 8 + 4 * 3                         # pool Cin·H·W + fc Cin·E = 268
    cond = 8 * 4 * 4 * (4 * 3 * 3) + 3 * (8 * 4 * 3 * 3)   # one conv 4608 + mixing 864
    fc = 8 * 6
    assert report.by_kind() == {"Conv2d": conv, "Router": router, "CondConv2d": cond,
                                "Linear": fc}
    assert report.total == conv + router + cond + fc == 8092
    assert [layer.name for layer in report.layers] == ["conv", "cond.routing", "cond", "fc"]
    assert report.layers[2].output_shape == (1, 8, 4, 4)
    assert "total" in report.table()


def test_mixed_bias_adds_its_mixing():
    plain = count_macs(_Net(), (1, 8, 8)).by_kind()["CondConv2d"]
    mixed = count_macs(_Net(expert_bias=True), (1, 8, 8)).by_kind()["CondConv2d"]
    assert mixed - plain == 3 * 8


def test_grouped_conv_and_shared_routing():
    class Shared(mc.nn.Module):
        def __init__(self):
            super().__init__()
            self.router = mc.nn.Router(6, 2)
            self.a = mc.nn.CondConv2d(6, 6, 3, padding=1, groups=6, num_experts=2)
            self.b = mc.nn.CondConv2d(6, 4, 1, num_experts=2)

        def forward(self, x):
            r = self.router(x)
            return self.b(self.a(x, r), r)

    report = count_macs(Shared(), (6, 5, 5))
    router = 6 * 25 + 6 * 2
    depthwise = 6 * 25 * 1 * 9 + 2 * 6 * 1 * 9
    pointwise = 4 * 25 * 6 + 2 * 4 * 6
    assert [(x.name, x.macs) for x in report.layers] == [
        ("router", router), ("a", depthwise), ("b", pointwise)]


def test_counting_leaves_the_model_as_it_was():
    net = _Net()
    before = count_macs(net, (1, 8, 8)).total
    assert net.training and "forward" not in net.conv.__dict__
    assert count_macs(net, (1, 8, 8)).total == before


def test_layers_without_a_rule_are_an_error():
    class Odd(mc.nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = mc.nn.Parameter(mc.tensor([1.0]))

        def forward(self, x):
            return x * self.scale

    with pytest.raises(ValueError, match="no MAC rule for Odd"):
        count_macs(Odd(), (1, 4, 4))


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"input_shape=\(8, 8\)"):
        count_macs(_Net(), (8, 8))


def test_batchnorm_pooling_and_blocks_by_hand():
    class Pools(mc.nn.Module):
        def __init__(self):
            super().__init__()
            self.bn = mc.nn.BatchNorm2d(3)
            self.max = mc.nn.MaxPool2d(2)
            self.avg = mc.nn.AvgPool2d(3, stride=1, padding=1)
            self.gap = mc.nn.AdaptiveAvgPool2d(1)

        def forward(self, x):
            return self.gap(self.avg(self.max(self.bn(x))))

    report = count_macs(Pools(), (3, 8, 8))
    assert [(x.kind, x.macs) for x in report.layers] == [
        ("BatchNorm2d", 3 * 8 * 8),              # one multiply-add per element
        ("MaxPool2d", 3 * 4 * 4 * 2 * 2),        # C·Ho·Wo·kh·kw window reads
        ("AvgPool2d", 3 * 4 * 4 * 3 * 3),
        ("AdaptiveAvgPool2d", 3 * 4 * 4),        # C·H·W
    ]


def test_condconv_block_counts_one_router_and_three_mixed_convolutions():
    block = mc.nn.CondConvBlock(4, 6, kernel_size=3, stride=2, expand_ratio=2, num_experts=3)
    static = mc.nn.MBConvBlock(4, 6, kernel_size=3, stride=2, expand_ratio=2)
    cond, plain = count_macs(block, (4, 8, 8)), count_macs(static, (4, 8, 8))
    expand = 8 * 64 * 4                     # 1×1, 4 → 8 channels at 8×8
    depthwise = 8 * 16 * 1 * 9              # 3×3 depthwise, stride 2 → 4×4
    project = 6 * 16 * 8                    # 1×1, 8 → 6 at 4×4
    batchnorms = 8 * 64 + 8 * 16 + 6 * 16
    assert plain.total == expand + depthwise + project + batchnorms
    mixing = 3 * (8 * 4 + 8 * 9 + 6 * 8)    # E × (kernel sizes of the three layers)
    router = 4 * 64 + 4 * 3                 # the block's routing pool, routing_fn
    assert cond.total == plain.total + mixing + router
    assert [(x.kind, x.macs) for x in cond.layers if x.kind in ("Linear", "CondConvBlock")] == [
        ("Linear", 4 * 3), ("CondConvBlock", 4 * 64)]
