"""Containers and reshaping layers: Sequential and Flatten.

Layer: ``nn``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from typing import Any

from .. import functional as F
from .._validate import check_int, check_tensor
from ..tensor import Tensor
from .module import Module


class Sequential(Module):
    """Modules applied one after another; children are named ``"0"``, ``"1"``, … (or by the
    keys of an ``OrderedDict`` given as the only argument), as in ``torch.nn.Sequential``."""

    def __init__(self, *modules: Module | OrderedDict) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], OrderedDict):
            items = list(modules[0].items())
        else:
            items = [(str(i), m) for i, m in enumerate(modules)]
        for name, m in items:
            self._add(name, m)

    def _add(self, name: str, module: Any) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"Sequential: entry {name!r} is a {type(module).__name__}; "
                            "expected a Module")
        setattr(self, name, module)

    def append(self, module: Module) -> Sequential:
        self._add(str(len(self)), module)
        return self

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._modules.values())

    def __getitem__(self, index: int | slice) -> Module:
        modules = list(self._modules.values())
        if isinstance(index, slice):
            return Sequential(*modules[index])
        i = check_int("Sequential", "index", index, -len(modules))
        if i >= len(modules):
            raise IndexError(f"Sequential: index {index} is out of range for {len(modules)} "
                             "modules")
        return modules[i]

    def forward(self, x: Any) -> Any:
        for m in self._modules.values():
            x = m(x)
        return x


class Flatten(Module):
    """Merge axes ``start_dim..end_dim`` into one (``torch.nn.Flatten``; by default every
    axis but the batch axis)."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        super().__init__()
        self.start_dim = check_int("Flatten", "start_dim", start_dim, -(2**31))
        self.end_dim = check_int("Flatten", "end_dim", end_dim, -(2**31))

    def forward(self, x: Tensor) -> Tensor:
        x = check_tensor("Flatten", "x", x)
        n = x.ndim
        start, end = self.start_dim, self.end_dim
        if not (-n <= start < n and -n <= end < n):
            raise ValueError(f"Flatten: start_dim={start}, end_dim={end} are out of range for "
                             f"a {n}-D input of shape {x.shape}")
        start, end = start % n, end % n
        if start > end:
            raise ValueError(f"Flatten: start_dim={self.start_dim} comes after "
                             f"end_dim={self.end_dim} for a {n}-D input")
        merged = 1
        for size in x.shape[start:end + 1]:
            merged *= size
        return F.reshape(x, x.shape[:start] + (merged,) + x.shape[end + 1:])

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"
