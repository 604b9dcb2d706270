"""One training step of the default ``minicond train`` model against the same network in PyTorch.

The minicond side is exactly what ``minicond train`` runs per batch: the model of
``build_model`` (the ``condconv`` toy network with the default experts and width), forward,
cross-entropy, ``zero_grad``, backward and an AdamW step with the default learning rate and
weight decay. The PyTorch side is a twin built from that model's modules: the same stem,
blocks and head, module for module, with each CondConv layer in the grouped-convolution
formulation (the B per-example kernels mixed with one product, then one convolution with
groups·B groups over the batch folded into channels), and the minicond model's weights and
batch-norm statistics loaded into it by name (``strict``: every parameter and buffer must
match in name and shape). Both get the same batch from the ``shapes`` dataset, the same
optimizer and the same thread count; each repeat runs one step of each in turn, after an
untimed settling step (the other library's thread pools stop spinning).

    python benchmarks/bench_train_step.py                    # defaults of minicond train
    python benchmarks/bench_train_step.py --threads 2 --repeats 11 --batch-size 64

Prints the median step time of each and ``torch/minicond`` (above 1: minicond is faster).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_condconv import median, set_thread_env  # noqa: E402 - the shared helpers


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from minicond.train import TrainConfig

    d = TrainConfig()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2, help="threads for every library")
    p.add_argument("--repeats", type=int, default=11, help="timed steps of each (median)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--experts", type=int, default=d.experts)
    p.add_argument("--width", type=int, default=d.width)
    p.add_argument("--image-size", type=int, default=d.image_size)
    args = p.parse_args(argv)
    for name in ("threads", "repeats", "batch_size", "experts", "width", "image_size"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    return args


def build_twin(model: Any) -> Any:
    """The PyTorch twin of a minicond ``ToyNet`` (condconv kind), its weights loaded."""
    import numpy as np
    import torch
    import torch.nn.functional as F
    from torch import nn

    class GroupedCondConv(nn.Module):
        """CondConv as one grouped convolution: K_b = Σ_e r_be W_e for every example, the
        batch folded into channels, groups·B groups."""

        def __init__(self, layer: Any) -> None:
            super().__init__()
            o = layer.options
            self.weight = nn.Parameter(torch.empty(tuple(layer.weight.shape)))
            self.stride, self.padding = o.stride, o.padding
            self.dilation, self.groups = o.dilation, o.groups

        def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
            B, Cin, H, W = x.shape
            E, Cout = self.weight.shape[:2]
            K = (r @ self.weight.reshape(E, -1)).reshape(B * Cout, *self.weight.shape[2:])
            y = F.conv2d(x.reshape(1, B * Cin, H, W), K, None, self.stride, self.padding,
                         self.dilation, self.groups * B)
            return y.reshape(B, Cout, *y.shape[2:])

    def batch_norm(bn: Any) -> nn.BatchNorm2d:
        return nn.BatchNorm2d(bn.num_features, eps=bn.eps, momentum=bn.momentum)

    class Block(nn.Module):
        """The CondConv inverted residual: one router, three CondConv layers, timm's names."""

        def __init__(self, block: Any) -> None:
            super().__init__()
            if block.se is not None or block.drop_path is not None and block.drop_path.p:
                raise ValueError("build_twin: the twin has no squeeze-excite or drop path")
            self.conv_pw, self.bn1 = GroupedCondConv(block.conv_pw), batch_norm(block.bn1)
            self.conv_dw, self.bn2 = GroupedCondConv(block.conv_dw), batch_norm(block.bn2)
            self.conv_pwl, self.bn3 = GroupedCondConv(block.conv_pwl), batch_norm(block.bn3)
            fc = block.routing_fn
            self.routing_fn = nn.Linear(fc.in_features, fc.out_features)
            self.routing_p = block.routing_dropout.p
            self.act = {"relu": F.relu, "silu": F.silu}[block.options.activation]
            self.has_skip = block.has_skip

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            pooled = F.dropout(x.mean((2, 3)), self.routing_p, self.training)
            r = torch.sigmoid(self.routing_fn(pooled))
            h = self.act(self.bn1(self.conv_pw(x, r)))
            h = self.act(self.bn2(self.conv_dw(h, r)))
            y = self.bn3(self.conv_pwl(h, r))
            return x + y if self.has_skip else y

    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            conv, bn = model.stem[0], model.stem[1]
            o = conv.options
            self.stem = nn.Sequential(
                nn.Conv2d(o.in_channels, o.out_channels, o.kernel_size, o.stride, o.padding,
                          o.dilation, o.groups, bias=False), batch_norm(bn), nn.ReLU())
            self.blocks = nn.Sequential(*(Block(b) for b in model.blocks))
            fc = model.classifier
            self.classifier = nn.Linear(fc.in_features, fc.out_features)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.classifier(self.blocks(self.stem(x)).mean((2, 3)))

    twin = Twin()
    state = {k: torch.from_numpy(np.array(v, dtype=np.float32))
             for k, v in model.state_dict().items()}
    missing, unexpected = twin.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise ValueError(f"build_twin: the twin differs from the model: missing {missing}, "
                         f"unexpected {unexpected}")
    return twin


