"""Containers and reshaping layers: Sequential, ModuleList, ModuleDict and Flatten.

Layer (docs/architecture.md): ``nn``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
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


class ModuleList(Module):
    """A list of modules whose parameters the parent sees (``torch.nn.ModuleList``); children
    are named ``"0"``, ``"1"``, … in order. It has no forward: the parent decides how to call
    its entries."""

    def __init__(self, modules: Iterable[Module] | None = None) -> None:
        super().__init__()
        if modules is not None:
            self.extend(modules)

    @staticmethod
    def _check(module: Any, where: str) -> Module:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: {where} is a {type(module).__name__}; expected a "
                            "Module")
        return module

    def _index(self, index: Any) -> int:
        n = len(self)
        i = check_int("ModuleList", "index", index, -(2**63))
        if not -n <= i < n:
            raise IndexError(f"ModuleList: index {index} is out of range for {n} modules")
        return i % n

    def _renumber(self, modules: list[Module]) -> None:
        self._modules.clear()
        for i, m in enumerate(modules):
            self._modules[str(i)] = m

    def append(self, module: Module) -> ModuleList:
        self._modules[str(len(self))] = self._check(module, f"entry {len(self)}")
        return self

    def extend(self, modules: Iterable[Module]) -> ModuleList:
        if isinstance(modules, Module) and not isinstance(modules, ModuleList):
            raise TypeError("ModuleList.extend: modules must be an iterable of Modules, got "
                            f"a single {type(modules).__name__}; use append")
        for m in list(modules):
            self.append(m)
        return self

    def insert(self, index: int, module: Module) -> None:
        modules = list(self)
        i = check_int("ModuleList", "index", index, -(2**63))
        modules.insert(i, self._check(module, f"entry {index}"))
        self._renumber(modules)

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[Module]:
        return iter(list(self._modules.values()))

    def __iadd__(self, modules: Iterable[Module]) -> ModuleList:
        return self.extend(modules)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return ModuleList(list(self)[index])
        return self._modules[str(self._index(index))]

    def __setitem__(self, index: int, module: Module) -> None:
        i = self._index(index)
        self._modules[str(i)] = self._check(module, f"entry {index}")

    def __delitem__(self, index: int | slice) -> None:
        modules = list(self)
        if isinstance(index, slice):
            del modules[index]
        else:
            del modules[self._index(index)]
        self._renumber(modules)


class ModuleDict(Module):
    """A dict of modules by name, in insertion order (``torch.nn.ModuleDict``); its entries'
    parameters appear as ``"<key>.<name>"``. It has no forward."""

    def __init__(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]] | None
                 = None) -> None:
        super().__init__()
        if modules is not None:
            self.update(modules)

    @staticmethod
    def _key(key: Any) -> str:
        if not isinstance(key, str):
            raise TypeError(f"ModuleDict: key {key!r} must be a str")
        if not key or "." in key:
            raise ValueError(f"ModuleDict: key {key!r} must be a non-empty name without '.' "
                             "(dots separate names in state_dict keys)")
        if key in Module.__dict__ or key in ModuleDict.__dict__ or key == "training":
            raise ValueError(f"ModuleDict: key {key!r} would hide the attribute of that name")
        return key

    def __setitem__(self, key: str, module: Module) -> None:
        key = self._key(key)
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: entry {key!r} is a {type(module).__name__}; "
                            "expected a Module")
        self._modules[key] = module

    def __getitem__(self, key: str) -> Module:
        if key not in self._modules:
            raise KeyError(f"ModuleDict: no entry {key!r}; entries are {list(self._modules)}")
        return self._modules[key]

    def __delitem__(self, key: str) -> None:
        self[key]  # noqa: B018 - the KeyError with the entries listed
        del self._modules[key]

    def __len__(self) -> int:
        return len(self._modules)

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._modules))

    def __contains__(self, key: object) -> bool:
        return key in self._modules

    def keys(self) -> list[str]:
        return list(self._modules)

    def values(self) -> list[Module]:
        return list(self._modules.values())

    def items(self) -> list[tuple[str, Module]]:
        return list(self._modules.items())

    def pop(self, key: str) -> Module:
        module = self[key]
        del self._modules[key]
        return module

    def clear(self) -> None:
        self._modules.clear()

    def update(self, modules: Mapping[str, Module] | Iterable[tuple[str, Module]]) -> None:
        pairs = modules.items() if isinstance(modules, Mapping) else modules
        for pair in pairs:
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2):
                raise TypeError(f"ModuleDict.update: expected a mapping or (key, module) "
                                f"pairs, got the entry {pair!r}")
            self[pair[0]] = pair[1]