def build(args: argparse.Namespace) -> tuple[Any, Any]:
    """(minicond step, torch step): each one optimizer step on the same batch."""
    import numpy as np
    import torch
    import torch.nn.functional as tF

    import minicond.functional as F
    from minicond import random as mc_random
    from minicond.data import load_dataset
    from minicond.models import build_model
    from minicond.tensor import from_numpy
    from minicond.train import TrainConfig, build_optimizer

    d = TrainConfig()
    data = load_dataset("shapes", seed=0, train_size=args.batch_size, test_size=1,
                        image_size=args.image_size)
    images = np.ascontiguousarray(data.train_images[:args.batch_size], dtype=np.float32)
    labels = np.asarray(data.train_labels[:args.batch_size])
    mc_random.manual_seed(0)
    model = build_model("condconv", data.image_shape, data.num_classes, experts=args.experts,
                        width=args.width, backend="numba")
    optimizer = build_optimizer("adamw", model, d.lr, d.weight_decay)
    twin = build_twin(model)
    t_opt = torch.optim.AdamW(twin.parameters(), lr=d.lr, weight_decay=d.weight_decay)
    t_images, t_labels = torch.from_numpy(images), torch.from_numpy(labels).long()

    def minicond_step() -> float:
        loss = F.cross_entropy(model(from_numpy(images, backend="numba")), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        return loss.item()

    def torch_step() -> float:
        loss = tF.cross_entropy(twin(t_images), t_labels)
        t_opt.zero_grad()
        loss.backward()
        t_opt.step()
        return loss.item()

    return minicond_step, torch_step


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    set_thread_env(args.threads)
    import torch

    torch.set_num_threads(args.threads)
    minicond_step, torch_step = build(args)
    for step in (minicond_step, torch_step):          # compile and warm up
        step()
    times: dict[str, list[float]] = {"minicond": [], "torch": []}
    for _ in range(args.repeats):
        for name, step in (("minicond", minicond_step), ("torch", torch_step)):
            step()      # untimed: lets the other library's spinning threads settle
            t0 = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t0)
    t_mc, t_torch = median(times["minicond"]), median(times["torch"])
    print(f"training step, batch {args.batch_size}, experts {args.experts}, width "
          f"{args.width}, {args.image_size}x{args.image_size}, {args.threads} threads "
          f"(NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS')}), median of "
          f"{args.repeats}")
    print(f"  minicond {t_mc * 1e3:.2f} ms  torch (grouped trick) {t_torch * 1e3:.2f} ms  "
          f"torch/minicond {t_torch / t_mc:.2f}")


if __name__ == "__main__":
    main()
